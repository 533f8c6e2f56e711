"""clublist: a mailing-list manager for a club, run from the command line."""

__version__ = "0.1.0"

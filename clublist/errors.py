"""The one error type clublist shows to people.

Every failure a person can cause or fix (bad input, a broken file, missing
rights) is a ``ClublistError`` whose message says what was wrong and what to
do; the CLI prints it without a traceback and the bot puts it in its reply.
"""


class ClublistError(Exception):
    """A failure meant for people: the message says what went wrong and what to do."""


class PermissionDenied(ClublistError):
    """The person asking may not do this (the bot's sender, usually)."""

"""The files of lists.d that are not lists, named once for the modules that read them."""

SITE_FILE = "club.toml"
MEMBERS_FILE = "members.toml"
REMINDERS_FILE = "reminders.toml"
# Locked by every writer; never replaced, so a rename cannot lose the lock.
LOCK_FILE = ".clublist.lock"

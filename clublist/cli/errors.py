"""What the command line says when something other than a person's mistake goes wrong.

A person sees one line naming the file and what to do, and exit status 1; ``clublist --debug``
shows the traceback instead.  :class:`~clublist.errors.ClublistError` already carries such a
line; this module words the rest: the disk (full, permissions), the state database (locked,
damaged) and anything unexpected.
"""

from __future__ import annotations

import errno
import sqlite3
from pathlib import Path


def explain(exc: Exception, state_path: Path) -> str:
    """One line for people about *exc*, naming the file and what to do."""
    if isinstance(exc, sqlite3.Error):
        return _database(exc, state_path)
    if isinstance(exc, OSError):
        return _file(exc)
    return f"unexpected error ({type(exc).__name__}: {exc}); run again with --debug to see where"


def _database(exc: sqlite3.Error, state_path: Path) -> str:
    text = str(exc)
    if "disk is full" in text or "disk I/O" in text:
        return f"{state_path}: cannot write the state database ({text}); free disk space and try again"
    if "locked" in text or "busy" in text:
        return f"{state_path}: another process holds the state database's lock ({text}); try again"
    if not isinstance(exc, sqlite3.OperationalError):
        return (
            f"{state_path}: the state database is damaged ({text}); stop clublist, move the file"
            " aside and restore a backup (clublist run starts a new, empty one)"
        )
    return f"{state_path}: {text}"


def _file(exc: OSError) -> str:
    where = f"{exc.filename}: " if exc.filename else ""
    reason = exc.strerror or str(exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"{where}{reason}: the disk is full; free some space and try again"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"{where}{reason}; check the owner and permissions, or run as the club's user"
    return f"{where}{reason}"

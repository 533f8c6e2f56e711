"""members.toml read once: the validated registry kept in var/, keyed by the file's identity.

Parsing and validating a 50,000-member registry takes seconds of tomllib; every CLI command
and every daemon reload needs it.  After a full parse the records are written with
:mod:`marshal` to ``var/members.cache`` together with the identity of the file they came
from (inode, size, modification and change time in nanoseconds).  A reader whose
``stat`` of members.toml gives the same identity takes the records from the cache; any
write to the file (an editor, ``clublist``, ``git checkout``) changes its change time,
which no one can set back, so a stale cache is never used.  The cache is only ever an
optimisation: a missing, unreadable or foreign one means a full parse, and it is written
atomically, so a reader never sees half of it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import marshal
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from clublist.club.model import Member

CACHE_FILE = "members.cache"
_FIELDS = tuple(f.name for f in dataclasses.fields(Member))
# Bumped when the meaning of a field changes without its name changing.
_FORMAT = 2

Identity = tuple[int, int, int, int]


def identity(stat: os.stat_result) -> Identity:
    return (stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)


def read(cache_dir: Path, source: Identity) -> list[Member] | None:
    """The cached records of the members.toml whose identity is *source*, or None."""
    try:
        data = (cache_dir / CACHE_FILE).read_bytes()
        header, rows = marshal.loads(data)
    except (OSError, ValueError, EOFError, TypeError):
        return None
    if header != (_FORMAT, _FIELDS, source):
        return None
    new, set_dict = object.__new__, object.__setattr__
    members = []
    for row in rows:
        member = new(Member)
        # The records were validated when the cache was written; each row is the record's
        # fields and its comparison key (Member.key, kept so it is not computed again).
        set_dict(member, "__dict__", row)
        members.append(member)
    return members


def write(cache_dir: Path, source: Identity, members: Sequence[Member]) -> None:
    """Keep *members* as the records of the file with identity *source* (best effort)."""
    # A record's __dict__ is its fields plus the cached comparison key: exactly a row.
    rows = [m.__dict__ for m in members if m.key]
    with contextlib.suppress(OSError, ValueError):  # ValueError: a field marshal cannot keep
        cache_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix=f".{CACHE_FILE}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(marshal.dumps(((_FORMAT, _FIELDS, source), rows)))
            os.replace(tmp, cache_dir / CACHE_FILE)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

"""Each list's archive: every accepted post as distributed, numbered per list, in a Maildir.

A post is archived as it was decorated for the list, before the worker's changes
for each recipient (VERP, one-click headers, signatures).  The archive lives in
``var/archive/LIST/`` beside the state database, with an index (number, date,
author, subject) in the database's ``archive`` table.

Why archiving cannot lose a post: :func:`record` writes the index row *with the
post's bytes* inside the transaction that queues the post's deliveries
(:func:`clublist.mail.enqueue.enqueue_post`), so no post is delivered that is not
archived.  The Maildir file is written from those bytes afterwards by
:func:`file_entries`: by the daemon right after its commit and at start-up (for a
crash in between), and by the CLI after it queued a post itself; then the bytes
leave the row.  The file is written the Maildir way (into ``tmp/``, fsync, rename
into ``new/``, fsync the folder) under a name fixed by the entry's number, so
writing it twice replaces it with the same bytes and never leaves a half-written or
second copy.  The standard library's ``Maildir.add`` picks a fresh name each time
and does not fsync, so it only reads here.
"""

from __future__ import annotations

import logging
import mailbox
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from clublist.state.db import transaction

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Entry:
    """One archived post, as the index knows it."""

    list_name: str
    number: int
    created: float
    author: str
    subject: str
    maildir_key: str


ENTRY_COLUMNS = "list_name, number, created, author, subject, maildir_key"


def root_of(state_path: Path) -> Path:
    """``var/archive``: beside the state database."""
    return state_path.parent / "archive"


def database_root(conn: sqlite3.Connection) -> Path:
    """The archive folder of the database *conn* is open on."""
    for row in conn.execute("PRAGMA database_list"):
        if row[1] == "main":
            return root_of(Path(row[2]))
    raise RuntimeError("no main database")  # sqlite always has one


def maildir_key(number: int) -> str:
    return f"{number:08d}.clublist"


def record(
    conn: sqlite3.Connection, list_name: str, content: bytes, *, author: str, subject: str, now: float
) -> int:
    """Index a post (with its bytes, until it is filed) under the list's next number, in the caller's
    transaction; returns the number.  Numbers are never reused, even after pruning."""
    number = conn.execute(
        "INSERT INTO archive_numbers (list_name, last) VALUES (?, 1)"
        " ON CONFLICT (list_name) DO UPDATE SET last = last + 1 RETURNING last",
        (list_name,),
    ).fetchone()[0]
    conn.execute(
        "INSERT INTO archive (list_name, number, created, author, subject, maildir_key, content)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (list_name, number, now, author, subject[:200], maildir_key(number), content),
    )
    return int(number)


def unfiled(conn: sqlite3.Connection, limit: int = -1) -> list[tuple[str, int, str, bytes]]:
    """Entries whose Maildir file may not be written yet: (list, number, key, bytes), the first
    *limit* of them (all by default)."""
    rows = conn.execute(
        "SELECT list_name, number, maildir_key, content FROM archive WHERE content IS NOT NULL"
        " ORDER BY list_name, number LIMIT ?",
        (limit,),
    ).fetchall()
    return [(r[0], r[1], r[2], bytes(r[3])) for r in rows]


def write_files(root: Path, entries: list[tuple[str, int, str, bytes]]) -> list[tuple[str, int]]:
    """Write each entry's Maildir file (durably); returns the (list, number) pairs now on disk.

    Each file is written into tmp/, fsynced and renamed into new/; each list's new/ is
    fsynced once for all its files of the batch, after their renames.
    """
    done = []
    by_list: dict[str, list[tuple[int, str, bytes]]] = {}
    for list_name, number, key, content in entries:
        by_list.setdefault(list_name, []).append((number, key, content))
    for list_name, group in by_list.items():
        folder = root / list_name
        maildir(root, list_name)  # makes tmp/, new/ and cur/
        read = {name.partition(":")[0] for name in os.listdir(folder / "cur")}  # moved there by a reader
        renamed = False
        for _number, key, content in group:
            if key not in read and not (folder / "new" / key).exists():
                _write(folder, key, content.replace(b"\r\n", b"\n"))
                renamed = True
        if renamed:
            _fsync_folder(folder / "new")
        done += [(list_name, number) for number, _key, _content in group]
    return done


def mark_filed(conn: sqlite3.Connection, root: Path, filed: list[tuple[str, int]]) -> None:
    """Drop the bytes of entries now on disk, in the caller's transaction.

    An entry pruned while its file was being written has no row left: its file goes too,
    since :func:`prune` removes rows first and then only the files it can see.
    """
    for list_name, number in filed:
        marked = conn.execute(
            "UPDATE archive SET content = NULL WHERE list_name = ? AND number = ?", (list_name, number)
        )
        if marked.rowcount == 0:
            maildir(root, list_name).discard(maildir_key(number))


def file_entries(conn: sqlite3.Connection) -> int:
    """Write every unfiled entry's file and drop its bytes from the index (for the CLI).

    A file that cannot be written is logged and left to the daemon: its bytes stay in the row.
    """
    root = database_root(conn)
    try:
        filed = write_files(root, unfiled(conn))
    except OSError as exc:
        log.warning("archive: could not write Maildir files (%s); clublist run writes them later", exc)
        return 0
    if filed:
        with transaction(conn):
            mark_filed(conn, root, filed)
    return len(filed)


def maildir(root: Path, list_name: str) -> mailbox.Maildir:
    """The list's Maildir, made (with var/archive) when missing.

    The folders are made here, each only if missing, because ``mailbox.Maildir`` makes
    tmp/, new/ and cur/ only when the Maildir itself is missing, and another process
    may be between its two steps.
    """
    for part in ("tmp", "new", "cur"):
        (root / list_name / part).mkdir(mode=0o700, parents=True, exist_ok=True)
    return mailbox.Maildir(root / list_name, factory=None, create=False)


def _write(folder: Path, key: str, content: bytes) -> None:
    """The file *key* in new/ by way of tmp/, its bytes on disk before the rename."""
    temporary = folder / "tmp" / f"{key}.{os.getpid()}"
    with open(temporary, "wb") as handle:
        handle.write(content)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, folder / "new" / key)


def _fsync_folder(path: Path) -> None:
    directory = os.open(path, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def read(root: Path, conn: sqlite3.Connection, entry: Entry) -> bytes | None:
    """An entry's post as archived (from the row while it is not filed yet); None if it is gone."""
    row = conn.execute(
        "SELECT content FROM archive WHERE list_name = ? AND number = ?", (entry.list_name, entry.number)
    ).fetchone()
    if row is not None and row[0] is not None:
        return bytes(row[0]).replace(b"\r\n", b"\n")
    try:
        return maildir(root, entry.list_name).get_bytes(entry.maildir_key)
    except KeyError:
        return None


def entries(conn: sqlite3.Connection, list_name: str, *, since: float = 0.0) -> list[Entry]:
    rows = conn.execute(
        f"SELECT {ENTRY_COLUMNS} FROM archive WHERE list_name = ? AND created >= ? ORDER BY number",
        (list_name, since),
    ).fetchall()
    return [Entry(*row) for row in rows]


def prune(conn: sqlite3.Connection, root: Path, list_name: str, before: float) -> int:
    """Remove the entries of *list_name* archived before *before*: index rows first (in their own
    transaction), then their files and any older file no row names (a crash in between left it).
    Files numbered above the last pruned entry are never touched: they may be new entries whose
    row another process has just committed."""
    with transaction(conn):
        removed = conn.execute(
            "DELETE FROM archive WHERE list_name = ? AND created < ? RETURNING number",
            (list_name, before),
        ).fetchall()
    if not removed or not (root / list_name).is_dir():
        return len(removed)
    highest = max(r[0] for r in removed)
    box = maildir(root, list_name)
    known = {r[0] for r in conn.execute("SELECT maildir_key FROM archive WHERE list_name = ?", (list_name,))}
    for key in list(box.iterkeys()):
        number = key.partition(".")[0]
        if key not in known and number.isdigit() and int(number) <= highest:
            box.discard(key)
    return len(removed)


def prune_expired(conn: sqlite3.Connection, lists: list[tuple[str, int]], now: float) -> dict[str, int]:
    """Apply each list's ``archive_days`` (pairs of list name and days; 0 keeps all): removed per list."""
    root = database_root(conn)
    return {name: prune(conn, root, name, now - days * 86400) for name, days in lists if days > 0}

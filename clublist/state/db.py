"""The state database: what happens (queue, held posts, counters, bounces), in SQLite.

WAL mode with ``synchronous=FULL``: a commit is on disk before clublist
answers 250.  The schema is an append-only list of named migrations tracked
with ``PRAGMA user_version``.  The daemon funnels every write through one
:class:`Writer` thread that commits whatever has queued up in a single
transaction (group commit), so a slow disk never stalls the event loop and
many SMTP sessions share one fsync.  The CLI uses plain connections.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import queue
import signal
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from clublist.errors import ClublistError

if TYPE_CHECKING:
    import asyncio  # the CLI's plain connections never load it

T = TypeVar("T")

# How long a connection waits for another one's write lock before SQLite gives up with
# "database is locked".  CLUBLIST_BUSY_TIMEOUT (seconds) shortens it, so that tests can hold
# the lock past it without waiting half a minute.
BUSY_TIMEOUT = float(os.environ.get("CLUBLIST_BUSY_TIMEOUT") or 30)


def is_transient(exc: BaseException) -> bool:
    """Whether an error is the database's or the disk's passing trouble (locked, full, I/O), not a bug.

    The daemon logs these, waits and goes on; anything else is a bug and stops it.
    """
    return isinstance(exc, sqlite3.OperationalError | OSError)


MIGRATIONS: list[tuple[str, str]] = [
    (
        "queue",
        """
        CREATE TABLE messages (
            id INTEGER PRIMARY KEY,
            queue_id TEXT NOT NULL UNIQUE,
            kind TEXT NOT NULL,
            list_name TEXT,
            sender TEXT NOT NULL,
            verp INTEGER NOT NULL DEFAULT 0,
            subject TEXT NOT NULL DEFAULT '',
            content BLOB NOT NULL,
            created REAL NOT NULL
        );
        CREATE TABLE deliveries (
            id INTEGER PRIMARY KEY,
            message_id INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
            recipient TEXT NOT NULL,
            domain TEXT NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('pending', 'inflight', 'deferred', 'sent', 'failed')),
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt REAL NOT NULL,
            lease_until REAL,
            last_code INTEGER,
            last_reply TEXT NOT NULL DEFAULT '',
            last_host TEXT NOT NULL DEFAULT '',
            created REAL NOT NULL,
            updated REAL NOT NULL,
            reported INTEGER NOT NULL DEFAULT 0,
            delay_reported INTEGER NOT NULL DEFAULT 0
        );
        CREATE INDEX deliveries_due ON deliveries (next_attempt)
            WHERE status IN ('pending', 'deferred', 'inflight');
        CREATE INDEX deliveries_message ON deliveries (message_id, status);
        CREATE INDEX deliveries_unreported ON deliveries (message_id)
            WHERE status = 'failed' AND reported = 0;
        """,
    ),
    (
        "posting",
        """
        CREATE TABLE post_counts (
            address TEXT NOT NULL,
            day TEXT NOT NULL,
            count INTEGER NOT NULL,
            PRIMARY KEY (address, day)
        ) WITHOUT ROWID;
        CREATE TABLE held (
            id INTEGER PRIMARY KEY,
            list_name TEXT NOT NULL,
            sender TEXT NOT NULL,
            author TEXT NOT NULL,
            subject TEXT NOT NULL DEFAULT '',
            reason TEXT NOT NULL,
            content BLOB NOT NULL,
            created REAL NOT NULL
        );
        """,
    ),
    (
        "bounces",
        """
        CREATE TABLE bounce_events (
            id INTEGER PRIMARY KEY,
            address TEXT NOT NULL,
            list_name TEXT,
            day TEXT NOT NULL,
            kind TEXT NOT NULL,
            status TEXT NOT NULL DEFAULT '',
            diagnostic TEXT NOT NULL DEFAULT '',
            source TEXT NOT NULL,
            created REAL NOT NULL
        );
        CREATE INDEX bounce_events_address ON bounce_events (address, created);
        """,
    ),
    (
        "bot",
        """
        CREATE TABLE confirmations (
            token TEXT PRIMARY KEY,
            address TEXT NOT NULL,
            command TEXT NOT NULL,
            list_name TEXT,
            created REAL NOT NULL,
            expires REAL NOT NULL,
            used REAL
        );
        CREATE TABLE bot_replies (
            address TEXT NOT NULL,
            sent REAL NOT NULL
        );
        CREATE INDEX bot_replies_address ON bot_replies (address, sent);
        """,
    ),
    (
        "reminders",
        """
        CREATE TABLE reminder_runs (
            reminder_id TEXT NOT NULL,
            occurrence TEXT NOT NULL,
            queued REAL NOT NULL,
            queue_id TEXT NOT NULL DEFAULT '',
            skipped INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (reminder_id, occurrence)
        ) WITHOUT ROWID;
        CREATE TABLE reminder_cursor (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            last_run REAL NOT NULL
        );
        """,
    ),
    (
        "sender_alerts",
        """
        CREATE TABLE sender_alerts (
            cause TEXT PRIMARY KEY,
            sent REAL NOT NULL
        ) WITHOUT ROWID;
        """,
    ),
    (
        "moderation by reply",
        """
        ALTER TABLE held ADD COLUMN token TEXT;
        ALTER TABLE held ADD COLUMN notified TEXT NOT NULL DEFAULT '';
        CREATE UNIQUE INDEX held_token ON held (token);
        CREATE TABLE owner_changes (
            id INTEGER PRIMARY KEY,
            list_name TEXT NOT NULL,
            address TEXT NOT NULL,
            name TEXT NOT NULL DEFAULT '',
            joined INTEGER NOT NULL,
            created REAL NOT NULL
        );
        """,
    ),
    (
        "recent_posts",
        """
        CREATE TABLE recent_posts (
            author TEXT NOT NULL,
            list_name TEXT NOT NULL,
            message_id TEXT NOT NULL,
            text_digest TEXT NOT NULL DEFAULT '',
            created REAL NOT NULL
        );
        CREATE INDEX recent_posts_author ON recent_posts (author, created);
        CREATE INDEX recent_posts_message ON recent_posts (message_id);
        CREATE TABLE owner_alerts (
            topic TEXT NOT NULL,
            day TEXT NOT NULL,
            PRIMARY KEY (topic, day)
        ) WITHOUT ROWID;
        """,
    ),
    (
        "archive",
        """
        CREATE TABLE archive (
            list_name TEXT NOT NULL,
            number INTEGER NOT NULL,
            created REAL NOT NULL,
            author TEXT NOT NULL DEFAULT '',
            subject TEXT NOT NULL DEFAULT '',
            maildir_key TEXT NOT NULL,
            content BLOB,
            PRIMARY KEY (list_name, number)
        );
        CREATE INDEX archive_unfiled ON archive (list_name) WHERE content IS NOT NULL;
        CREATE INDEX archive_created ON archive (created);
        CREATE TABLE archive_numbers (
            list_name TEXT PRIMARY KEY,
            last INTEGER NOT NULL
        ) WITHOUT ROWID;
        CREATE TABLE archive_fetches (
            address TEXT NOT NULL,
            day TEXT NOT NULL,
            count INTEGER NOT NULL,
            PRIMARY KEY (address, day)
        ) WITHOUT ROWID;
        CREATE TABLE digest_runs (
            list_name TEXT NOT NULL,
            day TEXT NOT NULL,
            sent REAL NOT NULL,
            last_number INTEGER NOT NULL,
            posts INTEGER NOT NULL DEFAULT 0,
            queue_id TEXT NOT NULL DEFAULT '',
            PRIMARY KEY (list_name, day)
        ) WITHOUT ROWID;
        """,
    ),
]


def connect(path: Path | str, *, create: bool = True) -> sqlite3.Connection:
    """Open the state database in autocommit mode, migrated to the current schema."""
    path = Path(path)
    if not path.exists():
        if not create:
            raise ClublistError(f"no state database at {path}; it is created by 'clublist run'")
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        conn = sqlite3.connect(path, isolation_level=None, timeout=BUSY_TIMEOUT, check_same_thread=False)
    except sqlite3.DatabaseError as exc:
        raise ClublistError(f"{path}: cannot open the state database ({exc})") from None
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT * 1000)}")
        conn.row_factory = sqlite3.Row
        migrate(conn)
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise ClublistError(f"{path}: cannot open the state database ({exc})") from None
    except BaseException:
        conn.close()
        raise
    return conn


def migrate(conn: sqlite3.Connection) -> None:
    """Apply the migrations this database has not seen yet, each in its own transaction."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > len(MIGRATIONS):
        raise ClublistError(
            f"the state database has schema version {version}, newer than this clublist "
            f"({len(MIGRATIONS)}); upgrade clublist"
        )
    for number, (_name, sql) in enumerate(MIGRATIONS[version:], start=version + 1):
        with transaction(conn):
            if conn.execute("PRAGMA user_version").fetchone()[0] >= number:
                continue  # another process got there first
            for statement in sql.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {number}")


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction, taken at once (BEGIN IMMEDIATE) so it never fails half-way on a lock.

    A COMMIT that fails (disk full, I/O error) is rolled back too: the connection must never be
    left inside a transaction, or every later BEGIN would fail.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        raise


# A job for the writer: what to run, where its result goes, whether its commit must reach the disk.
_Job = tuple[Callable[[sqlite3.Connection], Any], "asyncio.Future[Any]", bool]


class Writer:
    """A thread that owns the daemon's write connection and commits jobs in groups.

    ``await writer.run(job)`` runs ``job(conn)`` inside a transaction shared
    with whatever other jobs were waiting, each under its own savepoint so one
    failing job does not undo the others, and returns once the commit is on
    disk.  ``await writer.read(job)`` runs a job that only reads on a connection
    of its own, in a thread, so it never waits in that line.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.conn = connect(path)
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._synchronous = "FULL"
        self._reader: sqlite3.Connection | None = None
        self._reading = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="clublist-state-writer", daemon=True)
        self._thread.start()

    async def run(self, job: Callable[[sqlite3.Connection], T], *, durable: bool = True) -> T:
        """``job(conn)`` in the next group commit; its result once the commit is done.

        *durable* False: what the job writes may be lost to a power cut without harm (the
        delivery worker's leases: a restart makes every row in flight due again anyway).  A
        group of such jobs alone is committed without waiting for the disk (synchronous =
        NORMAL: the database stays consistent, and the next durable commit takes these writes
        to disk with its own).
        """
        import asyncio

        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._jobs.put((job, future, durable))
        return await future

    async def read(self, job: Callable[[sqlite3.Connection], T]) -> T:
        """``job(conn)`` on a read connection, in a thread: it sees what is committed.

        In the writer's line it would wait for the writes queued before it and for their
        commit (a claim of thousands of rows, an fsync), which the worker's content loads
        cannot afford: every connection of a fan-out waits for its message's content.
        """
        import asyncio

        return await asyncio.to_thread(self._read, job)

    def _read(self, job: Callable[[sqlite3.Connection], T]) -> T:
        with self._reading:
            if self._reader is None:
                self._reader = sqlite3.connect(
                    self.path, isolation_level=None, timeout=BUSY_TIMEOUT, check_same_thread=False
                )
            return job(self._reader)

    def close(self) -> None:
        self._jobs.put(None)
        self._thread.join()
        self.conn.close()
        with self._reading:
            if self._reader is not None:
                self._reader.close()
                self._reader = None

    def _loop(self) -> None:
        while True:
            first = self._jobs.get()
            if first is None:
                return
            batch = [first]
            while True:
                try:
                    item = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._jobs.put(None)
                    break
                batch.append(item)
            self._commit(batch)

    def _commit(self, batch: list[_Job]) -> None:
        outcomes: list[tuple[bool, Any]] = []
        try:
            synchronous = "FULL" if any(durable for _job, _future, durable in batch) else "NORMAL"
            if synchronous != self._synchronous:
                self.conn.execute(f"PRAGMA synchronous = {synchronous}")
                self._synchronous = synchronous
            with transaction(self.conn):
                for job, _future, _durable in batch:
                    self.conn.execute("SAVEPOINT job")
                    try:
                        outcomes.append((True, job(self.conn)))
                        self.conn.execute("RELEASE job")
                    except Exception as exc:
                        self.conn.execute("ROLLBACK TO job")
                        self.conn.execute("RELEASE job")
                        outcomes.append((False, exc))
        except Exception as exc:  # the commit itself failed: nothing of the batch is on disk
            outcomes = [(False, exc)] * len(batch)
        # One wake-up of each event loop for the whole group: waking a loop is a write to its
        # self-pipe and, when it sleeps, a thread switch, which costs more than settling a future.
        settled: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], bool, Any]]] = {}
        for (_job, future, _durable), (ok, value) in zip(batch, outcomes, strict=True):
            settled.setdefault(future.get_loop(), []).append((future, ok, value))
        for loop, results in settled.items():
            loop.call_soon_threadsafe(_settle, results)


def _settle(results: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    for future, ok, value in results:
        if future.done():  # the awaiting task was cancelled
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)


class DaemonLock:
    """An exclusive lock beside the state database, held while ``clublist run`` lives.

    It keeps two daemons off one queue and lets ``clublist status`` tell
    whether one is running.  Beside it, the daemon confirms each reload of
    lists.d in a small file (its pid and when, on CLOCK_MONOTONIC, the read
    began), so a command that changed lists.d can wait until the change is
    in force (:meth:`reload`).
    """

    def __init__(self, state_path: Path) -> None:
        self.path = state_path.with_name(state_path.name + ".lock")
        self.reloaded_path = state_path.with_name(state_path.name + ".reloaded")
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ClublistError(f"another clublist run is using {self.path.with_suffix('')}") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def announce(self, host: str, port: int) -> None:
        """Record where the daemon listens, after its pid, for ``clublist check``."""
        assert self._fd is not None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{os.getpid()}\n{host} {port}\n".encode(), 0)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def holder(self) -> int | None:
        """The pid of the running daemon, or None when nobody holds the lock."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.pread(fd, 32, 0).decode().partition("\n")[0].strip()
            return int(text) if text.isdigit() else -1
        finally:
            os.close(fd)
        return None

    def address(self) -> tuple[str, int] | None:
        """Where the running daemon listens (host, port), or None when none runs or it did not say."""
        if self.holder() is None:
            return None
        try:
            lines = self.path.read_text().splitlines()
        except OSError:
            return None
        host, _, port = lines[1].partition(" ") if len(lines) > 1 else ("", "", "")
        return (host, int(port)) if host and port.isdigit() else None

    def confirm_reload(self, read_since_ns: int) -> None:
        """The daemon: lists.d as it was at *read_since_ns* (time.monotonic_ns) or later is in force."""
        tmp = self.reloaded_path.with_name(self.reloaded_path.name + ".tmp")
        tmp.write_text(f"{os.getpid()} {read_since_ns}\n")
        os.replace(tmp, self.reloaded_path)

    def _confirmed(self) -> tuple[int, int] | None:
        try:
            pid, since = self.reloaded_path.read_text().split()
            return int(pid), int(since)
        except (OSError, ValueError):
            return None

    def reload(self, changed_ns: int, timeout: float = 5.0) -> bool | None:
        """Ask the running daemon to reload lists.d (SIGHUP) and wait until it has read it anew.

        *changed_ns* is when the change was written (time.monotonic_ns); the wait ends when the
        daemon confirms a reading that began after it.  None: no daemon that reloads (none
        runs, or a foreground ``queue flush`` holds the lock); False: no confirmation in time.
        """
        pid = self.holder()
        confirmed = self._confirmed()
        if pid is None or pid <= 0 or confirmed is None or confirmed[0] != pid:
            return None
        try:
            os.kill(pid, signal.SIGHUP)
        except OSError:
            return None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            confirmed = self._confirmed()
            if confirmed is not None and confirmed[0] == pid and confirmed[1] >= changed_ns:
                return True
            time.sleep(0.002)  # a reload takes milliseconds; the deadline bounds the wait
        return False

    def wake(self) -> int | None:
        """Ask a running daemon to look at the queue now (SIGUSR1); its pid, or None if none runs."""
        pid = self.holder()
        if pid is None or pid <= 0:
            return None
        try:
            os.kill(pid, signal.SIGUSR1)
        except OSError:
            return None
        return pid

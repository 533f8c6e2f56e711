"""Archive actions: list, read, fetch, export and prune the lists' archives.

Rights: a list's members read its archive (also by mail: ``index``, ``get``,
``search``), its owners and the administrator too; exporting is for owners and the
administrator, pruning for the administrator.  What a sender may fetch by mail is
capped per request and per day (``archive.get_per_request``, ``archive.get_per_day``),
counted in the state database, so the bot cannot be made to mail out a whole archive.
"""

from __future__ import annotations

import email
import email.policy
import mailbox
import re
import sqlite3
from datetime import datetime
from email.message import EmailMessage
from pathlib import Path
from zoneinfo import ZoneInfo

from clublist.actions import Actor, Done, require_admin
from clublist.club.model import MailingList, address_key
from clublist.club.store import Club
from clublist.errors import ClublistError, PermissionDenied
from clublist.mail import archive
from clublist.mail.archive import Entry
from clublist.mail.enqueue import today
from clublist.state.db import transaction


def _readable(club: Club, actor: Actor, list_name: str) -> MailingList:
    """The list, if the asker may read its archive."""
    mailing_list = club.require_list(list_name)
    member = club.member(actor.address) if actor.address else None
    if not (actor.may_manage(mailing_list) or (member and list_name in member.lists)):
        raise PermissionDenied(f"only members of {list_name} may read its archive")
    if not mailing_list.archive:
        raise ClublistError(f"{list_name} keeps no archive (its setting archive = false)")
    return mailing_list


def parse_since(club: Club, text: str | None) -> float:
    """``--since 2026-12-01`` (or with a time), in the site's time zone, as a timestamp; 0 for all."""
    if not text:
        return 0.0
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ClublistError(f"--since {text!r} is not a date such as 2026-12-01") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=ZoneInfo(club.site.site.timezone))
    return moment.timestamp()


def archive_ls(
    conn: sqlite3.Connection,
    club: Club,
    actor: Actor,
    list_name: str,
    *,
    since: float = 0.0,
    author: str = "",
    search: str = "",
    last: int | None = None,
) -> list[Entry]:
    """The archive's index, oldest first: posts since *since*, by an *author* (part of the
    address), whose subject or text contain every word of *search*; the *last* N of them."""
    _readable(club, actor, list_name)
    found = archive.entries(conn, list_name, since=since)
    if author:
        found = [e for e in found if author.lower() in e.author.lower()]
    if search:
        words = search.lower().split()
        root = archive.database_root(conn)
        found = [e for e in found if _matches(words, e, archive.read(root, conn, e))]
    return found[-last:] if last else found


def _matches(words: list[str], entry: Entry, content: bytes | None) -> bool:
    text = f"{entry.subject}\n{entry.author}\n{_text_of(content) if content else ''}".lower()
    return all(word in text for word in words)


def _text_of(content: bytes) -> str:
    message = email.message_from_bytes(content, policy=email.policy.default)
    body = message.get_body(("plain", "html")) if isinstance(message, EmailMessage) else None
    try:
        return str(body.get_content()) if body is not None else ""
    except (LookupError, UnicodeError, AttributeError):
        return ""


def _entry(conn: sqlite3.Connection, list_name: str, number: int) -> Entry | None:
    row = conn.execute(
        f"SELECT {archive.ENTRY_COLUMNS} FROM archive WHERE list_name = ? AND number = ?",
        (list_name, number),
    ).fetchone()
    return Entry(*row) if row else None


def archive_show(
    conn: sqlite3.Connection, club: Club, actor: Actor, list_name: str, number: int
) -> tuple[Entry, bytes]:
    """One archived post, as it was distributed."""
    _readable(club, actor, list_name)
    entry = _entry(conn, list_name, number)
    content = archive.read(archive.database_root(conn), conn, entry) if entry else None
    if entry is None or content is None:
        raise ClublistError(f"no post {number} in the archive of {list_name}; see 'clublist archive ls'")
    return entry, content


_RANGE_RE = re.compile(r"(\d+)(?:-(\d+))?")


def parse_numbers(text: str) -> list[int]:
    """``12``, ``10-15`` or ``3,5,8-9``: the post numbers asked for, in order, each once."""
    numbers: dict[int, None] = {}
    for part in text.replace(" ", "").split(","):
        match = _RANGE_RE.fullmatch(part)
        if not match:
            raise ClublistError(f"{text!r} is not a post number or range such as 12 or 10-15")
        low, high = int(match[1]), int(match[2] or match[1])
        if high < low or high - low > 10_000:
            raise ClublistError(f"{part!r} is not a range from a lower to a higher number")
        numbers.update(dict.fromkeys(range(low, high + 1)))
    return list(numbers)


def archive_get(
    conn: sqlite3.Connection, club: Club, actor: Actor, list_name: str, numbers: list[int], now: float
) -> list[tuple[Entry, bytes]]:
    """The posts asked for, to send as attachments.  A mailed request is capped per request and
    per day (the administrator at the shell is not); the posts sent count against the day."""
    _readable(club, actor, list_name)
    limits = club.site.archive
    capped = actor.address is not None
    if capped and len(numbers) > limits.get_per_request:
        raise ClublistError(
            f"Sorry, the bot sends at most {limits.get_per_request} posts per request; "
            f"please ask for fewer (for example 'get {list_name} 1-{limits.get_per_request}')."
        )
    root = archive.database_root(conn)
    found = []
    for number in numbers:
        entry = _entry(conn, list_name, number)
        content = archive.read(root, conn, entry) if entry else None
        if entry is not None and content is not None:
            found.append((entry, content))
    if not found:
        raise ClublistError(
            f"no such post in the archive of {list_name}; send 'index {list_name}' to see them"
        )
    if capped:
        assert actor.address is not None
        _charge(conn, actor.address, len(found), limits.get_per_day, now)
    return found


def _charge(conn: sqlite3.Connection, address: str, count: int, per_day: int, now: float) -> None:
    key, day = address_key(address), today(now)
    with transaction(conn):
        row = conn.execute(
            "SELECT count FROM archive_fetches WHERE address = ? AND day = ?", (key, day)
        ).fetchone()
        used = row[0] if row else 0
        if used + count > per_day:
            left = max(0, per_day - used)
            raise ClublistError(
                f"Sorry, the bot sends at most {per_day} archived posts a day to each member and "
                f"{left} are left for you today; please ask again tomorrow."
            )
        conn.execute(
            "INSERT INTO archive_fetches (address, day, count) VALUES (?, ?, ?)"
            " ON CONFLICT (address, day) DO UPDATE SET count = count + excluded.count",
            (key, day, count),
        )


def archive_export(
    conn: sqlite3.Connection, club: Club, actor: Actor, list_name: str, path: Path, since: float = 0.0
) -> Done:
    """Write the archive (or its posts since *since*) to an mbox file for other mail tools."""
    mailing_list = _readable(club, actor, list_name)
    if not actor.may_manage(mailing_list):
        raise PermissionDenied(f"only the owners of {list_name} may export its archive")
    if path.exists():
        raise ClublistError(f"{path} exists; export writes a new file (remove it or pick another name)")
    root = archive.database_root(conn)
    box = mailbox.mbox(path, create=True)
    count = 0
    try:
        box.lock()
        for entry in archive.entries(conn, list_name, since=since):
            content = archive.read(root, conn, entry)
            if content is not None:
                box.add(content)
                count += 1
        box.flush()
    except OSError as exc:
        raise ClublistError(f"cannot write {path}: {exc}") from None
    finally:
        box.unlock()
        box.close()
    return Done(f"exported {count} posts of {list_name} to {path}", count)


def archive_prune(conn: sqlite3.Connection, club: Club, actor: Actor, now: float) -> Done:
    """Remove the entries older than each list's ``archive_days`` (lists with 0 keep everything)."""
    require_admin(actor, "prune the archives")
    lists = [(ml.name, ml.archive_days) for ml in club.lists.values() if ml.archive_days]
    removed = archive.prune_expired(conn, lists, now)
    total = sum(removed.values())
    detail = ", ".join(f"{n} from {name}" for name, n in removed.items() if n)
    return Done(f"pruned {total} archived posts" + (f" ({detail})" if detail else ""), removed)

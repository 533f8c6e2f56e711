"""Bounce scores: failed deliveries counted per member, and delivery disabled at the threshold.

Two roads lead here: mail to the bounce addresses (``bounces@`` and VERP's ``bounces+TOKEN@``),
read by :class:`BounceProcessor`, and the failures the delivery worker saw itself.  Each failure
of a member's address is a row of evidence in SQLite; the score follows Mailman's rule.  Refusals
of the *message* (spam, DMARC, blocklists) never count against an address: they are kept as
evidence and, from a bounce, become a reputation alert to the administrator.  The decision to
disable is written in the same transaction as the evidence; members.toml is changed after the
commit, so a crash in between only delays it to the next round or start.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import logging
import re
import sqlite3
import textwrap
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from email.message import EmailMessage, Message
from email.utils import formataddr
from typing import TYPE_CHECKING

from clublist.actions import Actor, Done
from clublist.bounces import dsn
from clublist.bounces.dsn import BounceEvidence
from clublist.club import model
from clublist.club.model import BouncesSection, Member, Site, address_key
from clublist.club.store import Club, MembersChange, Store
from clublist.errors import ClublistError, PermissionDenied
from clublist.outbound import reports, verp
from clublist.state import queue
from clublist.state.db import Writer

if TYPE_CHECKING:
    from clublist.mail.handler import CommitJob, Target

log = logging.getLogger(__name__)

DAY = 24 * 3600
COUNTED = ("hard", "soft")
# Marks in the evidence: a disabling decided (pending) and one carried out in members.toml.
# Only failures after a member's last mark count, so a member brought back starts from zero.
DISABLING, DISABLED = "disabling", "disabled"
MARKS = (DISABLING, DISABLED)
LAST_WORDS_MAX = 200  # of the server's reply, in members.toml's disabled_reason
_STATUS = re.compile(r"[245]\.\d{1,3}\.\d{1,3}")


@dataclass(frozen=True)
class BounceEvent:
    """One row of evidence: a failure (hard, soft, content) or a mark (disabling, disabled)."""

    id: int
    address: str
    list_name: str | None
    day: str
    kind: str
    status: str
    diagnostic: str
    source: str  # "verp", "dsn", "delivery", or "score" for the marks
    created: float


@dataclass(frozen=True)
class Failure:
    """A failed delivery to a member's address, where it was seen and which list it came from."""

    member: Member
    list_name: str | None
    evidence: BounceEvidence
    source: str


# --- the score --------------------------------------------------------------------------------


def counted_events(events: Sequence[BounceEvent], bounces: BouncesSection, now: float) -> list[BounceEvent]:
    """The failures that count now: hard and soft ones after the last mark, none stale."""
    after_mark = max((i + 1 for i, e in enumerate(events) if e.kind in MARKS), default=0)
    since = now - bounces.stale_after_days * DAY
    return [e for e in events[after_mark:] if e.kind in COUNTED and e.created >= since]


def bounce_score(events: Sequence[BounceEvent], bounces: BouncesSection, now: float) -> float:
    """Mailman's score: each day counts once, hard if any failure that day was hard, else soft.

    A provider that refuses ten posts in one afternoon is one bad day, not ten.
    """
    per_day: dict[str, float] = {}
    for event in counted_events(events, bounces, now):
        weight = bounces.hard_weight if event.kind == "hard" else bounces.soft_weight
        per_day[event.day] = max(per_day.get(event.day, 0.0), weight)
    return sum(per_day.values(), 0.0)


def reaches_threshold(score: float, bounces: BouncesSection) -> bool:
    """Delivery is disabled *at* the threshold (the issue's rule; Mailman 3 uses >= too)."""
    return score > 0 and score >= bounces.threshold


def events_of(conn: sqlite3.Connection, address: str) -> list[BounceEvent]:
    """Every row of evidence for one address, oldest first."""
    rows = conn.execute(
        "SELECT id, address, list_name, day, kind, status, diagnostic, source, created FROM bounce_events"
        " WHERE address = ? ORDER BY id",
        (address_key(address),),
    ).fetchall()
    return [BounceEvent(*row) for row in rows]


def _day(now: float) -> str:
    """The day a failure counts for (UTC, like the post counters)."""
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d")


def _insert(
    conn: sqlite3.Connection,
    address: str,
    list_name: str | None,
    kind: str,
    status: str,
    diagnostic: str,
    source: str,
    now: float,
) -> None:
    conn.execute(
        "INSERT INTO bounce_events (address, list_name, day, kind, status, diagnostic, source, created)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (address_key(address), list_name, _day(now), kind, status, diagnostic, source, now),
    )


# --- recording, inside the caller's transaction -------------------------------------------------


@dataclass
class Recorded:
    """What recording a round of failures did: one note per failure, and who is to be disabled."""

    notes: list[str]
    disabling: list[str]


def record_failures(
    conn: sqlite3.Connection, club: Club, failures: Iterable[Failure], now: float
) -> Recorded:
    """Store each failure as evidence; a member whose score reaches the threshold gets a disabling mark.

    The mark (with the reason people will read in members.toml) is written here, in the same
    transaction as the failure that decided it; :meth:`BounceProcessor.apply_disablings` carries
    it out afterwards.
    """
    bounces = club.site.bounces
    recorded = Recorded([], [])
    for failure in failures:
        member, evidence = failure.member, failure.evidence
        _insert(
            conn,
            member.key,
            failure.list_name,
            evidence.kind,
            evidence.status,
            evidence.diagnostic,
            failure.source,
            now,
        )
        about = f"{evidence.kind} failure for {member.email} ({failure.list_name or 'no list'}"
        about += f", {evidence.status})" if evidence.status else ")"
        if evidence.kind not in COUNTED:
            recorded.notes.append(f"{about}: about the message, not counted")
            continue
        events = events_of(conn, member.key)
        score = bounce_score(events, bounces, now)
        recorded.notes.append(f"{about}: score {score:.1f}")
        if member.receives and reaches_threshold(score, bounces):
            reason = disabled_reason(score, now, events[-1])
            _insert(conn, member.key, None, DISABLING, evidence.status, reason, "score", now)
            recorded.disabling.append(member.email)
    return recorded


def disabled_reason(score: float, now: float, last: BounceEvent) -> str:
    """The reason members.toml shows: "bounces: score 5.0 on 2026-03-09 (last: 550 5.1.1 ...)"."""
    last_words = _last_words(last.status, last.diagnostic)[:LAST_WORDS_MAX]
    return f"bounces: score {score:.1f} on {_day(now)} (last: {last_words})"


def _last_words(status: str, diagnostic: str) -> str:
    """Status and diagnostic on one line, the status once ("550 5.1.1 User unknown" names it)."""
    words = diagnostic if status and status in diagnostic else f"{status} {diagnostic}"
    return " ".join(words.split()) or "no details"


def pending_disablings(conn: sqlite3.Connection) -> list[BounceEvent]:
    """Disablings decided and not yet carried out in members.toml, oldest first."""
    rows = conn.execute(
        "SELECT id, address, list_name, day, kind, status, diagnostic, source, created FROM bounce_events"
        " WHERE kind = ? ORDER BY id",
        (DISABLING,),
    ).fetchall()
    return [BounceEvent(*row) for row in rows]


def disable_members(store: Store, pending: Sequence[BounceEvent]) -> list[Member]:
    """Disable delivery in members.toml for the pending marks, in one locked write; the new records.

    A member already disabled (by hand, or a mark seen twice after a crash) keeps what is there;
    a member removed meanwhile is passed over.
    """

    def change(club: Club) -> MembersChange:
        replaced: dict[str, Member] = {}
        for mark in pending:
            member = club.member(mark.address)
            if member is not None and member.receives and member.key not in replaced:
                replaced[member.key] = model.replace(
                    member, delivery="disabled", disabled_reason=mark.diagnostic
                )
        return MembersChange(replaced=replaced)

    return list(store.change_members(change).replaced.values())


def finish_disablings(
    conn: sqlite3.Connection,
    site: Site,
    pending: Sequence[BounceEvent],
    disabled: Sequence[Member],
    now: float,
) -> None:
    """Mark the disablings carried out and queue the administrator's one summary for the round."""
    conn.executemany(
        "UPDATE bounce_events SET kind = ? WHERE id = ?", [(DISABLED, mark.id) for mark in pending]
    )
    if disabled:
        _queue_notice(conn, site, disabled_summary(site, disabled), now)


# --- what a message to the bounce address says ------------------------------------------------


def verp_token(site: Site, secret: bytes, recipient: str) -> verp.VerpToken | None:
    """The list and member a VERP bounce address names; None for the plain address or a bad token."""
    local = recipient.rpartition("@")[0]
    if "+" not in local:
        return None
    return verp.decode(secret, local, site.site.bounce_local_part)


def read_bounce(
    club: Club, secret: bytes, recipient: str, msg: Message, raw: bytes
) -> tuple[list[Failure], list[BounceEvidence]]:
    """The members a bounce is about, and the failed addresses that belong to no member.

    A VERP token, once its MAC verifies, names the address: with it even an unreadable bounce
    counts (as hard, as Mailman does), and a readable report still gives the status.  Without a
    token the report names the addresses, and the returned post names the list.
    """
    token = verp_token(club.site, secret, recipient)
    if token is None and "+" in recipient.rpartition("@")[0]:
        # A token that does not verify is forged or damaged: its report counts for nobody,
        # or anyone could disable a member by mailing a made-up bounce to a made-up token.
        log.warning("bounce to %s: its VERP token does not verify; counted for nobody", recipient)
        return [], []
    evidence = dsn.parse_bounce(msg)
    if token is not None:
        about = next((e for e in evidence if address_key(e.address) == token.recipient), None)
        about = about or (evidence[0] if evidence else None)
        if about is None:
            about = BounceEvidence(token.recipient, "hard", "", "bounce to a VERP address without a report")
        evidence = [replace(about, address=token.recipient)]
    failures, strangers = [], []
    for item in evidence:
        member = club.member(item.address)
        if member is None:
            strangers.append(item)
        elif token is not None:
            failures.append(Failure(member, token.list_name or None, item, "verp"))
        else:
            failures.append(Failure(member, returned_list(club, raw, member), item, "dsn"))
    return failures, strangers


def returned_list(club: Club, raw: bytes, member: Member) -> str | None:
    """The list a bounce without VERP is about: the first one its returned copy names.

    Bounces quote the post, or its headers, below their own header section; a List-Id there is
    the surest sign, then the list addresses (To: youth@myclub.org).  Lists the member is on
    come first.  Evidence only: the score is per member.
    """
    body = re.split(rb"\r?\n\r?\n", raw, maxsplit=1)[-1].decode("latin-1")
    domain = re.escape(club.site.domain)
    named = re.findall(rf"^List-Id:[^\n]*<([a-z0-9._-]+)\.{domain}>", body, re.IGNORECASE | re.MULTILINE)
    named += re.findall(rf"(?<![\w.+=-])([a-z0-9][a-z0-9._-]*)@{domain}(?![\w.-])", body, re.IGNORECASE)
    lists = [name.lower() for name in named if name.lower() in club.lists]
    mine = [name for name in lists if name in member.lists]
    return (mine or lists or [None])[0]


def delivery_evidence(row: queue.FailedDelivery) -> BounceEvidence:
    """A failure the worker saw, read like a bounce: the server's reply, or clublist's own words.

    A delivery given up after days of temporary errors is soft (4.4.7 when nobody answered).
    """
    reply = queue.last_server_reply(row.reply)
    if row.code is not None:
        status = reports.status_from_reply(row.code, reply.removeprefix(f"{row.code} "))
    else:
        first = reply.partition(" ")[0]
        status = first if _STATUS.fullmatch(first) else ("4.4.7" if reply != row.reply else "")
    diagnostic = " ".join(reply.split())[: dsn.DIAGNOSTIC_MAX]
    return BounceEvidence(row.recipient, dsn.classify_status(status, diagnostic), status, diagnostic)


# --- mail for the administrator -----------------------------------------------------------------


def _queue_notice(conn: sqlite3.Connection, site: Site, notice: EmailMessage, now: float) -> None:
    """Queue a notice to the administrator from the null sender.

    Should the administrator's mail refuse it, the refusal comes back to nobody: a
    notice about bounces must never itself become a bounce (and another notice).
    """
    queue.enqueue(
        conn,
        kind="notice",
        sender="",
        recipients=[site.site.admin],
        content=bytes(notice),
        now=now,
        subject=str(notice["Subject"]),
    )


def _notice(site: Site, subject: str, text: str) -> EmailMessage:
    # From postmaster@: a reply reaches the administrator, not the bounce address.
    return reports.notice(
        sender=formataddr(("clublist", f"postmaster@{site.domain}")),
        to=site.site.admin,
        subject=subject,
        text=text,
        message_id_domain=site.domain,
    )


def disabled_summary(site: Site, members: Sequence[Member]) -> EmailMessage:
    """The administrator's one mail for a round of disablings: who, and why, and how to undo it."""
    bounces = site.bounces
    entries = [(formataddr((m.name, m.email)) if m.name else m.email, m.disabled_reason) for m in members]
    text = _mail_text(
        "clublist stopped delivering to these members, because mail to their addresses kept failing:",
        entries,
        f"A member is disabled when their bounce score reaches {bounces.threshold:g}: each day with a"
        f" failure adds {bounces.hard_weight:g} (permanent) or {bounces.soft_weight:g} (temporary),"
        f" and failures older than {bounces.stale_after_days} days no longer count.  Their lists"
        " stay as they are.",
    )
    text += (
        "\nTo see the evidence:     clublist bounces show ADDRESS"
        "\nWhen the address works:  clublist member set ADDRESS --enable\n"
    )
    count = f"{len(members)} member{'s' if len(members) != 1 else ''}"
    return _notice(site, f"Bounces: delivery disabled for {count}", text)


def reputation_alert(site: Site, refused: Sequence[BounceEvidence], recipient: str) -> EmailMessage:
    """Tell the administrator that a server refused the club's message itself, not an address,
    and, when the refusal names authentication, which DNS record to fix."""
    entries = []
    for e in refused:
        fix = dsn.authentication_fix(e.status, e.diagnostic).replace("<site.domain>", site.domain)
        entries.append(
            (e.address, _last_words(e.status, e.diagnostic) + (f" -- to fix: {fix}" if fix else ""))
        )
    text = _mail_text(
        f"A bounce to {recipient} says a receiving server refused the club's message itself (spam"
        " filter, sender authentication such as DMARC, SPF or DKIM, a blocklist, or its size), not"
        " the member's address.  This does not count against the members:",
        entries,
        'Check the club\'s SPF, DKIM and DMARC records (README, "Deliverability") and whether its'
        " sending IP address is on a blocklist; the server's words above usually name the cause.",
    )
    domains = ", ".join(dict.fromkeys(e.address.rpartition("@")[2] for e in refused))
    return _notice(site, f"Reputation alert: {domains} refused the club's mail", text)


def _mail_text(opening: str, entries: Iterable[tuple[str, str]], closing: str) -> str:
    """Paragraphs and indented entries, wrapped to 76 columns so the mail stays plain 7-bit text."""

    def wrap(text: str, indent: str = "") -> str:
        return textwrap.fill(
            text,
            76,
            initial_indent=indent,
            subsequent_indent=indent,
            break_long_words=False,
            break_on_hyphens=False,
        )

    lines = [wrap(opening), ""]
    for heading, detail in entries:
        lines += [wrap(heading, "  "), wrap(detail, "    ")]
    return "\n".join([*lines, "", wrap(closing), ""])


def _forward_to_admin(conn: sqlite3.Connection, site: Site, raw: bytes, recipient: str, now: float) -> str:
    """Hand a bounce nobody can be named from to the administrator, unchanged, from <>.

    The null sender means a failure of this forward is never bounced back here again.
    """
    header = f"X-Clublist-Bounce: not attributed to a member (sent to {recipient})\r\n".encode()
    return queue.enqueue(
        conn,
        kind="forward",
        sender="",
        recipients=[site.site.admin],
        content=header + raw,
        now=now,
        subject=_subject(raw),
    )


def _subject(raw: bytes) -> str:
    head = re.split(rb"\r?\n\r?\n", raw, maxsplit=1)[0]
    parsed = email.message_from_bytes(head, policy=email.policy.default)
    try:
        return str(parsed.get("Subject", ""))[:200]
    except Exception:  # a hostile header the lazy parser cannot read
        return ""


# --- the processor the daemon runs ---------------------------------------------------------------


class BounceProcessor:
    """Mail to the bounce addresses, the worker's failures, and the disablings they lead to.

    It is the inbound handler's processor for target kind "bounce" and the delivery worker's
    ``on_failures`` hook.  Disabling touches members.toml under the store's lock, so it runs in a
    thread after the commit; :meth:`start` catches up on marks a crash left pending.
    """

    def __init__(
        self,
        *,
        writer: Writer,
        store: Store,
        club: Callable[[], Club],
        secret: bytes,
        on_queued: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.writer = writer
        self.store = store
        self.club = club
        self.secret = secret
        self.on_queued = on_queued  # the summary is mail: wake the worker for it
        self.clock = clock
        self._disabling = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self._behind = False  # a disabling failed: try again with the next round

    def refuse(self, club: Club, target: Target, sender: str) -> str | None:
        """Bounces come from <> or from postmaster addresses of every kind: all are taken."""
        return None

    async def process(self, club: Club, target: Target, sender: str, message: bytes, now: float) -> CommitJob:
        """Read a bounce; the job records its evidence, alerts, or forwards it to the administrator."""
        msg = email.message_from_bytes(message, policy=email.policy.default)
        if dsn.is_auto_reply(msg):
            return lambda conn: f"auto-reply from {sender or '<>'}, not a bounce: ignored"
        failures, strangers = read_bounce(club, self.secret, target.address, msg, message)
        site, loop = club.site, asyncio.get_running_loop()

        def job(conn: sqlite3.Connection) -> str:
            if not failures and not strangers:
                queue_id = _forward_to_admin(conn, site, message, target.address, now)
                return f"names no failed address; forwarded to the administrator as {queue_id}"
            recorded = record_failures(conn, club, failures, now)
            notes = recorded.notes + [
                f"{e.kind} failure for {e.address}, who is no member: ignored" for e in strangers
            ]
            refused = [f.evidence for f in failures if f.evidence.kind == "content"]
            refused += [e for e in strangers if e.kind == "content"]
            # The administrator's own refusals are not worth an alert to that same mailbox.
            refused = [e for e in refused if address_key(e.address) != address_key(site.site.admin)]
            if refused:
                _queue_notice(conn, site, reputation_alert(site, refused, target.address), now)
                notes.append("reputation alert sent to the administrator")
            if recorded.disabling or self._behind:
                # The writer commits this batch before it runs the next job, so the
                # disabling (which starts with a writer job) sees this evidence.
                loop.call_soon_threadsafe(self._disable_soon)
            return "; ".join(notes)

        return job

    async def delivery_failed(self, rows: list[queue.FailedDelivery]) -> None:
        """The worker's own failures, after their commit: counted like bounces.

        Reports and mail from <> are not the club's mail to members, so they are left out.  Never
        raises: the worker must not take an error here for a delivery problem.
        """
        try:
            club, now = self.club(), self.clock()

            def job(conn: sqlite3.Connection) -> Recorded:
                failures = []
                for row in rows:
                    info = queue.message_info(conn, row.message_id)
                    member = club.member(row.recipient)
                    if member is None or info.kind == "report" or info.sender == "":
                        continue
                    failures.append(Failure(member, info.list_name, delivery_evidence(row), "delivery"))
                return record_failures(conn, club, failures, now)

            recorded = await asyncio.shield(self.writer.run(job))
            for note in recorded.notes:
                log.info("delivery %s", note)
            if recorded.disabling or self._behind:
                self._disable_soon()
        except Exception:
            log.exception("could not count delivery failures as bounces")

    # --- disabling ----------------------------------------------------------------------------

    def start(self) -> None:
        """Carry out any disabling a crash left pending (the daemon calls this at start-up)."""
        self._disable_soon()

    def _disable_soon(self) -> None:
        task = asyncio.get_running_loop().create_task(self.apply_disablings())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def apply_disablings(self) -> None:
        """Disable the members the database has marked, then mark them done and tell the administrator.

        members.toml is written first: a crash before the second step leaves the marks pending and
        the next round writes the same (already disabled members are left as they are).  Never
        raises: a members.toml that cannot be written keeps the marks for the next round.
        """
        async with self._disabling:
            try:
                pending = await self.writer.run(pending_disablings)
                if not pending:
                    return
                disabled = await asyncio.to_thread(disable_members, self.store, pending)
                site, now = self.club().site, self.clock()
                await asyncio.shield(
                    self.writer.run(lambda conn: finish_disablings(conn, site, pending, disabled, now))
                )
                self._behind = False
                for member in disabled:
                    log.warning("disabled delivery to %s: %s", member.email, member.disabled_reason)
                if disabled:
                    self.on_queued()
            except ClublistError as exc:  # members.toml does not parse: a person must fix it
                self._behind = True
                log.error(
                    "could not disable members for bounces (trying again with the next bounce): %s", exc
                )
            except Exception:
                self._behind = True
                log.exception("could not disable members for bounces; trying again with the next bounce")

    async def drain(self, timeout: float) -> None:
        """Let a disabling in progress finish (the daemon calls this before closing the database)."""
        if self._tasks:
            _done, pending = await asyncio.wait(list(self._tasks), timeout=timeout)
            for task in pending:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*pending)


# --- what the bounces commands show and change ------------------------------------------------------


@dataclass(frozen=True)
class BounceStanding:
    """One address in ``bounces ls``."""

    address: str
    name: str
    score: float
    events: int  # failures that count now
    last_event: float
    last_status: str
    delivery: str  # "enabled", "disabled", or "no member"


@dataclass(frozen=True)
class BounceRecord:
    """One address in ``bounces show``: its score and all its evidence."""

    address: str
    score: float
    threshold: float
    delivery: str
    disabled_reason: str
    events: list[BounceEvent]


def _require_admin(actor: Actor) -> None:
    if not actor.is_admin:
        raise PermissionDenied("only the club's administrator may see or reset bounce scores")


def _delivery(member: Member | None) -> str:
    return member.delivery if member is not None else "no member"


def bounce_ls(conn: sqlite3.Connection, club: Club, actor: Actor, now: float) -> list[BounceStanding]:
    """Addresses with a score, or disabled by bounces, highest score first."""
    _require_admin(actor)
    by_address: dict[str, list[BounceEvent]] = {}
    for row in conn.execute(
        "SELECT id, address, list_name, day, kind, status, diagnostic, source, created FROM bounce_events"
        " ORDER BY id"
    ):
        event = BounceEvent(*row)
        by_address.setdefault(event.address, []).append(event)
    standings = []
    for address, events in by_address.items():
        member = club.member(address)
        score = bounce_score(events, club.site.bounces, now)
        disabled_by_bounces = member is not None and member.disabled_reason.startswith("bounces:")
        if score <= 0 and not disabled_by_bounces:
            continue
        failures = [e for e in events if e.kind not in MARKS]
        last = failures[-1] if failures else events[-1]
        standings.append(
            BounceStanding(
                address=member.email if member else address,
                name=member.name if member else "",
                score=score,
                events=len(counted_events(events, club.site.bounces, now)),
                last_event=last.created,
                last_status=last.status,
                delivery=_delivery(member),
            )
        )
    return sorted(standings, key=lambda s: (-s.score, address_key(s.address)))


def bounce_show(conn: sqlite3.Connection, club: Club, actor: Actor, address: str, now: float) -> BounceRecord:
    """The score and every piece of evidence for one member (an alias finds its member)."""
    _require_admin(actor)
    member = club.member(address)
    key = member.key if member else address_key(address)
    events = events_of(conn, key)
    return BounceRecord(
        address=member.email if member else address,
        score=bounce_score(events, club.site.bounces, now),
        threshold=club.site.bounces.threshold,
        delivery=_delivery(member),
        disabled_reason=member.disabled_reason if member else "",
        events=events,
    )


def bounce_reset(conn: sqlite3.Connection, club: Club, actor: Actor, address: str) -> Done:
    """Forget an address's evidence (its score becomes 0); delivery is left as it is."""
    _require_admin(actor)
    member = club.member(address)
    key = member.key if member else address_key(address)
    forgotten = conn.execute("DELETE FROM bounce_events WHERE address = ?", (key,)).rowcount
    message = f"forgot {forgotten} bounce events of {address}; its score is 0"
    if member is not None and not member.receives:
        message += f"; delivery stays disabled until 'clublist member set {member.email} --enable'"
    return Done(message, forgotten)

"""Bounce scores: each failure of a member's address is a row of evidence; Mailman's rule scores it.

A hard failure adds ``hard_weight``, a soft one ``soft_weight``, at most once a day; evidence older
than ``stale_after_days`` no longer counts; at ``threshold`` delivery is disabled.  Refusals of the
*message* (spam, DMARC, blocklists) are kept as evidence and never count.  The decision to disable is
written in the same transaction as the evidence; members.toml is changed after the commit, so a crash
in between only delays it to the next round or start.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import formataddr

from clublist.bounces import dsn
from clublist.bounces.dsn import BounceEvidence
from clublist.club import changes, model
from clublist.club.model import BouncesSection, Member, Site, address_key
from clublist.club.store import Club, MembersChange, Store
from clublist.outbound.notices import admin_notice, mail_text, queue_admin_notice

DAY = 24 * 3600


COUNTED = ("hard", "soft")


# Marks in the evidence: a disabling decided (pending) and one carried out in members.toml.
# Only failures after a member's last mark count, so a member brought back starts from zero.
DISABLING, DISABLED = "disabling", "disabled"


MARKS = (DISABLING, DISABLED)


LAST_WORDS_MAX = 200  # of the server's reply, in members.toml's disabled_reason


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
    words = last_words(last.status, last.diagnostic)[:LAST_WORDS_MAX]
    return f"bounces: score {score:.1f} on {_day(now)} (last: {words})"


def last_words(status: str, diagnostic: str) -> str:
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

    changes.claim("bounces", [mark.address for mark in pending])
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
        queue_admin_notice(conn, site, disabled_summary(site, disabled), now)


def disabled_summary(site: Site, members: Sequence[Member]) -> EmailMessage:
    """The administrator's one mail for a round of disablings: who, and why, and how to undo it."""
    bounces = site.bounces
    entries = [(formataddr((m.name, m.email)) if m.name else m.email, m.disabled_reason) for m in members]
    text = mail_text(
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
    return admin_notice(site, f"Bounces: delivery disabled for {count}", text)


def reputation_alert(site: Site, refused: Sequence[BounceEvidence], recipient: str) -> EmailMessage:
    """Tell the administrator that a server refused the club's message itself, not an address,
    and, when the refusal names authentication, which DNS record to fix."""
    entries = []
    for e in refused:
        fix = dsn.authentication_fix(e.status, e.diagnostic).replace("<site.domain>", site.domain)
        words = last_words(e.status, e.diagnostic)
        entries.append((e.address, words + (f" -- to fix: {fix}" if fix else "")))
    text = mail_text(
        f"A bounce to {recipient} says a receiving server refused the club's message itself (spam"
        " filter, sender authentication such as DMARC, SPF or DKIM, a blocklist, or its size), not"
        " the member's address.  This does not count against the members:",
        entries,
        'Check the club\'s SPF, DKIM and DMARC records (README, "Deliverability") and whether its'
        " sending IP address is on a blocklist; the server's words above usually name the cause.",
    )
    domains = ", ".join(dict.fromkeys(e.address.rpartition("@")[2] for e in refused))
    return admin_notice(site, f"Reputation alert: {domains} refused the club's mail", text)

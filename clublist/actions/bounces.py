"""Bounce actions: who bounces, the evidence, and forgetting it (``clublist bounces``)."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from clublist.actions import Actor, Done
from clublist.bounces.score import MARKS, BounceEvent, bounce_score, counted_events, events_of
from clublist.club.model import Member, address_key
from clublist.club.store import Club
from clublist.errors import PermissionDenied


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

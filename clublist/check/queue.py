"""The queue check: mail that waits or fails, members bounces have disabled, posts nobody moderates.

It reads the state database without creating it; a missing one means the daemon never ran.
"""

from __future__ import annotations

import sqlite3
import time

from clublist.check import Finding, Target
from clublist.errors import ClublistError
from clublist.state import db as state
from clublist.state import queue

DEFERRED_WARN = 3600  # a delivery deferred for longer than the first retries deserves a look
FAILED_WINDOW = 24 * 3600
HELD_WARN_DAYS = 3


def run(target: Target, now: float | None = None) -> list[Finding]:
    now = time.time() if now is None else now
    findings = _disabled(target)
    if not target.state_path.exists():
        return [
            Finding(
                "queue.state",
                "info",
                f"no state database at {target.state_path} yet; 'clublist run' creates it",
            ),
            *findings,
        ]
    try:
        conn = state.connect(target.state_path, create=False)
    except ClublistError as exc:
        return [Finding("queue.state", "fail", str(exc), "restore the file from a backup, or move it aside")]
    try:
        findings = [_deferred(conn, now), _failed(conn, now), _held(conn, now), *findings]
    except sqlite3.DatabaseError as exc:
        findings = [
            Finding("queue.state", "fail", f"{target.state_path}: {exc}", "restore the file from a backup"),
            *findings,
        ]
    finally:
        conn.close()
    return findings


def _deferred(conn: sqlite3.Connection, now: float) -> Finding:
    oldest = queue.oldest_deferred(conn)
    if oldest is None:
        return Finding("queue.deferred", "ok", "no deferred deliveries")
    age = now - oldest.created
    detail = (
        f"oldest deferred delivery: {oldest.recipient} ({oldest.queue_id}), waiting {_span(age)}, "
        f"last reply: {oldest.last_reply or 'none'}"
    )
    if age < DEFERRED_WARN:
        return Finding("queue.deferred", "ok", detail)
    return Finding("queue.deferred", "warn", detail, f"see 'clublist queue show {oldest.queue_id}'")


def _failed(conn: sqlite3.Connection, now: float) -> Finding:
    failed = queue.failed_since(conn, now - FAILED_WINDOW)
    if not failed:
        return Finding("queue.failed", "ok", "no delivery failed in the last 24 hours")
    last = failed[0]
    return Finding(
        "queue.failed",
        "warn",
        f"{len(failed)} deliveries failed in the last 24 hours; latest {last.recipient}: "
        f"{last.last_reply or 'no reply'}",
        "see 'clublist queue ls --status failed'",
    )


def _held(conn: sqlite3.Connection, now: float) -> Finding:
    count, oldest = queue.held_before(conn, now - HELD_WARN_DAYS * 86400)
    if not count:
        return Finding("queue.held", "ok", f"no post held longer than {HELD_WARN_DAYS} days")
    assert oldest is not None
    return Finding(
        "queue.held",
        "warn",
        f"{count} held posts waiting longer than {HELD_WARN_DAYS} days (oldest {_span(now - oldest)})",
        "'clublist held ls', then approve, reject or discard them",
    )


def _disabled(target: Target) -> list[Finding]:
    if target.club is None:
        return []
    disabled = [m for m in target.club.members if not m.receives and m.disabled_reason.startswith("bounces")]
    if not disabled:
        return [Finding("queue.bounces", "ok", "no member disabled by bounces")]
    names = ", ".join(m.email for m in disabled[:5]) + (", ..." if len(disabled) > 5 else "")
    return [
        Finding(
            "queue.bounces",
            "warn",
            f"{len(disabled)} members disabled by bounces: {names}",
            "'clublist bounces show EMAIL' to see why; 'clublist member set EMAIL --enable' once fixed",
        )
    ]


def _span(seconds: float) -> str:
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} days"

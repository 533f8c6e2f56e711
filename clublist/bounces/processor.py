"""Mail to the bounce addresses: which member and list a DSN or VERP bounce is about.

``bounces@`` and VERP's ``bounces+TOKEN@`` are read by :class:`BounceProcessor`; the failures
the delivery worker saw itself arrive through :func:`delivery_evidence`.  Both end in
:mod:`clublist.bounces.score`.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import logging
import re
import sqlite3
import time
from collections.abc import Callable
from dataclasses import replace
from email.message import Message
from typing import TYPE_CHECKING

from clublist.bounces import dsn
from clublist.bounces.dsn import BounceEvidence
from clublist.bounces.matching import matching_copy
from clublist.bounces.score import (
    DAY,
    Failure,
    Recorded,
    disable_members,
    finish_disablings,
    pending_disablings,
    record_failures,
    reputation_alert,
)
from clublist.club.model import Member, Site, address_key
from clublist.club.store import Club, Store
from clublist.errors import ClublistError
from clublist.outbound import reports, sender_refusals, verp
from clublist.outbound.notices import queue_admin_notice
from clublist.state import queue
from clublist.state.db import Writer, is_transient

if TYPE_CHECKING:
    from clublist.mail.handler import CommitJob, Target

log = logging.getLogger(__name__)

_STATUS = re.compile(r"[245]\.\d{1,3}\.\d{1,3}")


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


# What the SMTP reply says for every bounce, whatever it was found to be: the reply must not tell
# a stranger whether an address is a member, of which list, or how close it is to being disabled.
RECEIVED = "bounce"


def _answered(about: str, job: Callable[[sqlite3.Connection], str]) -> CommitJob:
    """*job* with its note logged, answering only the neutral :data:`RECEIVED`."""

    def answered(conn: sqlite3.Connection) -> str:
        log.info("%s: %s", about, job(conn))
        return RECEIVED

    return answered


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

    async def process(
        self, club: Club, target: Target, sender: str, message: bytes, now: float, *, authenticated: bool
    ) -> CommitJob:
        """Read a bounce; the job records its evidence, alerts, or forwards it to the administrator.

        Bounces come from <>, so *authenticated* says nothing here: a bounce is believed only
        when it matches a delivery clublist made (VERP token or a recent delivery)."""
        msg = email.message_from_bytes(message, policy=email.policy.default)
        about = f"bounce to {target.address} from {sender or '<>'}"
        if dsn.is_auto_reply(msg):
            return _answered(about, lambda conn: "an auto-reply, not a bounce: ignored")
        failures, strangers = read_bounce(club, self.secret, target.address, msg, message)
        plain = verp_token(club.site, self.secret, target.address) is None
        site, loop = club.site, asyncio.get_running_loop()
        since = now - site.bounces.stale_after_days * DAY

        def job(conn: sqlite3.Connection) -> str:
            if not failures and not strangers:
                queue_id = _forward_to_admin(conn, site, message, target.address, now)
                return f"names no failed address; forwarded to the administrator as {queue_id}"
            notes: list[str] = []
            counted, others = failures, strangers
            if plain:  # anyone can write to the plain address: believe only what we sent
                counted, others = [], []
                for failure in failures:
                    copy = matching_copy(conn, failure.evidence.address, message, since)
                    if copy is None:
                        notes.append(f"{failure.evidence.address}: matches no recent delivery, ignored")
                    else:
                        counted.append(replace(failure, list_name=copy.list_name or failure.list_name))
                for evidence in strangers:
                    if matching_copy(conn, evidence.address, message, since) is None:
                        notes.append(f"{evidence.address}: matches no recent delivery, ignored")
                    else:
                        others.append(evidence)
            recorded = record_failures(conn, club, counted, now)
            notes += recorded.notes + [
                f"{e.kind} failure for {e.address}, who is no member: ignored" for e in others
            ]
            refused = [f.evidence for f in counted if f.evidence.kind == "content"]
            refused += [e for e in others if e.kind == "content"]
            # The administrator's own refusals are not worth an alert to that same mailbox.
            refused = [e for e in refused if address_key(e.address) != address_key(site.site.admin)]
            if refused:
                queue_admin_notice(conn, site, reputation_alert(site, refused, target.address), now)
                notes.append("reputation alert sent to the administrator")
            if recorded.disabling or self._behind:
                # The writer commits this batch before it runs the next job, so the
                # disabling (which starts with a writer job) sees this evidence.
                loop.call_soon_threadsafe(self._disable_soon)
            return "; ".join(notes)

        return _answered(about, job)

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
                    if sender_refusals.is_sending_refusal(row.reply):  # the club's sender, not the member
                        continue
                    failures.append(Failure(member, info.list_name, delivery_evidence(row), "delivery"))
                return record_failures(conn, club, failures, now)

            recorded = await asyncio.shield(self.writer.run(job))
            for note in recorded.notes:
                log.info("delivery %s", note)
            if recorded.disabling or self._behind:
                self._disable_soon()
        except Exception as exc:
            if not is_transient(exc):
                log.exception("could not count delivery failures as bounces")
            else:  # counting nobody is the safe side
                log.warning("state database: %s; these delivery failures are not counted as bounces", exc)

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
            except Exception as exc:
                self._behind = True
                if not is_transient(exc):
                    log.exception("could not disable members for bounces; trying again with the next bounce")
                else:
                    log.warning("state database: %s; members are disabled with the next bounce", exc)

    async def drain(self, timeout: float) -> None:
        """Let a disabling in progress finish (the daemon calls this before closing the database)."""
        if self._tasks:
            _done, pending = await asyncio.wait(list(self._tasks), timeout=timeout)
            for task in pending:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*pending)

"""Bounce scores on a real state database: who a bounce is about, how it counts, and disabling."""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import json
import logging
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import Runner
from module_club import copy_club, start_club

from clublist.actions import Actor
from clublist.actions.bounces import bounce_ls
from clublist.actions.lists import list_create
from clublist.actions.members import MemberChanges, member_add, member_set
from clublist.bounces import dsn as dsn_parser
from clublist.bounces import processor
from clublist.bounces import score as bounces
from clublist.bounces.processor import BounceProcessor
from clublist.bounces.score import BounceEvent
from clublist.cli import main
from clublist.cli.app import App
from clublist.club.model import BouncesSection
from clublist.club.store import Club, Store
from clublist.errors import ClublistError
from clublist.mail import handler as inbound
from clublist.outbound import verp
from clublist.state import db as state
from clublist.state import queue

BOUNCES = Path(__file__).parent / "bounces"
NOW = datetime(2026, 3, 9, 12, tzinfo=UTC).timestamp()
DAY = 24 * 3600
SENT_EARLIER = "the returned post, delivered before its bounce"
UNREADABLE = b"From: someone@example.com\r\nSubject: hello\r\n\r\nPlease call me back.\r\n"

YOUTH = [
    "anna@example.org",
    "jonas.weber@example.net",
    "lena.k@example.org",
    "nobody.here.42@gmail.com",
    "mia.fischer@yahoo.com",
    "karl@example.com",
    "ben@example.net",
    "sophie.lange@gmail.com",
    "max.hoffmann@gmail.com",
    "lisa.wolf@small-isp.example",
]
TRAINER = ["Bob.Miller@example.com", "felix.braun@contoso.com", "peter@slow-club.example"]


@pytest.fixture(scope="module")
def members_club(club_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The club every test starts from, built once: trainer and the members besides youth, and
    var/ with a migrated state database and the VERP secret."""
    root = tmp_path_factory.mktemp("bounces-club")
    store = start_club(club_template, root, "clublist.sqlite3")
    list_create(store, Actor.shell(), "trainer")
    for address in YOUTH:
        member_add(store, Actor.shell(), address, lists=("youth",))
    for address in TRAINER:
        member_add(store, Actor.shell(), address, lists=("trainer",))
    verp.load_secret(root / "var" / "clublist.sqlite3")
    return root


@pytest.fixture
def club_dir(members_club: Path, tmp_path: Path) -> Path:
    return copy_club(members_club, tmp_path)


@pytest.fixture
def club(store: Store) -> Store:
    """The addresses the sample bounces name are members (tom@nowhere.example, of exim's, is not)."""
    return store


@dataclass
class Queued:
    kind: str
    sender: str
    recipients: list[str]
    message: EmailMessage


class Box:
    """A BounceProcessor on a real state database, driven the way the daemon drives it."""

    def __init__(self, tmp_path: Path, store: Store) -> None:
        self.path = tmp_path / "var" / "clublist.sqlite3"
        self.store = store
        self.now = NOW
        self.loop = asyncio.new_event_loop()
        self.writer = state.Writer(self.path)
        self.conn = state.connect(self.path)
        self.secret = verp.load_secret(self.path)
        self.last_good = store.load()
        self.woken = 0  # how often the processor woke the delivery worker
        self.processor = self.new_processor()

    def new_processor(self) -> BounceProcessor:
        return BounceProcessor(
            writer=self.writer,
            store=self.store,
            club=self.club,
            secret=self.secret,
            on_queued=self.wake,
            clock=lambda: self.now,
        )

    def wake(self) -> None:
        self.woken += 1

    def club(self) -> Club:
        """lists.d as the daemon holds it: the last version that parsed."""
        with contextlib.suppress(ClublistError):
            self.last_good = self.store.load()
        return self.last_good

    def close(self) -> None:
        self.writer.close()
        self.conn.close()
        self.loop.close()

    def run(self, coroutine: object) -> object:
        async def and_settle() -> object:
            result = await coroutine  # type: ignore[misc]
            await self.processor.drain(10)
            return result

        return self.loop.run_until_complete(and_settle())

    def verp_address(self, list_name: str, recipient: str) -> str:
        return verp.bounce_address(self.secret, "bounces", "myclub.org", list_name, recipient)

    def bounce(
        self, raw: bytes, to: str = "bounces@myclub.org", sender: str = "", *, sent: bool = True
    ) -> str:
        """Mail to a bounce address, processed and committed as the listener does; the log note.

        With *sent*, the message the bounce returns was first delivered to the addresses it names
        (as for every genuine bounce), so a bounce to the plain address can match it.
        """
        if sent:
            self.deliver_returned(raw)
        club = self.club()
        target = inbound.route(club, to)
        assert isinstance(target, inbound.Target)
        notes: list[str] = []
        handler = logging.Handler()
        handler.emit = lambda record: notes.append(record.getMessage())  # type: ignore[method-assign]
        logger = logging.getLogger("clublist.bounces.processor")
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)

        async def process() -> str:
            job = await self.processor.process(club, target, sender, raw, self.now, authenticated=False)
            return await self.writer.run(job)

        try:
            assert self.run(process()) == processor.RECEIVED  # the same neutral reply for every bounce
        finally:
            logger.removeHandler(handler)
        return [n for n in notes if n.startswith("bounce to ")][-1].partition(": ")[2]

    def deliver_returned(self, raw: bytes) -> str:
        """Record the message a bounce returns (its last Message-ID of ours) as sent to whom it names."""
        ids = re.findall(rb"^Message-ID:\s*(<[^>]+@myclub\.org>)", raw, re.IGNORECASE | re.MULTILINE)
        addresses = [
            e.address
            for e in dsn_parser.parse_bounce(email.message_from_bytes(raw, policy=email.policy.default))
        ]
        if not ids or not addresses:
            return ""
        content = b"Message-ID: " + ids[-1] + b"\r\nSubject: Training\r\n\r\nSix o'clock.\r\n"
        with state.transaction(self.conn):
            queue_id = queue.enqueue(
                self.conn,
                kind="post",
                sender="bounces@myclub.org",
                recipients=addresses,
                content=content,
                now=self.now - 3600,
                subject=SENT_EARLIER,
            )
            self.conn.execute(
                "UPDATE deliveries SET status = 'sent', updated = ? WHERE message_id ="
                " (SELECT id FROM messages WHERE queue_id = ?)",
                (self.now - 3600, queue_id),
            )
        return queue_id

    def fail_deliveries(
        self,
        replies: dict[str, tuple[int | None, str]],
        *,
        kind: queue.Kind = "post",
        sender: str = "bounces@myclub.org",
    ) -> None:
        """The worker's failures: queue a message, fail its deliveries, hand them to the hook."""
        with state.transaction(self.conn):
            queue_id = queue.enqueue(
                self.conn,
                kind=kind,
                sender=sender,
                recipients=list(replies),
                content=b"Subject: Training\r\n\r\nSix o'clock.\r\n",
                now=self.now,
                list_name="youth" if kind == "post" else None,
            )
            rows = self.conn.execute(
                "SELECT d.id, d.recipient FROM deliveries d JOIN messages m ON m.id = d.message_id"
                " WHERE m.queue_id = ?",
                (queue_id,),
            ).fetchall()
            outcomes = [queue.Outcome(i, "failed", *replies[r], "mx.test") for i, r in rows]
            queue.record(self.conn, outcomes, self.now, queue.RetryPolicy())
            failed = [f for found in queue.take_unreported_failures(self.conn).values() for f in found]
        self.run(self.processor.delivery_failed(failed))

    def events(self, address: str) -> list[BounceEvent]:
        return bounces.events_of(self.conn, address)

    def score(self, address: str) -> float:
        return bounces.bounce_score(self.events(address), self.store.load().site.bounces, self.now)

    def queued(self, kind: str | None = None) -> list[Queued]:
        rows = self.conn.execute(
            "SELECT id, kind, sender, content FROM messages WHERE subject != ? ORDER BY id", (SENT_EARLIER,)
        ).fetchall()
        found = []
        for message_id, message_kind, sender, content in rows:
            recipients = [
                r[0]
                for r in self.conn.execute(
                    "SELECT recipient FROM deliveries WHERE message_id = ?", (message_id,)
                )
            ]
            message = email.message_from_bytes(bytes(content), policy=email.policy.default)
            found.append(Queued(message_kind, sender, recipients, message))  # type: ignore[arg-type]
        return [q for q in found if kind is None or q.kind == kind]

    def notices(self) -> list[Queued]:
        return [q for q in self.queued("notice")]


@pytest.fixture
def box(tmp_path: Path, club: Store) -> Iterator[Box]:
    harness = Box(tmp_path, club)
    yield harness
    harness.close()


def sample(name: str) -> bytes:
    return (BOUNCES / name).read_bytes()


# --- who a bounce is about ------------------------------------------------------------------------


def test_verp_only_bounce_without_a_report_counts_against_its_member_and_list(box: Box) -> None:
    note = box.bounce(UNREADABLE, to=box.verp_address("youth", "anna@example.org"))
    [event] = box.events("anna@example.org")
    assert (event.kind, event.list_name, event.source) == ("hard", "youth", "verp")
    assert box.score("anna@example.org") == 1.0
    assert "score 1.0" in note
    assert box.queued() == []


SAMPLES = {
    "postfix_user_unknown.eml": ("jonas.weber@example.net", "youth", "hard", "5.1.1"),
    "postfix_delayed.eml": ("peter@slow-club.example", "trainer", "soft", "4.4.1"),
    "postfix_mixed_recipients.eml": ("ben@example.net", "youth", "hard", "5.2.2"),
    "exim_permanent.eml": ("lena.k@example.org", "youth", "hard", "5.1.1"),
    "sendmail_user_unknown.eml": ("bob.miller@example.com", "trainer", "hard", "5.1.1"),
    "office365_recipient_not_found.eml": ("felix.braun@contoso.com", "trainer", "hard", "5.1.10"),
    "gmail_no_such_user.eml": ("nobody.here.42@gmail.com", "youth", "hard", "5.1.1"),
    "yahoo_no_account.eml": ("mia.fischer@yahoo.com", "youth", "hard", ""),
    "qmail_no_mailbox.eml": ("karl@example.com", "youth", "hard", "5.1.1"),
}


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_each_mtas_bounce_counts_against_the_right_member_and_list(box: Box, name: str) -> None:
    address, list_name, kind, status = SAMPLES[name]
    box.bounce(sample(name))
    counted = [(e.address, e.list_name, e.kind, e.status, e.source) for e in box.events(address)]
    assert counted == [(address, list_name, kind, status, "dsn")]
    assert box.score(address) == {"hard": 1.0, "soft": 0.5}[kind]
    assert box.queued() == []  # nothing for the administrator: the score is the record


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_through_verp_the_token_names_member_and_list_and_the_report_the_status(box: Box, name: str) -> None:
    address, list_name, kind, status = SAMPLES[name]
    box.bounce(sample(name), to=box.verp_address(list_name, address))
    counted = [(e.address, e.list_name, e.kind, e.status, e.source) for e in box.events(address)]
    assert counted == [(address, list_name, kind, status, "verp")]


def test_a_bounce_for_someone_who_is_no_member_changes_nothing(box: Box) -> None:
    raw = sample("postfix_user_unknown.eml").replace(b"jonas.weber@example.net", b"stranger@example.com")
    note = box.bounce(raw)
    assert "stranger@example.com, who is no member: ignored" in note
    assert box.conn.execute("SELECT COUNT(*) FROM bounce_events").fetchone()[0] == 0
    assert box.queued() == []


def test_exim_bounce_counts_the_member_and_passes_over_the_stranger(box: Box) -> None:
    note = box.bounce(sample("exim_permanent.eml"))
    assert "tom@nowhere.example, who is no member: ignored" in note
    assert box.events("tom@nowhere.example") == []
    assert box.score("lena.k@example.org") == 1.0


@pytest.mark.parametrize(
    "name",
    ["gmail_dmarc_5726.eml", "postfix_gmail_rate_4728.eml", "postfix_spamhaus_571.eml"],
)
def test_refused_content_is_not_counted_but_alerts_the_administrator(box: Box, name: str) -> None:
    box.bounce(sample(name))
    address = {
        "gmail_dmarc_5726.eml": "sophie.lange@gmail.com",
        "postfix_gmail_rate_4728.eml": "max.hoffmann@gmail.com",
        "postfix_spamhaus_571.eml": "lisa.wolf@small-isp.example",
    }[name]
    assert [e.kind for e in box.events(address)] == ["content"]  # kept as evidence ...
    assert box.score(address) == 0  # ... but never counted
    [alert] = box.notices()
    assert (
        alert.recipients == ["admin@myclub.org"] and alert.sender == ""
    )  # from <>: its own refusal can never loop
    assert alert.message["Subject"].startswith("Reputation alert: ")
    assert alert.message["Auto-Submitted"] == "auto-generated"
    assert address in alert.message.get_content()


def test_forged_verp_token_counts_for_nobody_and_goes_to_the_administrator(box: Box) -> None:
    genuine = box.verp_address("youth", "anna@example.org")
    forged = "bounces+0000000000" + genuine[genuine.index("=") :]
    box.bounce(UNREADABLE, to=forged)
    assert box.events("anna@example.org") == []
    [forward] = box.queued()
    assert (forward.kind, forward.sender, forward.recipients) == ("forward", "", ["admin@myclub.org"])


def test_forged_verp_token_cannot_turn_a_report_against_another_member(box: Box) -> None:
    genuine = box.verp_address("youth", "anna@example.org")
    forged = "bounces+0000000000" + genuine[genuine.index("=") :]
    box.bounce(sample("postfix_user_unknown.eml"), to=forged)
    assert box.events("anna@example.org") == []
    assert box.events("jonas.weber@example.net") == []  # a forged token's report counts for nobody


def test_vacation_auto_reply_to_a_verp_address_changes_nothing(box: Box) -> None:
    note = box.bounce(
        sample("vacation_auto_reply.eml"),
        to=box.verp_address("youth", "jonas.weber@example.net"),
        sender="jonas.weber@example.net",
    )
    assert "not a bounce" in note
    assert box.conn.execute("SELECT COUNT(*) FROM bounce_events").fetchone()[0] == 0
    assert box.queued() == []


def test_a_bounce_that_names_nobody_goes_to_the_administrator_unchanged(box: Box) -> None:
    note = box.bounce(UNREADABLE)
    assert "forwarded to the administrator" in note
    [forward] = box.queued()
    assert (forward.kind, forward.sender, forward.recipients) == ("forward", "", ["admin@myclub.org"])
    assert forward.message["X-Clublist-Bounce"].startswith("not attributed to a member")
    assert forward.message["Subject"] == "hello"
    assert forward.message.get_content().strip() == "Please call me back."


# --- the worker's own failures ---------------------------------------------------------------------


def test_delivery_failures_count_like_bounces(box: Box) -> None:
    box.fail_deliveries(
        {
            "anna@example.org": (550, "550 5.1.1 <anna@example.org>: User unknown"),
            "ben@example.net": (550, "550 5.7.26 Unauthenticated email is not accepted due to DMARC"),
            "karl@example.com": (None, "gave up after 9 tries; last: connection lost"),
            "mia.fischer@yahoo.com": (None, "5.1.2 example.invalid does not exist"),
        }
    )
    found = {a: [(e.kind, e.status, e.list_name, e.source) for e in box.events(a)] for a in YOUTH[:7]}
    assert found["anna@example.org"] == [("hard", "5.1.1", "youth", "delivery")]
    assert found["ben@example.net"] == [("content", "5.7.26", "youth", "delivery")]
    assert found["karl@example.com"] == [("soft", "4.4.7", "youth", "delivery")]
    assert found["mia.fischer@yahoo.com"] == [("hard", "5.1.2", "youth", "delivery")]
    assert box.score("ben@example.net") == 0
    assert box.notices() == []  # the worker's delivery report already told the administrator


@pytest.mark.parametrize(("kind", "sender"), [("report", ""), ("forward", "")])
def test_failures_of_reports_and_mail_from_the_null_sender_are_not_counted(
    box: Box, kind: queue.Kind, sender: str
) -> None:
    box.fail_deliveries({"anna@example.org": (550, "550 5.1.1 User unknown")}, kind=kind, sender=sender)
    assert box.events("anna@example.org") == []


def test_failures_of_notices_to_a_member_count(box: Box) -> None:
    box.fail_deliveries({"anna@example.org": (550, "550 5.1.1 User unknown")}, kind="notice")
    assert [(e.kind, e.list_name) for e in box.events("anna@example.org")] == [("hard", None)]


# --- the score --------------------------------------------------------------------------------------

SETTINGS = BouncesSection()


def event(kind: str, days_ago: float, number: int = 0) -> BounceEvent:
    created = NOW - days_ago * DAY
    day = datetime.fromtimestamp(created, UTC).strftime("%Y-%m-%d")
    return BounceEvent(number, "anna@example.org", "youth", day, kind, "", "", "dsn", created)


def test_each_day_counts_once_and_a_hard_failure_outweighs_soft_ones() -> None:
    same_day = [event("soft", 1), event("soft", 1.01), event("hard", 1.02), event("soft", 1.03)]
    assert bounces.bounce_score(same_day, SETTINGS, NOW) == 1.0
    assert bounces.bounce_score([event("soft", 1), event("soft", 1.01)], SETTINGS, NOW) == 0.5
    assert bounces.bounce_score([event("hard", 1), event("soft", 2), event("hard", 3)], SETTINGS, NOW) == 2.5


def test_stale_failures_no_longer_count() -> None:
    events = [event("hard", 9), event("hard", 8), event("hard", 6), event("soft", 0)]
    assert bounces.bounce_score(events, SETTINGS, NOW) == 1.5
    assert bounces.bounce_score(events, BouncesSection(stale_after_days=10), NOW) == 3.5


def test_content_refusals_and_failures_before_a_disabling_do_not_count() -> None:
    events = [event("hard", 3), event("hard", 2), event("disabled", 2), event("content", 1), event("soft", 0)]
    assert bounces.bounce_score(events, SETTINGS, NOW) == 0.5


def test_a_member_is_disabled_on_the_day_the_score_reaches_the_threshold(box: Box) -> None:
    address = box.verp_address("youth", "anna@example.org")
    start = NOW
    for day in range(4):
        box.now = start + day * DAY
        box.bounce(UNREADABLE, to=address)
        box.bounce(UNREADABLE, to=address)  # a second failure the same day adds nothing
    assert box.score("anna@example.org") == 4.0
    assert box.store.load().member("anna@example.org").receives
    box.now = start + 4 * DAY
    box.bounce(UNREADABLE, to=address)
    anna = box.store.load().member("anna@example.org")
    assert anna.delivery == "disabled"
    assert anna.disabled_reason == (
        "bounces: score 5.0 on 2026-03-13 (last: bounce to a VERP address without a report)"
    )


def test_failures_spread_thinner_than_the_stale_window_never_disable(box: Box) -> None:
    address = box.verp_address("youth", "anna@example.org")
    for day in range(0, 30, 2):  # every other day for a month: at most 4 days in any 7
        box.now = NOW + day * DAY
        box.bounce(UNREADABLE, to=address)
        assert box.score("anna@example.org") <= 4.0
    assert box.store.load().member("anna@example.org").receives


def dead_for_four_days(box: Box, addresses: list[str]) -> None:
    for day in range(4, 0, -1):
        box.now = NOW - day * DAY
        box.fail_deliveries({a: (550, f"550 5.1.1 <{a}>: User unknown") for a in addresses})


def test_a_round_that_reaches_the_threshold_disables_and_sends_one_summary(box: Box) -> None:
    dead = ["anna@example.org", "karl@example.com", "lena.k@example.org"]
    dead_for_four_days(box, dead)
    assert box.notices() == []
    box.now = NOW
    box.fail_deliveries({a: (550, f"550 5.1.1 <{a}>: User unknown") for a in dead})
    club = box.store.load()
    for address in dead:
        member = club.member(address)
        assert member.delivery == "disabled"
        assert member.disabled_reason == (
            f"bounces: score 5.0 on 2026-03-09 (last: 550 5.1.1 <{address}>: User unknown)"
        )
        assert box.events(address)[-1].kind == "disabled"
    [summary] = box.notices()
    assert box.woken == 1  # the summary leaves at once
    assert summary.recipients == ["admin@myclub.org"]
    assert summary.message["Subject"] == "Bounces: delivery disabled for 3 members"
    text = summary.message.get_content()
    assert all(address in text for address in dead)
    assert "clublist member set ADDRESS --enable" in text
    # Late failures of members already disabled bring no second summary.
    box.now = NOW + 3600
    box.fail_deliveries({a: (550, "550 5.1.1 User unknown") for a in dead})
    assert len(box.notices()) == 1


def test_a_member_brought_back_starts_from_zero(box: Box) -> None:
    dead_for_four_days(box, ["anna@example.org"])
    box.now = NOW
    box.fail_deliveries({"anna@example.org": (550, "550 5.1.1 User unknown")})
    assert not box.store.load().member("anna@example.org").receives
    member_set(box.store, Actor.shell(), "anna@example.org", MemberChanges(enable=True))
    assert box.score("anna@example.org") == 0
    box.now = NOW + DAY
    box.fail_deliveries({"anna@example.org": (550, "550 5.1.1 User unknown")})
    assert box.score("anna@example.org") == 1.0
    assert box.store.load().member("anna@example.org").receives


def test_a_disabling_decided_before_a_crash_is_carried_out_at_the_next_start(box: Box) -> None:
    dead_for_four_days(box, ["anna@example.org"])
    club = box.store.load()
    failure = bounces.Failure(
        club.member("anna@example.org"),
        "youth",
        processor.delivery_evidence(
            queue.FailedDelivery(0, 0, "anna@example.org", 550, "550 5.1.1 gone", "", NOW)
        ),
        "delivery",
    )
    with state.transaction(box.conn):  # committed, and then the process died
        assert bounces.record_failures(box.conn, club, [failure], NOW).disabling == ["anna@example.org"]
    assert box.store.load().member("anna@example.org").receives
    box.processor = box.new_processor()

    async def start() -> None:
        box.processor.start()

    box.run(start())
    assert not box.store.load().member("anna@example.org").receives
    assert len(box.notices()) == 1


def test_a_broken_members_file_keeps_the_disabling_for_the_next_round(box: Box) -> None:
    dead_for_four_days(box, ["anna@example.org"])
    members = box.store.path("members.toml")
    good = members.read_text()
    members.write_text(good + "\n[[member]\nemail = broken\n")
    box.now = NOW
    box.fail_deliveries({"anna@example.org": (550, "550 5.1.1 User unknown")})
    assert [e.kind for e in box.events("anna@example.org")][-1] == "disabling"
    members.write_text(good)

    async def start() -> None:
        box.processor.start()

    box.run(start())
    assert not box.store.load().member("anna@example.org").receives
    assert [e.kind for e in box.events("anna@example.org")][-1] == "disabled"


# --- the bounces commands -------------------------------------------------------------------------


def test_bounces_ls_show_and_reset(box: Box, cli: Runner) -> None:
    box.now = time.time()  # the commands count with the real clock
    box.bounce(sample("postfix_user_unknown.eml"))
    box.bounce(sample("postfix_delayed.eml"))
    box.bounce(sample("gmail_dmarc_5726.eml"))  # content only: no score, not listed
    at = ["--state", str(box.path)]
    listed = json.loads(cli(*at, "bounces", "ls", "--json").stdout)
    assert [(r["address"], r["score"], r["events"], r["delivery"]) for r in listed] == [
        ("jonas.weber@example.net", 1.0, 1, "enabled"),
        ("peter@slow-club.example", 0.5, 1, "enabled"),
    ]
    shown = json.loads(cli(*at, "bounces", "show", "JONAS.WEBER@example.net", "--json").stdout)
    assert shown["score"] == 1.0 and shown["threshold"] == 5.0
    [evidence] = shown["events"]
    assert evidence["status"] == "5.1.1" and evidence["list_name"] == "youth"
    assert evidence["source"] == "dsn" and evidence["created"].endswith("+00:00")
    table = cli(*at, "bounces", "ls").stdout
    assert "jonas.weber@example.net" in table and "peter@slow-club.example" in table
    assert "5.1.1" in cli(*at, "bounces", "show", "jonas.weber@example.net").stdout
    assert "forgot 1 bounce events" in cli(*at, "bounces", "reset", "jonas.weber@example.net").stdout
    assert [r["address"] for r in json.loads(cli(*at, "bounces", "ls", "--json").stdout)] == [
        "peter@slow-club.example"
    ]


def test_a_member_disabled_by_bounces_stays_listed(box: Box) -> None:
    dead_for_four_days(box, ["anna@example.org"])
    box.now = NOW
    box.fail_deliveries({"anna@example.org": (550, "550 5.1.1 User unknown")})
    [standing] = bounce_ls(box.conn, box.store.load(), Actor.shell(), NOW)
    assert (standing.address, standing.score, standing.delivery) == ("anna@example.org", 0.0, "disabled")


def test_only_the_administrator_sees_or_resets_bounce_scores_by_mail(box: Box, club_dir: Path) -> None:
    box.now = time.time()  # the commands count with the real clock
    box.bounce(UNREADABLE, to=box.verp_address("youth", "anna@example.org"))

    def by_mail(address: str, is_admin: bool, *args: str) -> tuple[int, str]:
        app = App(club_dir, box.path, actor=Actor(address, is_admin), by_mail=True)
        result = CliRunner().invoke(main, ["bounces", *args], obj=app)
        return result.exit_code, result.output

    for args in (["ls"], ["show", "anna@example.org"], ["reset", "anna@example.org"]):
        code, output = by_mail("anna@example.org", False, *args)
        assert code == 1 and "only the club's administrator" in output, args
    assert by_mail("admin@myclub.org", True, "ls")[1].startswith("address")
    assert box.score("anna@example.org") == 1.0


def dsn(
    recipient: str,
    status: str,
    diagnostic: str,
    *,
    message_id: str = "<t1@myclub.org>",
    envelope_id: str = "",
) -> bytes:
    """A minimal RFC 3464 report from a receiver that refused one recipient, with the post's headers."""
    per_message = f"Original-Envelope-Id: {envelope_id}\r\n" if envelope_id else ""
    returned = f"Message-ID: {message_id}\r\n" if message_id else ""
    return (
        "From: MAILER-DAEMON@mx.example\r\nTo: bounces@myclub.org\r\nSubject: Undelivered\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: text/plain\r\n\r\nRefused.\r\n"
        "--b\r\nContent-Type: message/delivery-status\r\n\r\n"
        f"Reporting-MTA: dns; mx.example\r\n{per_message}\r\n"
        f"Final-Recipient: rfc822; {recipient}\r\nAction: failed\r\nStatus: {status}\r\n"
        f"Diagnostic-Code: smtp; {status[0]}50 {status} {diagnostic}\r\n"
        f"--b\r\nContent-Type: text/rfc822-headers\r\n\r\n{returned}Subject: Training\r\n"
        "--b--\r\n"
    ).encode()


# --- a bounce to the plain address counts only for a delivery clublist made ---------------------------


def test_a_plain_bounce_for_an_address_nothing_was_delivered_to_counts_for_nobody(box: Box) -> None:
    note = box.bounce(sample("postfix_user_unknown.eml"), sent=False)
    assert "jonas.weber@example.net: matches no recent delivery, ignored" in note
    assert box.conn.execute("SELECT COUNT(*) FROM bounce_events").fetchone()[0] == 0
    assert box.queued() == []  # ignored: not even forwarded


def test_a_plain_bounce_must_name_the_message_delivered_to_that_address(box: Box) -> None:
    box.deliver_returned(dsn("anna@example.org", "5.1.1", "User unknown"))
    forged = dsn("anna@example.org", "5.1.1", "User unknown", message_id="<guessed@myclub.org>")
    assert "matches no recent delivery" in box.bounce(forged, sent=False)
    other = dsn("ben@example.net", "5.1.1", "User unknown")  # the right message, not sent to ben
    assert "matches no recent delivery" in box.bounce(other, sent=False)
    assert box.conn.execute("SELECT COUNT(*) FROM bounce_events").fetchone()[0] == 0


def test_a_plain_bounce_for_a_delivery_older_than_the_bounce_window_counts_for_nobody(box: Box) -> None:
    raw = dsn("anna@example.org", "5.1.1", "User unknown")
    box.deliver_returned(raw)
    box.now += 8 * DAY
    assert "matches no recent delivery" in box.bounce(raw, sent=False)
    assert box.events("anna@example.org") == []


def test_the_envelope_id_alone_matches_a_delivery(box: Box) -> None:
    queue_id = box.deliver_returned(dsn("anna@example.org", "5.1.1", "User unknown"))
    raw = dsn("anna@example.org", "5.1.1", "User unknown", message_id="", envelope_id=queue_id)
    box.bounce(raw, sent=False)
    assert [e.kind for e in box.events("anna@example.org")] == ["hard"]


@pytest.mark.parametrize(
    ("status", "diagnostic", "record"),
    [
        ("5.7.26", "Unauthenticated email from myclub.org is not accepted due to DMARC policy", "DMARC"),
        ("5.7.515", "Access denied, sending domain does not meet the required authentication level", "DKIM"),
        ("5.7.509", "Access denied, sending domain myclub.org does not pass DMARC verification", "DKIM"),
        ("4.7.40", "Your email has been rate limited because DMARC is not present", "_dmarc.myclub.org"),
        ("5.7.32", "Your email has been blocked because the sender is not aligned", "alignment"),
        ("5.7.1", "Message rejected: DKIM signature did not verify", "DKIM"),
    ],
)
def test_an_authentication_refusal_never_counts_and_the_alert_says_which_record_to_fix(
    box: Box, status: str, diagnostic: str, record: str
) -> None:
    box.bounce(dsn("anna@example.org", status, diagnostic))
    assert [e.kind for e in box.events("anna@example.org")] == ["content"]
    assert box.score("anna@example.org") == 0
    [alert] = box.notices()
    text = " ".join(alert.message.get_content().split())
    assert "to fix:" in text and record in text

"""The delivery worker against real SMTP servers and a real DNS responder on loopback."""

from __future__ import annotations

import asyncio
import email
import email.policy
import ssl
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path

import pytest
import trustme
from dnsserver import DNSServer
from mta import Behaviour, RemoteMTA

from clublist.club.model import DeliverySection, RetrySection, Site, SiteSection
from clublist.dns import resolver_for
from clublist.outbound import verp
from clublist.outbound.worker import DeliveryConfig, DeliveryWorker
from clublist.state import db as state
from clublist.state import queue

MESSAGE = (
    b"From: Anna <anna@example.org>\r\nTo: youth@myclub.org\r\nSubject: Training\r\n"
    b"Message-ID: <1@example.org>\r\n\r\nTraining is at six.\r\n"
)


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


class Harness:
    """A state database, a worker and its clock; enqueue and run passes."""

    def __init__(self, tmp_path: Path, site: Site) -> None:
        self.path = tmp_path / "var" / "clublist.sqlite3"
        self.site = site
        self.clock = Clock()
        self.conn = state.connect(self.path)

    def enqueue(self, recipients: list[str], **kwargs: object) -> str:
        with state.transaction(self.conn):
            return queue.enqueue(
                self.conn,
                kind=kwargs.pop("kind", "post"),
                sender=kwargs.pop("sender", "bounces@myclub.org"),
                recipients=recipients,
                content=kwargs.pop("content", MESSAGE),
                now=self.clock(),
                list_name="youth",
                **kwargs,
            )

    def run(self, passes: int = 1) -> None:
        async def main() -> None:
            writer = state.Writer(self.path)
            config = DeliveryConfig.from_site(self.site, self.path)
            worker = DeliveryWorker(writer, config, resolver_for(self.site), clock=self.clock)
            try:
                for _ in range(passes):
                    await worker.pass_once()
                await worker.drain(5)
            finally:
                writer.close()

        asyncio.run(main())

    def statuses(self) -> dict[str, str]:
        return {r.recipient: r.status for r in queue.rows(self.conn, status="all") if r.kind != "report"}

    def reports(self) -> list[email.message.EmailMessage]:
        found = self.conn.execute("SELECT content FROM messages WHERE kind = 'report'").fetchall()
        return [email.message_from_bytes(bytes(r[0]), policy=email.policy.default) for r in found]


def site_for(dns: DNSServer, port: int, **delivery: object) -> Site:
    settings = {"dns_servers": ["127.0.0.1"], "dns_port": dns.port, "smtp_port": port, "timeout": 2}
    return Site(
        site=SiteSection(domain="myclub.org", admin="admin@myclub.org"),
        delivery=DeliverySection(**(settings | delivery)),
        retry=RetrySection(schedule=[300, 600], give_up_after=3600),
    )


@pytest.fixture
def mta() -> Iterator[RemoteMTA]:
    with RemoteMTA() as server:
        yield server


def zone(domains: dict[str, str]) -> dict[tuple[str, str], list[str]]:
    """MX and A records sending each domain to the given loopback address."""
    records: dict[tuple[str, str], list[str]] = {}
    for domain, address in domains.items():
        records[(domain, "MX")] = [f"10 mx.{domain}."]
        records[(f"mx.{domain}", "A")] = [address]
    return records


def test_thousand_recipients_ten_domains_one_transaction_per_hundred(tmp_path: Path) -> None:
    domains = {f"d{i}.example": f"127.0.0.{i + 1}" for i in range(10)}
    with ExitStack() as stack:
        first = stack.enter_context(RemoteMTA(host="127.0.0.1"))
        servers = [first] + [
            stack.enter_context(RemoteMTA(host=f"127.0.0.{i + 1}", port=first.port)) for i in range(1, 10)
        ]
        dns = stack.enter_context(DNSServer(records=zone(domains)))
        harness = Harness(tmp_path, site_for(dns, first.port))
        recipients = [f"user{n}@d{n % 10}.example" for n in range(1000)]
        harness.enqueue(recipients)
        harness.run()
        assert set(harness.statuses().values()) == {"sent"}
        for index, server in enumerate(servers):
            assert len(server.transactions) == 1, index
            assert len(server.transactions[0].rcpt_tos) == 100
            assert server.delivered == {r for r in recipients if r.endswith(f"@d{index}.example")}


def test_transactions_are_capped_at_max_recipients(tmp_path: Path, mta: RemoteMTA) -> None:
    with DNSServer(records=zone({"example.org": "127.0.0.1"})) as dns:
        harness = Harness(tmp_path, site_for(dns, mta.port, max_recipients_per_transaction=40))
        harness.enqueue([f"u{n}@example.org" for n in range(100)])
        harness.run()
    assert sorted(len(t.rcpt_tos) for t in mta.transactions) == [20, 40, 40]


def test_temporary_failure_is_retried_after_backoff(tmp_path: Path) -> None:
    refused_once: set[str] = set()

    def rcpt(address: str) -> str | None:
        if address.startswith("grey") and address not in refused_once:
            refused_once.add(address)
            return "451 4.7.1 greylisted, try again later"
        return None

    with (
        RemoteMTA(behaviour=Behaviour(rcpt=rcpt)) as mta,
        DNSServer(records=zone({"example.org": "127.0.0.1"})) as dns,
    ):
        harness = Harness(tmp_path, site_for(dns, mta.port))
        harness.enqueue(["grey@example.org", "ok@example.org"])
        harness.run()
        assert harness.statuses() == {"grey@example.org": "deferred", "ok@example.org": "sent"}
        row = next(r for r in queue.rows(harness.conn) if r.recipient == "grey@example.org")
        assert row.last_code == 451 and "greylisted" in row.last_reply
        assert row.next_attempt == harness.clock.now + 300
        harness.run()  # not due yet
        assert harness.statuses()["grey@example.org"] == "deferred"
        harness.clock.now += 301
        harness.run()
        assert harness.statuses()["grey@example.org"] == "sent"
        assert mta.delivered == {"grey@example.org", "ok@example.org"}
        assert harness.reports() == []


def test_permanent_failure_is_reported_to_the_administrator(tmp_path: Path) -> None:
    def rcpt(address: str) -> str | None:
        return "550 5.1.1 <gone@example.org>: user unknown" if address.startswith("gone") else None

    with (
        RemoteMTA(behaviour=Behaviour(rcpt=rcpt)) as mta,
        DNSServer(records=zone({"example.org": "127.0.0.1"})) as dns,
    ):
        harness = Harness(tmp_path, site_for(dns, mta.port))
        harness.enqueue(["gone@example.org", "ok@example.org"])
        harness.run()
    assert harness.statuses() == {"gone@example.org": "failed", "ok@example.org": "sent"}
    (report,) = harness.reports()
    assert report["To"] == "admin@myclub.org"
    assert report["Auto-Submitted"] == "auto-generated"
    assert report.get_content_type() == "multipart/report"
    assert report.get_param("report-type") == "delivery-status"
    status = next(p for p in report.walk() if p.get_content_type() == "message/delivery-status")
    per_message, per_recipient = status.get_payload()
    assert per_message["Reporting-MTA"] == "dns; myclub.org"
    assert per_recipient["Final-Recipient"] == "rfc822; gone@example.org"
    assert per_recipient["Action"] == "failed"
    assert per_recipient["Status"] == "5.1.1"
    assert per_recipient["Remote-MTA"] == "dns; mx.example.org"
    assert "550 5.1.1" in per_recipient["Diagnostic-Code"]
    headers = next(p for p in report.walk() if p.get_content_type() == "text/rfc822-headers")
    assert "Subject: Training" in headers.get_content()
    sender = harness.conn.execute("SELECT sender FROM messages WHERE kind = 'report'").fetchone()[0]
    assert sender == ""


def test_hang_up_in_data_defers(tmp_path: Path) -> None:
    behaviour = Behaviour(data=lambda rcpts: "hangup")
    with RemoteMTA(behaviour=behaviour) as mta, DNSServer(records=zone({"example.org": "127.0.0.1"})) as dns:
        harness = Harness(tmp_path, site_for(dns, mta.port))
        harness.enqueue(["a@example.org", "b@example.org"])
        harness.run()
    assert harness.statuses() == {"a@example.org": "deferred", "b@example.org": "deferred"}
    assert all("connection lost" in r.last_reply for r in queue.rows(harness.conn))
    assert mta.transactions == []


def test_stalled_server_times_out_and_defers(tmp_path: Path) -> None:
    behaviour = Behaviour(data=lambda rcpts: "stall")
    with RemoteMTA(behaviour=behaviour) as mta, DNSServer(records=zone({"example.org": "127.0.0.1"})) as dns:
        harness = Harness(tmp_path, site_for(dns, mta.port, timeout=1))
        harness.enqueue(["a@example.org"])
        harness.run()
    (row,) = queue.rows(harness.conn)
    assert row.status == "deferred" and "timed out" in row.last_reply


def test_expired_delivery_fails_with_a_report(tmp_path: Path) -> None:
    behaviour = Behaviour(rcpt=lambda address: "452 4.2.2 mailbox full")
    with RemoteMTA(behaviour=behaviour) as mta, DNSServer(records=zone({"example.org": "127.0.0.1"})) as dns:
        harness = Harness(tmp_path, site_for(dns, mta.port))
        harness.enqueue(["full@example.org"])
        for _ in range(8):
            harness.run()
            harness.clock.now += 600
            if harness.statuses()["full@example.org"] == "failed":
                break
    assert harness.statuses() == {"full@example.org": "failed"}
    (row,) = queue.rows(harness.conn, status="failed")
    assert row.last_reply.startswith("gave up after")
    (report,) = harness.reports()
    status = next(p for p in report.walk() if p.get_content_type() == "message/delivery-status")
    per_recipient = status.get_payload()[1]
    assert per_recipient["Action"] == "failed"
    assert per_recipient["Status"] == "4.2.2"


@pytest.mark.parametrize(
    ("records", "status"),
    [
        ({("nomail.example", "MX"): ["0 ."]}, "5.1.10"),
        ({("other.example", "A"): ["127.0.0.1"]}, "5.1.2"),  # nomail.example does not exist
    ],
    ids=["null-mx", "nxdomain"],
)
def test_domains_that_take_no_mail_fail_at_once(tmp_path: Path, mta: RemoteMTA, records, status) -> None:
    with DNSServer(records=records) as dns:
        harness = Harness(tmp_path, site_for(dns, mta.port))
        harness.enqueue(["x@nomail.example"])
        harness.run()
    assert harness.statuses() == {"x@nomail.example": "failed"}
    (report,) = harness.reports()
    dsn = next(p for p in report.walk() if p.get_content_type() == "message/delivery-status")
    assert dsn.get_payload()[1]["Status"] == status


def test_dns_failure_is_temporary(tmp_path: Path, mta: RemoteMTA) -> None:
    with DNSServer(records={}, servfail={"broken.example"}) as dns:
        harness = Harness(tmp_path, site_for(dns, mta.port))
        harness.enqueue(["x@broken.example"])
        harness.run()
    assert harness.statuses() == {"x@broken.example": "deferred"}


def test_next_mx_is_tried_when_the_first_is_down(tmp_path: Path, mta: RemoteMTA) -> None:
    records = {
        ("example.org", "MX"): ["10 mx1.example.org.", "20 mx2.example.org."],
        ("mx1.example.org", "A"): ["127.0.0.9"],  # nothing listens there
        ("mx2.example.org", "A"): ["127.0.0.1"],
    }
    with DNSServer(records=records) as dns:
        harness = Harness(tmp_path, site_for(dns, mta.port))
        harness.enqueue(["a@example.org"])
        harness.run()
    assert harness.statuses() == {"a@example.org": "sent"}


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def tls_server_context(ca: trustme.CA, name: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(name).configure_cert(context)
    return context


def test_verified_tls_where_required(tmp_path: Path, ca: trustme.CA) -> None:
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    context = tls_server_context(ca, "mx.example.org")
    with (
        RemoteMTA(tls_context=context, require_starttls=True) as mta,
        DNSServer(records=zone({"example.org": "127.0.0.1"})) as dns,
    ):
        harness = Harness(
            tmp_path, site_for(dns, mta.port, tls_verify_domains=["example.org"], tls_ca_file=str(ca_file))
        )
        harness.enqueue(["a@example.org"])
        harness.run()
    assert harness.statuses() == {"a@example.org": "sent"}
    assert mta.transactions[0].tls


def test_required_tls_absent_defers(tmp_path: Path, mta: RemoteMTA) -> None:
    with DNSServer(records=zone({"example.org": "127.0.0.1"})) as dns:
        harness = Harness(tmp_path, site_for(dns, mta.port, tls_verify_domains=["example.org"]))
        harness.enqueue(["a@example.org"])
        harness.run()
    (row,) = queue.rows(harness.conn)
    assert row.status == "deferred" and "STARTTLS" in row.last_reply
    assert mta.transactions == []


def test_opportunistic_tls_accepts_an_untrusted_certificate(tmp_path: Path) -> None:
    untrusted = trustme.CA()
    context = tls_server_context(untrusted, "mx.example.org")
    with RemoteMTA(tls_context=context) as mta, DNSServer(records=zone({"example.org": "127.0.0.1"})) as dns:
        harness = Harness(tmp_path, site_for(dns, mta.port))
        harness.enqueue(["a@example.org"])
        harness.run()
    assert harness.statuses() == {"a@example.org": "sent"}
    assert mta.transactions[0].tls


UTF8_MESSAGE = (
    "From: Jürgen Müller <juergen@example.org>\r\nTo: youth@myclub.org\r\nSubject: Grüße\r\n"
    "Message-ID: <u@example.org>\r\n\r\nBis später.\r\n"
).encode()


def test_utf8_headers_go_with_smtputf8_where_the_server_offers_it(tmp_path: Path) -> None:
    with RemoteMTA(smtputf8=True) as mta, DNSServer(records={}) as dns:
        harness = Harness(tmp_path, site_for(dns, 1, mode="smarthost", smarthost=f"127.0.0.1:{mta.port}"))
        harness.enqueue(["a@example.org"], content=UTF8_MESSAGE)
        harness.run()
    assert harness.statuses() == {"a@example.org": "sent"}
    [transaction] = mta.transactions
    assert "SMTPUTF8" in transaction.mail_options
    assert transaction.content == UTF8_MESSAGE


def test_the_first_transaction_after_starttls_uses_what_the_server_offers_over_tls(
    tmp_path: Path, ca: trustme.CA
) -> None:
    """STARTTLS forgets the EHLO answer (RFC 3207 4.2): without a new EHLO, the fresh TLS
    connection's first transaction would see no SMTPUTF8 and fail a UTF-8 post for good."""
    context = tls_server_context(ca, "mx.example.org")
    with RemoteMTA(tls_context=context, smtputf8=True) as mta, DNSServer(records={}) as dns:
        harness = Harness(tmp_path, site_for(dns, 1, mode="smarthost", smarthost=f"127.0.0.1:{mta.port}"))
        harness.enqueue(["a@example.org"], content=UTF8_MESSAGE)
        harness.run()
    assert harness.statuses() == {"a@example.org": "sent"}
    [transaction] = mta.transactions
    assert transaction.tls and "SMTPUTF8" in transaction.mail_options


def test_utf8_headers_fail_for_good_and_are_reported_where_smtputf8_is_not_offered(
    tmp_path: Path, mta: RemoteMTA
) -> None:
    with DNSServer(records={}) as dns:
        harness = Harness(tmp_path, site_for(dns, 1, mode="smarthost", smarthost=f"127.0.0.1:{mta.port}"))
        harness.enqueue(["a@example.org"], content=UTF8_MESSAGE)
        harness.enqueue(["b@example.org"])  # plain ASCII still goes
        harness.run()
    assert harness.statuses() == {"a@example.org": "failed", "b@example.org": "sent"}
    assert [t.rcpt_tos for t in mta.transactions] == [["b@example.org"]]
    (report,) = harness.reports()
    status = next(p for p in report.walk() if p.get_content_type() == "message/delivery-status")
    per_recipient = status.get_payload()[1]
    assert per_recipient["Status"] == "5.6.7"
    assert "SMTPUTF8" in per_recipient["Diagnostic-Code"]


def test_smarthost_takes_every_domain(tmp_path: Path, mta: RemoteMTA) -> None:
    with DNSServer(records={}) as dns:
        site = site_for(dns, 1, mode="smarthost", smarthost=f"127.0.0.1:{mta.port}")
        harness = Harness(tmp_path, site)
        harness.enqueue(["a@one.example", "b@two.example", "c@three.example"])
        harness.run()
    assert harness.statuses() == dict.fromkeys(["a@one.example", "b@two.example", "c@three.example"], "sent")
    assert len(mta.transactions) == 1


def test_verp_gives_each_recipient_its_own_signed_bounce_address(tmp_path: Path, mta: RemoteMTA) -> None:
    with DNSServer(records=zone({"example.org": "127.0.0.1"})) as dns:
        harness = Harness(tmp_path, site_for(dns, mta.port))
        harness.enqueue(["Anna@example.org", "ben@example.org"], verp=True)
        harness.run()
    secret = verp.load_secret(harness.path)
    senders = {t.rcpt_tos[0]: t.mail_from for t in mta.transactions}
    assert len(mta.transactions) == 2
    for recipient, sender in senders.items():
        local, _, domain = sender.partition("@")
        assert domain == "myclub.org"
        token = verp.decode(secret, local, "bounces")
        assert token == verp.VerpToken("youth", recipient.lower())
    forged = senders["ben@example.org"].split("@")[0].replace("ben", "bob")
    assert verp.decode(secret, forged, "bounces") is None


def test_rows_in_flight_at_a_crash_are_due_again(tmp_path: Path, mta: RemoteMTA) -> None:
    with DNSServer(records=zone({"example.org": "127.0.0.1"})) as dns:
        harness = Harness(tmp_path, site_for(dns, mta.port))
        harness.enqueue(["a@example.org"])
        with state.transaction(harness.conn):
            claimed = queue.claim(harness.conn, harness.clock(), limit=10, lease=3600)
        assert [d.recipient for d in claimed] == ["a@example.org"]
        harness.run()  # a fresh worker recovers the leased row at start
        assert harness.statuses() == {"a@example.org": "inflight"}

        async def start() -> None:
            writer = state.Writer(harness.path)
            worker = DeliveryWorker(
                writer,
                DeliveryConfig.from_site(harness.site, harness.path),
                resolver_for(harness.site),
                clock=harness.clock,
            )
            stop = asyncio.Event()
            task = asyncio.create_task(worker.run(stop))
            await asyncio.to_thread(mta.wait_for, lambda m: "a@example.org" in m.delivered, 10)
            stop.set()
            await task
            await worker.drain(5)
            writer.close()

        asyncio.run(start())
    assert harness.statuses() == {"a@example.org": "sent"}


def test_retry_policy_repeats_its_last_step() -> None:
    policy = queue.RetryPolicy((300, 600, 1200))
    assert [policy.delay(n) for n in range(1, 6)] == [300, 600, 1200, 1200, 1200]
    assert replace(policy, schedule=(60,)).delay(9) == 60

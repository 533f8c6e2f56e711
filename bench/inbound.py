"""Inbound: messages per second that ``clublist run`` accepts (250 after its commit).

Clients: C threads in this process (default 4), each with its own smtplib
connection (connected and EHLO'd before the clock starts, synchronised on
a barrier), each sending M messages (default 250) one after another (MAIL
FROM, RCPT TO, DATA) and requiring 250 for every one; a client reconnects
after every 100 messages, because clublist's listener allows 200 MAIL
commands per session.  The time is from the barrier's release to the last
250 of the last client; rate = C x M / time.

clublist: a club with a list ``youth`` of 3 members (posting.daily_limit = 0)
and 100 more with delivery disabled who write the posts in turn (From; the
envelope sender is one of the 3), each post a distinct message (own
Message-ID and Subject) of about 3.7 KB; the daemon delivers to the lean sink as
smarthost, so delivery runs as in production but only acceptance is timed.
Between repetitions the bench waits until the queue has drained.

Baseline, same run, same client code and messages, alternating with
clublist's repetitions: ``bench/sink.py`` in its own process (aiosmtpd;
RCPT and DATA answer 250 at once, nothing is stored or parsed).

For information: the CPU time per message of each process during the
burst (from /proc), and (``--isolate``, on by default) clublist once more
with its smarthost hung (the sink accepts TCP but never greets), so the
worker sends nothing and the figure is acceptance alone.

The posts above come from a trusted network (listen.trusted_networks), so
clublist checks no SPF, DKIM or DMARC: the figure of earlier versions.
``--verify`` (on by default) runs one more daemon, whose resolver is the
tests' loopback DNS responder (tests/dnsserver.py), and alternates bursts
of the same posts from a trusted network (127.0.0.2) with bursts of them
DKIM-signed by the author's domain from an untrusted client (key made
here, p=reject, an SPF record that fails the client), after a warm-up that
fills the DNS cache; the difference in time and in the daemon's CPU per
message is the cost of verification.
"""

from __future__ import annotations

import functools
import smtplib
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import make_msgid
from pathlib import Path

from benchlib import (
    DAEMON_ACTIVITIES,
    DOMAIN,
    LOOPBACK,
    MEMBER_DOMAIN,
    Club,
    DaemonProcess,
    PySpy,
    SinkProcess,
    argument_parser,
    cpu_delta,
    fmt_times,
    make_club,
    make_post,
    median,
    proc_cpu,
    proc_memory,
    profile_activities,
    say,
    summarize_profile,
    temporary_root,
    write_json,
)
from fanout import wait_settled

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from authkeys import DKIMKey, domain_records  # the tests' keys and loopback DNS responder
from dnsserver import DNSServer

LIST_SIZE = 3
LIST_ADDRESS = f"youth@{DOMAIN}"
# clublist's listener allows 200 MAIL commands per session (aiosmtpd command_call_limit=200).
PER_CONNECTION = 100
# The posts' authors, round robin: a club's mail comes from many members, and one author sending
# thousands an hour is what the hourly limit brakes (its count costs a step per post counted).
AUTHORS = 100
TRUSTED_SOURCE = "127.0.0.2"  # the verification run's trusted network (Linux routes all of 127/8 to lo)


@dataclass
class Burst:
    seconds: float
    messages: int
    refused: list[str] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds during the burst, by process

    @property
    def rate(self) -> float:
        return self.messages / self.seconds

    def cpu_ms_per_message(self, process: str) -> float:
        return self.cpu.get(process, 0.0) * 1000 / max(1, self.messages)

    def cpu_text(self) -> str:
        return ", ".join(f"{name} {self.cpu_ms_per_message(name):.2f}" for name in self.cpu)


def connect(port: int, timeout: float, source: str = "") -> smtplib.SMTP:
    source_address = (source, 0) if source else None
    client = smtplib.SMTP(
        LOOPBACK, port, local_hostname="client.bench", timeout=timeout, source_address=source_address
    )
    client.ehlo()
    return client


def close(client: smtplib.SMTP) -> None:
    try:
        client.quit()
    except smtplib.SMTPException:
        client.close()


def burst(
    port: int,
    batches: list[list[bytes]],
    *,
    sender: str,
    timeout: float,
    per_connection: int = PER_CONNECTION,
    watch: dict[str, int] | None = None,
    source: str = "",
) -> Burst:
    """Each client sends its batch over its own connection; time from the barrier to the last 250.

    A client opens a new connection after *per_connection* messages (the
    first one is opened before the clock starts).  *watch* names processes
    (name -> pid) whose CPU time during the burst is recorded; "client" is
    this process.  *source* is the clients' own address (127.0.0.2 for a trusted network).
    """
    clients = [connect(port, timeout, source) for _ in batches]
    barrier = threading.Barrier(len(clients) + 1, timeout=timeout)
    refused: list[str] = []
    lock = threading.Lock()

    def send(client: smtplib.SMTP, messages: list[bytes]) -> None:
        barrier.wait()
        for i, message in enumerate(messages):
            if i and i % per_connection == 0:
                close(client)
                client = connect(port, timeout, source)
            try:
                client.sendmail(sender, [LIST_ADDRESS], message)
            except smtplib.SMTPException as exc:
                with lock:
                    refused.append(str(exc))
                close(client)
                client = connect(port, timeout, source)
        close(client)

    threads = [
        threading.Thread(target=send, args=(client, batch), daemon=True)
        for client, batch in zip(clients, batches, strict=True)
    ]
    for thread in threads:
        thread.start()
    watch = watch or {}
    barrier.wait()
    start = time.monotonic()
    cpu_before = {name: proc_cpu(pid) for name, pid in watch.items()}
    client_before = time.process_time()
    for thread in threads:
        thread.join(timeout)
    elapsed = time.monotonic() - start
    cpu: dict[str, float] = {}
    for name, pid in watch.items():
        used = cpu_delta(cpu_before[name], proc_cpu(pid))
        cpu[name] = used["total"]
        if used["threads"] > 0.0:
            cpu[f"{name} main thread"] = used["main"]
    if watch:
        cpu["client"] = time.process_time() - client_before
    if any(thread.is_alive() for thread in threads):
        raise RuntimeError(f"clients did not finish within {timeout} s")
    return Burst(elapsed, sum(len(b) for b in batches) - len(refused), refused, cpu)


def author(n: int) -> str:
    """The author of the *n*-th post of a burst: one of AUTHORS, round robin."""
    return f"author{n % AUTHORS:03d}@{MEMBER_DOMAIN}"


def inbound_club(root: Path, settings: dict[str, str]) -> Club:
    """List youth of LIST_SIZE members, and the AUTHORS on it with delivery disabled (they write
    the posts, so each post still goes to LIST_SIZE recipients)."""
    from clublist.actions import Actor
    from clublist.actions.roster import member_import
    from clublist.club.store import Store

    club = make_club(root, {"youth": LIST_SIZE}, settings=settings)
    rows = ["email,name,lists,delivery"] + [f"{author(n)},Author {n},youth,disabled" for n in range(AUTHORS)]
    member_import(Store(club.directory), Actor.shell(), "\n".join(rows) + "\n")
    return club


def messages_for(clients: int, per_client: int, rep: int) -> list[list[bytes]]:
    """Distinct posts (own Message-ID and subject, authors round robin), built before the clock starts."""
    batches = []
    for c in range(clients):
        batch = []
        for i in range(per_client):
            post = make_post(author(c * per_client + i), LIST_ADDRESS, subject=f"Inbound {rep}.{c}.{i}")
            msgid = make_msgid(domain=MEMBER_DOMAIN).encode()
            batch.append(post.replace(b"Message-ID: <", b"Message-ID: <" + msgid[1:-1] + b".", 1))
        batches.append(batch)
    return batches


def cpu_medians(runs: list[Burst]) -> dict[str, float]:
    return {name: median([r.cpu_ms_per_message(name) for r in runs]) for name in runs[0].cpu}


def show_refusals(run: Burst) -> None:
    for refusal in run.refused[:3]:
        say(f"    refused: {refusal}")


def isolated(
    root: Path,
    reps: int,
    send: Callable[..., Burst],
    batches: Callable[[int], list[list[bytes]]],
    profile: Path | None,
) -> list[Burst]:
    """clublist with its smarthost hung: nothing is delivered while it accepts."""
    runs: list[Burst] = []
    with SinkProcess(mode="stall") as stalled:
        club = inbound_club(root / "isolated", {"posting.daily_limit": "0"})
        with DaemonProcess(club, smarthost=f"{LOOPBACK}:{stalled.port}") as daemon:
            send(daemon.port, batches(-2), sender=club.author)  # warm-up
            for rep in range(reps):
                spy = profile.with_suffix(f".isolated.{rep}.txt") if profile else None
                with PySpy(daemon.pid, spy):
                    run = send(
                        daemon.port, batches(100 + rep), sender=club.author, watch={"daemon": daemon.pid}
                    )
                runs.append(run)
                say(
                    f"  isolated rep {rep + 1}, delivery hung: {run.messages} in {run.seconds:.3f} s;"
                    f" {run.rate:,.0f} msg/s; CPU ms/msg: {run.cpu_text()}"
                )
                show_refusals(run)
            stalled.command("drop")  # the worker's connections fail now, so the daemon stops at once
    return runs


def verified(
    root: Path, reps: int, send: Callable[..., Burst], batches: Callable[[int], list[list[bytes]]]
) -> tuple[list[Burst], list[Burst]]:
    """One daemon, alternating: posts from a trusted network (127.0.0.2, nothing checked) and
    DKIM-signed posts from an untrusted client (SPF, every DKIM signature and DMARC checked),
    the DNS cache warm.  Returns (trusted runs, verified runs)."""
    key = DKIMKey.generate()
    records = domain_records(MEMBER_DOMAIN, spf="v=spf1 -all", dmarc="v=DMARC1; p=reject", key=key)

    def signed(rep: int) -> list[list[bytes]]:
        return [[key.sign(message, MEMBER_DOMAIN) for message in batch] for batch in batches(rep)]

    trusted_runs: list[Burst] = []
    verified_runs: list[Burst] = []
    with DNSServer(records) as dns, SinkProcess() as sink:
        settings = {
            "posting.daily_limit": "0",
            "listen.trusted_networks": TRUSTED_SOURCE,
            "delivery.dns_servers": LOOPBACK,
            "delivery.dns_port": str(dns.port),
        }
        club = inbound_club(root / "verified", settings)
        with DaemonProcess(club, smarthost=f"{LOOPBACK}:{sink.port}") as daemon:
            warm = send(daemon.port, signed(-3), sender=club.author)  # also fills the DNS cache
            send(daemon.port, batches(-4), sender=club.author, source=TRUSTED_SOURCE)
            if warm.refused:
                raise RuntimeError(f"verified posts were refused: {warm.refused[:3]}")
            accepted = 2 * warm.messages
            wait_settled(club.state, accepted * LIST_SIZE, 300)
            watch = {"daemon": daemon.pid}
            for rep in range(reps):
                plain, checked = batches(200 + rep), signed(300 + rep)
                trusted = send(daemon.port, plain, sender=club.author, watch=watch, source=TRUSTED_SOURCE)
                accepted += trusted.messages
                wait_settled(club.state, accepted * LIST_SIZE, 300)
                run = send(daemon.port, checked, sender=club.author, watch=watch)
                accepted += run.messages
                wait_settled(club.state, accepted * LIST_SIZE, 300)
                trusted_runs.append(trusted)
                verified_runs.append(run)
                say(
                    f"  verified rep {rep + 1}: trusted {trusted.rate:,.0f} msg/s, CPU ms/msg"
                    f" {trusted.cpu_text()}; verified {run.rate:,.0f} msg/s, CPU ms/msg {run.cpu_text()}"
                )
                show_refusals(run)
    return trusted_runs, verified_runs


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--messages", type=int, default=250, help="per client")
    parser.add_argument("--per-connection", type=int, default=PER_CONNECTION, help="messages per connection")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument(
        "--no-isolate", dest="isolate", action="store_false", help="skip the hung-smarthost run"
    )
    parser.add_argument(
        "--no-verify", dest="verify", action="store_false", help="skip the run that checks SPF/DKIM/DMARC"
    )
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument(
        "--profile", type=Path, help="py-spy the daemon during clublist's runs into files named so"
    )
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args()

    total = args.clients * args.messages
    clublist_runs: list[Burst] = []
    bare_runs: list[Burst] = []
    isolated_runs: list[Burst] = []
    verified_runs: list[Burst] = []
    trusted_runs: list[Burst] = []
    send = functools.partial(burst, timeout=args.timeout, per_connection=args.per_connection)
    with temporary_root("inbound") as root, SinkProcess() as delivery_sink, SinkProcess() as bare_sink:
        club = inbound_club(root, {"posting.daily_limit": "0"})

        def batches(rep: int) -> list[list[bytes]]:
            return messages_for(args.clients, args.messages, rep)

        with DaemonProcess(club, smarthost=f"{LOOPBACK}:{delivery_sink.port}") as daemon:
            # Untimed warm-ups of both.
            warm = messages_for(2, 10, -1)
            send(daemon.port, warm, sender=club.author)
            send(bare_sink.port, warm, sender=club.author)
            accepted = 20
            wait_settled(club.state, accepted * LIST_SIZE, args.timeout)
            watch = {"daemon": daemon.pid, "delivery sink": delivery_sink.pid}
            for rep in range(args.reps):
                messages = batches(rep)
                bare_runs.append(
                    send(bare_sink.port, messages, sender=club.author, watch={"sink": bare_sink.pid})
                )
                profile = args.profile.with_suffix(f".{rep}.txt") if args.profile else None
                with PySpy(daemon.pid, profile):
                    clublist_runs.append(send(daemon.port, messages, sender=club.author, watch=watch))
                accepted += clublist_runs[-1].messages
                wait_settled(club.state, accepted * LIST_SIZE, args.timeout)
                c, b = clublist_runs[-1], bare_runs[-1]
                say(
                    f"  rep {rep + 1}: clublist {c.messages} in {c.seconds:.3f} s = {c.rate:,.0f} msg/s"
                    f" ({len(c.refused)} refused); bare sink {b.messages} in {b.seconds:.3f} s"
                    f" = {b.rate:,.0f} msg/s"
                )
                say(f"    CPU ms per message: clublist: {c.cpu_text()}; bare: {b.cpu_text()}")
                show_refusals(c)
            memory = proc_memory(daemon.pid)
            errors = daemon.errors()
            if errors:
                say("  daemon errors:\n    " + "\n    ".join(errors[:10]))
        if args.profile:
            first = args.profile.with_suffix(".0.txt")
            say(f"py-spy profile of the daemon during clublist's first run ({first}):")
            say(profile_activities(first, DAEMON_ACTIVITIES))
            say(summarize_profile(first))
        if args.verify:
            trusted_runs, verified_runs = verified(root, args.reps, send, batches)
        if args.isolate:
            isolated_runs = isolated(root, args.reps, send, batches, args.profile)
            if args.profile:
                first = args.profile.with_suffix(".isolated.0.txt")
                say(f"py-spy profile of the daemon, delivery hung, first run ({first}):")
                say(profile_activities(first, DAEMON_ACTIVITIES))

    clublist_rate = median([r.rate for r in clublist_runs])
    bare_rate = median([r.rate for r in bare_runs])
    say(f"Inbound: {args.clients} clients x {args.messages} messages = {total} per run")
    say(f"  clublist  : {fmt_times([r.seconds for r in clublist_runs])} s; median {clublist_rate:,.0f} msg/s")
    say(f"  bare sink : {fmt_times([r.seconds for r in bare_runs])} s; median {bare_rate:,.0f} msg/s")
    say(f"  ratio     : clublist/bare {clublist_rate / bare_rate:.2f}x")
    say(
        "  info      : CPU ms per message (median): clublist "
        + ", ".join(f"{k} {v:.2f}" for k, v in cpu_medians(clublist_runs).items())
        + "; bare "
        + ", ".join(f"{k} {v:.2f}" for k, v in cpu_medians(bare_runs).items())
    )
    figures: dict[str, object] = {
        "clients": args.clients,
        "messages_per_client": args.messages,
        "clublist_seconds": [r.seconds for r in clublist_runs],
        "baseline_seconds": [r.seconds for r in bare_runs],
        "clublist_refused": sum(len(r.refused) for r in clublist_runs),
        "clublist_rate": clublist_rate,
        "baseline_rate": bare_rate,
        "rate_ratio": clublist_rate / bare_rate,
        "clublist_cpu_ms_per_message": cpu_medians(clublist_runs),
        "baseline_cpu_ms_per_message": cpu_medians(bare_runs),
        "daemon_rss_mb": memory["VmRSS"],
        "daemon_hwm_mb": memory["VmHWM"],
    }
    if isolated_runs:
        isolated_rate = median([r.rate for r in isolated_runs])
        say(
            f"  info      : delivery hung: {fmt_times([r.seconds for r in isolated_runs])} s;"
            f" median {isolated_rate:,.0f} msg/s = {isolated_rate / bare_rate:.2f}x the bare sink"
        )
        figures.update(
            isolated_seconds=[r.seconds for r in isolated_runs],
            isolated_rate=isolated_rate,
            isolated_ratio=isolated_rate / bare_rate,
            isolated_cpu_ms_per_message=cpu_medians(isolated_runs),
        )
    if verified_runs:
        trusted_rate = median([r.rate for r in trusted_runs])
        verified_rate = median([r.rate for r in verified_runs])
        trusted_cpu = cpu_medians(trusted_runs).get("daemon", 0.0)
        verified_cpu = cpu_medians(verified_runs).get("daemon", 0.0)
        cost_ms = 1000 / verified_rate - 1000 / trusted_rate
        say(
            f"  verified  : SPF+DKIM+DMARC, DNS cached: {fmt_times([r.seconds for r in verified_runs])} s;"
            f" median {verified_rate:,.0f} msg/s vs {trusted_rate:,.0f} msg/s trusted (same daemon);"
            f" {cost_ms:+.2f} ms per post; daemon CPU {verified_cpu:.2f} vs {trusted_cpu:.2f} ms/msg"
            f" ({verified_cpu - trusted_cpu:+.2f})"
        )
        figures.update(
            verified_seconds=[r.seconds for r in verified_runs],
            verified_trusted_seconds=[r.seconds for r in trusted_runs],
            verified_rate=verified_rate,
            verified_trusted_rate=trusted_rate,
            verified_cost_ms_per_post=cost_ms,
            verified_cpu_ms_per_message=cpu_medians(verified_runs),
            verified_trusted_cpu_ms_per_message=cpu_medians(trusted_runs),
        )
    say(f"  daemon    : VmRSS {memory['VmRSS']:.1f} MB, VmHWM {memory['VmHWM']:.1f} MB")
    write_json(args.json, {"inbound": figures})


if __name__ == "__main__":
    main()

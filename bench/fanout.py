"""Fan-out: one post to a list of N members, from the SMTP send until the sink has all N.

For each N a fresh club is made (a list ``big`` of N members at example.org
and a list ``warm`` of 10), ``clublist run`` is started in smarthost mode
towards the lean sink (``bench/sink.py``, its own process), and, after one
untimed warm-up post to ``warm``, each repetition injects ONE post from a
member with smtplib and times it from just before the SMTP connection to
the moment the sink has accepted the N-th recipient (the sink stamps that
moment with CLOCK_MONOTONIC, which this process shares).  Before the next
measurement the bench waits until the state database shows every delivery
``sent``.

The baseline, measured in the same run against the same sink and
alternating with clublist's repetitions: a bare aiosmtplib loop in this
process that opens ONE connection (EHLO, no TLS) and sends the message
clublist delivered (its exact decorated bytes, saved by the sink) to the
same N recipients, in sequential transactions of 100 RCPTs (MAIL FROM,
100 x RCPT TO, DATA), then QUIT; timed the same way.

The second baseline, measured the same way in every repetition: the same
bare loop spread over ``--parallel`` connections (default 20, the same
parallelism clublist uses: its default per_destination_concurrency), which
shares the transactions out as clublist does; target: clublist's time at
most 1.0x of it for 1,000 and 10,000, signing off and on.  A ratio
against a loop that uses one core assumes a second core is idle for the
sink: on a loaded machine clublist (which needs the daemon and the sink
busy at once) loses more than the one-connection loop.  For information:
the CPU time each side used per recipient (the daemon process for
clublist, counted until its queue is settled; this process for the bare
loops; the sink in both).

With ``--verp-sizes``, the same is done with ``delivery.verp = true``
(one transaction per recipient); its baselines then send one RCPT per
transaction (for context; the target is absolute).

``--signing`` names the signing modes measured for every size, side by
side in the same run (a club and daemon each, repetitions interleaved):
``off`` (no DKIM key), ``dkim`` (a 2048-bit RSA key: each message signed
once) and ``oneclick`` (the key and ``unsubscribe.url``: each recipient's
copy carries its own link and signature, so grouped delivery becomes one
transaction per recipient).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import aiosmtplib
from benchlib import (
    DAEMON_ACTIVITIES,
    DOMAIN,
    LOOPBACK,
    Club,
    DaemonProcess,
    PySpy,
    SinkProcess,
    argument_parser,
    fmt_times,
    make_club,
    make_post,
    median,
    member_address,
    proc_cpu,
    proc_memory,
    profile_activities,
    say,
    smtp_post,
    summarize_profile,
    temporary_root,
    write_json,
)

WARM_SIZE = 10
SENDER = f"bounces@{DOMAIN}"


@dataclass
class Run:
    """One timed delivery of N recipients."""

    seconds: float
    accepted_after: float = 0.0  # clublist: when the 250 for the post came back
    first_after: float = 0.0  # when the sink finished its first transaction
    transactions: int = 0
    connections: int = 0
    sender_cpu: float = 0.0  # CPU seconds of the sending side (daemon, or this process)
    sink_cpu: float = 0.0


@dataclass
class SizeResult:
    n: int
    verp: bool
    signing: str = "off"
    clublist: list[Run] = field(default_factory=list)
    baseline: list[Run] = field(default_factory=list)
    parallel: list[Run] = field(default_factory=list)
    parallel_connections: int = 0
    message_bytes: int = 0
    daemon_rss_mb: float = 0.0
    daemon_hwm_mb: float = 0.0

    def summary(self) -> dict[str, object]:
        c = median([r.seconds for r in self.clublist])
        b = median([r.seconds for r in self.baseline])
        summary: dict[str, object] = {
            "n": self.n,
            "verp": self.verp,
            "signing": self.signing,
            "message_bytes": self.message_bytes,
            "clublist_seconds": [r.seconds for r in self.clublist],
            "baseline_seconds": [r.seconds for r in self.baseline],
            "clublist_median_s": c,
            "baseline_median_s": b,
            "clublist_rate": self.n / c,
            "baseline_rate": self.n / b,
            "time_ratio": c / b,
            "rate_ratio": b / c,
            "clublist_cpu_us_per_rcpt": self._cpu_us(self.clublist, "sender_cpu"),
            "baseline_cpu_us_per_rcpt": self._cpu_us(self.baseline, "sender_cpu"),
            "clublist_sink_cpu_us_per_rcpt": self._cpu_us(self.clublist, "sink_cpu"),
            "baseline_sink_cpu_us_per_rcpt": self._cpu_us(self.baseline, "sink_cpu"),
            "clublist_runs": [asdict(r) for r in self.clublist],
            "baseline_runs": [asdict(r) for r in self.baseline],
            "daemon_rss_mb": self.daemon_rss_mb,
            "daemon_hwm_mb": self.daemon_hwm_mb,
        }
        if self.parallel:
            p = median([r.seconds for r in self.parallel])
            summary.update(
                parallel_connections=self.parallel_connections,
                parallel_seconds=[r.seconds for r in self.parallel],
                parallel_median_s=p,
                parallel_rate=self.n / p,
                parallel_cpu_us_per_rcpt=self._cpu_us(self.parallel, "sender_cpu"),
                rate_ratio_vs_parallel=p / c,
                time_ratio_vs_parallel=c / p,
            )
        return summary

    def _cpu_us(self, runs: list[Run], what: str) -> float:
        return median([getattr(r, what) for r in runs]) * 1e6 / self.n


# --- the baseline -------------------------------------------------------------------


async def bare_loop(
    port: int, recipients: list[str], content: bytes, per_transaction: int, connections: int = 1
) -> None:
    """The baseline: sequential transactions of *per_transaction* RCPTs over one connection.

    With *connections* > 1, that many such loops share the transactions (for information).
    """
    batches: Iterator[list[str]] = (
        recipients[start : start + per_transaction] for start in range(0, len(recipients), per_transaction)
    )

    async def one_connection() -> None:
        smtp = aiosmtplib.SMTP(hostname=LOOPBACK, port=port, local_hostname="bench.baseline", start_tls=False)
        await smtp.connect()
        try:
            await smtp.ehlo()
            for batch in batches:  # one iterator shared by all connections: each batch is sent once
                await smtp.mail(SENDER)
                for recipient in batch:
                    await smtp.rcpt(recipient)
                await smtp.data(content)
            await smtp.quit()
        finally:
            smtp.close()

    await asyncio.gather(*(one_connection() for _ in range(connections)))


def time_baseline(
    loop: asyncio.AbstractEventLoop,
    sink: SinkProcess,
    recipients: list[str],
    content: bytes,
    per_transaction: int,
    timeout: float,
    connections: int = 1,
) -> Run:
    sink.reset()
    sink.start_wait(len(recipients), timeout)
    sink_before = proc_cpu(sink.pid)["total"]
    cpu_before = time.process_time()
    start = time.monotonic()
    loop.run_until_complete(
        asyncio.wait_for(bare_loop(sink.port, recipients, content, per_transaction, connections), timeout)
    )
    cpu = time.process_time() - cpu_before
    reached = sink.reached(timeout)
    return Run(
        reached.last - start,
        first_after=reached.first - start,
        transactions=reached.transactions,
        connections=connections,
        sender_cpu=cpu,
        sink_cpu=proc_cpu(sink.pid)["total"] - sink_before,
    )


# --- clublist ---------------------------------------------------------------------------


def wait_settled(state: Path, expected_sent: int, timeout: float) -> dict[str, int]:
    """Poll the state database (read-only) until nothing is waiting and *expected_sent* rows are sent."""
    deadline = time.monotonic() + timeout
    conn = sqlite3.connect(f"file:{state}?mode=ro", uri=True, timeout=30)
    try:
        while True:
            counts = dict(conn.execute("SELECT status, COUNT(*) FROM deliveries GROUP BY status").fetchall())
            waiting = sum(counts.get(s, 0) for s in ("pending", "inflight", "deferred"))
            if waiting == 0 and counts.get("sent", 0) >= expected_sent:
                return counts
            if time.monotonic() > deadline:
                raise RuntimeError(f"queue did not settle in {timeout} s: {counts}")
            time.sleep(0.02)
    finally:
        conn.close()


def time_clublist(
    daemon: DaemonProcess,
    sink: SinkProcess,
    club: Club,
    list_name: str,
    n: int,
    rep: int,
    timeout: float,
    sent_before: int,
) -> Run:
    """One post to *list_name* (n recipients), timed until the sink has them all; returns after settling."""
    content = make_post(club.author, f"{list_name}@{DOMAIN}", subject=f"Training on Saturday ({rep})")
    sink.reset()
    connections_before = sink.count()[2]
    sink.start_wait(n, timeout)
    daemon_before, sink_before = proc_cpu(daemon.pid)["total"], proc_cpu(sink.pid)["total"]
    start = time.monotonic()
    smtp_post(daemon.port, club.author, [f"{list_name}@{DOMAIN}"], content)
    accepted = time.monotonic()
    reached = sink.reached(timeout)
    wait_settled(club.state, sent_before + n, timeout)
    return Run(
        reached.last - start,
        accepted_after=accepted - start,
        first_after=reached.first - start,
        transactions=reached.transactions,
        connections=reached.connections - connections_before,
        sender_cpu=proc_cpu(daemon.pid)["total"] - daemon_before,
        sink_cpu=proc_cpu(sink.pid)["total"] - sink_before,
    )


def sign_with_a_new_key(club: Club, oneclick: bool) -> None:
    """A 2048-bit RSA key for the club (and one-click links), as an administrator sets it up."""
    from clublist.actions import Actor
    from clublist.actions.config import config_set
    from clublist.actions.dkim import dkim_keygen
    from clublist.club.store import Store

    store = Store(club.directory)
    dkim_keygen(store, Actor.shell(), club.state, "bench", "rsa", 2048)
    if oneclick:
        config_set(store, Actor.shell(), "unsubscribe.url", f"https://lists.{DOMAIN}/u")
        config_set(store, Actor.shell(), "listen.http_port", "0")


def measure_size(
    n: int,
    reps: int,
    verp: bool,
    timeout: float,
    parallel: int,
    profile: Path | None = None,
    modes: tuple[str, ...] = ("off",),
) -> list[SizeResult]:
    """One result per signing mode; each mode has its own club and daemon, all running, and each
    repetition times the bare loop and then every mode in turn, so load on the machine falls on
    all of them alike."""
    results = {mode: SizeResult(n, verp, mode, parallel_connections=parallel) for mode in modes}
    recipients = [member_address(i) for i in range(n)]
    per_transaction = 1 if verp else 100
    settings = {"posting.daily_limit": "0", "delivery.verp": "true" if verp else "false"}
    loop = asyncio.new_event_loop()
    try:
        with temporary_root("fanout") as root, SinkProcess() as sink, contextlib.ExitStack() as stack:
            clubs, daemons, sent = {}, {}, {}
            for mode in modes:
                clubs[mode] = make_club(root / mode, {"warm": WARM_SIZE, "big": n}, settings=settings)
                if mode != "off":
                    sign_with_a_new_key(clubs[mode], oneclick=mode == "oneclick")
                daemons[mode] = stack.enter_context(
                    DaemonProcess(clubs[mode], smarthost=f"{LOOPBACK}:{sink.port}")
                )
                # Untimed warm-up (imports, first connections); the first mode's copy is the baseline's.
                time_clublist(daemons[mode], sink, clubs[mode], "warm", WARM_SIZE, -1, timeout, 0)
                sent[mode] = WARM_SIZE
                saved = root / f"delivered-{mode}.eml"
                results[mode].message_bytes = sink.save(saved)
            content = (root / f"delivered-{modes[0]}.eml").read_bytes()
            time_baseline(loop, sink, recipients[:100], content, per_transaction, timeout)
            for rep in range(reps):
                bare = time_baseline(loop, sink, recipients, content, per_transaction, timeout)
                wide = (
                    time_baseline(loop, sink, recipients, content, per_transaction, timeout, parallel)
                    if parallel > 1
                    else None
                )
                for mode in modes:
                    result, daemon = results[mode], daemons[mode]
                    result.baseline.append(bare)
                    if wide is not None:
                        result.parallel.append(wide)
                    name = f".{n}{'.verp' if verp else ''}.{mode}.{rep}.txt"
                    with PySpy(daemon.pid, profile.with_suffix(name) if profile else None):
                        result.clublist.append(
                            time_clublist(daemon, sink, clubs[mode], "big", n, rep, timeout, sent[mode])
                        )
                    sent[mode] += n
                    last = result.clublist[-1]
                    also = f"; bare x{parallel} {wide.seconds:.3f} s" if wide is not None else ""
                    say(
                        f"  N={n:>6} verp={verp!s:5} signing={mode:8} rep {rep + 1}:"
                        f" clublist {last.seconds:.3f} s"
                        f" (250 after {last.accepted_after * 1000:.1f} ms,"
                        f" first delivery {last.first_after * 1000:.1f} ms,"
                        f" {last.transactions} transactions, {last.connections} new connections);"
                        f" bare loop {bare.seconds:.3f} s{also}"
                    )
            for mode in modes:
                memory = proc_memory(daemons[mode].pid)
                results[mode].daemon_rss_mb, results[mode].daemon_hwm_mb = memory["VmRSS"], memory["VmHWM"]
                errors = daemons[mode].errors()
                if errors:
                    say(f"  daemon errors ({mode}):\n    " + "\n    ".join(errors[:10]))
                if profile:
                    first = profile.with_suffix(f".{n}{'.verp' if verp else ''}.{mode}.0.txt")
                    say(f"py-spy profile of the daemon during the first run ({first}):")
                    say(profile_activities(first, DAEMON_ACTIVITIES))
                    say(summarize_profile(first))
    finally:
        loop.close()
    return [results[mode] for mode in modes]


def report(result: SizeResult) -> None:
    s = result.summary()
    what = "VERP, one transaction per recipient" if result.verp else "grouped, 100 RCPTs per transaction"
    say(f"N = {result.n:,} ({what}; signing {result.signing}; message {result.message_bytes} bytes)")
    say(f"  clublist       : {fmt_times(s['clublist_seconds'])} s; median {s['clublist_median_s']:.3f} s")  # type: ignore[arg-type]
    say(f"  bare loop      : {fmt_times(s['baseline_seconds'])} s; median {s['baseline_median_s']:.3f} s")  # type: ignore[arg-type]
    say(
        f"  rate           : clublist {s['clublist_rate']:,.0f} rcpt/s,"
        f" bare loop {s['baseline_rate']:,.0f} rcpt/s"
    )
    say(
        f"  ratio          : time clublist/bare {s['time_ratio']:.2f}x;"
        f" rate clublist/bare {s['rate_ratio']:.2f}x"
    )
    if result.parallel:
        say(
            f"  bare loop x{result.parallel_connections:<3}: {fmt_times(s['parallel_seconds'])} s"  # type: ignore[arg-type]
            f" = {s['parallel_rate']:,.0f} rcpt/s; time clublist/bare x{result.parallel_connections}"
            f" {s['time_ratio_vs_parallel']:.2f}x"
        )
    say(
        f"  info: CPU/rcpt : clublist daemon {s['clublist_cpu_us_per_rcpt']:.0f} us"
        f" (sink {s['clublist_sink_cpu_us_per_rcpt']:.0f} us); bare loop"
        f" {s['baseline_cpu_us_per_rcpt']:.0f} us (sink {s['baseline_sink_cpu_us_per_rcpt']:.0f} us)"
    )
    say(
        f"  daemon memory  : VmRSS {result.daemon_rss_mb:.1f} MB,"
        f" VmHWM {result.daemon_hwm_mb:.1f} MB after the runs"
    )


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--sizes", default="1000,10000", help="list sizes, grouped delivery")
    parser.add_argument("--verp-sizes", default="1000,10000", help="list sizes with delivery.verp = true")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument(
        "--parallel", type=int, default=20, help="connections of the second bare loop (0: off)"
    )
    parser.add_argument("--timeout", type=float, default=300.0, help="per measurement, seconds")
    parser.add_argument(
        "--profile", type=Path, help="py-spy the daemon during clublist's runs into files named so"
    )
    parser.add_argument(
        "--signing", default="off,dkim", help="signing modes to measure side by side: off, dkim, oneclick"
    )
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args()

    results: list[SizeResult] = []
    for verp, sizes in ((False, args.sizes), (True, args.verp_sizes)):
        for n in (int(x) for x in sizes.split(",") if x.strip()):
            modes = tuple(x.strip() for x in args.signing.split(",") if x.strip())
            for result in measure_size(n, args.reps, verp, args.timeout, args.parallel, args.profile, modes):
                report(result)
                results.append(result)
    write_json(args.json, {"fanout": [r.summary() for r in results]})


if __name__ == "__main__":
    main()

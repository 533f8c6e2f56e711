"""Memory of ``clublist run`` with 10,000 deliveries queued, from /proc/PID/status.

A club with a list ``big`` of N members (default 10,000); ``clublist run``
delivers through the lean sink as smarthost, which answers every RCPT with
``451 4.3.0`` (``--mode defer``).  Phases, each read from
/proc/PID/status of the daemon process (VmRSS: resident now; VmHWM: the
peak resident size since the process started):

1. idle: the daemon started, nothing queued;
2. queued: ONE post to ``big`` was accepted (one message, N delivery rows),
   the worker tried every recipient, the sink deferred each, and the state
   database shows all N rows ``deferred``: N deliveries queued;
3. delivered: the sink is switched to accept, ``clublist queue retry --all``
   makes the rows due and wakes the daemon, and the sink receives all N.

The target is checked against VmHWM at phase 2 (the worst moment of
taking the post in and holding its N deliveries).  ``--verp`` does the
same with ``delivery.verp = true`` (one transaction per recipient).
"""

from __future__ import annotations

import sqlite3
import subprocess
import time
from pathlib import Path

from benchlib import (
    CLUBLIST,
    DOMAIN,
    LOOPBACK,
    DaemonProcess,
    SinkProcess,
    argument_parser,
    make_club,
    make_post,
    proc_memory,
    say,
    smtp_post,
    temporary_root,
    write_json,
)
from fanout import wait_settled


def wait_deferred(state: Path, expected: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    conn = sqlite3.connect(f"file:{state}?mode=ro", uri=True, timeout=30)
    try:
        while True:
            counts = dict(conn.execute("SELECT status, COUNT(*) FROM deliveries GROUP BY status").fetchall())
            if counts.get("deferred", 0) >= expected:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"deliveries not all deferred in {timeout} s: {counts}")
            time.sleep(0.05)
    finally:
        conn.close()


def show(phase: str, memory: dict[str, float]) -> dict[str, float]:
    say(f"  {phase:<44}: VmRSS {memory['VmRSS']:6.1f} MB   VmHWM {memory['VmHWM']:6.1f} MB")
    return memory


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("-n", type=int, default=10_000, help="members of the list, deliveries queued")
    parser.add_argument(
        "--verp", action="store_true", help="with delivery.verp = true (one transaction each)"
    )
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args()

    n = args.n
    results: dict[str, object] = {"n": n, "verp": args.verp}
    verp = ", VERP" if args.verp else ""
    say(f"Memory of clublist run (MB = MiB, from /proc/PID/status), {n:,} deliveries{verp}")
    with temporary_root("memory") as root, SinkProcess(mode="defer") as sink:
        settings = {"posting.daily_limit": "0", "delivery.verp": "true" if args.verp else "false"}
        club = make_club(root, {"big": n}, settings=settings)
        with DaemonProcess(club, smarthost=f"{LOOPBACK}:{sink.port}") as daemon:
            results["idle"] = show("idle after start", proc_memory(daemon.pid))

            sink.start_wait(n, args.timeout, rcpt_commands=True)
            start = time.monotonic()
            smtp_post(daemon.port, club.author, [f"big@{DOMAIN}"], make_post(club.author, f"big@{DOMAIN}"))
            accepted = time.monotonic() - start
            sink.reached(args.timeout)
            wait_deferred(club.state, n, args.timeout)
            queued = time.monotonic() - start
            results["queued"] = show(f"{n:,} deliveries queued (all deferred)", proc_memory(daemon.pid))
            say(f"    (post accepted in {accepted:.3f} s; all {n:,} tried and deferred after {queued:.3f} s)")

            sink.set_mode("accept")
            sink.reset()
            sink.start_wait(n, args.timeout)
            subprocess.run(
                [
                    CLUBLIST,
                    "--dir",
                    str(club.directory),
                    "--state",
                    str(club.state),
                    "queue",
                    "retry",
                    "--all",
                ],
                capture_output=True,
                timeout=120,
                check=True,
            )
            sink.reached(args.timeout)
            wait_settled(club.state, n, args.timeout)
            results["delivered"] = show(f"after delivering all {n:,}", proc_memory(daemon.pid))
            errors = daemon.errors()
            if errors:
                say("  daemon errors:\n    " + "\n    ".join(errors[:10]))
    write_json(args.json, {"memory": results})


if __name__ == "__main__":
    main()

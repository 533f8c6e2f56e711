"""Head-of-line: a post to a small list sent right behind a post to a big one.

A club with list ``big`` of N members (default 10,000, m00000@example.org ...)
and list ``small`` of 30 members on their own domain (s00@small.example.net
...; one of them is the small post's author).  ``clublist run`` delivers to
the lean sink as smarthost.  Each repetition:

1. the post to ``big`` is sent with smtplib and answered 250;
2. at once, on a new connection, the post to ``small``;
3. the sink answers two waits side by side: the 30 recipients on
   small.example.net, and all N + 30.

**Time = from the small post's 250 to the moment the sink has accepted its
30th recipient** (``time.monotonic()``: CLOCK_MONOTONIC, one clock for all
processes).  Target: at most 50 ms.  Beside it, in the same run and the
same daemon, alternating: **the small post alone** (nothing queued ahead),
timed the same way: what the small post takes when nothing is in its way.
Also shown: when the big post was complete.  The bench waits until the
state database shows every row ``sent`` before the next measurement.

``--verp`` does the same with ``delivery.verp = true`` (one transaction per
recipient for both posts).

Each repetition also notes the load average (``/proc/loadavg``, 1 minute)
and the summary gives the ratio of the medians, behind / alone: on a machine
shared with other work the absolute times follow the load, the ratio less.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field

from benchlib import (
    DOMAIN,
    LOOPBACK,
    Club,
    DaemonProcess,
    SinkProcess,
    argument_parser,
    fmt_times,
    make_club,
    make_post,
    median,
    say,
    smtp_post,
    temporary_root,
    write_json,
)
from fanout import wait_settled

SMALL = 30
SMALL_DOMAIN = "small.example.net"
SMALL_SUFFIX = f"@{SMALL_DOMAIN}"
SMALL_AUTHOR = f"s00{SMALL_SUFFIX}"
WARM_SIZE = 10


@dataclass
class Run:
    small_after_250: float  # the small post: its 250 -> its last recipient at the sink
    small_accepted_after: float = 0.0  # the small post's 250, from the big post's 250
    big_done_after: float = 0.0  # the big post's last recipient, from its 250 (0: no big post)
    load: float = 0.0  # the 1-minute load average when it ended


@dataclass
class Result:
    n: int
    verp: bool
    behind: list[Run] = field(default_factory=list)
    alone: list[Run] = field(default_factory=list)

    def summary(self) -> dict[str, object]:
        behind = median([r.small_after_250 for r in self.behind])
        alone = median([r.small_after_250 for r in self.alone])
        return {
            "n": self.n,
            "verp": self.verp,
            "small": SMALL,
            "behind_seconds": [r.small_after_250 for r in self.behind],
            "alone_seconds": [r.small_after_250 for r in self.alone],
            "behind_median_s": behind,
            "alone_median_s": alone,
            "behind_over_alone": behind / alone if alone else None,
            "load": [r.load for r in self.behind],
            "big_done_median_s": median([r.big_done_after for r in self.behind]),
            "behind_runs": [asdict(r) for r in self.behind],
            "alone_runs": [asdict(r) for r in self.alone],
        }


def time_small(
    daemon: DaemonProcess, sink: SinkProcess, club: Club, rep: int, timeout: float, *, behind: int
) -> Run:
    """The small post, right behind a post to ``big`` when *behind* (its size) is not 0."""
    small = make_post(SMALL_AUTHOR, f"small@{DOMAIN}", subject=f"Small one ({rep})")
    sink.reset()
    sink.start_wait(SMALL, timeout, suffix=SMALL_SUFFIX)
    big_accepted = 0.0
    if behind:
        sink.start_wait(behind + SMALL, timeout)
        big = make_post(club.author, f"big@{DOMAIN}", subject=f"Big one ({rep})")
        smtp_post(daemon.port, club.author, [f"big@{DOMAIN}"], big)
        big_accepted = time.monotonic()
    smtp_post(daemon.port, SMALL_AUTHOR, [f"small@{DOMAIN}"], small)
    small_accepted = time.monotonic()
    answers = {r.suffix: r for r in (sink.reached(timeout) for _ in range(2 if behind else 1))}
    run = Run(answers[SMALL_SUFFIX].last - small_accepted, load=os.getloadavg()[0])
    if behind:
        run.small_accepted_after = small_accepted - big_accepted
        run.big_done_after = answers[""].last - big_accepted
    return run


def measure(n: int, reps: int, verp: bool, timeout: float) -> Result:
    result = Result(n, verp)
    settings = {"posting.daily_limit": "0", "delivery.verp": "true" if verp else "false"}
    small = [f"s{i:02d}{SMALL_SUFFIX}" for i in range(SMALL)]
    with temporary_root("headofline") as root, SinkProcess() as sink:
        lists = {"warm": WARM_SIZE, "big": n, "small": 0}
        club = make_club(root, lists, settings=settings, extra={"small": small})
        with DaemonProcess(club, smarthost=f"{LOOPBACK}:{sink.port}") as daemon:
            sent = 0
            # Untimed warm-up: imports, first connections, the small list's first post.
            warm = make_post(club.author, f"warm@{DOMAIN}")
            smtp_post(daemon.port, club.author, [f"warm@{DOMAIN}"], warm)
            sent += WARM_SIZE
            wait_settled(club.state, sent, timeout)
            time_small(daemon, sink, club, -1, timeout, behind=0)
            sent += SMALL
            wait_settled(club.state, sent, timeout)
            for rep in range(reps):
                alone = time_small(daemon, sink, club, rep, timeout, behind=0)
                sent += SMALL
                wait_settled(club.state, sent, timeout)
                behind = time_small(daemon, sink, club, rep, timeout, behind=n)
                sent += n + SMALL
                wait_settled(club.state, sent, timeout)
                result.alone.append(alone)
                result.behind.append(behind)
                say(
                    f"  N={n:>6} verp={verp!s:5} rep {rep + 1}: small post behind the big one"
                    f" {behind.small_after_250 * 1000:.1f} ms after its 250"
                    f" (its 250 {behind.small_accepted_after * 1000:.1f} ms after the big one's;"
                    f" big post complete {behind.big_done_after:.3f} s after its 250);"
                    f" small post alone {alone.small_after_250 * 1000:.1f} ms; load {behind.load:.1f}"
                )
            errors = daemon.errors()
            if errors:
                say("  daemon errors:\n    " + "\n    ".join(errors[:10]))
    return result


def report(result: Result) -> None:
    s = result.summary()
    what = "VERP" if result.verp else "grouped"
    say(f"Head-of-line, {what}: a {SMALL}-member post right behind a post to {result.n:,}")
    for name, label in (("behind", "behind the big post"), ("alone", "alone")):
        times = s[f"{name}_seconds"]
        say(f"  {label:<20}: {fmt_times(times)} s; median {s[f'{name}_median_s'] * 1000:.1f} ms")  # type: ignore[arg-type, operator]
    say(f"  big post complete   : median {s['big_done_median_s']:.3f} s after its 250")
    loads = ", ".join(f"{load:.1f}" for load in s["load"])  # type: ignore[attr-defined]
    say(f"  behind / alone      : {s['behind_over_alone']:.2f} (load average {loads})")


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("-n", type=int, default=10_000, help="members of the big list")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--verp", action="store_true", help="also with delivery.verp = true")
    parser.add_argument("--timeout", type=float, default=300.0, help="per measurement, seconds")
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args()
    results = [measure(args.n, args.reps, False, args.timeout)]
    report(results[0])
    if args.verp:
        results.append(measure(args.n, args.reps, True, args.timeout))
        report(results[1])
    write_json(args.json, {"headofline": [r.summary() for r in results]})


if __name__ == "__main__":
    main()

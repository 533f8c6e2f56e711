"""Run every benchmark, each in its own process, and print a summary with PASS/MISS per target.

    .venv/bin/python bench/run_all.py            # everything, 3 repetitions (about 3 minutes)
    .venv/bin/python bench/run_all.py --quick    # 1 repetition, fewer CLI runs
    .venv/bin/python bench/run_all.py --only fanout,cli --json results.json

Exit status: 0 when every target measured passes, 1 when one misses, 2 when
a benchmark failed to run.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchlib import BENCH_DIR, PYTHON, REPO, argument_parser, say, temporary_root

BENCHES = ("fanout", "headofline", "inbound", "inbound_parts", "cli", "memory")


@dataclass(frozen=True)
class Target:
    name: str
    bench: str
    wanted: str
    measure: Callable[[dict[str, Any]], tuple[float, str]]  # -> (value, shown)
    passes: Callable[[float], bool]


def _fanout(results: dict[str, Any], n: int, verp: bool, signing: str = "off") -> dict[str, Any]:
    for entry in results["fanout"]:
        if entry["n"] == n and entry["verp"] == verp and entry.get("signing", "off") == signing:
            found: dict[str, Any] = entry
            return found
    raise KeyError(f"no fan-out result for N={n} verp={verp} signing={signing}")


def _verp_rate(results: dict[str, Any], signing: str = "off") -> tuple[float, str]:
    entries = [e for e in results["fanout"] if e["verp"] and e.get("signing", "off") == signing]
    if not entries:
        raise KeyError(f"no VERP result with signing {signing}")
    worst = min(entries, key=lambda e: e["clublist_rate"])
    shown = ", ".join(f"N={e['n']:,}: {e['clublist_rate']:,.0f}/s" for e in entries)
    return worst["clublist_rate"], shown


def _signing_cost(results: dict[str, Any]) -> tuple[float, str]:
    signed, unsigned = _fanout(results, 10000, False, "dkim"), _fanout(results, 10000, False)
    ratio = signed["clublist_median_s"] / unsigned["clublist_median_s"]
    return ratio, (
        f"{ratio:.2f}x ({signed['clublist_median_s']:.3f} s vs {unsigned['clublist_median_s']:.3f} s)"
    )


def _versus_parallel(results: dict[str, Any], n: int, signing: str) -> tuple[float, str]:
    entry = _fanout(results, n, False, signing)
    if "time_ratio_vs_parallel" not in entry:
        raise KeyError("no bare loop over several connections (--parallel 0)")
    return entry["time_ratio_vs_parallel"], (
        f"{entry['time_ratio_vs_parallel']:.2f}x ({entry['clublist_median_s']:.3f} s vs"
        f" {entry['parallel_median_s']:.3f} s)"
    )


def _head_of_line(results: dict[str, Any]) -> tuple[float, str]:
    entry = next(e for e in results["headofline"] if not e["verp"])
    return entry["behind_median_s"], (
        f"{entry['behind_median_s'] * 1000:.1f} ms (alone {entry['alone_median_s'] * 1000:.1f} ms)"
    )


TARGETS = [
    Target(
        "post to 1,000: time vs bare aiosmtplib loop",
        "fanout",
        "<= 1.30x",
        lambda r: (
            _fanout(r, 1000, False)["time_ratio"],
            f"{_fanout(r, 1000, False)['time_ratio']:.2f}x"
            f" ({_fanout(r, 1000, False)['clublist_median_s']:.3f} s vs"
            f" {_fanout(r, 1000, False)['baseline_median_s']:.3f} s)",
        ),
        lambda v: v <= 1.3,
    ),
    Target(
        "fan-out to 10,000: rate vs bare loop",
        "fanout",
        ">= 0.80x",
        lambda r: (
            _fanout(r, 10000, False)["rate_ratio"],
            f"{_fanout(r, 10000, False)['rate_ratio']:.2f}x"
            f" ({_fanout(r, 10000, False)['clublist_rate']:,.0f} vs"
            f" {_fanout(r, 10000, False)['baseline_rate']:,.0f} rcpt/s)",
        ),
        lambda v: v >= 0.8,
    ),
    Target("VERP, one message per recipient", "fanout", ">= 1,000 rcpt/s", _verp_rate, lambda v: v >= 1000),
    Target(
        "VERP with DKIM signing",
        "fanout",
        ">= 1,000 rcpt/s",
        lambda r: _verp_rate(r, "dkim"),
        lambda v: v >= 1000,
    ),
    Target(
        "fan-out to 10,000 signed vs unsigned",
        "fanout",
        "<= 1.10x",
        _signing_cost,
        lambda v: v <= 1.1,
    ),
    *(
        Target(
            f"fan-out to {n:,}, signing {signing}: vs bare loop x20",
            "fanout",
            "<= 1.00x",
            functools.partial(_versus_parallel, n=n, signing=signing),
            lambda v: v <= 1.0,
        )
        for n in (1000, 10000)
        for signing in ("off", "dkim")
    ),
    Target(
        "30-member post behind one to 10,000: 250 to last",
        "headofline",
        "<= 50 ms",
        _head_of_line,
        lambda v: v <= 0.05,
    ),
    Target(
        "inbound, 250 after commit, vs bare aiosmtpd",
        "inbound",
        ">= 0.70x",
        lambda r: (
            r["inbound"]["rate_ratio"],
            f"{r['inbound']['rate_ratio']:.2f}x ({r['inbound']['clublist_rate']:,.0f} vs"
            f" {r['inbound']['baseline_rate']:,.0f} msg/s)",
        ),
        lambda v: v >= 0.7,
    ),
    Target(
        "clublist --help",
        "cli",
        "<= 0.15 s",
        lambda r: (r["cli"]["help"]["median_s"], f"{r['cli']['help']['median_s']:.3f} s"),
        lambda v: v <= 0.15,
    ),
    Target(
        "member import of 1,000",
        "cli",
        "<= 1 s",
        lambda r: (r["cli"]["import_1000"]["median_s"], f"{r['cli']['import_1000']['median_s']:.3f} s"),
        lambda v: v <= 1.0,
    ),
    Target(
        "queue ls, 50,000 waiting over 25 messages",
        "cli",
        "< 0.5 s",
        lambda r: (r["cli"]["queue_ls_50000"]["median_s"], f"{r['cli']['queue_ls_50000']['median_s']:.3f} s"),
        lambda v: v < 0.5,
    ),
    Target(
        "clublist run, 10,000 deliveries queued",
        "memory",
        "<= 100 MB",
        lambda r: (
            r["memory"]["queued"]["VmHWM"],
            f"VmHWM {r['memory']['queued']['VmHWM']:.1f} MB (VmRSS {r['memory']['queued']['VmRSS']:.1f} MB)",
        ),
        lambda v: v <= 100,
    ),
]


def machine() -> dict[str, Any]:
    """What the figures depend on: CPUs, load when starting, Python, temp file system, code measured."""
    return {
        "cpus": os.cpu_count(),
        "loadavg": Path("/proc/loadavg").read_text().split()[:3],
        "python": platform.python_version(),
        "tmpdir": tempfile.gettempdir(),
        "git_head": _git("rev-parse", "--short", "HEAD"),
        "clublist_files_changed_since_head": len(
            _git("status", "--porcelain", "--", "clublist").splitlines()
        ),
    }


def _git(*args: str) -> str:
    """A read-only git query about the code measured ("" when git is not there)."""
    try:
        done = subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True, timeout=30, check=False
        )
    except OSError:
        return ""
    return done.stdout.strip()


def run_bench(name: str, quick: bool, out: Path) -> bool:
    args = [PYTHON, str(BENCH_DIR / f"{name}.py"), "--json", str(out)]
    if quick:
        args += {
            "fanout": ["--reps", "1"],
            "inbound": ["--reps", "1"],
            "headofline": ["--reps", "1"],
            "cli": ["--runs", "10", "--store-runs", "3"],
        }.get(name, [])
    say(f"\n=== {name}: {' '.join(args[1:])}")
    done = subprocess.run(args, timeout=3600, check=False)
    if done.returncode != 0:
        say(f"!!! {name} failed with exit status {done.returncode}")
        return False
    return True


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--quick", action="store_true", help="one repetition, fewer CLI runs")
    parser.add_argument(
        "--only", default=",".join(BENCHES), help=f"comma-separated subset of {','.join(BENCHES)}"
    )
    parser.add_argument("--json", help="write every figure to this file")
    args = parser.parse_args()

    chosen = [b.strip() for b in args.only.split(",") if b.strip()]
    unknown = set(chosen) - set(BENCHES)
    if unknown:
        parser.error(f"unknown benchmarks: {', '.join(sorted(unknown))}")
    results: dict[str, Any] = {"machine": machine()}
    say(f"machine: {results['machine']}")
    failed = []
    with temporary_root("results") as root:
        for name in chosen:
            out = root / f"{name}.json"
            if run_bench(name, args.quick, out) and out.exists():
                results.update(json.loads(out.read_text()))
            else:
                failed.append(name)

    say("\n=== Summary")
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    say(f"load average now: {load} (other work on the machine adds noise to every figure)")
    say(f"{'target':<46} {'wanted':<16} {'measured':<52} result")
    missed = 0
    for target in TARGETS:
        if target.bench not in chosen:
            continue
        try:
            value, shown = target.measure(results)
        except KeyError as exc:
            say(f"{target.name:<46} {target.wanted:<16} {'not measured: ' + str(exc):<52} -")
            continue
        ok = target.passes(value)
        missed += not ok
        say(f"{target.name:<46} {target.wanted:<16} {shown:<52} {'PASS' if ok else 'MISS'}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    if failed:
        say(f"benchmarks that failed to run: {', '.join(failed)}")
        sys.exit(2)
    sys.exit(1 if missed else 0)


if __name__ == "__main__":
    main()

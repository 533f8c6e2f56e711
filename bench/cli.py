"""The command line: start-up and the store commands, timed as a person or a script sees them.

Every figure is the wall-clock time of a whole ``clublist`` process
(fork, exec, interpreter start-up, imports, work, exit), measured with
``time.perf_counter`` around ``subprocess.run`` with its output sent to a
pipe that is read and discarded (so ``member ls`` prints plain text, as in
a script).  Reported: every run and the median, and beside it the median CPU
time of the process (user + system), which waits for a busy core do not inflate.

- ``clublist --help``: ``--runs`` times (default 20), after 2 untimed warm-ups.
- ``clublist member import FILE`` of 1,000 new members (``email,name,lists``,
  all on one list) into a fresh club each run (made untimed with
  clublist.actions).
- ``clublist member ls`` and ``member ls --json`` over a registry of 5,000.
- At 50,000 members (``--big``, default 50,000): ``member add`` of a new member (each run a
  new address, so the registry grows by one each time: the cost of a real change, its
  registry cache update included), ``member show`` of one address, ``member ls --json``.
  The first, untimed, command after the import builds the registry cache in var/.
- ``clublist queue ls`` and ``queue ls --json`` (one line per message) with
  50,000 waiting deliveries over 25 messages of 2,000 recipients (queued
  untimed with clublist.state.queue); ``queue ls --recipients --json`` (every
  row) for comparison.

For context the same way: ``python -c pass`` (the interpreter alone) and
``python -c "import click"``.  With hyperfine on PATH, ``--help`` is also
timed by hyperfine (its median is printed next to ours).

clublist's modules are byte-compiled first, as pip does when it installs a package: a
checkout run with ``PYTHONDONTWRITEBYTECODE`` set would otherwise compile them again in
every process timed.  ``--only big`` (or help, import, ls, queue) runs one group of cases.
"""

from __future__ import annotations

import compileall
import json
import resource
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from benchlib import (
    CLUBLIST,
    PYTHON,
    argument_parser,
    fmt_times,
    make_club,
    make_post,
    median,
    member_address,
    say,
    temporary_root,
    write_json,
)


@dataclass
class Runs:
    """Each timed run's wall-clock seconds and its CPU seconds (user + system, the process alone).

    On a machine others share, the CPU time is the steadier figure: wall time also holds the
    waits for a core.
    """

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    def __iadd__(self, other: Runs) -> Runs:
        self.wall += other.wall
        self.cpu += other.cpu
        return self


def timed(args: Sequence[str], runs: int, warmups: int = 1) -> Runs:
    times = Runs()
    for i in range(warmups + runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        done = subprocess.run(args, capture_output=True, timeout=120, check=False)
        elapsed = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed ({done.returncode}): {done.stderr.decode()[-2000:]}")
        if i >= warmups:
            times.wall.append(elapsed)
            times.cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return times


def hyperfine_median(command: str, runs: int) -> float | None:
    if shutil.which("hyperfine") is None:
        return None
    with temporary_root("hyperfine") as root:
        out = root / "h.json"
        subprocess.run(
            [
                "hyperfine",
                "--style",
                "none",
                "--warmup",
                "2",
                "--runs",
                str(runs),
                "--export-json",
                str(out),
                command,
            ],
            capture_output=True,
            timeout=300,
            check=True,
        )
        return float(json.loads(out.read_text())["results"][0]["median"])


def import_runs(runs: int, size: int) -> Runs:
    times = Runs()
    csv = "email,name,lists\n" + "".join(f"{member_address(i)},Member {i},youth\n" for i in range(size))
    for _ in range(runs):
        with temporary_root("import") as root:
            club = make_club(root, {"youth": 0})
            roster = root / "roster.csv"
            roster.write_text(csv)
            args = [CLUBLIST, "--dir", str(club.directory), "member", "import", str(roster)]
            times += timed(args, 1, warmups=0)
            check = subprocess.run(
                [CLUBLIST, "--dir", str(club.directory), "member", "ls", "--json"],
                capture_output=True,
                timeout=120,
                check=True,
            )
            if len(json.loads(check.stdout)) != size:
                raise RuntimeError("member import did not add every member")
    return times


def fill_queue(state_path: Path, messages: int, recipients: int) -> None:
    """*messages* posts of *recipients* waiting deliveries each, as a busy day leaves them."""
    from clublist.state import db as state
    from clublist.state import queue

    content = make_post(member_address(0), "youth@myclub.org")
    conn = state.connect(state_path)
    try:
        with state.transaction(conn):
            for n in range(messages):
                queue.enqueue(
                    conn,
                    kind="post",
                    sender="bounces@myclub.org",
                    recipients=[f"r{n:02d}-{i:05d}@example.org" for i in range(recipients)],
                    content=content,
                    now=time.time() - 60 * (messages - n),
                    list_name="youth",
                    subject=f"Post {n}",
                )
    finally:
        conn.close()


def queue_runs(runs: int, messages: int = 25, recipients: int = 2000) -> dict[str, object]:
    results: dict[str, object] = {}
    with temporary_root("queue") as root:
        club = make_club(root, {"youth": 1})
        fill_queue(club.state, messages, recipients)
        base = [CLUBLIST, "--dir", str(club.directory), "--state", str(club.state), "queue", "ls"]
        lines = subprocess.run([*base, "--json"], capture_output=True, timeout=120, check=True).stdout
        if [m["waiting"] for m in json.loads(lines)] != [recipients] * messages:
            raise RuntimeError("queue ls --json did not count every waiting delivery")
        size = f"{messages * recipients:,} waiting, {messages} messages"
        results["queue_ls_50000"] = report(f"queue ls ({size})", timed(base, runs))
        results["queue_ls_50000_json"] = report(f"queue ls --json ({size})", timed([*base, "--json"], runs))
        every = subprocess.run(
            [*base, "--recipients", "--json"], capture_output=True, timeout=120, check=True
        )
        if len(json.loads(every.stdout)) != messages * recipients:
            raise RuntimeError("queue ls --recipients --json did not list every row")
        results["queue_ls_50000_recipients_json"] = report(
            "queue ls --recipients --json", timed([*base, "--recipients", "--json"], min(runs, 3))
        )
    return results


def report(name: str, times: Runs) -> dict[str, object]:
    wall, cpu = median(times.wall), median(times.cpu)
    runs = fmt_times(times.wall)
    say(f"  {name:<34}: median {wall * 1000:7.1f} ms (CPU {cpu * 1000:6.1f} ms)   runs: {runs} s")
    return {"seconds": times.wall, "median_s": wall, "cpu_seconds": times.cpu, "cpu_median_s": cpu}


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--runs", type=int, default=20, help="runs of --help")
    parser.add_argument("--store-runs", type=int, default=7, help="runs of import and ls")
    parser.add_argument("--big", type=int, default=50_000, help="members in the large registry")
    parser.add_argument("--json", help="write the figures to this file")
    parser.add_argument(
        "--only", choices=GROUPS, action="append", help="run only this group of cases (repeatable)"
    )
    args = parser.parse_args()
    groups = args.only or GROUPS

    import clublist

    compileall.compile_dir(Path(clublist.__file__).parent, quiet=1)
    results: dict[str, object] = {}
    say("CLI (whole process, wall clock)")
    if "help" in groups:
        results.update(help_runs(args.runs))
    if "import" in groups:
        results["import_1000"] = report("member import (1,000 new)", import_runs(args.store_runs, 1000))
    if "ls" in groups:
        results.update(ls_runs(args.store_runs))
    if "big" in groups:
        results.update(big_registry(args.big, args.store_runs))
    if "queue" in groups:
        results.update(queue_runs(args.store_runs))
    write_json(args.json, {"cli": results})


GROUPS = ("help", "import", "ls", "big", "queue")


def help_runs(runs: int) -> dict[str, object]:
    results: dict[str, object] = {}
    results["python_pass"] = report("python -c pass", timed([PYTHON, "-c", "pass"], runs, 2))
    click = timed([PYTHON, "-c", "import click"], runs, 2)
    results["python_click"] = report("python -c 'import click'", click)
    results["help"] = report("clublist --help", timed([CLUBLIST, "--help"], runs, 2))
    hyperfine = hyperfine_median(f"{CLUBLIST} --help", runs)
    if hyperfine is not None:
        say(f"  {'clublist --help (hyperfine)':<34}: median {hyperfine * 1000:7.1f} ms")
        results["help_hyperfine_median_s"] = hyperfine
    return results


def ls_runs(runs: int) -> dict[str, object]:
    results: dict[str, object] = {}
    with temporary_root("ls") as root:
        club = make_club(root, {"youth": 5000})
        base = [CLUBLIST, "--dir", str(club.directory), "member", "ls"]
        results["ls_5000"] = report("member ls (5,000)", timed(base, runs))
        results["ls_5000_json"] = report("member ls --json (5,000)", timed([*base, "--json"], runs))
        results["ls_5000_list"] = report(
            "member ls --list youth (5,000)", timed([*base, "--list", "youth"], runs)
        )
    return results


def big_registry(size: int, runs: int) -> dict[str, object]:
    results: dict[str, object] = {}
    with temporary_root("big") as root:
        club = make_club(root, {"youth": size})
        base = [CLUBLIST, "--dir", str(club.directory), "member"]
        shown = member_address(size // 2)
        subprocess.run([*base, "show", shown], capture_output=True, timeout=120, check=True)  # warm
        adds = Runs()
        for run in range(runs):
            adds += timed([*base, "add", f"new{run}@example.net", "--list", "youth"], 1, warmups=0)
        results[f"add_{size}"] = report(f"member add ({size:,})", adds)
        results[f"show_{size}"] = report(f"member show ({size:,})", timed([*base, "show", shown], runs))
        listing = timed([*base, "ls", "--json"], runs)
        results[f"ls_{size}_json"] = report(f"member ls --json ({size:,})", listing)
        one = subprocess.run([*base, "show", shown, "--json"], capture_output=True, timeout=120, check=True)
        every = subprocess.run([*base, "ls", "--json"], capture_output=True, timeout=120, check=True)
        if json.loads(one.stdout)["email"] != shown or len(json.loads(every.stdout)) != size + runs:
            raise RuntimeError("member show or member ls --json did not answer as they should")
    return results


if __name__ == "__main__":
    main()

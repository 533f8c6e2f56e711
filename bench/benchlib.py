"""What the benchmarks share: the sink and daemon subprocesses, a club on disk, a post, statistics.

Every process started here is stopped by its context manager; every wait
has a deadline.  Only loopback (127.0.0.1) and ephemeral ports are used.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import re
import shutil
import signal
import smtplib
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
PYTHON = sys.executable


def _clublist_command() -> str:
    """The ``clublist`` console script beside this interpreter (the venv's), else the one on PATH."""
    beside = Path(PYTHON).with_name("clublist")
    return str(beside) if beside.exists() else shutil.which("clublist") or "clublist"


CLUBLIST = _clublist_command()
DOMAIN = "myclub.org"
MEMBER_DOMAIN = "example.org"
LOOPBACK = "127.0.0.1"

_LISTENING = re.compile(r"listening on (\S+):(\d+)")


def member_address(i: int) -> str:
    return f"m{i:05d}@{MEMBER_DOMAIN}"


# --- statistics and printing ----------------------------------------------------


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def fmt_times(values: Sequence[float]) -> str:
    return ", ".join(f"{v:.3f}" for v in values)


def write_json(path: str | None, data: dict[str, Any]) -> None:
    if path:
        Path(path).write_text(json.dumps(data, indent=2) + "\n")


def argument_parser(doc: str | None) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)


def say(text: str = "") -> None:
    print(text, flush=True)


# --- the sink -------------------------------------------------------------------


@dataclass(frozen=True)
class Reached:
    """A ``wait`` answered by the sink."""

    rcpts: int
    transactions: int
    connections: int
    first: float  # time.monotonic() at the end of the first transaction since reset
    last: float  # time.monotonic() when the target was reached
    suffix: str = ""  # the wait's address suffix, if it had one


class SinkError(RuntimeError):
    pass


class SinkProcess:
    """``bench/sink.py`` in its own process, driven over its stdin/stdout line protocol."""

    def __init__(self, mode: str = "accept") -> None:
        self.mode = mode
        self.port = 0
        self._lines: queue.Queue[str | None] = queue.Queue()

    def __enter__(self) -> SinkProcess:
        self.process = subprocess.Popen(
            [PYTHON, str(BENCH_DIR / "sink.py"), "--host", LOOPBACK, "--port", "0", "--mode", self.mode],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        threading.Thread(target=self._read, daemon=True).start()
        first = self._reply(15)
        if not first.startswith("port "):
            self.close()
            raise SinkError(f"sink did not start: {first!r}")
        self.port = int(first.split()[1])
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def pid(self) -> int:
        return self.process.pid

    def close(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(OSError):
                assert self.process.stdin is not None
                self.process.stdin.write("quit\n")
                self.process.stdin.flush()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def _reply(self, timeout: float) -> str:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise SinkError(f"no answer from the sink within {timeout:.0f} s") from None
        if line is None:
            raise SinkError(f"the sink exited ({self.process.poll()})")
        return line

    def send(self, command: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()

    def command(self, command: str, timeout: float = 15) -> str:
        self.send(command)
        return self._reply(timeout)

    def reset(self) -> None:
        assert self.command("reset") == "ok"

    def set_mode(self, mode: str) -> None:
        assert self.command(f"mode {mode}") == "ok"

    def count(self) -> tuple[int, int, int, int]:
        words = self.command("count").split()
        return int(words[1]), int(words[2]), int(words[3]), int(words[4])

    def save(self, path: Path) -> int:
        return int(self.command(f"save {path}").split()[1])

    def start_wait(
        self, rcpts: int, timeout: float, *, rcpt_commands: bool = False, suffix: str = ""
    ) -> None:
        """Ask the sink to answer once *rcpts* arrived (those ending with *suffix*, if given);
        collect the answer with :meth:`reached`."""
        self.send(f"{'waitrcpt' if rcpt_commands else 'wait'} {rcpts} {timeout} {suffix}".rstrip())

    def reached(self, timeout: float) -> Reached:
        line = self._reply(timeout + 5)
        words = line.split()
        if words[0] != "reached":
            raise SinkError(f"sink: {line}")
        suffix = words[6] if len(words) > 6 else ""
        return Reached(int(words[1]), int(words[2]), int(words[3]), float(words[4]), float(words[5]), suffix)


# --- a club on disk ---------------------------------------------------------------


@dataclass(frozen=True)
class Club:
    root: Path
    directory: Path
    state: Path
    author: str


def make_club(
    root: Path,
    lists: dict[str, int],
    *,
    settings: dict[str, str] | None = None,
    extra: dict[str, Sequence[str]] | None = None,
) -> Club:
    """A club for myclub.org whose list NAME has the first N members m00000@example.org ...

    The author of every post is m00000@example.org, a member of every list.  *extra*: more
    members by list, each on that list alone (the ``lists`` entry may be 0).
    Built with :mod:`clublist.actions` (one import for all members).
    """
    from clublist.actions import Actor
    from clublist.actions.config import config_set, init_club
    from clublist.actions.lists import list_create
    from clublist.actions.roster import member_import
    from clublist.club.store import Store

    directory = root / "lists.d"
    init_club(directory, DOMAIN, f"admin@{DOMAIN}", "Bench Club", "UTC")
    store = Store(directory)
    shell = Actor.shell()
    # The bench's posts come from 127.0.0.1 unsigned; bench/inbound.py measures authentication apart.
    config_set(store, shell, "listen.trusted_networks", ["127.0.0.0/8"])
    # One author sends every post of a bench, far more than the hourly brake on floods allows.
    config_set(store, shell, "posting.hourly_limit", "1000000")
    for name in lists:
        list_create(store, shell, name)
    for key, value in (settings or {}).items():
        config_set(store, shell, key, value)
    total = max(lists.values(), default=0)
    rows = ["email,name,lists"]
    for i in range(total):
        names = " ".join(name for name, size in lists.items() if i < size)
        rows.append(f"{member_address(i)},Member {i},{names}")
    for name, addresses in (extra or {}).items():
        rows += [f"{address},,{name}" for address in addresses]
    if len(rows) > 1:
        member_import(store, shell, "\n".join(rows) + "\n")
    return Club(root, directory, root / "var" / "clublist.sqlite3", member_address(0))


@contextlib.contextmanager
def temporary_root(prefix: str) -> Iterator[Path]:
    """A scratch directory on the default temp file system (the state database fsyncs there)."""
    root = Path(tempfile.mkdtemp(prefix=f"clublist-bench-{prefix}-"))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


# --- the daemon -------------------------------------------------------------------


class DaemonProcess:
    """``clublist run`` as a subprocess on an ephemeral loopback port, stderr collected."""

    def __init__(self, club: Club, *, smarthost: str | None, extra: Sequence[str] = ()) -> None:
        self.args = [
            CLUBLIST,
            "--dir",
            str(club.directory),
            "--state",
            str(club.state),
            "run",
            "--listen",
            f"{LOOPBACK}:0",
            "--log-format",
            "plain",
            *extra,
        ]
        if smarthost:
            self.args += ["--smarthost", smarthost]
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self.port = 0

    def __enter__(self) -> DaemonProcess:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(self.args, stderr=subprocess.PIPE, text=True, env=env)
        threading.Thread(target=self._read, daemon=True).start()
        try:
            line = self.wait_for_log(lambda text: _LISTENING.search(text) is not None, timeout=60)
        except BaseException:
            self.stop()
            raise
        match = _LISTENING.search(line)
        assert match is not None
        self.port = int(match[2])
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(timeout=30)

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_for_log(self, predicate: Callable[[str], bool], timeout: float, start: int = 0) -> str:
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self.lines[start:]:
                    if predicate(line):
                        return line
                if self.process.poll() is not None:
                    raise RuntimeError(
                        f"clublist run exited {self.process.returncode}:\n" + "\n".join(self.lines[-30:])
                    )
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise RuntimeError(
                        "log line not seen in time; last lines:\n" + "\n".join(self.lines[-30:])
                    )
                self._changed.wait(min(remaining, 0.5))

    def errors(self) -> list[str]:
        with self._changed:
            return [line for line in self.lines if " ERROR " in line or "Traceback" in line]


def proc_memory(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (peak) of a process, in MB (MiB), from /proc/PID/status."""
    found: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0]) / 1024
    return found


def proc_cpu(pid: int) -> dict[str, float]:
    """CPU seconds (user + system) used so far: the whole process, its main thread, the other threads."""

    def seconds(stat_path: Path) -> float:
        stat = stat_path.read_text()
        fields = stat[stat.rindex(")") + 2 :].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime

    total = seconds(Path(f"/proc/{pid}/stat"))  # includes threads that have exited
    main = seconds(Path(f"/proc/{pid}/task/{pid}/stat"))
    return {"total": total, "main": main, "threads": total - main}


def cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {name: after[name] - before.get(name, 0.0) for name in after}


# --- mail ------------------------------------------------------------------------------


def make_post(author: str, to: str, subject: str = "Training on Saturday", body_lines: int = 40) -> bytes:
    """A plain-text post of about 3.7 KB, CRLF line ends, as a member's mail client would send it."""
    message = EmailMessage()
    message["From"] = f"Member Zero <{author}>"
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = format_datetime(datetime.now(UTC))
    message["Message-ID"] = make_msgid(domain=MEMBER_DOMAIN)
    line = "Bring shoes, water and a good mood; we start at 10:00 sharp on the north field."
    message.set_content("Hello all,\n\n" + "\n".join(f"{i:02d} {line}" for i in range(body_lines)) + "\n")
    return message.as_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def smtp_post(
    port: int, sender: str, recipients: Sequence[str], content: bytes, timeout: float = 120
) -> None:
    """One message through smtplib; raises on any refusal."""
    with smtplib.SMTP(LOOPBACK, port, local_hostname="client.bench", timeout=timeout) as client:
        refused = client.sendmail(sender, list(recipients), content)
        if refused:
            raise RuntimeError(f"refused: {refused}")


# --- profiling ------------------------------------------------------------------------


class PySpy:
    """``py-spy record`` attached to a running process, collapsed stacks to *output*; no-op without py-spy.

    Use around the part to profile: ``with PySpy(daemon.pid, path): ...``.
    """

    def __init__(self, pid: int, output: Path | None, rate: int = 250) -> None:
        self.pid = pid
        self.output = output
        self.rate = rate
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> PySpy:
        spy = shutil.which("py-spy") or str(Path(PYTHON).with_name("py-spy"))
        if self.output is None or not Path(spy).exists():
            if self.output is not None:
                say("  (py-spy not installed: no profile; pip install py-spy)")
            return self
        self.output.parent.mkdir(parents=True, exist_ok=True)
        args = [spy, "record", "--pid", str(self.pid), "--rate", str(self.rate), "--format", "raw"]
        args += ["--threads", "--nolineno", "--output", str(self.output)]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)  # let it attach before the measured part starts
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process is None:
            return
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


def summarize_profile(path: Path, top: int = 25) -> str:
    """The hottest functions in a py-spy raw (collapsed) profile: self and inclusive share of samples."""
    if not path.exists():
        return f"no profile at {path}"
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    threads: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        threads[frames[0]] = threads.get(frames[0], 0) + count
        own[frames[-1]] = own.get(frames[-1], 0) + count
        for frame in set(frames[1:]):
            inclusive[frame] = inclusive.get(frame, 0) + count
    if not total:
        return "empty profile"
    lines = [f"{total} samples; by thread: " + ", ".join(f"{t} {c / total:.0%}" for t, c in threads.items())]
    lines.append("self time:")
    for frame, count in sorted(own.items(), key=lambda item: -item[1])[:top]:
        lines.append(f"  {count / total:6.1%}  {frame}")
    lines.append("inclusive time:")
    for frame, count in sorted(inclusive.items(), key=lambda item: -item[1])[:top]:
        lines.append(f"  {count / total:6.1%}  {frame}")
    return "\n".join(lines)


# What the daemon's event-loop thread spends its samples on: the first matching entry wins,
# matched against every frame of a stack ("function (file)" as py-spy writes them).
DAEMON_ACTIVITIES: list[tuple[str, tuple[str, ...]]] = [
    ("SMTP in: decorate (clublist.mail.decorate)", ("decorate (clublist/mail/decorate.py)",)),
    ("SMTP in: serialise post (as_bytes, policy SMTP)", ("Message.as_bytes",)),
    ("SMTP in: rules.evaluate", ("evaluate (clublist/mail/rules.py)",)),
    ("SMTP in: _author (From header parse)", ("_author (clublist/mail/handler.py)",)),
    ("SMTP in: posting.rewrite_from", ("rewrite_from (clublist/mail/enqueue.py)",)),
    ("SMTP in: parse (message_from_bytes)", ("message_from_bytes",)),
    ("SMTP in: other handler work (RCPT checks, commit, log)", ("InboundHandler.",)),
    ("SMTP in: aiosmtpd protocol (commands, DATA lines)", ("aiosmtpd/smtp.py",)),
    ("delivery worker (claim, aiosmtplib, record)", ("DeliveryWorker.", "aiosmtplib", "ConnectionPool.")),
    ("state writer results (call_soon_threadsafe)", ("_settle (clublist/state/db.py)",)),
    ("daemon housekeeping (lists.d fingerprint, purge)", ("Daemon.main_loop",)),
]


def profile_activities(
    path: Path, activities: list[tuple[str, tuple[str, ...]]], thread: str = "MainThread"
) -> str:
    """Share of *thread*'s samples in each activity (the rest: the event loop itself, sockets, select)."""
    if not path.exists():
        return f"no profile at {path}"
    shares: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit() or thread not in stack.split(";", 1)[0]:
            continue
        count = int(count_text)
        total += count
        label = next(
            (label for label, keys in activities if any(key in stack for key in keys)),
            "event loop itself (select, socket reads/writes, callbacks)",
        )
        shares[label] = shares.get(label, 0) + count
    if not total:
        return f"no samples of {thread}"
    lines = [f"{thread}: {total} samples"]
    for label, count in sorted(shares.items(), key=lambda item: -item[1]):
        lines.append(f"  {count / total:6.1%}  {label}")
    return "\n".join(lines)

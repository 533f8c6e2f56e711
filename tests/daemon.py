"""A real ``clublist run`` subprocess on an ephemeral port, with its log collected."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

from conftest import CLUBLIST

_LISTENING = re.compile(r"listening on (\S+):(\d+)")


class DaemonProcess:
    """Start with ``with DaemonProcess(club_dir, state, smarthost=...) as daemon:``."""

    def __init__(
        self,
        club_dir: Path,
        state: Path,
        *,
        smarthost: str | None = None,
        extra: list[str] = (),
        env: dict[str, str] | None = None,
        listen: str = "127.0.0.1:0",
    ) -> None:
        self.args = [
            CLUBLIST,
            "--dir",
            str(club_dir),
            "--state",
            str(state),
            "run",
            "--listen",
            listen,
            "--log-format",
            "plain",
            *extra,
        ]
        if smarthost:
            self.args += ["--smarthost", smarthost]
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self.port = 0
        self.env = env or {}

    def start(self) -> DaemonProcess:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        mark = len(self.lines)  # a restart must not take the last run's line for its own
        self.process = subprocess.Popen(self.args, stderr=subprocess.PIPE, text=True, env=env)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        line = self.wait_for_log(lambda text: _LISTENING.search(text) is not None, timeout=30, start=mark)
        match = _LISTENING.search(line)
        assert match, "\n".join(self.lines)
        self.port = int(match[2])
        return self

    def __enter__(self) -> DaemonProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Signal the daemon and wait for it to exit; its last log lines are in ``lines`` then."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=60)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            self._reader.join(timeout=30)  # stderr closed with the process: the reader ends

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(timeout=30)

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_for_log(self, predicate: Callable[[str], bool], timeout: float = 30, start: int = 0) -> str:
        """The first log line (from index *start*) for which *predicate* holds; fails at the deadline."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self.lines[start:]:
                    if predicate(line):
                        return line
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self.process.poll() is not None and not remaining):
                    raise AssertionError("log line not seen; log so far:\n" + "\n".join(self.lines))
                if self.process.poll() is not None:
                    raise AssertionError(
                        f"clublist run exited {self.process.returncode}:\n" + "\n".join(self.lines)
                    )
                self._changed.wait(min(remaining, 0.5))

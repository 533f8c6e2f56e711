"""``clublist run``: the daemon in the foreground (the only command that imports it)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
from typing import Any

import click

from clublist.cli.app import App, pass_app


class JSONFormatter(logging.Formatter):
    """One JSON object per line, for log collectors."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + "Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


_PRIORITIES = ((logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4), (logging.INFO, 6))


class JournalFormatter(logging.Formatter):
    """Plain lines with a syslog priority prefix (``<4>`` for warnings), as journald reads them.

    journald adds the time itself; the prefix lets ``journalctl -p warning`` pick the lines.
    """

    def __init__(self) -> None:
        super().__init__("%(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        priority = next((p for level, p in _PRIORITIES if record.levelno >= level), 7)
        prefix = f"<{priority}>"
        return "\n".join(prefix + line for line in super().format(record).splitlines())


class BatchedStreamHandler(logging.StreamHandler):
    """A StreamHandler that writes the lines of one moment together.

    With VERP the worker logs a line per recipient, a thousand a second; written one by one,
    each line is a system call on the event loop, a fifth of its time in such a post.  A line
    logged on a thread running an event loop waits at most FLUSH_DELAY and goes out in one
    write with the others; a warning or worse, a line from any other thread and the flush at
    exit write at once, the lines always in the order they were logged.  A SIGKILL loses at
    most FLUSH_DELAY of lines.
    """

    FLUSH_DELAY = 0.02

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._pending: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + self.terminator
        except Exception:
            self.handleError(record)
            return
        self._pending.append(line)  # Handler.handle holds self.lock around emit
        if record.levelno >= logging.WARNING:
            self.flush()
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        if len(self._pending) == 1:
            loop.call_later(self.FLUSH_DELAY, self.flush)

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            if self._pending:
                text, self._pending = "".join(self._pending), []
                try:
                    self.stream.write(text)
                except Exception:  # as StreamHandler.emit: a broken stream must not stop the daemon
                    self.handleError(logging.makeLogRecord({"msg": text.rstrip()}))
            super().flush()


def configure_logging(log_format: str, verbose: bool) -> logging.Handler:
    handler: logging.Handler
    if log_format == "auto" and os.environ.get("JOURNAL_STREAM") and not sys.stderr.isatty():
        log_format = "journal"  # under systemd: journalctl -p warning works
    if log_format == "auto":
        log_format = "rich" if sys.stderr.isatty() else "plain"
    if log_format == "rich":
        from rich.logging import RichHandler

        handler = RichHandler(show_path=False, rich_tracebacks=True)
    else:
        handler = BatchedStreamHandler(sys.stderr)
        formats: dict[str, logging.Formatter] = {
            "json": JSONFormatter(),
            "journal": JournalFormatter(),
            "plain": logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"),
        }
        handler.setFormatter(formats[log_format])
    root = logging.getLogger("clublist")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    return handler


@click.command()
@click.option("--listen", metavar="HOST:PORT", help="Accept mail here instead of club.toml's [listen].")
@click.option("--smarthost", metavar="HOST:PORT", help="Relay all mail through this server for this run.")
@click.option(
    "--log-format",
    type=click.Choice(["auto", "rich", "plain", "journal", "json"]),
    default="auto",
    show_default=True,
    help="Logs on stderr: rich on a terminal, journal (syslog priorities) under systemd, plain, or JSON.",
)
@click.option("-v", "--verbose", is_flag=True, help="Log every rule decision too.")
@pass_app
def run(app: App, listen: str | None, smarthost: str | None, log_format: str, verbose: bool) -> None:
    """Take mail in and deliver it, in the foreground (for systemd).

    SIGTERM or Ctrl-C stops it after transactions in flight finish; SIGHUP
    reloads lists.d and the TLS certificate.  Commands that change lists.d
    return once the running daemon has reloaded it; files edited by hand
    are picked up within a second.

    Example: clublist run --listen 127.0.0.1:8025 --smarthost 127.0.0.1:10025
    """
    from clublist import daemon
    from clublist.club.model import parse_hostport

    handler = configure_logging(log_format, verbose)
    overrides = daemon.Overrides(
        listen=parse_hostport(listen, 25, what="--listen") if listen else None,
        smarthost=":".join(map(str, parse_hostport(smarthost, 25, what="--smarthost")))
        if smarthost
        else None,
    )
    try:
        daemon.run(app.directory, app.state_path, overrides)
    finally:
        handler.flush()  # the loop's last lines before any error message about its end

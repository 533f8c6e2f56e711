"""A real, private Postfix instance for tests: its own directory, loopback ports, no DNS.

What a private instance needs (Postfix 3.7 from Debian, run as root; no ``postmulti`` and no
``multi_instance_*`` settings are needed when every command gets ``-c DIR``):

- its own ``config_directory`` (main.cf, master.cf), ``queue_directory`` and
  ``data_directory``; the queue's subdirectories are made by ``postfix start`` itself (its
  ``post-install create-missing``), the data directory must belong to ``mail_owner``.
- ``mail_owner = postfix`` and ``setgid_group = postdrop`` (the Debian package makes both).
- a root directory every user can traverse (pytest's tmp_path is 0700, and Postfix's daemons
  drop to the postfix user): it is made with :func:`tempfile.mkdtemp` and opened to 0755.
- ``maillog_file`` in that directory (containers have no syslog; without it every error,
  even ``postfix start``'s own, vanishes), listed in ``maillog_file_prefixes``, with the
  ``postlog`` service in master.cf.
- ``inet_interfaces = loopback-only`` and services on ``127.0.0.1:PORT`` (free ports picked
  by the test); ``smtp_dns_support_level = disabled`` with ``smtp_host_lookup = native`` and
  ``disable_dns_lookups``, and transport entries with ``[address]:port`` next hops, so Postfix
  never asks DNS.  ``mynetworks`` is empty: test clients on 127.0.0.1 are strangers to the
  public smtpd, as a sender on the Internet would be.
- ``myhostname`` other than clublist's greeting name, or Postfix takes the hop to clublist
  for a mail loop.

Postfix re-reads a main.cf changed within the last second or two until it has "cooled down"
(its load_file pauses 0.3 s per try), so every command after an edit would wait up to 2 s;
:func:`settle` dates the files back once they are written (nothing writes them half-way here).

``postfix -c DIR start`` returns once the master runs; ``stop`` only signals it, so
:meth:`PrivatePostfix.stop` waits on the master's pid (pidfd) until it has exited.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import random
import select
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

# The unix-domain services every Postfix needs (Debian's master.cf, without chroot).
BASE_MASTER_CF = """\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


def unavailable() -> str | None:
    """Why a private Postfix cannot run here, or None."""
    if shutil.which("postconf") is None or shutil.which("postfix") is None:
        return "Postfix is not installed (apt-get install postfix; .ci/run does)"
    if os.geteuid() != 0:
        return "Postfix's master process must start as root"
    try:
        pwd.getpwnam("postfix")
    except KeyError:
        return "there is no postfix user (the Debian package makes it)"
    return None


def free_port() -> int:
    """A loopback port nobody listens on now, from below the kernel's ephemeral range.

    Every other server in the tests, and every client connection, gets an ephemeral port
    from the kernel: a port picked there and released could go to one of them before
    Postfix or clublist binds it, and the test would then talk to another test's server
    (seen once: Postfix's public port answered by a sink that took everything).  Below
    the range only an explicit bind can take a port.
    """
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for port in random.sample(range(max(1024, low - 20000), low), 200):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError(f"no free loopback port below {low}")


def settle(config_directory: Path) -> None:
    """Date main.cf and master.cf back a minute: they are complete, no Postfix command need wait
    for them to cool down."""
    past = time.time() - 60
    for name in ("main.cf", "master.cf"):
        path = config_directory / name
        if path.exists():
            os.utime(path, (past, past))


class PrivatePostfix:
    """One Postfix instance in a fresh directory; ``config`` is its config_directory."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="clublist-postfix-"))
        self.root.chmod(0o755)
        self.config = self.root / "etc"
        self.queue = self.root / "queue"
        self.data = self.root / "data"
        self.maillog = self.root / "maillog"
        for directory in (self.config, self.queue, self.data):
            directory.mkdir()
        shutil.chown(self.data, "postfix")
        self.running = False
        self.myhostname = "postfix.test"

    def write_base(self, myhostname: str = "postfix.test") -> None:
        """main.cf and master.cf for an instance of its own, before clublist's lines go in."""
        self.myhostname = myhostname
        settings = {
            "compatibility_level": "3.6",
            "config_directory": str(self.config),
            "queue_directory": str(self.queue),
            "data_directory": str(self.data),
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "maillog_file": str(self.maillog),
            "maillog_file_prefixes": str(self.root),
            "myhostname": myhostname,
            "mydestination": "",
            "mynetworks": "",
            "inet_interfaces": "loopback-only",
            "inet_protocols": "ipv4",
            "smtp_dns_support_level": "disabled",
            "smtp_host_lookup": "native",
            "disable_dns_lookups": "yes",
            "smtpd_peername_lookup": "no",
            "alias_maps": "",
            "alias_database": "",
            "biff": "no",
        }
        (self.config / "main.cf").write_text("".join(f"{k} = {v}\n" for k, v in settings.items()))
        (self.config / "master.cf").write_text(BASE_MASTER_CF)
        settle(self.config)

    def apply(self, files: dict, routes: dict[str, int]) -> None:
        """Put ``clublist postfix --json``'s lines where they go: main.cf settings with
        ``postconf -e``, master.cf services appended, the transport map written, plus the
        test's own routes (domain -> sink port on 127.0.0.1)."""
        for line in files["main.cf"]:
            self.postconf("-e", line)
        with (self.config / "master.cf").open("a") as master:
            master.write("".join(f"{line}\n" for line in files["master.cf"]))
        transport = files["transport"]
        lines = [
            *transport["lines"],
            *(f"{domain} smtp:[127.0.0.1]:{port}" for domain, port in routes.items()),
        ]
        Path(transport["path"]).write_text("".join(f"{line}\n" for line in lines))
        settle(self.config)

    def postconf(self, *args: str) -> str:
        try:
            return self.command("postconf", "-c", str(self.config), *args)
        finally:
            settle(self.config)  # after -e, -X, -P

    def command(self, *args: str) -> str:
        """Run a Postfix command; its fatal errors are in the maillog, shown when it fails."""
        result = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
        if result.returncode != 0:
            raise AssertionError(
                f"{' '.join(args)} exited {result.returncode}: {result.stderr}\n{self.log()}"
            )
        return result.stdout

    def start(self) -> None:
        self.command("postfix", "-c", str(self.config), "start")
        self.running = True

    def reload(self) -> None:
        self.command("postfix", "-c", str(self.config), "reload")

    def master_pid(self) -> int | None:
        with contextlib.suppress(OSError, ValueError):
            return int((self.queue / "pid" / "master.pid").read_text().split()[0])
        return None

    def stop(self) -> None:
        """Stop the master and wait until it has exited; then remove the directory."""
        try:
            pid = self.master_pid()
            if self.running:
                self.command("postfix", "-c", str(self.config), "stop")
                self.running = False
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    descriptor = os.pidfd_open(pid)
                    try:
                        readable, _, _ = select.select([descriptor], [], [], 60)
                        assert readable, "Postfix's master did not exit within 60 s"
                    finally:
                        os.close(descriptor)
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def wait_listening(self, port: int, timeout: float = 30) -> None:
        """Until *port* answers with this instance's greeting (a reload opens new services a
        moment later); another server's 220 there is not enough."""
        deadline = time.monotonic() + timeout
        greeting = f"220 {self.myhostname} ".encode()
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
                    if connection.recv(512).startswith(greeting):
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"Postfix does not listen on {port}:\n{self.log()}")
            time.sleep(0.05)  # Postfix signals nothing when a service opens: asked again until the deadline

    def queue_entries(self) -> list[dict]:
        """``postqueue -j``: one record per message still in Postfix's queue."""
        out = self.command("postqueue", "-c", str(self.config), "-j")
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def wait_queue_empty(self, timeout: float = 30) -> None:
        """Until Postfix's queue is empty (what it accepted has been delivered or bounced)."""
        deadline = time.monotonic() + timeout
        while entries := self.queue_entries():
            if time.monotonic() > deadline:
                raise AssertionError(f"Postfix's queue is not empty: {entries}\n{self.log()}")
            time.sleep(0.1)  # postqueue is the only way to see the queue: asked again until the deadline

    def log(self) -> str:
        with contextlib.suppress(OSError):
            return self.maillog.read_text()
        return ""

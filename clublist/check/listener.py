"""The listener check: when ``clublist run`` runs, talk to it as a sender would.

It connects where the daemon says it listens (its lock file), reads the
banner, says EHLO, looks for STARTTLS when a certificate is set, and tries
the relay tricks at RCPT: every one must be refused.  Only RCPT is ever
sent (with the null sender), never DATA, so nothing can be queued, and only
to the daemon's own address on this machine.
"""

from __future__ import annotations

import smtplib
import ssl
from collections.abc import Iterator
from contextlib import contextmanager

from clublist.check import Finding, Target
from clublist.state.db import DaemonLock

TIMEOUT = 10.0
CLOSE = "stop the listener (or block port 25) until only the club's own addresses are accepted at RCPT"


def relay_tricks(domain: str) -> list[str]:
    """Recipients an open relay would take: each names a mailbox outside the club."""
    return [
        "relay-test@example.com",
        f"relay-test%example.com@{domain}",
        f"relay-test@example.com@{domain}",
        f"@{domain}:relay-test@example.com",
        f'"relay-test@example.com"@{domain}',
        f"example.com!relay-test@{domain}",
        "relay-test@[127.0.0.1]",
        f"postmaster@{domain}.example.com",
        f"postmaster@relay-test.{domain}",
    ]


def run(target: Target) -> list[Finding]:
    assert target.site is not None
    lock = DaemonLock(target.state_path)
    pid = lock.holder()
    if pid is None:
        return [
            Finding(
                "listener.daemon",
                "warn",
                "clublist run is not running, so the listener was not checked",
                "start it ('systemctl start clublist' or 'clublist run') and check again",
            )
        ]
    host, port = lock.address() or (target.site.listen.host, target.site.listen.port)
    host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    try:
        with _connect(host, port) as (client, banner):
            findings = [Finding("listener.banner", "ok", f"{host}:{port} (pid {pid}) greets: {banner}")]
            findings += _ehlo(client, target, (host, port))
            findings += _relay(client, target.site.domain)
    except (OSError, smtplib.SMTPException) as exc:
        return [
            Finding(
                "listener.banner",
                "fail",
                f"cannot talk SMTP to the daemon at {host}:{port} (pid {pid}): {exc}",
                "look at clublist run's log; check listen.host and listen.port",
            )
        ]
    return findings


@contextmanager
def _connect(host: str, port: int) -> Iterator[tuple[smtplib.SMTP, str]]:
    client = smtplib.SMTP(timeout=TIMEOUT)
    try:
        code, text = client.connect(host, port)
        if code != 220:
            raise smtplib.SMTPConnectError(code, text)
        yield client, f"{code} {text.decode('utf-8', 'replace')}"
    finally:
        client.close()


def _ehlo(client: smtplib.SMTP, target: Target, peer: tuple[str, int]) -> list[Finding]:
    assert target.site is not None
    code, _ = client.ehlo("clublist-check.invalid")
    if code != 250:
        return [Finding("listener.ehlo", "fail", f"EHLO answered {code}", "look at clublist run's log")]
    features = sorted(client.esmtp_features)
    findings = [Finding("listener.ehlo", "ok", f"EHLO offers {', '.join(features) or 'no extensions'}")]
    if not target.site.tls.cert:
        findings.append(Finding("listener.starttls", "info", "no tls.cert, so STARTTLS is not offered"))
    elif client.has_extn("starttls"):
        findings.append(_handshake(peer))
    else:
        findings.append(
            Finding(
                "listener.starttls",
                "fail",
                "tls.cert is set but the listener does not offer STARTTLS",
                "send clublist run a SIGHUP (or restart it) so it loads the certificate; see its log",
            )
        )
    return findings


def _handshake(peer: tuple[str, int]) -> Finding:
    """STARTTLS on a connection of its own: the certificate is checked by the tls area, not here."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with smtplib.SMTP(*peer, local_hostname="clublist-check.invalid", timeout=TIMEOUT) as client:
            client.starttls(context=context)
            version = client.sock.version() if isinstance(client.sock, ssl.SSLSocket) else "?"
    except (OSError, ValueError, smtplib.SMTPException) as exc:
        return Finding(
            "listener.starttls", "fail", f"STARTTLS is offered but fails: {exc}", "check tls.cert and tls.key"
        )
    return Finding("listener.starttls", "ok", f"STARTTLS offered and works ({version})")


def _relay(client: smtplib.SMTP, domain: str) -> list[Finding]:
    """Try each trick at RCPT from the null sender; a control address shows the test can pass at all."""
    code, text = client.mail("")
    if code != 250:
        return [
            Finding(
                "listener.relay",
                "warn",
                f"MAIL FROM:<> answered {code} {text.decode('utf-8', 'replace')}: relay test not run",
                "a mail server must accept the null sender (RFC 5321 4.5.5); see clublist run's log",
            )
        ]
    accepted = []
    tricks = relay_tricks(domain)
    for recipient in tricks:
        code, _ = client.rcpt(recipient)
        if 200 <= code < 300:
            accepted.append(recipient)
    control, _ = client.rcpt(f"postmaster@{domain}")
    client.rset()
    findings = []
    if accepted:
        findings.append(
            Finding(
                "listener.relay",
                "fail",
                f"open relay: {len(accepted)} of {len(tricks)} relay tricks accepted: {', '.join(accepted)}",
                CLOSE,
            )
        )
    else:
        findings.append(Finding("listener.relay", "ok", f"all {len(tricks)} relay tricks refused at RCPT"))
    if not 200 <= control < 300:
        findings.append(
            Finding(
                "listener.postmaster",
                "warn",
                f"RCPT TO:<postmaster@{domain}> answered {control}; RFC 5321 asks every domain to take it",
                "see clublist run's log",
            )
        )
    return findings

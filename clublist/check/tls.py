"""The TLS check: the listener's certificate and key load and match, the chain verifies, the
name covers ``listen.hostname``, and it is not about to expire.

The files are read with cryptography; the chain is verified by OpenSSL, as senders verify it,
against the system's CAs plus ``delivery.tls_ca_file`` (the CAs clublist trusts).  Each
problem is its own line so the fix is clear.
"""

from __future__ import annotations

import ssl
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from clublist.check import Finding, Target

WARN_DAYS = 21
FAIL_DAYS = 7
RENEW = "renew it (for example 'certbot renew') and send clublist run a SIGHUP"


def run(target: Target, now: datetime | None = None) -> list[Finding]:
    assert target.site is not None
    tls = target.site.tls
    if not tls.cert:
        return [
            Finding(
                "tls.files",
                "warn",
                "no certificate (tls.cert is empty): mail to the club travels unencrypted",
                "clublist config set tls.cert /etc/letsencrypt/live/HOST/fullchain.pem "
                "and tls.key .../privkey.pem",
            )
        ]
    try:
        chain = x509.load_pem_x509_certificates(Path(tls.cert).read_bytes())
    except (OSError, ValueError) as exc:
        return [Finding("tls.files", "fail", f"cannot read tls.cert {tls.cert}: {exc}", _fix_files(tls.cert))]
    key_path = tls.key or tls.cert
    try:
        key = serialization.load_pem_private_key(Path(key_path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        return [Finding("tls.files", "fail", f"cannot read tls.key {key_path}: {exc}", _fix_files(key_path))]
    leaf = chain[0]
    matching = _matching(leaf, key, tls.cert, key_path)
    findings = [matching]
    host = target.hostname
    names = _dns_names(leaf)
    if _covers(names, host):
        findings.append(Finding("tls.name", "ok", f"the certificate covers {host}"))
    else:
        findings.append(
            Finding(
                "tls.name",
                "fail",
                f"the certificate is for {', '.join(names) or 'no DNS name'}, not {host}",
                f"get a certificate for {host} (certbot certonly -d {host}) or set listen.hostname "
                "to a name it covers",
            )
        )
    if matching.status == "ok":
        name = host if _covers(names, host) else (names or [host])[0]
        findings.append(_chain(tls.cert, key_path, name, target.site.delivery.tls_ca_file))
    findings.append(_expiry(leaf, now or datetime.now(UTC)))
    return findings


def _fix_files(path: str) -> str:
    return f"check that {path} exists, is PEM and readable by the user clublist runs as"


def _matching(leaf: x509.Certificate, key: object, cert_path: str, key_path: str) -> Finding:
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if leaf.public_key().public_bytes(der, public) == key.public_key().public_bytes(der, public):  # type: ignore[attr-defined]
        return Finding("tls.files", "ok", f"certificate and key load and match ({cert_path})")
    return Finding(
        "tls.files",
        "fail",
        f"the key {key_path} does not belong to the certificate {cert_path}",
        "point tls.key at the private key issued with this certificate (certbot: privkey.pem beside it)",
    )


def _dns_names(leaf: x509.Certificate) -> list[str]:
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return san.get_values_for_type(x509.DNSName)


def _covers(names: list[str], host: str) -> bool:
    """RFC 6125: an exact name, or a wildcard standing for exactly the left-most label."""
    host = host.lower().rstrip(".")
    for name in (n.lower().rstrip(".") for n in names):
        if name == host or (name.startswith("*.") and host.partition(".")[2] == name[2:] and "." in name[2:]):
            return True
    return False


def _chain(cert_path: str, key_path: str, name: str, extra_ca_file: str) -> Finding:
    """Verify the chain as a sender's OpenSSL would: a TLS handshake in memory, client against server.

    The client trusts the system's CAs plus ``delivery.tls_ca_file`` and checks *name*, a name the
    certificate covers (a wrong name is its own line).
    """
    try:
        server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server.load_cert_chain(cert_path, key_path)
        client = ssl.create_default_context()
        if extra_ca_file:
            client.load_verify_locations(cafile=extra_ca_file)
        pipes = [ssl.MemoryBIO() for _ in range(4)]
        ends = [
            client.wrap_bio(pipes[0], pipes[1], server_hostname=name),
            server.wrap_bio(pipes[2], pipes[3], server_side=True),
        ]
        for _ in range(10):  # a TLS 1.3 handshake takes two round trips
            finished = 0
            for end in ends:
                try:
                    end.do_handshake()
                    finished += 1
                except ssl.SSLWantReadError:
                    pass
            pipes[2].write(pipes[1].read())
            pipes[0].write(pipes[3].read())
            if finished == 2:
                break
        else:
            return Finding("tls.chain", "fail", "a TLS handshake with the certificate does not finish", RENEW)
    except ssl.SSLCertVerificationError as exc:
        return Finding(
            "tls.chain",
            "fail",
            f"the certificate chain does not verify: {exc.verify_message}",
            "use the full chain file (certbot: fullchain.pem) for tls.cert",
        )
    except (ssl.SSLError, OSError) as exc:
        return Finding("tls.chain", "fail", f"a TLS handshake with the certificate fails: {exc}", RENEW)
    return Finding("tls.chain", "ok", "the chain verifies to a trusted root")


def _expiry(leaf: x509.Certificate, now: datetime) -> Finding:
    days = (leaf.not_valid_after_utc - now).total_seconds() / 86400
    until = leaf.not_valid_after_utc.strftime("%Y-%m-%d")
    if days < 0:
        return Finding("tls.expiry", "fail", f"the certificate expired on {until}", RENEW)
    if days < FAIL_DAYS:
        return Finding("tls.expiry", "fail", f"the certificate expires in {days:.0f} days ({until})", RENEW)
    if days < WARN_DAYS:
        return Finding("tls.expiry", "warn", f"the certificate expires in {days:.0f} days ({until})", RENEW)
    return Finding("tls.expiry", "ok", f"the certificate is valid for {days:.0f} more days ({until})")

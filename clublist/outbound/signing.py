"""DKIM keys and signatures for everything clublist sends, and the ARC seal on posts.

The delivery worker signs each message once, as it loads it from the queue, after every change
to it (decoration happened at enqueue time; VERP changes only the envelope).  Only a copy with
its own one-click unsubscribe link (RFC 8058) is signed per recipient, and then the body hash,
the costly part of a signature over a large body, is still computed once per body.

Keys live beside the state database, ``var/dkim/SELECTOR.key`` (mode 0600), never in lists.d,
which people keep in version control.  ``dkim.selector`` names the key that signs (RSA as a
rule); ``dkim.ed25519_selector`` an optional second one that signs as well (RFC 8463).

Canonicalisation and header selection are dkimpy's; the signature itself is made with
``cryptography``, because dkimpy's pure-Python RSA takes about 8 ms a signature (bench/README.md),
against 0.3 ms, and per-recipient copies need one each.  The ARC set (RFC 8617) is dkimpy's
``arc_sign``, once per post, with its two RSA signatures made by ``cryptography`` as well
(:func:`_sign_with_openssl`): dkimpy's own took 14 ms of a post's way out, with the
interpreter's lock held, before its first recipient could be sent to.
"""

from __future__ import annotations

import base64
import collections
import hashlib
import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa, utils

from clublist.club.model import Site, check_selector
from clublist.errors import ClublistError

Algorithm = Literal["rsa", "ed25519"]
PrivateKey = rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey

# Signed as often as present, and once more when absent: nobody may add one on the way.
_SIGNED_ALWAYS: tuple[bytes, ...] = (b"from", b"to", b"cc", b"subject", b"date", b"message-id")
_SIGNED_ALWAYS += (b"reply-to", b"in-reply-to", b"references")
# Signed as often as they are present.
_SIGNED_IF_PRESENT: tuple[bytes, ...] = (b"sender", b"mime-version", b"content-type")
_SIGNED_IF_PRESENT += (b"content-transfer-encoding",)
_SIGNED_IF_PRESENT += (b"auto-submitted", b"x-original-from", b"precedence")
# Signed once more than present (over-signed, as From is): a second From or a forged unsubscribe
# link added on the way breaks the signature instead of going unnoticed.
_OVERSIGNED = (b"list-unsubscribe", b"list-unsubscribe-post")
# Per-recipient one-click headers are set after the ARC seal: its message signature leaves them out.
_PERSONAL = frozenset(_OVERSIGNED)
_HEADER_END = re.compile(rb"\r?\n\r?\n")
_BODY_HASHES = 256  # bodies remembered: a 32-byte key and a 44-byte hash each


def key_path(state_path: Path, selector: str) -> Path:
    """Where the private key of *selector* lives: var/dkim/SELECTOR.key beside the state database."""
    return state_path.with_name("dkim") / f"{check_selector(selector)}.key"


def generate_key(path: Path, algorithm: Algorithm, bits: int = 2048) -> PrivateKey:
    """Make a key pair and write the private key to *path* (mode 0600); never overwrites a key."""
    if algorithm == "rsa":
        if not 1024 <= bits <= 4096:
            raise ClublistError("--bits must be between 1024 and 4096 (2048 is what receivers expect)")
        key: PrivateKey = rsa.generate_private_key(public_exponent=65537, key_size=bits)
        # PKCS#1 ("BEGIN RSA PRIVATE KEY"): what OpenDKIM, rspamd and dkimpy all read.
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    else:
        key = ed25519.Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ClublistError(
            f"{path} exists: a published key is never overwritten; choose another --selector"
        ) from None
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
        handle.flush()
        os.fsync(handle.fileno())
    return key


def load_key(path: Path) -> PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except FileNotFoundError:
        raise ClublistError(
            f"no DKIM key at {path}; make one with 'clublist dkim keygen --selector {path.stem}'"
        ) from None
    except (OSError, ValueError) as exc:
        raise ClublistError(f"cannot read the DKIM key {path}: {exc}") from None
    if not isinstance(key, rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey):
        raise ClublistError(f"{path} is neither an RSA nor an ed25519 key")
    return key


def dns_record(key: PrivateKey) -> str:
    """The TXT value to publish at SELECTOR._domainkey.DOMAIN (RFC 6376 3.6.1, RFC 8463)."""
    public = key.public_key()
    if isinstance(public, ed25519.Ed25519PublicKey):
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return f"v=DKIM1; k=ed25519; p={base64.b64encode(raw).decode()}"
    der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode()}"


def txt_strings(value: str) -> list[str]:
    """*value* cut into the at most 255-character strings a TXT record is made of."""
    return [value[i : i + 255] for i in range(0, len(value), 255)]


@dataclass(frozen=True)
class SigningKey:
    selector: str
    key: PrivateKey = field(repr=False)

    @property
    def algorithm(self) -> bytes:
        return b"ed25519-sha256" if isinstance(self.key, ed25519.Ed25519PrivateKey) else b"rsa-sha256"

    def sign_digest(self, digest: bytes) -> bytes:
        if isinstance(self.key, ed25519.Ed25519PrivateKey):
            return self.key.sign(digest)  # RFC 8463: Ed25519 over the SHA-256 hash
        return self.key.sign(digest, padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))

    def pkcs1_pem(self) -> bytes:
        assert isinstance(self.key, rsa.RSAPrivateKey)
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )


class Signer:
    """The club's keys, signing messages for ``d=`` the club's domain (relaxed/relaxed).

    ``signatures`` counts the signatures made, ``seals`` the ARC sets, so tests and the
    benchmark can see that a message is signed once, not once per recipient.
    """

    def __init__(
        self, domain: str, keys: list[SigningKey], *, authserv_id: str = "", arc: bool = True
    ) -> None:
        import dkim  # the daemon's library: not imported by ``clublist --help``

        self._dkim = dkim
        self._canon = dkim.CanonicalizationPolicy.from_c_value(b"relaxed/relaxed")
        self.domain = domain.encode("ascii")
        self.keys = keys
        self.authserv_id = authserv_id
        self.arc_key = next((k for k in keys if k.algorithm == b"rsa-sha256"), None) if arc else None
        if self.arc_key is not None:
            _sign_with_openssl(dkim, self.arc_key.key)
        self.signatures = 0
        self.seals = 0
        self._body_hashes: collections.OrderedDict[bytes, bytes] = collections.OrderedDict()
        self._lock = threading.Lock()  # the worker signs in threads as well as on its event loop

    def sign(self, content: bytes) -> bytes:
        """*content* with a DKIM-Signature per key on top (the message is otherwise unchanged)."""
        head, body = _split(content)
        headers = self._dkim.rfc822_parse(head + b"\r\n")[0]
        include = _signed_headers(headers)
        body_hash = self._body_hash(body)
        # Only the fields signed are canonicalised, in h= order (a copy is signed per recipient).
        signed = self._canon.canonicalize_headers(self._dkim.select_headers(headers, include))
        signatures = b"".join(self._signature(key, signed, include, body_hash) for key in self.keys)
        return signatures + content

    def seal(self, content: bytes) -> bytes:
        """*content* with an ARC set on top when it carries our Authentication-Results, else as it is.

        dkimpy reads the chain validation (cv=) from an ``arc=`` result in that header: none
        for a first hop, fail for a broken chain (RFC 8617 5.1.2).
        """
        if self.arc_key is None or b"authentication-results:" not in content[:65536].lower():
            return content
        head, _ = _split(content)
        names = [name.lower() for name, _ in self._dkim.rfc822_parse(head + b"\r\n")[0]]
        include = [name for name in _signed_headers_for(names) if name not in _PERSONAL]
        arc_set = self._dkim.arc_sign(
            content,
            self.arc_key.selector.encode(),
            self.domain,
            self.arc_key.pkcs1_pem(),
            self.authserv_id.encode(),
            include_headers=include,
        )
        if not arc_set:
            return content
        with self._lock:
            self.seals += 1
        return b"".join(arc_set) + content

    def _signature(
        self, key: SigningKey, signed: list[tuple[bytes, bytes]], include: list[bytes], body_hash: bytes
    ) -> bytes:
        """One DKIM-Signature field, built and hashed as dkimpy does (b= folded onto its own line).

        *signed* are the canonical fields in h= order; the signature field itself is hashed
        last, with b= empty and without its CRLF (RFC 6376 3.7).
        """
        dkim, name = self._dkim, b"DKIM-Signature"
        fields = [
            (b"v", b"1"),
            (b"a", key.algorithm),
            (b"c", b"relaxed/relaxed"),
            (b"d", self.domain),
            (b"s", key.selector.encode()),
            (b"t", str(int(time.time())).encode()),
            (b"h", b" : ".join(include)),
            (b"bh", body_hash),
            (b"b", b"0" * 60),
        ]
        unsigned = dkim.RE_BTAG.sub(rb"\1", dkim.fold(b"; ".join(b"=".join(f) for f in fields), len(name)))
        hasher = hashlib.sha256()
        for field_name, value in signed:
            hasher.update(field_name + b":" + value)
        ((field_name, value),) = self._canon.canonicalize_headers([(name, b" " + unsigned)])
        hasher.update(field_name + b":" + value.rstrip())
        fields[-1] = (b"b", base64.b64encode(key.sign_digest(hasher.digest())))
        with self._lock:
            self.signatures += 1
        return name + b": " + dkim.fold(b"; ".join(b"=".join(f) for f in fields) + b"\r\n", len(name))

    def _body_hash(self, body: bytes) -> bytes:
        """The relaxed body hash, computed once per distinct body (one-click copies share one)."""
        key = hashlib.blake2b(body, digest_size=32).digest()
        with self._lock:
            found = self._body_hashes.get(key)
            if found is not None:
                self._body_hashes.move_to_end(key)
        if found is None:
            canonical = self._canon.canonicalize_body(body)
            found = base64.b64encode(hashlib.sha256(canonical).digest())
            with self._lock:
                self._body_hashes[key] = found
                if len(self._body_hashes) > _BODY_HASHES:
                    self._body_hashes.popitem(last=False)
        return found


_OPENSSL_KEYS: dict[int, rsa.RSAPrivateKey] = {}  # by modulus: the keys dkimpy's RSA hands on
_HASHES = {"sha256": hashes.SHA256, "sha1": hashes.SHA1}


def _sign_with_openssl(dkim: Any, key: PrivateKey) -> None:
    """Have dkimpy's RSA signatures with *key* made by OpenSSL (``cryptography``).

    dkimpy signs in pure Python (``dkim.RSASSA_PKCS1_v1_5_sign``, about 7 ms a signature on a
    2048-bit key); its ``arc_sign`` takes no signer of ours, so that one function is replaced by
    one that hands the keys registered here to OpenSSL and any other key back to dkimpy.
    PKCS #1 v1.5 signatures are deterministic: the bytes are the same either way.
    """
    assert isinstance(key, rsa.RSAPrivateKey)
    _OPENSSL_KEYS[key.private_numbers().public_numbers.n] = key
    pure_python = dkim.RSASSA_PKCS1_v1_5_sign
    if getattr(pure_python, "openssl", False):
        return

    def sign(digest: Any, private_key: dict[str, int]) -> bytes:
        found = _OPENSSL_KEYS.get(private_key["modulus"])
        algorithm = _HASHES.get(digest.name.lower())
        if found is None or algorithm is None:
            return bytes(pure_python(digest, private_key))
        return found.sign(digest.digest(), padding.PKCS1v15(), utils.Prehashed(algorithm()))

    sign.openssl = True  # type: ignore[attr-defined]
    dkim.RSASSA_PKCS1_v1_5_sign = sign


def _split(content: bytes) -> tuple[bytes, bytes]:
    """The header section (without the empty line) and the body, with CRLF line ends."""
    found = _HEADER_END.search(content)
    if found is None:
        return content, b""
    body = content[found.end() :]
    if b"\n" in body and body.count(b"\n") != body.count(b"\r\n"):
        body = re.sub(rb"\r?\n", b"\r\n", body)
    return content[: found.start()], body


def _signed_headers(headers: list[tuple[bytes, bytes]]) -> list[bytes]:
    return _signed_headers_for([name.lower() for name, _ in headers])


def _signed_headers_for(names: list[bytes]) -> list[bytes]:
    """The h= list: the named headers as often as present (some at least once), every List-*,
    and the over-signed ones once more."""
    counts = collections.Counter(names)
    listed = [n for n in dict.fromkeys(names) if n.startswith(b"list-") and n not in _OVERSIGNED]
    include: list[bytes] = []
    for name in _SIGNED_ALWAYS:
        include += [name] * max(counts[name], 1)
    for name in (*_SIGNED_IF_PRESENT, *listed):
        include += [name] * counts[name]
    for name in _OVERSIGNED:
        include += [name] * (counts[name] + 1)
    return [*include, b"from"]


def load_signer(site: Site, state_path: Path) -> Signer | None:
    """The signer club.toml asks for, or None when no selector is set; a missing key is an error."""
    selectors = [s for s in (site.dkim.selector, site.dkim.ed25519_selector) if s]
    if not selectors:
        return None
    keys = [SigningKey(s, load_key(key_path(state_path, s))) for s in selectors]
    return Signer(site.domain, keys, authserv_id=authserv_id(site), arc=site.dkim.arc)


def authserv_id(site: Site) -> str:
    """The name clublist's Authentication-Results carry (RFC 8601): the listener's host name."""
    return site.listen.hostname or site.domain

"""DKIM keys made in the test and the DNS records that publish them and a domain's policies."""

from __future__ import annotations

import base64
from dataclasses import dataclass

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa


@dataclass(frozen=True)
class DKIMKey:
    private_pem: bytes
    public_record: str  # the TXT value for SELECTOR._domainkey.DOMAIN

    @classmethod
    def generate(cls) -> DKIMKey:
        key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
        private_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        public_der = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return cls(private_pem, "v=DKIM1; k=rsa; p=" + base64.b64encode(public_der).decode())

    def sign(self, message: bytes, domain: str, selector: str = "sel") -> bytes:
        """*message* with one more DKIM-Signature on top, made by dkimpy."""
        signature = dkim.sign(
            message,
            selector.encode(),
            domain.encode(),
            self.private_pem,
            include_headers=[b"from", b"subject"],
        )
        return signature + message


def domain_records(
    domain: str,
    *,
    spf: str | None = None,
    dmarc: str | None = None,
    key: DKIMKey | None = None,
    selector: str = "sel",
) -> dict[tuple[str, str], list[str]]:
    """The zone entries of a sending domain: its SPF record, DMARC record and DKIM key."""
    records: dict[tuple[str, str], list[str]] = {(domain, "A"): ["192.0.2.1"]}
    if spf is not None:
        records[(domain, "TXT")] = [spf]
    if dmarc is not None:
        records[(f"_dmarc.{domain}", "TXT")] = [dmarc]
    if key is not None:
        records[(f"{selector}._domainkey.{domain}", "TXT")] = [key.public_record]
    return records

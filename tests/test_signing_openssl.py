"""The ARC seal's RSA signatures come from OpenSSL, byte for byte what dkimpy's own RSA makes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import dkim
import dkim.crypto
import pytest

from clublist.outbound import signing


@pytest.mark.parametrize("algorithm", ["sha256", "sha1"])
def test_the_clubs_key_is_signed_with_by_openssl_and_others_by_dkimpy(tmp_path: Path, algorithm: str) -> None:
    ours = signing.SigningKey("s1", signing.generate_key(tmp_path / "s1.key", "rsa"))
    other = signing.SigningKey("fw", signing.generate_key(tmp_path / "fw.key", "rsa"))
    signing.Signer("myclub.org", [ours], authserv_id="myclub.org")  # an ARC key: registered
    assert getattr(dkim.RSASSA_PKCS1_v1_5_sign, "openssl", False)
    for key in (ours, other):
        private = dkim.crypto.parse_pem_private_key(key.pkcs1_pem())
        digest = dkim.HashThrough(hashlib.new(algorithm, b"List-Id: <youth.myclub.org>\r\n"))
        made = dkim.RSASSA_PKCS1_v1_5_sign(digest, private)
        assert made == dkim.crypto.RSASSA_PKCS1_v1_5_sign(digest, private)
        assert isinstance(made, bytes) and len(made) == 256

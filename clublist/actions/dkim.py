"""The club's DKIM keys: make one, and say what to publish in DNS.

The private key goes beside the state database (``var/dkim/SELECTOR.key``), the selector into
club.toml through the store (comments kept).  Rotation: make a key under a new selector,
publish its record, wait for DNS to carry it, then switch ``dkim.selector``; the old key file
stays, so the old record can stay published until mail signed with it has been delivered.
``standby`` makes the new key without switching, for publishing its record first.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clublist.actions import Actor, require_admin
from clublist.club.model import check_selector
from clublist.club.store import SITE_FILE, Store
from clublist.errors import ClublistError
from clublist.outbound import signing


@dataclass(frozen=True)
class DkimRecord:
    """A key and the DNS record that publishes it (``dkim show --json`` prints exactly these)."""

    selector: str
    domain: str
    name: str
    record: str
    key_path: str

    @property
    def strings(self) -> list[str]:
        """The record as a zone file wants it: strings of at most 255 characters."""
        return signing.txt_strings(self.record)


def _record(store: Store, state_path: Path, selector: str) -> DkimRecord:
    domain = store.load().site.domain
    path = signing.key_path(state_path, selector)
    key = signing.load_key(path)
    return DkimRecord(selector, domain, f"{selector}._domainkey.{domain}", signing.dns_record(key), str(path))


def dkim_keygen(
    store: Store,
    actor: Actor,
    state_path: Path,
    selector: str,
    algorithm: signing.Algorithm,
    bits: int,
    *,
    standby: bool = False,
) -> DkimRecord:
    """Make a key pair for *selector*, write the private key (0600) and, unless *standby*, sign with it.

    RSA becomes ``dkim.selector``; ed25519 ``dkim.ed25519_selector``, which signs in addition.
    """
    require_admin(actor, "make DKIM keys")
    check_selector(selector)
    store.load()  # a broken club.toml is reported before a key is made
    signing.generate_key(signing.key_path(state_path, selector), algorithm, bits)
    setting = "selector" if algorithm == "rsa" else "ed25519_selector"

    def change(document: Any) -> None:
        import tomlkit

        if "dkim" not in document:
            document["dkim"] = tomlkit.table()
        document["dkim"][setting] = selector

    if not standby:
        store.edit_toml(SITE_FILE, change)
    return _record(store, state_path, selector)


def dkim_show(store: Store, actor: Actor, state_path: Path, selector: str | None = None) -> DkimRecord:
    """The signing key in force (or *selector*'s) and its DNS record."""
    require_admin(actor, "see the DKIM keys")
    chosen = selector or store.load().site.dkim.selector or store.load().site.dkim.ed25519_selector
    if not chosen:
        raise ClublistError("no DKIM key is set up; make one with 'clublist dkim keygen'")
    return _record(store, state_path, chosen)

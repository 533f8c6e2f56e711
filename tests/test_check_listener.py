"""``clublist check --only listener``: a real ``clublist run`` passes the relay self-test."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from click.testing import CliRunner
from daemon import DaemonProcess
from mta import RemoteMTA

from clublist.actions import Actor
from clublist.actions.config import config_set, init_club
from clublist.actions.lists import list_create
from clublist.actions.members import member_add
from clublist.check.listener import relay_tricks
from clublist.cli import main
from clublist.club.store import Store
from clublist.state.db import DaemonLock


def check(club_dir: Path, state: Path) -> tuple[int, dict[str, dict[str, Any]]]:
    args = ["--dir", str(club_dir), "--state", str(state), "check", "--only", "listener", "--json"]
    result = CliRunner().invoke(main, args)
    return result.exit_code, {f["check"]: f for f in json.loads(result.stdout)}


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """One ``clublist run`` with a certificate for the module: its lists.d and state path."""
    root = tmp_path_factory.mktemp("listener")
    club_dir = root / "lists.d"
    init_club(club_dir, "myclub.org", "admin@myclub.org", "My Club", "Europe/Berlin")
    store = Store(club_dir)
    admin = Actor.shell()
    list_create(store, admin, "youth")
    member_add(store, admin, "anna@example.org", "Anna", ("youth",))
    leaf = trustme.CA().issue_cert("mail.myclub.org")
    leaf.cert_chain_pems[0].write_to_path(str(root / "cert.pem"))
    leaf.private_key_pem.write_to_path(str(root / "key.pem"))
    config_set(store, admin, "tls.cert", str(root / "cert.pem"))
    config_set(store, admin, "tls.key", str(root / "key.pem"))
    state = root / "var" / "state.sqlite3"
    with DaemonProcess(club_dir, state, smarthost="127.0.0.1:9"):
        yield club_dir, state


def test_the_running_daemon_refuses_every_relay_trick(running: tuple[Path, Path]) -> None:
    code, found = check(*running)
    assert code == 0
    assert found["listener.banner"]["status"] == "ok" and "220 " in found["listener.banner"]["detail"]
    assert found["listener.ehlo"]["status"] == "ok" and "starttls" in found["listener.ehlo"]["detail"]
    assert found["listener.starttls"]["status"] == "ok" and "TLSv1" in found["listener.starttls"]["detail"]
    assert found["listener.relay"] == {
        "check": "listener.relay",
        "status": "ok",
        "detail": f"all {len(relay_tricks('myclub.org'))} relay tricks refused at RCPT",
        "fix": "",
    }
    assert "listener.postmaster" not in found  # the control address was taken: the test can pass


def test_an_open_relay_is_reported(club_dir: Path, tmp_path: Path) -> None:
    """A test double that takes every recipient, announced where the daemon would be."""
    state = tmp_path / "var" / "state.sqlite3"
    lock = DaemonLock(state)
    with RemoteMTA() as open_relay:
        lock.acquire()
        try:
            lock.announce("127.0.0.1", open_relay.port)
            code, found = check(club_dir, state)
        finally:
            lock.release()
        assert open_relay.transactions == []  # RCPT only: nothing was ever sent through it
    assert code == 1
    relay = found["listener.relay"]
    assert relay["status"] == "fail" and relay["detail"].startswith("open relay: ")
    assert (
        "relay-test@example.com" in relay["detail"] and "relay-test%example.com@myclub.org" in relay["detail"]
    )
    assert "only the club's own addresses" in relay["fix"]


def test_no_daemon_is_a_warning(club_dir: Path, tmp_path: Path) -> None:
    code, found = check(club_dir, tmp_path / "var" / "state.sqlite3")
    assert code == 0
    assert (
        found["listener.daemon"]["status"] == "warn" and "not running" in found["listener.daemon"]["detail"]
    )

"""``clublist check``: config, TLS and queue findings, the JSON shape and the exit codes."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import trustme
from click.testing import CliRunner

from clublist.actions import Actor
from clublist.actions.config import config_set
from clublist.actions.members import member_add
from clublist.cli import main
from clublist.club import model
from clublist.club.store import MembersChange, Store
from clublist.mail import moderation
from clublist.state import db as state
from clublist.state import queue


def check(store: Store, *args: str, state_path: Path | None = None) -> tuple[int, list[dict[str, Any]]]:
    options = ["--dir", str(store.directory)] + (["--state", str(state_path)] if state_path else [])
    result = CliRunner().invoke(main, [*options, "check", *args, "--json"])
    assert result.exit_code in (0, 1), result.output
    return result.exit_code, json.loads(result.stdout)


def by_check(findings: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for finding in findings:
        out.setdefault(finding["check"], []).append(finding)
    return out


# --- config ------------------------------------------------------------------------------------


def test_a_fresh_club_passes_the_config_check(store: Store) -> None:
    code, findings = check(store, "--only", "config")
    assert code == 0
    assert [(f["check"], f["status"]) for f in findings] == [
        ("config.files", "ok"),
        ("config.settings", "ok"),
    ]
    assert all(set(f) == {"check", "status", "detail", "fix"} for f in findings)


def test_a_file_that_does_not_parse_fails_with_file_and_line(store: Store, club_dir: Path) -> None:
    (club_dir / "members.toml").write_text('[[member]]\nemail = "anna@example.org\n')
    (club_dir / "youth.toml").write_text('posting = "everyone"\n')
    code, findings = check(store, "--only", "config")
    assert code == 1
    failed = [f for f in findings if f["status"] == "fail"]
    assert len(failed) == 2  # every broken file, not only the first
    assert any(f"{club_dir / 'members.toml'}:2:" in f["detail"] for f in failed)
    assert any(f"{club_dir / 'youth.toml'}:1:" in f["detail"] and "posting" in f["detail"] for f in failed)
    assert all("last version that did" in f["fix"] for f in failed)


def test_a_setting_out_of_bounds_fails_and_stops_the_checks_that_need_it(
    store: Store, club_dir: Path
) -> None:
    site = club_dir / "club.toml"
    site.write_text(site.read_text().replace("port = 8025", "port = 99999"))
    code, findings = check(store, "--only", "config,tls")
    assert code == 1
    found = by_check(findings)
    assert "listen.port must be between 1 and 65535" in found["config.files"][0]["detail"]
    assert found["tls"][0]["status"] == "fail" and "not checked" in found["tls"][0]["detail"]


def test_dangling_lists_and_silent_settings_are_warnings_with_fixes(store: Store, club_dir: Path) -> None:
    admin = Actor.shell()
    member_add(store, admin, "anna@example.org", "Anna", ("youth",))
    members = club_dir / "members.toml"
    members.write_text(members.read_text().replace('lists = ["youth"]', 'lists = ["yuoth"]'))
    config_set(store, admin, "tls.require", "true")
    config_set(store, admin, "posting.daily_limit", "0")
    code, findings = check(store, "--only", "config")
    assert code == 0  # warnings alone
    warned = {f["detail"].split(",")[0]: f["fix"] for f in findings if f["status"] == "warn"}
    assert len(warned) == 3
    (dangling,) = [fix for detail, fix in warned.items() if "yuoth" in detail]
    assert dangling == "correct the list name in members.toml or run 'clublist list create yuoth'"
    assert any("tls.require" in d and "clublist config set tls.require false" in f for d, f in warned.items())
    assert any(
        "daily_limit" in d and f == "clublist config set posting.daily_limit 50" for d, f in warned.items()
    )


# --- tls ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def use_certificate(
    store: Store,
    tmp_path: Path,
    ca: trustme.CA,
    leaf: trustme.LeafCert,
    key_of: trustme.LeafCert | None = None,
) -> None:
    cert, key, trusted = tmp_path / "fullchain.pem", tmp_path / "privkey.pem", tmp_path / "ca.pem"
    cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    key.write_bytes((key_of or leaf).private_key_pem.bytes())
    ca.cert_pem.write_to_path(str(trusted))
    admin = Actor.shell()
    config_set(store, admin, "listen.hostname", "mail.myclub.org")
    config_set(store, admin, "tls.cert", str(cert))
    config_set(store, admin, "tls.key", str(key))
    config_set(store, admin, "delivery.tls_ca_file", str(trusted))


def tls_statuses(store: Store) -> tuple[int, dict[str, dict[str, Any]]]:
    code, findings = check(store, "--only", "tls")
    return code, {f["check"]: f for f in findings}


def test_a_valid_certificate_is_ok(store: Store, tmp_path: Path, ca: trustme.CA) -> None:
    use_certificate(store, tmp_path, ca, ca.issue_cert("mail.myclub.org"))
    code, found = tls_statuses(store)
    assert code == 0
    assert {name: f["status"] for name, f in found.items()} == {
        "tls.files": "ok",
        "tls.name": "ok",
        "tls.chain": "ok",
        "tls.expiry": "ok",
    }


def test_a_certificate_expiring_in_5_days_fails(store: Store, tmp_path: Path, ca: trustme.CA) -> None:
    soon = datetime.now(UTC) + timedelta(days=5, hours=1)
    use_certificate(store, tmp_path, ca, ca.issue_cert("mail.myclub.org", not_after=soon))
    code, found = tls_statuses(store)
    assert code == 1
    assert found["tls.expiry"]["status"] == "fail" and "expires in 5 days" in found["tls.expiry"]["detail"]
    assert "certbot renew" in found["tls.expiry"]["fix"]
    assert found["tls.chain"]["status"] == "ok"


def test_a_certificate_expiring_in_15_days_warns(store: Store, tmp_path: Path, ca: trustme.CA) -> None:
    later = datetime.now(UTC) + timedelta(days=15, hours=1)
    use_certificate(store, tmp_path, ca, ca.issue_cert("mail.myclub.org", not_after=later))
    code, found = tls_statuses(store)
    assert code == 0 and found["tls.expiry"]["status"] == "warn"


def test_a_certificate_for_another_name_fails(store: Store, tmp_path: Path, ca: trustme.CA) -> None:
    use_certificate(store, tmp_path, ca, ca.issue_cert("www.myclub.org", "myclub.org"))
    code, found = tls_statuses(store)
    assert code == 1
    name = found["tls.name"]
    assert name["status"] == "fail"
    assert name["detail"] == "the certificate is for www.myclub.org, myclub.org, not mail.myclub.org"
    assert "certbot certonly -d mail.myclub.org" in name["fix"]


def test_a_wildcard_certificate_covers_one_label(store: Store, tmp_path: Path, ca: trustme.CA) -> None:
    use_certificate(store, tmp_path, ca, ca.issue_cert("*.myclub.org"))
    assert tls_statuses(store)[1]["tls.name"]["status"] == "ok"


def test_a_key_that_does_not_match_fails(store: Store, tmp_path: Path, ca: trustme.CA) -> None:
    use_certificate(
        store, tmp_path, ca, ca.issue_cert("mail.myclub.org"), key_of=ca.issue_cert("mail.myclub.org")
    )
    code, found = tls_statuses(store)
    assert code == 1
    assert found["tls.files"]["status"] == "fail" and "does not belong" in found["tls.files"]["detail"]


def test_an_untrusted_chain_fails(store: Store, tmp_path: Path, ca: trustme.CA) -> None:
    use_certificate(store, tmp_path, ca, trustme.CA().issue_cert("mail.myclub.org"))
    code, found = tls_statuses(store)
    assert code == 1 and found["tls.chain"]["status"] == "fail"
    assert "fullchain.pem" in found["tls.chain"]["fix"]


def test_an_unreadable_certificate_fails(store: Store, tmp_path: Path) -> None:
    config_set(store, Actor.shell(), "tls.cert", str(tmp_path / "missing.pem"))
    code, found = tls_statuses(store)
    assert code == 1 and "cannot read tls.cert" in found["tls.files"]["detail"]


# --- queue -------------------------------------------------------------------------------------


def test_queue_findings_name_what_waits_fails_and_is_held(store: Store, tmp_path: Path) -> None:
    admin = Actor.shell()
    member_add(store, admin, "anna@example.org", "Anna", ("youth",))
    member_add(store, admin, "carl@example.org", "Carl", ("youth",))
    carl = store.load().require_member("carl@example.org")
    store.change_members(
        lambda club: MembersChange(
            replaced={carl.key: model.replace(carl, delivery="disabled", disabled_reason="bounces: 5.0")}
        )
    )
    state_path = tmp_path / "var" / "state.sqlite3"
    conn = state.connect(state_path)
    now = time.time()
    with state.transaction(conn):
        queue.enqueue(
            conn,
            kind="post",
            sender="bounces@myclub.org",
            recipients=["anna@example.org"],
            content=b"x",
            now=now - 7200,
        )
        queue.enqueue(
            conn,
            kind="post",
            sender="bounces@myclub.org",
            recipients=["bob@gone.example"],
            content=b"y",
            now=now,
        )
        (first, second) = queue.claim(conn, now, limit=10, lease=60)
        policy = queue.RetryPolicy()
        queue.record(conn, [queue.Outcome(first.id, "deferred", 451, "451 4.7.1 greylisted")], now, policy)
        queue.record(conn, [queue.Outcome(second.id, "failed", 550, "550 5.1.1 no such user")], now, policy)
        club = store.load()
        moderation.hold(
            conn,
            club,
            club.require_list("youth"),
            sender="x@example.org",
            author="x@example.org",
            subject="old",
            reason="moderated",
            content=b"z",
            now=now - 5 * 86400,
        )
    conn.close()
    code, findings = check(store, "--only", "queue", state_path=state_path)
    assert code == 0
    found = {f["check"]: f for f in findings}
    assert (
        found["queue.deferred"]["status"] == "warn"
        and "451 4.7.1 greylisted" in found["queue.deferred"]["detail"]
    )
    assert found["queue.failed"]["status"] == "warn" and "bob@gone.example" in found["queue.failed"]["detail"]
    assert found["queue.held"]["status"] == "warn" and "1 held posts" in found["queue.held"]["detail"]
    assert (
        found["queue.bounces"]["status"] == "warn" and "carl@example.org" in found["queue.bounces"]["detail"]
    )


def test_a_corrupt_state_database_fails_the_queue_check(store: Store, tmp_path: Path) -> None:
    state_path = tmp_path / "state.sqlite3"
    state_path.write_bytes(b"garbage" * 200)
    code, findings = check(store, "--only", "queue", state_path=state_path)
    assert code == 1
    assert findings[0]["status"] == "fail" and str(state_path) in findings[0]["detail"]


# --- the command ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args", [["--only", "config,mail"], ["--only", ","], ["--public-ip", "mail.myclub.org"]]
)
def test_usage_errors_exit_2(store: Store, args: list[str]) -> None:
    result = CliRunner().invoke(main, ["--dir", str(store.directory), "check", *args])
    assert result.exit_code == 2


def test_people_get_a_table_with_the_fix(store: Store, club_dir: Path) -> None:
    (club_dir / "youth.toml").write_text("posting = \n")
    result = CliRunner().invoke(main, ["--dir", str(club_dir), "check", "--only", "config"])
    assert result.exit_code == 1
    header, *rows = result.stdout.splitlines()
    assert header.split() == ["check", "status", "detail", "fix"]
    assert rows[0].startswith("config.files") and " fail " in rows[0] and "youth.toml:1" in rows[0]


def test_the_man_page_documents_the_json_output_and_the_readme_ends_deployment_with_check() -> None:
    root = Path(__file__).resolve().parent.parent
    page = (root / "man" / "clublist.1").read_text()
    section = page[page.index('.SS "clublist check') :].split(".SS", 2)[1]
    assert all(f'"{key}"' in section for key in ("check", "status", "detail", "fix"))
    assert "\\-\\-json" in section and "Exit status" in section
    readme = (root / "README.md").read_text()
    running = readme[readme.index("## Running it") :].split("\n## ", 1)[0]
    assert running.rstrip().endswith("run `clublist check`.")

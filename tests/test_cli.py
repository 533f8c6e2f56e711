"""The command line as an administrator uses it.

The click group runs in-process; the installed script runs as processes where the process is
the point (the quick start, writers racing for the lock).
"""

from __future__ import annotations

import json
import os
import subprocess
import tomllib
from pathlib import Path

from conftest import CLUBLIST, Runner


def test_quick_start_from_an_empty_directory(tmp_path: Path) -> None:
    env = {**os.environ, "CLUBLIST_DIR": str(tmp_path / "lists.d")}

    def run(*args: str) -> str:
        done = subprocess.run([CLUBLIST, *args], capture_output=True, text=True, env=env, check=True)
        return done.stdout

    run("init", "--domain", "myclub.org", "--admin", "admin@myclub.org")
    run("list", "create", "youth")
    run("member", "add", "anna@example.org", "--name", "Anna", "--list", "youth")
    members = json.loads(run("member", "ls", "--list", "youth", "--json"))
    assert [(m["email"], m["name"], m["lists"]) for m in members] == [("anna@example.org", "Anna", ["youth"])]


def test_parallel_adds_keep_every_member(cli: Runner, club_dir: Path) -> None:
    """Eight processes add at once; the lock serialises them and no change is lost."""
    env = {**os.environ, "CLUBLIST_DIR": str(club_dir)}
    processes = [
        subprocess.Popen(
            [CLUBLIST, "member", "add", f"m{i}@example.org", "--list", "youth"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for i in range(8)
    ]
    codes = [p.wait(timeout=120) for p in processes]
    for p in processes:
        p.stdout.close()  # type: ignore[union-attr]
        p.stderr.close()  # type: ignore[union-attr]
    assert codes == [0] * 8
    data = tomllib.loads((club_dir / "members.toml").read_text())
    assert sorted(m["email"] for m in data["member"]) == sorted(f"m{i}@example.org" for i in range(8))
    assert len(json.loads(cli("member", "ls", "--json").stdout)) == 8


def test_user_error_exits_1_without_traceback(cli: Runner) -> None:
    result = cli("member", "join", "nobody@example.org", "youth", check=False)
    assert result.returncode == 1
    assert "is not a member" in result.stderr
    assert "Traceback" not in result.stderr


def test_usage_error_exits_2(cli: Runner) -> None:
    result = cli("member", "add", check=False)
    assert result.returncode == 2
    assert "Missing argument" in result.stderr


def test_broken_members_file_is_reported_with_line_and_left_alone(cli: Runner, club_dir: Path) -> None:
    cli("member", "add", "anna@example.org", "--list", "youth")
    path = club_dir / "members.toml"
    broken = path.read_text() + '\n[[member]]\nemail = "bob@example.org\n'
    path.write_text(broken)
    result = cli("member", "add", "carl@example.org", check=False)
    assert result.returncode == 1
    assert f"{path}:" in result.stderr and "Traceback" not in result.stderr
    line = broken.count("\n", 0, broken.index('email = "bob')) + 1
    assert f"members.toml:{line}:" in result.stderr
    assert path.read_text() == broken


def test_import_is_all_or_nothing_and_names_every_bad_line(cli: Runner, club_dir: Path) -> None:
    before = (club_dir / "members.toml").read_text()
    csv = (
        "email,name,lists\nanna@example.org,Anna,youth\nnot-an-address,X,youth\nbob@example.org,Bob,nolist\n"
    )
    result = cli("member", "import", "-", input=csv, check=False)
    assert result.returncode == 1
    assert "line 3" in result.stderr and "line 4" in result.stderr
    assert (club_dir / "members.toml").read_text() == before


def test_import_dry_run_then_import(cli: Runner) -> None:
    csv = "email,name,lists\nanna@example.org,Anna,youth\nbob@example.org,Bob,\n"
    dry = json.loads(cli("member", "import", "-", "--dry-run", "--json", input=csv).stdout)
    assert dry == {
        "dry_run": True,
        "added": ["anna@example.org", "bob@example.org"],
        "removed": [],
        "updated": [],
    }
    assert json.loads(cli("member", "ls", "--json").stdout) == []
    cli("member", "import", "-", input=csv)
    exported = cli("member", "export").stdout
    assert exported.splitlines() == [
        "email,name,lists,aliases,role,delivery,disabled_reason,daily_limit,moderated,digest",
        "anna@example.org,Anna,youth,,member,enabled,,,false,",
        "bob@example.org,Bob,,,member,enabled,,,false,",
    ]


def test_config_set_is_typed_and_keeps_comments(cli: Runner, club_dir: Path) -> None:
    cli("config", "set", "retry.schedule", "60,120")
    cli("config", "set", "delivery.verp", "yes")
    assert json.loads(cli("config", "get", "retry.schedule", "--json").stdout) == [60, 120]
    assert json.loads(cli("config", "get", "delivery.verp", "--json").stdout) is True
    assert "# Seconds between tries" in (club_dir / "club.toml").read_text()
    bad = cli("config", "set", "listen.port", "eighty", check=False)
    assert bad.returncode == 1 and "must be a number" in bad.stderr
    unknown = cli("config", "set", "listen.colour", "red", check=False)
    assert unknown.returncode == 1 and "unknown setting" in unknown.stderr


def test_list_commands_round_trip(cli: Runner, club_dir: Path) -> None:
    cli(
        "list",
        "create",
        "trainer",
        "--description",
        "Trainers",
        "--posting",
        "owners",
        "--owner",
        "tom@example.org",
    )
    shown = json.loads(cli("list", "show", "trainer", "--json").stdout)
    assert shown["posting"] == "owners" and shown["owners"] == ["tom@example.org"]
    cli("list", "set", "trainer", "posting", "moderated")
    cli("member", "add", "anna@example.org", "--list", "trainer", "--list", "youth")
    names = [row["name"] for row in json.loads(cli("list", "ls", "--json").stdout)]
    assert names == ["trainer", "youth"]
    cli("list", "delete", "trainer", "--yes")
    assert not (club_dir / "trainer.toml").exists()
    anna = json.loads(cli("member", "show", "anna@example.org", "--json").stdout)
    assert anna["lists"] == ["youth"]


def test_hostile_names_are_refused(cli: Runner, club_dir: Path) -> None:
    for name in ("../x", "Youth!", "bot", "youth-owner", ""):
        result = cli("list", "create", name, check=False)
        assert result.returncode == 1, name
    for address in (
        "a\nb@example.org",
        '"a b"@example.org',
        "anna",
        "anna@localhost",
        "anna@[127.0.0.1]",
        "Anna <anna@example.org>",
    ):
        result = cli("member", "add", address, check=False)
        assert result.returncode == 1, address
    assert sorted(p.name for p in club_dir.glob("*.toml")) == [
        "club.toml",
        "members.toml",
        "youth.toml",
    ]

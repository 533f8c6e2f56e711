"""Errors a person causes or meets at the command line: one line that says what to do, exit 1.

What is checked is what reaches the terminal: no "Traceback" unless ``--debug`` asks for it.
Most commands run in-process (an exception escaping click's handling fails the test there);
``--debug`` and ``run`` run as real processes of the installed script, because the traceback
printed by the interpreter and the daemon's start are the point.
"""

from __future__ import annotations

import contextlib
import errno
import json
import socket
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Ran, Runner

from clublist.state import db as state
from clublist.state import queue


def _one_line_error(result: Ran | subprocess.CompletedProcess[str], *words: str) -> str:
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    for word in words:
        assert word in lines[0]
    return lines[0]


@pytest.fixture
def damaged_state(tmp_path: Path) -> Path:
    """A state database with a good schema page and garbage where the queue's rows are."""
    path = tmp_path / "var" / "clublist.sqlite3"
    conn = state.connect(path)
    with state.transaction(conn):
        for _ in range(20):
            recipients = [f"m{i}@example.org" for i in range(50)]
            queue.enqueue(
                conn, kind="post", sender="b@myclub.org", recipients=recipients, content=b"x" * 3000, now=1
            )
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.execute("PRAGMA journal_mode = DELETE")
    conn.close()
    size = path.stat().st_size
    with path.open("r+b") as handle:
        handle.seek(size - 40960)
        handle.write(b"\xff" * 20000)
    with pytest.raises(sqlite3.DatabaseError), contextlib.closing(sqlite3.connect(path)) as check:
        check.execute("SELECT * FROM deliveries").fetchall()
    return path


@pytest.mark.parametrize(
    "command", [["queue", "ls"], ["queue", "ls", "--recipients"], ["queue", "retry", "--all"]]
)
def test_a_damaged_state_database_is_one_line(cli: Runner, damaged_state: Path, command: list[str]) -> None:
    result = cli("--state", str(damaged_state), *command, check=False)
    _one_line_error(result, str(damaged_state), "damaged", "backup")


def test_debug_shows_the_traceback(cli_process: Runner, damaged_state: Path) -> None:
    result = cli_process("--debug", "--state", str(damaged_state), "queue", "ls", check=False)
    assert result.returncode == 1 and "Traceback" in result.stderr


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_run_on_a_port_in_use_says_so(cli_process: Runner, busy_port: int) -> None:
    result = cli_process("run", "--listen", f"127.0.0.1:{busy_port}", "--log-format", "plain", check=False)
    _one_line_error(result, f"127.0.0.1:{busy_port}", "another program uses it", "listen.port")


def test_run_on_an_address_this_machine_lacks_says_so(cli_process: Runner) -> None:
    result = cli_process("run", "--listen", "192.0.2.1:2525", "--log-format", "plain", check=False)
    _one_line_error(result, "192.0.2.1:2525", "no such address", "--listen")


def test_a_port_out_of_range_is_refused_when_set(cli: Runner) -> None:
    _one_line_error(cli("config", "set", "listen.port", "99999", check=False), "listen.port", "65535")


LATIN_1 = (
    'email;name;lists\r\njuergen@example.org;Jürgen Müller;youth\r\nanna@example.org;"Weber, Anna";youth\r\n'
)


def test_a_latin_1_roster_names_its_line_and_the_option(cli: Runner, tmp_path: Path) -> None:
    roster = tmp_path / "roster.csv"
    roster.write_bytes(LATIN_1.encode("latin-1"))
    _one_line_error(cli("member", "import", str(roster), check=False), "roster.csv", "line 2", "--encoding")
    cli("member", "import", str(roster), "--encoding", "latin-1")
    members = json.loads(cli("member", "ls", "--json").stdout)
    assert sorted((m["email"], m["name"], m["lists"]) for m in members) == [
        ("anna@example.org", "Weber, Anna", ["youth"]),
        ("juergen@example.org", "Jürgen Müller", ["youth"]),
    ]


@pytest.mark.parametrize(
    ("separator", "bom"),
    [(",", b""), (";", b""), ("\t", b""), (";", b"\xef\xbb\xbf")],
    ids=["comma", "semicolon", "tab", "bom"],
)
def test_rosters_in_utf_8_with_any_common_separator_import(
    cli: Runner, tmp_path: Path, separator: str, bom: bytes
) -> None:
    rows = ["email,name,lists", "juergen@example.org,Jürgen Müller,youth", "ben@example.org,Ben,"]
    roster = tmp_path / "roster.csv"
    roster.write_bytes(bom + "\n".join(r.replace(",", separator) for r in rows).encode())
    cli("member", "import", str(roster))
    members = json.loads(cli("member", "ls", "--json").stdout)
    assert sorted((m["email"], m["name"], m["lists"]) for m in members) == [
        ("ben@example.org", "Ben", []),
        ("juergen@example.org", "Jürgen Müller", ["youth"]),
    ]


def test_a_full_disk_in_a_writing_command_is_one_line(cli: Runner, tmp_path: Path) -> None:
    """lists.d on a 1 MB tmpfs filled to the last byte (mounting needs root)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip("mounting a tmpfs needs root")
    try:
        directory = disk / "lists.d"
        state_path = disk / "clublist.sqlite3"
        cli("--dir", str(directory), "init", "--domain", "myclub.org", "--admin", "admin@myclub.org")
        with (disk / "filler").open("wb", buffering=0) as handle, pytest.raises(OSError) as full:
            for _ in range(1000):  # bounded: far more than 1 MB
                handle.write(b"\0" * 65536)
        assert full.value.errno == errno.ENOSPC
        result = cli(
            "--dir", str(directory), "--state", str(state_path), "list", "create", "youth", check=False
        )
        _one_line_error(result, "disk is full", "free some space")
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)

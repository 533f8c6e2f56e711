"""TOML files as text: parse with file:line errors, find ``[[table]]`` blocks, write atomically.

Shared by the store (members.toml, lists, club.toml) and reminders.toml, which are
edited as text so that people's comments and ordering survive.
"""

from __future__ import annotations

import contextlib
import os
import re
import tomllib
from pathlib import Path
from typing import Any

from clublist.errors import ClublistError


# A [[member]] header, and the comment lines directly above it that belong to it.
def table_header(name: str) -> re.Pattern[str]:
    """The line that opens a ``[[name]]`` array-of-tables entry (a comment may follow it)."""
    return re.compile(rf"^[ \t]*\[\[[ \t]*{name}[ \t]*\]\][ \t]*(?:#.*)?$", re.MULTILINE)


_LINE_COL = re.compile(r"\(at line (\d+), column (\d+)\)")


def table_location(path: Path, text: str, header: re.Pattern[str], index: int, count: int, what: str) -> str:
    """``file:line`` of the index-th ``[[what]]`` header (computed only when reporting)."""
    headers = list(header.finditer(text))
    if len(headers) != count:
        return f"{path} ({what} #{index + 1})"
    return f"{path}:{text.count(chr(10), 0, headers[index].start()) + 1}"


def comment_start(text: str, start: int) -> int:
    """Where the comment lines directly above position *start* (a line's start) begin."""
    while start > 0:
        previous = text.rfind("\n", 0, start - 1) + 1
        if not text[previous:start].lstrip().startswith("#"):
            break
        start = previous
    return start


def atomic_write(path: Path, text: str) -> None:
    """Write *text* to *path* so that readers see the old file or the new one, never half."""
    import tempfile  # only writers need it: readers start faster without

    mode = path.stat().st_mode & 0o7777 if path.exists() else 0o644
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def parse_toml(path: Path, text: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        match = _LINE_COL.search(message)
        if match:
            reason = _LINE_COL.sub("", message).strip()
            raise ClublistError(
                f"{path}:{match[1]}:{match[2]}: {reason}; fix the file by hand "
                "(clublist keeps using the last version that parsed)"
            ) from None
        raise ClublistError(f"{path}: {message}") from None


def toml_value(value: Any) -> str:
    """*value* written as in a TOML file (``true``, ``"text"``, ``[300, 900]``), for echoing settings."""
    import tomlkit

    if isinstance(value, tuple):
        value = list(value)
    return tomlkit.item(value).as_string()

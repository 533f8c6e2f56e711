"""The only printer: rich tables on a terminal, plain aligned text in a pipe, JSON on request.

Moments are datetimes in UTC: JSON prints them as ISO 8601 in UTC, tables and fields in
the site's time zone with the offset (``2026-12-01 18:00:00 +0100``).

rich is imported only when a table goes to a terminal, so scripts and the
bot never pay for it.
"""

from __future__ import annotations

import dataclasses
import json
import operator
from collections.abc import Sequence
from datetime import UTC, datetime
from itertools import repeat
from json.encoder import encode_basestring as _json_text  # the C encoder json.dumps uses
from typing import TYPE_CHECKING, Any

from clublist.actions import Done
from clublist.cli.app import App

if TYPE_CHECKING:
    from clublist.check import Finding


def to_plain(value: Any) -> Any:
    """Records to JSON-ready values: dataclasses to dicts, tuples to lists, times to ISO text."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_plain(v) for v in value]
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def iso(timestamp: float | None) -> datetime | None:
    """A stored Unix time as a UTC moment, to the second: JSON prints it as ISO 8601 in UTC,
    tables and fields in the site's time zone."""
    if timestamp is None:
        return None
    return datetime.fromtimestamp(int(timestamp), UTC)


def span(seconds: float) -> str:
    """A duration the way mailq users read it: 45s, 3m, 2h, 1d."""
    seconds = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def json_out(app: App, value: Any) -> None:
    app.stream.write(json.dumps(to_plain(value), indent=2, ensure_ascii=False) + "\n")


def json_columns(app: App, names: Sequence[str], columns: Sequence[Sequence[Any]]) -> None:
    """Records given as columns (one per key in *names*) as :func:`json_out` prints a list of them.

    ``json.dumps`` with an indent runs in pure Python, some 100 µs a record; here each column
    is encoded at once (text by the C encoder, any other value once per object), a column
    that holds one object throughout is written into the format string the records are laid
    out with: fast enough for 50,000.  JSON text holds no raw newline, so a nested value is
    indented by adding spaces after each of its newlines.
    """
    count = len(columns[0]) if columns else 0
    if not count:
        json_out(app, [])
        return
    fields, varying = [], []
    for name, column in zip(names, columns, strict=True):
        if all(map(operator.is_, column, repeat(column[0]))):
            value = _nested_json(column[0]) if type(column[0]) is not str else _json_text(column[0])
            fields.append(f"    {_json_text(name)}: {value}".replace("%", "%%"))
        else:
            fields.append(f"    {_json_text(name).replace('%', '%%')}: %s")
            varying.append(_json_column(column))
    template = "  {\n" + ",\n".join(fields) + "\n  }"
    records = map(template.__mod__, zip(*varying, strict=True)) if varying else [template % ()] * count
    app.stream.write("[\n" + ",\n".join(records) + "\n]\n")


def _json_column(values: Sequence[Any]) -> list[str]:
    """Each value as JSON text inside a record (two levels deep).

    Text goes through the C encoder; anything else is encoded once per object (records
    share their tuples, and None, True and False are one object each).
    """
    if set(map(type, values)) == {str}:
        return list(map(_json_text, values))
    objects = dict(zip(map(id, values), values, strict=True))  # every value is alive in *values*
    texts = {key: _nested_json(value) for key, value in objects.items()}
    return list(map(texts.__getitem__, map(id, values)))


def _nested_json(value: Any) -> str:
    return json.dumps(to_plain(value), indent=2, ensure_ascii=False).replace("\n", "\n    ")


def local_time(app: App, value: datetime) -> str:
    """A moment as people read it: in the site's time zone, with its offset (JSON keeps UTC)."""
    from zoneinfo import ZoneInfo

    try:
        zone = ZoneInfo(app.store.load_site().site.timezone)
    except Exception:  # no readable club.toml: show UTC rather than nothing
        zone = ZoneInfo("UTC")
    return value.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S %z")


def table(
    app: App,
    rows: Sequence[dict[str, Any]],
    columns: Sequence[str],
    *,
    title: str = "",
    empty: str = "nothing to show",
) -> None:
    """Print *rows* (dicts of plain values) under *columns*."""
    cells = [[_cell(_shown(app, row.get(c))) for c in columns] for row in rows]
    if not rows:
        app.stream.write(f"{empty}\n")
        return
    if app.is_terminal:
        from rich.console import Console
        from rich.table import Table

        rich_table = Table(title=title or None, header_style="bold")
        for column in columns:
            rich_table.add_column(column)
        for row in cells:
            rich_table.add_row(*row, style=None)
        Console(file=app.stream, highlight=False).print(rich_table)
        return
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = [columns, *cells]
    # One write: with PYTHONUNBUFFERED set each write is a system call, 50,000 for a big registry.
    app.stream.write("".join("  ".join(map(str.ljust, line, widths)).rstrip() + "\n" for line in lines))


def fields(app: App, record: dict[str, Any]) -> None:
    """One record as ``key: value`` lines."""
    width = max((len(k) for k in record), default=0)
    for key, value in record.items():
        app.stream.write(f"{key.ljust(width)}  {_cell(_shown(app, value))}\n")


def done(app: App, result: Done, as_json: bool = False) -> None:
    if as_json:
        json_out(app, {"ok": True, "message": result.message, "record": result.record})
    else:
        app.stream.write(result.message + "\n")


def findings(app: App, found: Sequence[Finding], as_json: bool) -> bool:
    """What ``check`` and ``postfix --check`` found: JSON or a table; whether one of them
    failed, for the exit status."""
    if as_json:
        json_out(app, found)
    else:
        rows = [to_plain(f) for f in found]
        table(app, rows, ["check", "status", "detail", "fix"], empty="nothing checked")
    return any(f.status == "fail" for f in found)


def _shown(app: App, value: Any) -> Any:
    return local_time(app, value) if isinstance(value, datetime) else value


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ", ".join(_cell(v) for v in value)
    return " ".join(str(value).split()) if isinstance(value, str) else str(value)

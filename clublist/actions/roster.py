"""The registry as CSV: import, export, and sync (make members.toml match the club's roster).

A roster file has a header row naming its columns, any of the member fields
(``email,name,lists,aliases,role,delivery,disabled_reason,daily_limit,moderated,digest``;
``email`` first); a file without a header is ``email,name,lists``.  Several values in
one cell (lists, aliases) are separated by spaces or ';'.  ``member export`` writes every
column, so export -> import or sync gives back the same registry.

Each is all or nothing: every bad line is reported with its number, then nothing changes;
a change is one locked, atomic write of members.toml (comments kept), after which the
welcome, goodbye and owner notices are queued (:class:`~clublist.actions.members.Notify`).
Columns a file leaves out keep their values: a roster of ``email,name,lists`` never
touches aliases, roles or delivery.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import typing
from dataclasses import dataclass, field
from typing import Any

from clublist.actions import Actor, require_admin
from clublist.actions.members import Notify, apply_members_change
from clublist.club import model
from clublist.club.model import MEMBER_KEYS, Member
from clublist.club.store import Club, MembersChange, Store
from clublist.errors import ClublistError

LEGACY_COLUMNS = ("email", "name", "lists")
_MEMBER_TYPES = typing.get_type_hints(Member)


@dataclass
class RosterPlan:
    """What an import or sync does (or would do, with ``dry_run``)."""

    added: list[Member] = field(default_factory=list)
    removed: list[Member] = field(default_factory=list)
    updated: list[tuple[Member, Member]] = field(default_factory=list)  # (before, after)
    dry_run: bool = False

    @property
    def message(self) -> str:
        if self.dry_run:
            counts = f"would add {len(self.added)}, remove {len(self.removed)}, update {len(self.updated)}"
        else:
            counts = f"added {len(self.added)}, removed {len(self.removed)}, updated {len(self.updated)}"
        return f"{counts} members"

    def lines(self) -> list[str]:
        """The plan, one member a line: ``+`` added, ``-`` removed, ``~`` updated (with what)."""
        out = [f"+ {m.email}" + (f" ({' '.join(m.lists)})" if m.lists else "") for m in self.added]
        out += [f"- {m.email}" for m in self.removed]
        for before, after in self.updated:
            what = [
                f"{name}: {_cell(getattr(before, name))!r} -> {_cell(getattr(after, name))!r}"
                for name in MEMBER_KEYS
                if getattr(before, name) != getattr(after, name)
            ]
            out.append(f"~ {before.email}: {'; '.join(what)}")
        return out

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.updated)


def member_export(store: Store, actor: Actor) -> str:
    """The registry as CSV with every field, the shape import and sync read."""
    require_admin(actor, "export members")
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(MEMBER_KEYS)
    for member in store.load().members:
        writer.writerow([_cell(getattr(member, name)) for name in MEMBER_KEYS])
    return out.getvalue()


def member_import(
    store: Store,
    actor: Actor,
    csv_text: str,
    dry_run: bool = False,
    *,
    update: bool = False,
    notify: Notify | None = None,
) -> RosterPlan:
    """Add the file's new members; for those already in the registry, add the lists named.

    With *update* an existing member's row is the truth for its columns instead: their
    name, lists (they leave lists the row does not name) and whatever else it gives.
    """
    require_admin(actor, "import members")
    return _apply(store, csv_text, dry_run, notify, update=update, remove=False)


def member_sync(
    store: Store,
    actor: Actor,
    csv_text: str,
    *,
    list_name: str | None = None,
    dry_run: bool = False,
    expected: RosterPlan | None = None,
    notify: Notify | None = None,
) -> RosterPlan:
    """Make the registry match the file: add, update and remove, in one write.

    With *list_name* the file is that list's members: those missing from the registry are
    added, everyone in it is put on the list (names and the other columns updated), and
    the list's members the file leaves out are taken off it (they stay in the club).
    *expected* is a plan shown earlier: if the registry changed since, nothing is done.
    """
    require_admin(actor, "sync the member registry")
    return _apply(
        store, csv_text, dry_run, notify, update=True, remove=True, list_name=list_name, expected=expected
    )


def _apply(
    store: Store,
    csv_text: str,
    dry_run: bool,
    notify: Notify | None,
    *,
    update: bool,
    remove: bool,
    list_name: str | None = None,
    expected: RosterPlan | None = None,
) -> RosterPlan:
    plan = RosterPlan(dry_run=dry_run)

    def change(club: Club) -> MembersChange:
        if list_name is not None:
            club.require_list(list_name)
        rows = _read_rows(club, csv_text, list_name)
        fresh = _plan(club, rows, update=update, remove=remove, list_name=list_name)
        if expected is not None and fresh.lines() != expected.lines():
            raise ClublistError(
                "members.toml changed since the plan was shown; nothing was done, run it again"
            )
        plan.added, plan.removed, plan.updated = fresh.added, fresh.removed, fresh.updated
        if dry_run:
            return MembersChange()
        return MembersChange(
            added=plan.added,
            replaced={before.key: after for before, after in plan.updated},
            removed={m.key for m in plan.removed},
        )

    apply_members_change(store, change, notify)
    return plan


def _plan(
    club: Club,
    rows: list[tuple[int, dict[str, Any]]],
    *,
    update: bool,
    remove: bool,
    list_name: str | None,
) -> RosterPlan:
    plan = RosterPlan()
    seen: dict[str, int] = {}
    errors: list[str] = []
    changed: dict[str, Member] = {}
    for line, values in rows:
        existing = club.member(values["email"])
        key = existing.key if existing else model.address_key(values["email"])
        if key in seen:
            errors.append(
                f"line {line}: {values['email']} appears twice in the file (first on line {seen[key]})"
            )
            continue
        seen[key] = line
        if existing is None:
            try:
                _require_own_address_free(club, values["email"])
                plan.added.append(model.member_from_toml(_row_toml(values)))
            except ClublistError as exc:
                errors.append(f"line {line}: {exc}")
            continue
        base = existing.to_toml()
        if list_name is not None:
            values.pop("lists", None)
            base["lists"] = list(dict.fromkeys([*existing.lists, list_name]))
        if not update:
            kept: dict[str, Any] = {"lists": list(dict.fromkeys([*existing.lists, *values.get("lists", [])]))}
            if not existing.name and values.get("name"):
                kept["name"] = values["name"]
            values = kept
        values.pop("email", None)
        try:
            after = model.member_from_toml(_row_toml(base | values))
        except ClublistError as exc:
            errors.append(f"line {line}: {exc}")
            continue
        if after != existing:
            changed[existing.key] = after
    if errors:
        shown = "\n  ".join(errors[:50])
        more = f"\n  ... and {len(errors) - 50} more" if len(errors) > 50 else ""
        raise ClublistError(f"nothing changed; {len(errors)} bad lines:\n  {shown}{more}")
    if remove:
        for member in club.members:
            if member.key in seen:
                continue
            if list_name is None:
                plan.removed.append(member)
            elif list_name in member.lists:
                changed[member.key] = model.replace(
                    member, lists=tuple(n for n in member.lists if n != list_name)
                )
    plan.updated = [(m, changed[m.key]) for m in club.members if m.key in changed]
    return plan


def _require_own_address_free(club: Club, address: str) -> None:
    local, _, domain = address.partition("@")
    if domain.lower() == club.site.domain and (local.lower() in club.lists or local in model.RESERVED_NAMES):
        raise ClublistError(f"{address} is one of the club's own addresses")


def roster_text(data: bytes, name: str, encoding: str | None = None) -> str:
    """A roster file's text: UTF-8 (a BOM is dropped), else the *encoding* its owner names.

    Spreadsheets on Windows save CSV as cp1252 or Latin-1; guessing would turn names into
    mojibake silently, so a file that is not UTF-8 needs its encoding said.
    """
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        if encoding is None:
            line = data[: exc.start].count(b"\n") + 1
            raise ClublistError(
                f"{name}: line {line} is not UTF-8 (byte 0x{data[exc.start]:02x}); save the file as"
                " UTF-8, or name its encoding, e.g. --encoding latin-1 (or cp1252 from Excel)"
            ) from None
    try:
        return data.decode(encoding)
    except LookupError:
        raise ClublistError(f"--encoding {encoding}: no such encoding; try latin-1 or cp1252") from None
    except UnicodeDecodeError as exc:
        raise ClublistError(f"{name} is not {encoding} either ({exc.reason}); check the file") from None


def _read_rows(club: Club, text: str, list_name: str | None) -> list[tuple[int, dict[str, Any]]]:
    """Each data row as field values (only the file's columns), with its line number.

    The column separator (',', ';' as spreadsheets in many countries save, or tab) is sniffed.
    """
    try:
        delimiter = csv.Sniffer().sniff(text[:8192], delimiters=",;\t").delimiter
    except csv.Error:  # one column, or too little to tell
        delimiter = ","
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    columns: tuple[str, ...] = LEGACY_COLUMNS
    rows: list[tuple[int, dict[str, Any]]] = []
    errors: list[str] = []
    for row in reader:
        if not any(cell.strip() for cell in row):
            continue
        if reader.line_num == 1 and row[0].strip().lower() == "email":
            columns = tuple(c.strip().lower() for c in row)
            unknown = [c for c in columns if c not in MEMBER_KEYS]
            if unknown:
                raise ClublistError(f"line 1: unknown column {unknown[0]!r}; known: {', '.join(MEMBER_KEYS)}")
            continue
        if len(row) > len(columns):
            errors.append(
                f"line {reader.line_num}: expected {','.join(columns)} but found {len(row)} columns"
            )
            continue
        try:
            values = {name: _parse_cell(name, cell) for name, cell in zip(columns, row, strict=False)}
            values["email"] = model.parse_address(values["email"])
            for name in values.get("lists", []):
                club.require_list(name)
            if list_name is not None:
                values["lists"] = [list_name]
        except ClublistError as exc:
            errors.append(f"line {reader.line_num}: {exc}")
            continue
        rows.append((reader.line_num, values))
    if errors:
        shown = "\n  ".join(errors[:50])
        more = f"\n  ... and {len(errors) - 50} more" if len(errors) > 50 else ""
        raise ClublistError(f"nothing changed; {len(errors)} bad lines:\n  {shown}{more}")
    return rows


def _parse_cell(name: str, cell: str) -> Any:
    """A CSV cell as the TOML value of member field *name* ("" is the field's default)."""
    text = cell.strip()
    hint = _MEMBER_TYPES[name]
    if typing.get_origin(hint) is tuple:
        return [v for v in text.replace(";", " ").split() if v]
    if hint is bool:
        return model._coerce(name, bool, text or "false")
    if name == "daily_limit":
        return None if not text else model._coerce(name, int, text)
    if not text:
        default = {f.name: f.default for f in dataclasses.fields(Member)}[name]
        return default if isinstance(default, str) else ""
    return text


def _row_toml(values: dict[str, Any]) -> dict[str, Any]:
    """Field values as a ``[[member]]`` table (defaults and empty optional values left out)."""
    return {k: v for k, v in values.items() if v is not None}


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple | list):
        return " ".join(value)
    return str(value)

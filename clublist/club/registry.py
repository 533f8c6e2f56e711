"""The member registry in memory: records, or the cache's columns until records are needed.

A command that shows one member or appends one should not build 50,000 records to do so.
A :class:`Registry` read from the cache (:mod:`clublist.club.cache`) keeps its columns, one
list per field, builds a :class:`Member` only for the rows asked for, and builds them all
only when :attr:`Registry.members` is used (the daemon's routing wants every record; the
columns are then let go, so the records are not kept twice).  Look-ups by address use an
index made on the first look-up.
"""

from __future__ import annotations

import dataclasses
import gc
import operator
from collections import deque
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from itertools import compress, repeat
from typing import Any

from clublist.club.model import Member, address_key

FIELDS = tuple(f.name for f in dataclasses.fields(Member))
# The records' slots, each a column: the fields and the comparison key.
SLOTS = (*FIELDS, "_key")
_SETTERS = tuple(getattr(Member, name).__set__ for name in SLOTS)
_COLUMN = {name: number for number, name in enumerate(SLOTS)}
_ALIASES = _COLUMN["aliases"]
_KEY = _COLUMN["_key"]

Columns = list[list[Any]]
# Look-ups in the columns before an index is made: a search of 50,000 keys costs about a
# twentieth of indexing them, so a command that asks for a few addresses never indexes.
_SCANS = 8


def _build(columns: Sequence[Sequence[Any]], count: int) -> list[Member]:
    """Records from columns of *count* values each, filled column by column at C speed.

    The values were validated when they were first read: a slot's descriptor sets them past
    the frozen dataclass's guard, as ``__init__`` would have.
    """
    collecting = gc.isenabled()
    gc.disable()  # a collection every 700 new records would look at all of them, and find no cycle
    try:
        members: list[Member] = list(map(object.__new__, repeat(Member, count)))
        for setter, column in zip(_SETTERS, columns, strict=True):
            deque(map(setter, members, column), maxlen=0)
    finally:
        if collecting:
            gc.enable()
    return members


def _row(member: Member) -> list[Any]:
    return [*(getattr(member, name) for name in FIELDS), member.key]


class Registry:
    """The members of members.toml in file order, as records or as columns.

    Safe to share between threads (the daemon looks members up while a reload's thread
    compares registries): the records are set before the columns are let go, and every
    reader takes the columns first, else the records.
    """

    __slots__ = ("_columns", "_index", "_members", "_scans")

    def __init__(self, members: Iterable[Member] = ()) -> None:
        self._members: tuple[Member, ...] | None = tuple(members)
        self._columns: Columns | None = None
        # address_key of every email and alias -> its row, or its record once they are built.
        self._index: dict[str, int | Member] | None = None
        self._scans = 0  # look-ups answered without the index

    @classmethod
    def from_columns(cls, columns: Columns) -> Registry:
        """A registry over *columns* (one list per :data:`SLOTS` entry, all the same length)."""
        registry = cls()
        registry._columns = columns
        registry._members = None
        return registry

    def _records(self) -> tuple[Member, ...]:
        members = self._members
        assert members is not None  # there are columns until there are records
        return members

    def __len__(self) -> int:
        columns = self._columns
        return len(columns[_KEY]) if columns is not None else len(self._records())

    def __iter__(self) -> Iterator[Member]:
        return iter(self.members)

    @property
    def members(self) -> tuple[Member, ...]:
        """Every record, built once."""
        columns = self._columns
        if columns is None:
            return self._records()
        members = tuple(_build(columns, len(columns[_KEY])))
        self._members = members
        self._columns = None
        self._index = None  # made again to hold the records themselves
        return members

    def record(self, row: int) -> Member:
        columns = self._columns
        if columns is None:
            return self._records()[row]
        return _build([(column[row],) for column in columns], 1)[0]

    def records(self, rows: Iterable[int]) -> list[Member]:
        columns = self._columns
        if columns is None:
            members = self._records()
            return [members[row] for row in rows]
        rows = list(rows)
        return _build([list(map(column.__getitem__, rows)) for column in columns], len(rows))

    def select(self, rows: Sequence[int]) -> Registry:
        """The members in *rows*, in that order (as columns when this registry has them)."""
        columns = self._columns
        if columns is None:
            members = self._records()
            return Registry(members[row] for row in rows)
        return Registry.from_columns([list(map(column.__getitem__, rows)) for column in columns])

    def find(self, address: str) -> Member | None:
        """The member who owns *address* as their email or one of their aliases."""
        key = address_key(address)
        index = self._index
        if index is None:
            columns = self._columns
            if columns is not None and self._scans < _SCANS:
                self._scans += 1
                return self._scan(columns, key)
            index = self._index = self._make_index()
        found = index.get(key)
        if found is None or isinstance(found, Member):
            return found
        return self.record(found)

    def _scan(self, columns: Columns, key: str) -> Member | None:
        """One look-up without an index: a search of the key column at C speed, then the aliases."""
        try:
            return self.record(columns[_KEY].index(key))
        except ValueError:
            pass
        aliases = columns[_ALIASES]
        for row in compress(range(len(aliases)), aliases):
            if any(address_key(alias) == key for alias in aliases[row]):
                return self.record(row)
        return None

    def _make_index(self) -> dict[str, int | Member]:
        columns = self._columns
        if columns is None:  # the records themselves: no int object per member in a daemon
            index: dict[str, int | Member] = {}
            for member in self._records():
                index[member.key] = member
                for alias in member.aliases:
                    index[address_key(alias)] = member
            return index
        index = dict(zip(columns[_KEY], range(len(columns[_KEY])), strict=True))
        aliases = columns[_ALIASES]
        for row in compress(range(len(aliases)), aliases):
            for alias in aliases[row]:
                index[address_key(alias)] = row
        return index

    def column(self, name: str) -> list[Any]:
        """One field of every member in order (``_key``: their comparison keys); do not change it."""
        columns = self._columns
        if columns is not None:
            return columns[_COLUMN[name]]
        members = self._records()
        if name == "_key":
            return [m.key for m in members]
        return list(map(operator.attrgetter(name), members))

    def columns(self) -> Columns:
        """The registry as columns, one list per :data:`SLOTS` entry (the cache's layout)."""
        columns = self._columns
        if columns is not None:
            return columns
        return [self.column(name) for name in SLOTS]

    def edited(
        self, added: Sequence[Member], replaced: Mapping[str, Member], removed: Collection[str]
    ) -> Registry:
        """The registry after a change: *replaced* and *removed* are keys of members in it."""
        old = self._columns
        if old is None:
            kept = [replaced.get(m.key, m) for m in self._records() if m.key not in removed]
            return Registry([*kept, *added])
        columns = [list(column) for column in old]
        if replaced:
            row_of = {key: row for row, key in enumerate(old[_KEY]) if key in replaced}
            for key, row in row_of.items():
                for column, value in zip(columns, _row(replaced[key]), strict=True):
                    column[row] = value
        if removed:
            keep = [key not in removed for key in old[_KEY]]
            columns = [list(compress(column, keep)) for column in columns]
        for member in added:
            for column, value in zip(columns, _row(member), strict=True):
                column.append(value)
        return Registry.from_columns(columns)

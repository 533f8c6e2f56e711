"""lists.d: read it fast, write it safely, keep what people wrote.

Reads use the standard library's ``tomllib`` (a 5,000-member registry loads
in tens of milliseconds); writes use ``tomlkit`` so comments and ordering
survive.  members.toml is edited surgically: only the ``[[member]]`` block
that changes is re-rendered, and new members are appended as text, so a
large registry is not re-parsed with tomlkit on every change.  Every write
happens under a lock on a separate lock file, re-reads the file inside the
lock, checks that the new text parses to exactly the records intended, and
replaces the file atomically (temp file, fsync, rename, fsync of the
directory).  A file that does not parse is never overwritten.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clublist.club import cache
from clublist.club.files import LOCK_FILE, MEMBERS_FILE, REMINDERS_FILE, SITE_FILE
from clublist.club.model import (
    Advice,
    MailingList,
    Member,
    Site,
    address_key,
    check_list_name,
    list_from_toml,
    member_from_toml,
    site_advice,
    site_from_toml,
)
from clublist.club.registry import Registry
from clublist.club.tomltext import atomic_write, comment_start, parse_toml, table_header, table_location
from clublist.errors import ClublistError

if TYPE_CHECKING:  # reminders.toml is read by the commands that use it, not on every load
    from clublist.club.reminders import Reminder

_SPECIAL_FILES = {SITE_FILE, MEMBERS_FILE, REMINDERS_FILE}


_MEMBER_HEADER = table_header("member")
_BLANK_LINE = re.compile(r"\n[ \t]*\n")


@dataclass(frozen=True)
class Club:
    """One consistent reading of lists.d, with the look-ups every part needs."""

    site: Site
    lists: dict[str, MailingList]
    registry: Registry = field(repr=False)
    warnings: tuple[Advice, ...] = ()
    directory: Path | None = None  # lists.d, where templates/ may override the shipped texts

    @classmethod
    def build(
        cls,
        site: Site,
        lists: dict[str, MailingList],
        members: Iterable[Member] | Registry,
        warnings: Iterable[Advice] = (),
        directory: Path | None = None,
    ) -> Club:
        registry = members if isinstance(members, Registry) else Registry(members)
        return cls(site, lists, registry, tuple(warnings), directory)

    @property
    def members(self) -> tuple[Member, ...]:
        """Every member in file order (built on first use: most commands need one or none)."""
        return self.registry.members

    def member(self, address: str) -> Member | None:
        """The member who owns *address* as their email or one of their aliases."""
        return self.registry.find(address)

    def require_member(self, address: str) -> Member:
        member = self.member(address)
        if member is None:
            raise ClublistError(f"{address} is not a member; see 'clublist member ls'")
        return member

    def require_list(self, name: str) -> MailingList:
        mailing_list = self.lists.get(name.lower())
        if mailing_list is None:
            known = ", ".join(sorted(self.lists)) or "none yet"
            raise ClublistError(f"there is no list named {name!r} (lists: {known})")
        return mailing_list

    def members_of(self, list_name: str) -> list[Member]:
        # From the records, built once: the daemon asks for every post, and a list is often most of the club.
        return [m for m in self.members if list_name in m.lists]


class Store:
    """The lists.d directory: load a :class:`Club`, and change its files one safe step at a time."""

    def __init__(
        self,
        directory: Path | str,
        cache_dir: Path | None = None,
        *,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        """*cache_dir* (var/, beside the state database) keeps the parsed registry between runs."""
        self.directory = Path(directory)
        self.cache_dir = cache_dir
        # Called after each locked write section ends (the CLI tells a running daemon).
        self.on_change = on_change

    def path(self, filename: str) -> Path:
        return self.directory / filename

    # --- reading -----------------------------------------------------------

    def load(self) -> Club:
        """Read and check every file; any problem is an error naming the file and line."""
        return self._club(self._registry())

    def _club(self, members: Registry) -> Club:
        site = self.load_site()
        lists = {}
        for path in sorted(self.directory.glob("*.toml")):
            if path.name in _SPECIAL_FILES:
                continue
            lists[path.stem] = _located(path, functools.partial(_list_from_text, path))
        return Club.build(site, lists, members, _advice(self.directory, site, lists, members), self.directory)

    def _registry(self, text: str | None = None, stat: os.stat_result | None = None) -> Registry:
        """The registry: from the cache when members.toml is the file it was made from, else parsed.

        *text* and *stat*, when given, are members.toml as the caller read it (under the lock).
        """
        path = self.path(MEMBERS_FILE)
        if stat is None:
            try:
                stat = path.stat()
            except FileNotFoundError:
                return Registry()
        source = cache.identity(stat)
        if self.cache_dir is not None:
            cached = cache.read_registry(self.cache_dir, source)
            if cached is not None:
                return cached
        if text is None:
            text = _located(path, lambda t: t)
        registry = Registry(parse_members(path, text))
        if self.cache_dir is not None:
            cache.write(self.cache_dir, source, registry)
        return registry

    def load_site(self) -> Site:
        """club.toml alone, checked; an error names the file and line."""
        site_path = self.path(SITE_FILE)
        if not site_path.exists():
            raise ClublistError(
                f"{site_path} does not exist: run 'clublist init --domain YOUR.DOMAIN "
                "--admin YOU@YOUR.DOMAIN' or point --dir (CLUBLIST_DIR) at your lists.d"
            )
        return _located(site_path, lambda text: site_from_toml(parse_toml(site_path, text)))

    def problems(self) -> list[str]:
        """Every TOML file that would not load, each as ``file:line: what`` (load stops at the first)."""
        out = []
        for path in sorted(self.directory.glob("*.toml")):
            try:
                _located(path, functools.partial(_check_file, path))
            except (ClublistError, OSError) as exc:
                out.append(str(exc))
        return out

    def fingerprint(self) -> tuple[tuple[str, int, int, int], ...]:
        """What changes when any TOML file is written, renamed over or edited in place."""
        out = []
        for path in sorted(self.directory.glob("*.toml")):
            with contextlib.suppress(FileNotFoundError):
                st = path.stat()
                out.append((path.name, st.st_mtime_ns, st.st_size, st.st_ino))
        return tuple(out)

    # --- writing -----------------------------------------------------------

    def reminders(self) -> list[Reminder]:
        """Every reminder in reminders.toml (none when the file does not exist yet)."""
        from clublist.club.reminders import load_reminders

        return load_reminders(self.path(REMINDERS_FILE))

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the directory's write lock: a separate file, so renames never lose it."""
        if not self.directory.is_dir():
            raise ClublistError(f"{self.directory} is not a directory; create it or use --dir")
        fd = os.open(self.path(LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)
        if self.on_change is not None:
            self.on_change()

    def write_text(self, filename: str, text: str) -> None:
        """Replace a file atomically; call under :meth:`locked`."""
        atomic_write(self.path(filename), text)

    def edit_toml(self, filename: str, change: Callable[[Any], None], *, create: bool = False) -> None:
        """Apply *change* to a tomlkit document of *filename* (comments kept) and write it back."""
        import tomlkit

        path = self.path(filename)
        with self.locked():
            if path.exists():
                text = path.read_text("utf-8")
                _located(path, lambda t: parse_toml(path, t))
                document = tomlkit.parse(text)
            elif create:
                document = tomlkit.document()
            else:
                raise ClublistError(f"{path} does not exist")
            change(document)
            new_text = tomlkit.dumps(document)
            _check_file(path, new_text)
            self.write_text(filename, new_text)

    def change_members(
        self,
        change: Callable[[Club], MembersChange],
    ) -> MembersChange:
        """Run *change* on a fresh reading under the lock and apply the edits it returns.

        The callback decides (and raises :class:`ClublistError` to refuse);
        this method turns its decision into text, verifies the result parses
        to exactly the intended members, and writes it atomically.
        """
        path = self.path(MEMBERS_FILE)
        with self.locked():
            try:
                with path.open(encoding="utf-8") as handle:
                    text, stat = handle.read(), os.fstat(handle.fileno())
            except FileNotFoundError:
                text, stat = MEMBERS_HEADER, None
            registry = self._registry(text, stat) if stat is not None else Registry()
            club = self._club(registry)
            edit = change(club)
            if not edit.added and not edit.replaced and not edit.removed:
                return edit
            new_text = _apply_member_edit(text, registry, edit)
            expected = registry.edited(edit.added, edit.replaced, edit.removed)
            _verify_member_edit(path, new_text, len(text), expected, edit)
            self.write_text(MEMBERS_FILE, new_text)
            if self.cache_dir is not None:
                cache.write(self.cache_dir, cache.identity(path.stat()), expected)
            edit.club = Club.build(
                club.site,
                club.lists,
                expected,
                _advice(self.directory, club.site, club.lists, expected),
                self.directory,
            )
            return edit


def _advice(directory: Path, site: Site, lists: dict[str, MailingList], members: Registry) -> list[Advice]:
    """What loads but quietly loses mail: lists without a file, owners who receive nothing."""
    members_path = directory / MEMBERS_FILE
    advice = site_advice(site)
    # Records share one tuple per combination of lists: look at each combination once.
    combinations = members.column("lists")
    strays = {names for names in set(combinations) if any(name not in lists for name in names)}
    rows = [row for row, names in enumerate(combinations) if names in strays] if strays else []
    for member in members.records(rows):
        for name in member.lists:
            if name not in lists:
                advice.append(
                    Advice(
                        f"{members_path}: {member.email} is on list {name!r}, which has no file {name}.toml",
                        f"correct the list name in {MEMBERS_FILE} or run 'clublist list create {name}'",
                    )
                )
    # Only the owners are looked up: a map of every member would be a second registry's worth.
    owner_keys = {address_key(owner) for mailing_list in lists.values() for owner in mailing_list.owners}
    owners: dict[str, Member] = {}
    if owner_keys:
        keys = members.column("_key")
        owners = {m.key: m for m in members.records(row for row, key in enumerate(keys) if key in owner_keys)}
    for mailing_list in lists.values():
        for owner in mailing_list.owners:
            owner_member = owners.get(address_key(owner))
            if owner_member is not None and not owner_member.receives:
                advice.append(
                    Advice(
                        f"{directory / list_file(mailing_list.name)}: owner {owner} has delivery disabled "
                        "and gets no mail for the list's owners",
                        f"'clublist member set {owner} --enable' or give {mailing_list.name} another owner",
                    )
                )
    return advice


@dataclass
class MembersChange:
    """What a change to members.toml does; keys are :func:`address_key` of the email before it."""

    added: list[Member] = field(default_factory=list)
    replaced: dict[str, Member] = field(default_factory=dict)
    removed: set[str] = field(default_factory=set)
    # Set by Store.change_members once the change is written: the club as it now is.
    club: Club | None = field(default=None, repr=False, compare=False)


MEMBERS_HEADER = """\
# The club's members: one [[member]] table each.
#   email    the address mail goes to (aliases may post too)
#   lists    the lists this member receives and may post to
#   role     "member" or "admin" (admins may use every bot command)
#   delivery "enabled" or "disabled" (bounces disable it, with a reason)
"""


def parse_members(path: Path, text: str) -> list[Member]:
    """Parse members.toml, reporting a bad or duplicated entry with its line number.

    The text is read a thousand ``[[member]]`` tables at a time: tomllib's reading of a whole
    50,000-member file is some 35 MB of dicts at once, which a daemon would keep as its peak
    and, fragmented, much of it as its size.  Cutting at header lines cannot change what the
    file means (a cut inside a multi-line string or array leaves a piece that does not parse);
    when a piece does not parse or holds a wrong record, the whole file is read at once, so
    the error names its line as before.
    """
    try:
        return _members_from(path, text, _pieces(text))
    except ClublistError:
        return _members_from(path, text, [text])


_PIECE = 1000  # [[member]] tables per piece


def _pieces(text: str) -> Iterator[str]:
    """*text* cut before every thousandth ``[[member]]`` header."""
    cuts = [m.start() for i, m in enumerate(_MEMBER_HEADER.finditer(text)) if i % _PIECE == 0]
    for start, end in zip([0, *cuts], [*cuts, len(text)], strict=True):
        yield text[start:end]


def _members_from(path: Path, text: str, pieces: Iterable[str]) -> list[Member]:
    members: list[Member] = []
    seen: dict[str, int] = {}
    shared: dict[tuple[str, ...], tuple[str, ...]] = {}  # one tuple per combination of lists
    for piece in pieces:
        data = parse_toml(path, piece)
        unknown = set(data) - {"member"}
        if unknown:
            raise ClublistError(
                f"{path}: unknown key {sorted(unknown)[0]!r}; each member is a [[member]] table"
            )
        tables = data.get("member", [])
        if not isinstance(tables, list):
            raise ClublistError(f"{path}: 'member' must be written as [[member]] tables")
        for table in tables:
            index = len(members)
            try:
                if not isinstance(table, dict):
                    raise ClublistError("each member must be a table")
                member = member_from_toml(table)
                lists = shared.setdefault(member.lists, member.lists)
                if lists is not member.lists:
                    object.__setattr__(member, "lists", lists)  # an equal tuple: the record is the same
                for address in (member.email, *member.aliases):
                    key = address_key(address)
                    if key in seen:
                        raise ClublistError(
                            f"{address} is already used by member #{seen[key] + 1}; "
                            "an address may belong to one member only"
                        )
                    seen[key] = index
            except ClublistError as exc:
                raise ClublistError(
                    f"{table_location(path, text, _MEMBER_HEADER, index, len(tables), 'member')}: {exc}"
                ) from None
            members.append(member)
    return members


def _verify_member_edit(
    path: Path, new_text: str, old_length: int, expected: Registry, edit: MembersChange
) -> None:
    """Check the spliced text before it replaces the file, without parsing the whole registry.

    Each block written anew must read back as exactly the record intended, and the file must
    hold one ``[[member]]`` table per expected member (so no neighbour was cut or merged).
    """
    changed = {m.key: m for m in [*edit.added, *edit.replaced.values()]}
    found = {}
    if edit.removed or edit.replaced:
        spans = _member_spans(new_text, only=_indices(expected, changed))
        blocks = [new_text[start:end] for start, end in spans.values()]
        count = len(_MEMBER_HEADER.findall(new_text))
    else:  # appended at the end: the old text is untouched, the new blocks are all there is to read
        blocks, count = [new_text[old_length:]], len(expected)
    for block in blocks:
        for member in parse_members(path, block):
            found[member.key] = member
    if count != len(expected) or {k: m.to_toml() for k, m in found.items()} != {
        k: m.to_toml() for k, m in changed.items()
    }:
        raise ClublistError(
            f"{path}: could not apply the change safely (the file's layout is unusual); nothing was written"
        )


def _indices(members: Registry, wanted: dict[str, Member]) -> set[int]:
    return {index for index, key in enumerate(members.column("_key")) if key in wanted}


def _member_spans(text: str, only: set[int] | None = None) -> dict[int, tuple[int, int]]:
    """Spans of the text each ``[[member]]`` block owns.

    A block owns the comment lines directly above its header, the header,
    and the lines after it up to the first blank line.  Whatever follows a
    blank line (a free-standing comment, say) belongs to nobody and is never
    removed with a member.  *only*: the block indices wanted (all by default).
    """
    headers = list(_MEMBER_HEADER.finditer(text))
    spans = {}
    for index, match in enumerate(headers):
        if only is not None and index not in only:
            continue
        start = comment_start(text, match.start())
        limit = headers[index + 1].start() if index + 1 < len(headers) else len(text)
        blank = _BLANK_LINE.search(text, match.end(), limit)
        spans[index] = (start, blank.start() + 1 if blank else limit)
    return spans


def _apply_member_edit(text: str, members: Registry, edit: MembersChange) -> str:
    """Splice *edit* into *text*, whose blocks hold *members* in order."""
    import tomlkit

    keys = members.column("_key") if edit.removed or edit.replaced else []
    touched = {index for index, key in enumerate(keys) if key in edit.removed or key in edit.replaced}
    spans = _member_spans(text, only=touched) if touched else {}
    if touched and (len(spans) != len(touched) or len(_MEMBER_HEADER.findall(text)) != len(keys)):
        raise ClublistError("members.toml has [[member]] tables the editor cannot find; nothing was written")
    pieces: list[str] = []
    position = 0
    for index in sorted(spans):
        start, end = spans[index]
        key = keys[index]
        block = text[start:end]
        pieces.append(text[position:start])
        position = end
        if key in edit.removed:
            # Swallow the blank line that separated the block from what follows.
            if text.startswith("\n", position):
                position += 1
            continue
        if key in edit.replaced:
            document = tomlkit.parse(block)
            table = document["member"][0]
            fresh = edit.replaced[key].to_toml()
            for name in [k for k in table if k not in fresh]:
                del table[name]
            for name, value in fresh.items():
                if table.get(name) != value:
                    table[name] = value
            block = tomlkit.dumps(document)
        pieces.append(block)
    pieces.append(text[position:])
    new_text = "".join(pieces)
    if edit.added:
        if new_text and not new_text.endswith("\n"):
            new_text += "\n"
        new_text += "".join(render_member(m) for m in edit.added)
    return new_text


def render_member(member: Member) -> str:
    """One ``[[member]]`` block as TOML text, with a blank line before it.

    Each key and value is written by tomlkit, line by line: the same text as a document of
    one array-of-tables would give, at half the cost (an import of 1,000 renders 1,000).
    """
    import tomlkit

    lines = [
        f"{tomlkit.key(k).as_string()} = {tomlkit.item(v).as_string()}" for k, v in member.to_toml().items()
    ]
    return "\n[[member]]\n" + "".join(line + "\n" for line in lines)


def _check_file(path: Path, text: str) -> None:
    """Refuse text that would not load: a write must never leave a broken club behind."""
    if path.name == SITE_FILE:
        site_from_toml(parse_toml(path, text))
    elif path.name == MEMBERS_FILE:
        parse_members(path, text)
    elif path.name == REMINDERS_FILE:
        from clublist.club.reminders import parse_reminders

        parse_reminders(path, text)
    else:
        list_from_toml(path.stem, parse_toml(path, text))


def _located(path: Path, build: Callable[[str], Any]) -> Any:
    """Run *build* on a file's text, prefixing errors with the file name."""
    try:
        text = path.read_text("utf-8")
    except UnicodeDecodeError as exc:
        raise ClublistError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    try:
        return build(text)
    except ClublistError as exc:
        message = str(exc)
        if message.startswith(str(path)):
            raise
        line = _line_of_key(text, message)
        raise ClublistError(f"{path}{f':{line}' if line else ''}: {message}") from None


def _line_of_key(text: str, message: str) -> int | None:
    """Best-effort line of the setting an error names (tomllib keeps no positions)."""
    leading = re.match(r"\[?([\w.]+)", message)
    candidates = re.findall(r"'([\w.-]+)'", message) + ([leading[1]] if leading else [])
    for candidate in candidates:
        name = re.escape(candidate.rpartition(".")[2])
        found = re.search(rf"^\s*(?:{name}\s*=|\[{name}\])", text, re.MULTILINE)
        if found:
            return text.count("\n", 0, found.start()) + 1 + (text[found.start()] == "\n")
    return None


def _list_from_text(path: Path, text: str) -> MailingList:
    return list_from_toml(path.stem, parse_toml(path, text))


def list_file(name: str) -> str:
    return f"{check_list_name(name)}.toml"

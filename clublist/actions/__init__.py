"""The library of actions: everything a person can ask clublist to change or show.

The CLI and the mail bot both call these functions, with plain values and
the :class:`Actor` who is asking; rights are checked here and nowhere else.
At the shell the actor is the administrator.  A mailed command runs with the
rights of its sender: a member acts on their own membership and reads the
lists they are on, a list's owners manage that list, the administrator
(``site.admin`` or a member with ``role = "admin"``) everything.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clublist.club import model
from clublist.club.model import MailingList, Member, address_key, parse_address
from clublist.club.store import MEMBERS_FILE, SITE_FILE, Club, MembersChange, Store, list_file
from clublist.errors import ClublistError, PermissionDenied


@dataclass(frozen=True)
class Actor:
    """Who is asking: the administrator at the shell, or the sender of a mailed command."""

    address: str | None
    is_admin: bool

    @classmethod
    def shell(cls) -> Actor:
        return cls(None, True)

    @classmethod
    def for_sender(cls, club: Club, address: str) -> Actor:
        member = club.member(address)
        is_admin = address_key(address) == address_key(club.site.site.admin) or bool(
            member and member.is_admin
        )
        # An alias acts as its member.
        return cls(member.email if member else address, is_admin)

    def is_self(self, member: Member) -> bool:
        return self.address is not None and address_key(self.address) == member.key

    def owns(self, mailing_list: MailingList) -> bool:
        return self.address is not None and mailing_list.is_owner(self.address)

    def may_manage(self, mailing_list: MailingList) -> bool:
        return self.is_admin or self.owns(mailing_list)


def _require_admin(actor: Actor, what: str) -> None:
    if not actor.is_admin:
        raise PermissionDenied(f"only the club's administrator may {what}")


@dataclass(frozen=True)
class Done:
    """The outcome of a change, in one sentence for people, with the record it touched."""

    message: str
    record: Any = None


# --- the site ----------------------------------------------------------------

CLUB_TEMPLATE = """\
# clublist site settings.  Every key has a default: `clublist config show` lists them
# all, and `clublist config set KEY VALUE` changes one, keeping these comments.

[site]
# Lists are LIST@domain; the administrator gets reports, bounce summaries and postmaster@.
domain = {domain}
name = {name}
admin = {admin}
# Reminders are scheduled in this time zone.
timezone = {timezone}

[listen]
# Where `clublist run` accepts mail: behind Postfix on a high port, or on port 25 itself.
host = "127.0.0.1"
port = 8025

[delivery]
# "direct" looks up each domain's MX; "smarthost" hands everything to one relay (Postfix).
mode = "direct"
# smarthost = "127.0.0.1:25"
# One message per recipient, so that every bounce names its member.
verp = false

[retry]
# Seconds between tries of a deferred delivery; the last step repeats until give_up_after
# (5 days), and then a delivery report goes to the administrator.
schedule = [300, 600, 1200, 2400, 3600]
give_up_after = 432000
"""


def init_club(directory: Path, domain: str, admin: str, name: str = "", timezone: str = "") -> Done:
    """Create lists.d with a commented club.toml and an empty member registry."""
    domain = model.parse_domain(domain)
    admin = parse_address(admin, "admin address")
    directory.mkdir(parents=True, exist_ok=True)
    store = Store(directory)
    with store.locked():
        if store.path(SITE_FILE).exists():
            raise ClublistError(
                f"{store.path(SITE_FILE)} already exists; change settings with 'clublist config set'"
            )
        import tomlkit

        text = CLUB_TEMPLATE.format(
            domain=tomlkit.string(domain).as_string(),
            name=tomlkit.string(name or domain.split(".")[0].capitalize()).as_string(),
            admin=tomlkit.string(admin).as_string(),
            timezone=tomlkit.string(timezone or _local_timezone()).as_string(),
        )
        store.write_text(SITE_FILE, text)
        if not store.path(MEMBERS_FILE).exists():
            from clublist.club.store import MEMBERS_HEADER

            store.write_text(MEMBERS_FILE, MEMBERS_HEADER)
    store.load()
    return Done(f"initialised {directory} for {domain}; administrator {admin}")


def _local_timezone() -> str:
    """The machine's zone name when it has one (Debian's /etc/timezone), else UTC."""
    try:
        name = Path("/etc/timezone").read_text().strip()
    except OSError:
        return "UTC"
    return name or "UTC"


def config_show(store: Store, actor: Actor) -> dict[str, Any]:
    """Every setting with its value in force (defaults included)."""
    _require_admin(actor, "read the site settings")
    site = store.load().site
    return {key: model.setting_value(site, key) for key in model.setting_keys()}


def config_get(store: Store, actor: Actor, key: str) -> Any:
    settings = config_show(store, actor)
    if key not in settings:
        raise ClublistError(f"unknown setting {key!r}; see 'clublist config show' for the keys")
    return settings[key]


def config_set(store: Store, actor: Actor, key: str, value: Any) -> Done:
    """Change one setting in club.toml, keeping comments; the value is checked against its type."""
    _require_admin(actor, "change the site settings")
    typed = model.coerce_setting(key, value)
    section, _, name = key.partition(".")
    if key == "site.domain":
        typed = model.parse_domain(typed)
    if key == "site.admin":
        typed = parse_address(typed, "site.admin")

    def change(document: Any) -> None:
        import tomlkit

        if section not in document:
            document[section] = tomlkit.table()
        document[section][name] = typed

    store.edit_toml(SITE_FILE, change)
    return Done(f"{key} = {typed!r}", typed)


# --- lists -------------------------------------------------------------------


@dataclass(frozen=True)
class ListInfo:
    """A list's settings with its member count, for ``list show`` and ``info``."""

    mailing_list: MailingList
    address: str
    members: int
    receiving: int


def list_ls(store: Store, actor: Actor) -> list[ListInfo]:
    """Every list; anyone may see what lists the club has."""
    club = store.load()
    return [_list_info(club, ml) for ml in club.lists.values()]


def list_show(store: Store, actor: Actor, name: str) -> ListInfo:
    club = store.load()
    return _list_info(club, club.require_list(name))


def _list_info(club: Club, mailing_list: MailingList) -> ListInfo:
    members = club.members_of(mailing_list.name)
    return ListInfo(
        mailing_list,
        mailing_list.address(club.site.domain),
        len(members),
        sum(1 for m in members if m.receives),
    )


def list_create(store: Store, actor: Actor, name: str, **settings: Any) -> Done:
    """Create LIST.toml; settings are checked like ``list set`` checks them."""
    _require_admin(actor, "create lists")
    model.check_list_name(name)
    values = {k: model.coerce_list_setting(k, v) for k, v in settings.items() if v is not None}
    club = store.load()
    if name in club.lists:
        raise ClublistError(f"list {name!r} already exists; change it with 'clublist list set'")
    if club.member(f"{name}@{club.site.domain}"):
        raise ClublistError(f"{name}@{club.site.domain} is a member's address")
    mailing_list = MailingList(name=name, **values)

    def change(document: Any) -> None:
        document.add(_tomlkit_comment(f"The list {name}@{club.site.domain}."))
        for key in model.LIST_KEYS:
            value = getattr(mailing_list, key)
            if key in values or key in ("description", "posting"):
                document[key] = list(value) if isinstance(value, tuple) else value

    store.edit_toml(list_file(name), change, create=True)
    return Done(f"created list {name}@{club.site.domain}", mailing_list)


def _tomlkit_comment(text: str) -> Any:
    import tomlkit

    return tomlkit.comment(text)


def list_set(store: Store, actor: Actor, name: str, key: str, value: Any) -> Done:
    """Change one setting of a list; its owners may, except who the owners are."""
    club = store.load()
    mailing_list = club.require_list(name)
    if not actor.may_manage(mailing_list):
        raise PermissionDenied(f"only the owners of {name} or the administrator may change it")
    if key == "owners":
        _require_admin(actor, "change a list's owners")
    typed = model.coerce_list_setting(key, value)

    def change(document: Any) -> None:
        document[key] = list(typed) if isinstance(typed, tuple) else typed

    store.edit_toml(list_file(name), change)
    return Done(f"{name}: {key} = {typed!r}", typed)


def list_delete(store: Store, actor: Actor, name: str) -> Done:
    """Remove LIST.toml and take the list off every member; the members stay in the club."""
    _require_admin(actor, "delete lists")
    club = store.load()
    club.require_list(name)

    def change(club: Club) -> MembersChange:
        return MembersChange(
            replaced={
                m.key: model.replace(m, lists=tuple(n for n in m.lists if n != name))
                for m in club.members
                if name in m.lists
            }
        )

    edit = store.change_members(change)
    with store.locked():
        store.path(list_file(name)).unlink(missing_ok=True)
    return Done(f"deleted list {name}; {len(edit.replaced)} members were on it")


# --- members -----------------------------------------------------------------


def member_ls(store: Store, actor: Actor, list_name: str | None = None) -> list[Member]:
    """The registry, or one list's members: the administrator sees all, a list's members see theirs."""
    club = store.load()
    if list_name is None:
        _require_admin(actor, "see every member")
        return list(club.members)
    mailing_list = club.require_list(list_name)
    if not (actor.may_manage(mailing_list) or _is_on(club, actor, list_name)):
        raise PermissionDenied(f"only members of {list_name} may see who is on it")
    return club.members_of(mailing_list.name)


def _is_on(club: Club, actor: Actor, list_name: str) -> bool:
    member = club.member(actor.address) if actor.address else None
    return bool(member and list_name in member.lists)


def member_show(store: Store, actor: Actor, address: str) -> Member:
    club = store.load()
    member = club.require_member(address)
    _require_member_rights(club, actor, member, "see")
    return member


def _require_member_rights(club: Club, actor: Actor, member: Member, what: str) -> None:
    """Self, the administrator, or an owner of a list the member is on."""
    if actor.is_admin or actor.is_self(member):
        return
    if any(actor.owns(club.lists[n]) for n in member.lists if n in club.lists):
        return
    raise PermissionDenied(f"you may not {what} {member.email}'s membership")


def member_add(
    store: Store,
    actor: Actor,
    email: str,
    name: str = "",
    lists: tuple[str, ...] = (),
    aliases: tuple[str, ...] = (),
    role: str = "member",
) -> Done:
    """Add a person to the registry; a list's owners may add people to their list."""
    email = parse_address(email)
    name = model.check_name(name)
    aliases = tuple(parse_address(a, "alias") for a in aliases)
    if role not in model.ROLES:
        raise ClublistError(f"role must be one of {', '.join(model.ROLES)}")

    def change(club: Club) -> MembersChange:
        for list_name in lists:
            mailing_list = club.require_list(list_name)
            if not actor.may_manage(mailing_list):
                raise PermissionDenied(f"only the owners of {list_name} may add members to it")
        if not lists and not actor.is_admin:
            raise PermissionDenied("only the administrator may add members to no list")
        if role != "member":
            _require_admin(actor, "make administrators")
        _require_free(club, email)
        for alias in aliases:
            _require_free_alias(club, alias)
        member = Member(email=email, name=name, lists=tuple(dict.fromkeys(lists)), aliases=aliases, role=role)
        return MembersChange(added=[member])

    edit = store.change_members(change)
    member = edit.added[0]
    on = f" on {', '.join(member.lists)}" if member.lists else ""
    return Done(f"added {member.email}{on}", member)


def _require_free(club: Club, address: str) -> None:
    """Refuse an address that is a member's already, or one of the club's own."""
    owner = club.member(address)
    if owner is not None:
        raise ClublistError(f"{address} is already a member ({owner.email})")
    local, _, domain = address.partition("@")
    if domain.lower() == club.site.domain and (local.lower() in club.lists or local in model.RESERVED_NAMES):
        raise ClublistError(f"{address} is one of the club's own addresses")


def _require_free_alias(club: Club, address: str) -> None:
    """Refuse an alias that would lend its rights to another member.

    The administrator's and list owners' addresses carry rights of their
    own; as someone's alias, that someone would post and act with them.
    """
    _require_free(club, address)
    if address_key(address) == address_key(club.site.site.admin):
        raise ClublistError(f"{address} is the administrator's address")
    owned = [ml.name for ml in club.lists.values() if ml.is_owner(address)]
    if owned:
        raise ClublistError(f"{address} owns {', '.join(owned)}; add it as a member of its own instead")


def member_remove(store: Store, actor: Actor, address: str) -> Done:
    """Take a person out of the registry and off every list."""
    _require_admin(actor, "remove members from the club")

    def change(club: Club) -> MembersChange:
        return MembersChange(removed={club.require_member(address).key})

    store.change_members(change)
    return Done(f"removed {address}")


def _update_member(store: Store, address: str, update: Any) -> Member:
    """Apply ``update(club, member) -> Member`` under the lock; returns the new record."""
    result: list[Member] = []

    def change(club: Club) -> MembersChange:
        member = club.require_member(address)
        new = update(club, member)
        result.append(new)
        if new == member:
            return MembersChange()
        return MembersChange(replaced={member.key: new})

    store.change_members(change)
    return result[0]


def member_join(store: Store, actor: Actor, address: str, list_name: str) -> Done:
    """Put a member on a list: themselves if the list is open, anyone for its owners."""

    def update(club: Club, member: Member) -> Member:
        mailing_list = club.require_list(list_name)
        if not actor.may_manage(mailing_list):
            if not actor.is_self(member):
                raise PermissionDenied(f"only the owners of {list_name} may add others to it")
            if not mailing_list.self_subscribe:
                raise PermissionDenied(f"{list_name} is closed: ask its owners to add you")
        if mailing_list.name in member.lists:
            raise ClublistError(f"{member.email} is already on {mailing_list.name}")
        return model.replace(member, lists=(*member.lists, mailing_list.name))

    member = _update_member(store, address, update)
    return Done(f"{member.email} joined {list_name}", member)


def member_leave(store: Store, actor: Actor, address: str, list_name: str) -> Done:
    """Take a member off a list: themselves, or anyone for the list's owners."""

    def update(club: Club, member: Member) -> Member:
        if list_name not in member.lists:
            raise ClublistError(f"{member.email} is not on {list_name}")
        mailing_list = club.lists.get(list_name)
        if not (actor.is_self(member) or actor.is_admin or (mailing_list and actor.owns(mailing_list))):
            raise PermissionDenied(f"only {member.email} or the owners of {list_name} may do that")
        return model.replace(member, lists=tuple(n for n in member.lists if n != list_name))

    member = _update_member(store, address, update)
    return Done(f"{member.email} left {list_name}", member)


@dataclass(frozen=True)
class MemberChanges:
    """What ``member set`` may change; None leaves a field as it is."""

    name: str | None = None
    role: str | None = None
    enable: bool | None = None
    reason: str = ""
    add_aliases: tuple[str, ...] = ()
    remove_aliases: tuple[str, ...] = ()
    daily_limit: int | None = None
    clear_daily_limit: bool = False


def member_set(store: Store, actor: Actor, address: str, changes: MemberChanges) -> Done:
    """Change a member's name, aliases, delivery, role or daily limit, within the asker's rights."""
    if changes.name is not None:
        model.check_name(changes.name)
    new_aliases = tuple(parse_address(a, "alias") for a in changes.add_aliases)

    def update(club: Club, member: Member) -> Member:
        _require_member_rights(club, actor, member, "change")
        if changes.role is not None or changes.daily_limit is not None or changes.clear_daily_limit:
            _require_admin(actor, "change roles and posting limits")
        if changes.role is not None and changes.role not in model.ROLES:
            raise ClublistError(f"role must be one of {', '.join(model.ROLES)}")
        for alias in new_aliases:
            _require_free_alias(club, alias)
        removed = {address_key(a) for a in changes.remove_aliases}
        unknown = removed - {address_key(a) for a in member.aliases}
        if unknown:
            raise ClublistError(f"{sorted(unknown)[0]} is not an alias of {member.email}")
        fields: dict[str, Any] = {
            "aliases": tuple(a for a in member.aliases if address_key(a) not in removed) + new_aliases
        }
        if changes.name is not None:
            fields["name"] = model.check_name(changes.name)
        if changes.role is not None:
            fields["role"] = changes.role
        if changes.enable is True:
            fields.update(delivery="enabled", disabled_reason="")
        elif changes.enable is False:
            fields.update(delivery="disabled", disabled_reason=changes.reason or "disabled by hand")
        if changes.daily_limit is not None:
            fields["daily_limit"] = changes.daily_limit
        if changes.clear_daily_limit:
            fields["daily_limit"] = None
        return model.replace(member, **fields)

    member = _update_member(store, address, update)
    return Done(f"updated {member.email}", member)


# --- import and export --------------------------------------------------------


@dataclass
class ImportResult:
    """What an import did (or would do, with ``dry_run``)."""

    added: list[Member] = field(default_factory=list)
    updated: list[Member] = field(default_factory=list)
    dry_run: bool = False

    @property
    def message(self) -> str:
        added, updated = ("would add", "would update") if self.dry_run else ("added", "updated")
        return f"{added} {len(self.added)} members, {updated} {len(self.updated)}"


def member_import(store: Store, actor: Actor, csv_text: str, dry_run: bool = False) -> ImportResult:
    """Import ``email,name,lists`` rows, all or nothing.

    ``lists`` holds list names separated by spaces or semicolons.  A row for
    someone already in the registry adds the lists named to theirs (and sets
    the name if they had none), so a club can re-import its roster.  Every
    bad row is reported at once, with its line number; then nothing changes.
    """
    _require_admin(actor, "import members")
    result = ImportResult(dry_run=dry_run)

    def change(club: Club) -> MembersChange:
        rows = _read_csv(csv_text)
        errors: list[str] = []
        added: dict[str, Member] = {}
        updated: dict[str, Member] = {}
        for line, row in rows:
            try:
                member = _row_member(club, row)
            except ClublistError as exc:
                errors.append(f"line {line}: {exc}")
                continue
            existing = club.member(member.email)
            if member.key in added:
                errors.append(f"line {line}: {member.email} appears twice in the file")
            elif existing is None:
                added[member.key] = member
            else:
                base = updated.get(existing.key, existing)
                updated[existing.key] = model.replace(
                    base,
                    name=base.name or member.name,
                    lists=tuple(dict.fromkeys((*base.lists, *member.lists))),
                )
        if errors:
            shown = "\n  ".join(errors[:50])
            more = f"\n  ... and {len(errors) - 50} more" if len(errors) > 50 else ""
            raise ClublistError(f"nothing imported; {len(errors)} bad lines:\n  {shown}{more}")
        result.added = list(added.values())
        result.updated = [m for k, m in updated.items() if m != club.member(k)]
        if dry_run:
            return MembersChange()
        return MembersChange(added=result.added, replaced={m.key: m for m in result.updated})

    store.change_members(change)
    return result


def _read_csv(text: str) -> list[tuple[int, list[str]]]:
    reader = csv.reader(io.StringIO(text))
    rows = []
    for row in reader:
        if not any(cell.strip() for cell in row):
            continue
        if reader.line_num == 1 and row and row[0].strip().lower() == "email":
            continue
        rows.append((reader.line_num, row))
    return rows


def _row_member(club: Club, row: list[str]) -> Member:
    if len(row) > 3:
        raise ClublistError(f"expected email,name,lists but found {len(row)} columns")
    email = parse_address(row[0])
    name = model.check_name(row[1]) if len(row) > 1 else ""
    lists = tuple(n for n in (row[2].replace(";", " ").split() if len(row) > 2 else ()) if n)
    for list_name in lists:
        club.require_list(list_name)
    local, _, domain = email.partition("@")
    if domain.lower() == club.site.domain and local.lower() in club.lists:
        raise ClublistError(f"{email} is one of the club's own addresses")
    return Member(email=email, name=name, lists=tuple(dict.fromkeys(lists)))


def member_export(store: Store, actor: Actor) -> str:
    """The registry as ``email,name,lists`` CSV, the same shape import reads."""
    _require_admin(actor, "export members")
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["email", "name", "lists"])
    for member in store.load().members:
        writer.writerow([member.email, member.name, " ".join(member.lists)])
    return out.getvalue()

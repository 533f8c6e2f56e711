"""Members: the registry in members.toml, joins and leaves, CSV import and export."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from typing import Any

from clublist.actions import Actor, Done, require_admin
from clublist.club import model
from clublist.club.model import Member, address_key, parse_address
from clublist.club.store import Club, MembersChange, Store
from clublist.errors import ClublistError, PermissionDenied


def member_ls(store: Store, actor: Actor, list_name: str | None = None) -> list[Member]:
    """The registry, or one list's members: the administrator sees all, a list's members see theirs."""
    club = store.load()
    if list_name is None:
        require_admin(actor, "see every member")
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
            require_admin(actor, "make administrators")
        _require_free(club, email)
        for alias in aliases:
            _require_free_alias(club, alias)
        member = Member(
            email=email, name=name, lists=tuple(dict.fromkeys(lists)), aliases=aliases, role=role  # type: ignore[arg-type]
        )
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
    require_admin(actor, "remove members from the club")

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
            require_admin(actor, "change roles and posting limits")
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
    require_admin(actor, "import members")
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
    require_admin(actor, "export members")
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["email", "name", "lists"])
    for member in store.load().members:
        writer.writerow([member.email, member.name, " ".join(member.lists)])
    return out.getvalue()

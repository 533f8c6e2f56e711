"""Members: the registry in members.toml, joins and leaves, removals.

Every change that moves someone onto or off a list is announced (welcome, goodbye, the
owners' notice) through :class:`Notify`, after members.toml is written; CSV import,
export and sync are :mod:`clublist.actions.roster`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clublist.actions import Actor, Done, require_admin
from clublist.club import model
from clublist.club.model import Member, address_key, parse_address
from clublist.club.registry import Registry
from clublist.club.store import Club, MembersChange, Store
from clublist.errors import ClublistError, PermissionDenied

if TYPE_CHECKING:  # the notices' modules are imported when a change is made, not to show a member
    from clublist.outbound.membership import Change


@dataclass(frozen=True)
class Notify:
    """Where membership changes are announced: the state database whose queue the daemon sends.

    ``quiet`` sends nothing (an owner who removes someone by hand and tells them in person).
    """

    state_path: Path
    quiet: bool = False
    clock: Callable[[], float] = time.time


def apply_members_change(
    store: Store, change: Callable[[Club], MembersChange], notify: Notify | None
) -> MembersChange:
    """``store.change_members`` (one locked, atomic write), then the notices for what it changed."""
    from clublist.outbound.membership import changes_between

    found: list[Change] = []

    def decide(club: Club) -> MembersChange:
        edit = change(club)
        found.clear()
        for member in edit.added:
            found.extend(changes_between(None, member))
        for key, member in edit.replaced.items():
            found.extend(changes_between(club.member(key), member))
        for key in edit.removed:
            found.extend(changes_between(club.member(key), None))
        return edit

    edit = store.change_members(decide)
    if found and notify is not None and not notify.quiet:
        announce(store, notify, found, edit.club)
    return edit


def announce(store: Store, notify: Notify, changes: Sequence[Change], club: Club | None = None) -> int:
    """Queue the welcome, goodbye and owner notices for *changes*; the daemon delivers them.

    *club*: the club as the change left it (read again when not given).
    """
    from clublist.outbound.membership import queue_membership_notices
    from clublist.state import db

    if club is None:
        club = store.load()
    conn = db.connect(notify.state_path)
    try:
        with db.transaction(conn):
            sent = queue_membership_notices(conn, club, changes, notify.clock())
    finally:
        conn.close()
    db.DaemonLock(notify.state_path).wake()
    return sent


def member_ls(store: Store, actor: Actor, list_name: str | None = None, search: str = "") -> Registry:
    """The registry, or one list's members: the administrator sees all, a list's members see theirs.

    *search* keeps the members whose address, an alias or name contains it, in any case.  The
    answer is read from the registry's columns, so listing 50,000 members builds no record.
    """
    club = store.load()
    registry = club.registry
    rows: Sequence[int] | None = None
    if list_name is None:
        require_admin(actor, "see every member")
    else:
        mailing_list = club.require_list(list_name)
        if not (actor.may_manage(mailing_list) or _is_on(club, actor, list_name)):
            raise PermissionDenied(f"only members of {list_name} may see who is on it")
        rows = [row for row, names in enumerate(registry.column("lists")) if mailing_list.name in names]
    needle = search.casefold().strip()
    if needle:
        emails, names, aliases = (registry.column(field) for field in ("email", "name", "aliases"))
        rows = [
            row
            for row in (range(len(registry)) if rows is None else rows)
            if any(
                needle in text.casefold()
                for text in (emails[row], address_key(emails[row]), names[row], *aliases[row])
            )
        ]
    return registry if rows is None else registry.select(rows)


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
    notify: Notify | None = None,
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
            email=email,
            name=name,
            lists=tuple(dict.fromkeys(lists)),
            aliases=aliases,
            role=role,  # type: ignore[arg-type]
        )
        return MembersChange(added=[member])

    edit = apply_members_change(store, change, notify)
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


@dataclass
class Removal:
    """What ``member remove`` did (or would do, with ``dry_run``)."""

    removed: list[Member] = field(default_factory=list)
    list_name: str | None = None
    dry_run: bool = False

    @property
    def message(self) -> str:
        verb = "would remove" if self.dry_run else "removed"
        where = f" from {self.list_name}" if self.list_name else ""
        names = ", ".join(m.email for m in self.removed[:10])
        more = f" and {len(self.removed) - 10} more" if len(self.removed) > 10 else ""
        return f"{verb} {len(self.removed)} members{where}: {names}{more}" if self.removed else "nobody"


def member_remove(
    store: Store,
    actor: Actor,
    addresses: Sequence[str] | str,
    *,
    list_name: str | None = None,
    dry_run: bool = False,
    notify: Notify | None = None,
) -> Removal:
    """Take people out of the registry (off every list), or with *list_name* off that list only.

    All or nothing, in one write: an address that is no member (or not on the list) stops
    the whole removal.  A list's owners may take people off their list; removing people
    from the club is the administrator's.
    """
    if isinstance(addresses, str):
        addresses = [addresses]
    if list_name is None:
        require_admin(actor, "remove members from the club")
    if not addresses:
        raise ClublistError("name at least one address to remove (or --from-file FILE)")
    result = Removal(list_name=list_name, dry_run=dry_run)

    def change(club: Club) -> MembersChange:
        if list_name is not None and not actor.may_manage(club.require_list(list_name)):
            raise PermissionDenied(f"only the owners of {list_name} may take members off it")
        found: dict[str, Member] = {}
        problems = []
        for address in addresses:
            member = club.member(address)
            if member is None:
                problems.append(f"{address} is not a member")
            elif list_name is not None and list_name not in member.lists:
                problems.append(f"{member.email} is not on {list_name}")
            else:
                found[member.key] = member
        if problems:
            raise ClublistError("nothing removed: " + "; ".join(problems[:20]))
        result.removed = list(found.values())
        if dry_run:
            return MembersChange()
        if list_name is None:
            return MembersChange(removed=set(found))
        return MembersChange(
            replaced={
                k: model.replace(m, lists=tuple(n for n in m.lists if n != list_name))
                for k, m in found.items()
            }
        )

    apply_members_change(store, change, notify)
    return result


def _update_member(store: Store, address: str, update: Any, notify: Notify | None = None) -> Member:
    """Apply ``update(club, member) -> Member`` under the lock; returns the new record."""
    result: list[Member] = []

    def change(club: Club) -> MembersChange:
        member = club.require_member(address)
        new = update(club, member)
        result.append(new)
        if new == member:
            return MembersChange()
        return MembersChange(replaced={member.key: new})

    apply_members_change(store, change, notify)
    return result[0]


def member_join(
    store: Store, actor: Actor, address: str, list_name: str, notify: Notify | None = None
) -> Done:
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

    member = _update_member(store, address, update, notify)
    return Done(f"{member.email} joined {list_name}", member)


def member_leave(
    store: Store, actor: Actor, address: str, list_name: str, notify: Notify | None = None
) -> Done:
    """Take a member off a list: themselves, or anyone for the list's owners."""

    def update(club: Club, member: Member) -> Member:
        if list_name not in member.lists:
            raise ClublistError(f"{member.email} is not on {list_name}")
        mailing_list = club.lists.get(list_name)
        if not (actor.is_self(member) or actor.is_admin or (mailing_list and actor.owns(mailing_list))):
            raise PermissionDenied(f"only {member.email} or the owners of {list_name} may do that")
        return model.replace(
            member,
            lists=tuple(n for n in member.lists if n != list_name),
            digest=tuple(n for n in member.digest if n != list_name),
        )

    member = _update_member(store, address, update, notify)
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
    moderated: bool | None = None
    digest_list: str | None = None  # with digest: take this list's daily digest, or each post
    digest: bool | None = None


def member_set(store: Store, actor: Actor, address: str, changes: MemberChanges) -> Done:
    """Change a member's name, aliases, delivery, role, daily limit or digest lists, within the
    asker's rights."""
    if changes.name is not None:
        model.check_name(changes.name)
    new_aliases = tuple(parse_address(a, "alias") for a in changes.add_aliases)

    def update(club: Club, member: Member) -> Member:
        _require_member_rights(club, actor, member, "change")
        if changes.role is not None or changes.daily_limit is not None or changes.clear_daily_limit:
            require_admin(actor, "change roles and posting limits")
        if changes.moderated is not None and not (
            actor.is_admin or any(actor.owns(club.lists[n]) for n in member.lists if n in club.lists)
        ):
            raise PermissionDenied("only a list's owners or the administrator may moderate a member")
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
        if changes.moderated is not None:
            fields["moderated"] = changes.moderated
        if changes.digest_list is not None and changes.digest is not None:
            fields["digest"] = _digest_lists(club, member, changes.digest_list, changes.digest)
        return model.replace(member, **fields)

    member = _update_member(store, address, update)
    return Done(f"updated {member.email}", member)


def _digest_lists(club: Club, member: Member, list_name: str, digest: bool) -> tuple[str, ...]:
    """The member's digest lists with *list_name* added or taken out (it must be one of theirs)."""
    mailing_list = club.require_list(list_name)
    if list_name not in member.lists:
        raise ClublistError(f"{member.email} is not on {list_name}; join it first")
    if digest and not mailing_list.archive:
        raise ClublistError(f"{list_name} keeps no archive, so it has no digest; its posts come one by one")
    others = tuple(n for n in member.digest if n != list_name)
    return (*others, list_name) if digest else others

"""Lists: create, show, change and delete the one-TOML-file-per-list records."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from clublist.actions import Actor, Done, require_admin
from clublist.club import model
from clublist.club.model import MailingList
from clublist.club.store import Club, MembersChange, Store, list_file
from clublist.club.tomltext import toml_value
from clublist.errors import ClublistError, PermissionDenied


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
    require_admin(actor, "create lists")
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
        require_admin(actor, "change a list's owners")
    typed = model.coerce_list_setting(key, value)

    def change(document: Any) -> None:
        document[key] = list(typed) if isinstance(typed, tuple) else typed

    store.edit_toml(list_file(name), change)
    return Done(f"{name}: {key} = {toml_value(typed)}", typed)


def list_delete(store: Store, actor: Actor, name: str) -> Done:
    """Remove LIST.toml and take the list off every member; the members stay in the club."""
    require_admin(actor, "delete lists")
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

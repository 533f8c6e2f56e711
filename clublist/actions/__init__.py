"""The library of actions: everything a person can ask clublist to change or show.

One module per noun (members, lists, config, held, bounces, reminders, queue,
status).  The CLI and the mail bot both call these functions, with plain values and
the :class:`Actor` who is asking; rights are checked here and nowhere else.
At the shell the actor is the administrator.  A mailed command runs with the
rights of its sender: a member acts on their own membership and reads the
lists they are on, a list's owners manage that list, the administrator
(``site.admin`` or a member with ``role = "admin"``) everything.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from clublist.club.model import MailingList, Member, address_key
from clublist.club.store import Club
from clublist.errors import PermissionDenied


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


def require_admin(actor: Actor, what: str) -> None:
    if not actor.is_admin:
        raise PermissionDenied(f"only the club's administrator may {what}")


@dataclass(frozen=True)
class Done:
    """The outcome of a change, in one sentence for people, with the record it touched."""

    message: str
    record: Any = None

"""The posting rules run at DATA: small named checks that decide what happens to a post.

The SMTP handler builds a :class:`Post` once the message is in and calls :func:`evaluate`;
the first rule with something to say decides (accept, hold, reject or discard), as in
Mailman's chains.  :func:`may_post` is the posting policy itself; the handler asks it at
RCPT time too (for the envelope sender, unwrapped from BATV and SRS by
:func:`envelope_address`), so the SMTP dialogue and the DATA rules never disagree.

The author of a post is the member its From names; whether that From is true is the
"authentication" rule's question (SPF, DKIM and DMARC, from mail/authentication.py).

Machines' mail is never dropped in silence: a member's auto-reply to a post the list just
sent (the loop of a naive auto-responder) and a member's bulk or automatic mail
(Precedence: bulk/list/junk, Auto-Submitted) are held for the owners with the reason, and
the owners hear of it once a day per member and rule.  Only a post that carries this
list's own List-Id or X-Loop (it went out and came back) is discarded.  The daily and
hourly limits are checked here on counts read before the commit, and again in the
commit's own transaction (:func:`limit_verdict`), so parallel posts cannot overrun them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.headerregistry import Address
from email.message import Message
from email.utils import getaddresses
from typing import TYPE_CHECKING, Literal

from clublist.club.model import MailingList, Member, address_key, inbound_size_limit
from clublist.club.store import Club
from clublist.mail.decorate import header_text, list_id
from clublist.mail.replies import (
    AUTHENTICATION_TEMPORARY,
    DAILY_LIMIT_PERMANENT,
    DAILY_LIMIT_TEMPORARY,
    DISCARDED,
    DMARC_FAIL,
    HELD,
    HOURLY_LIMIT_PERMANENT,
    HOURLY_LIMIT_TEMPORARY,
    NOT_A_MEMBER,
    NOT_ALLOWED_TO_POST,
    OK_QUEUED,
    SENDER_AUTH_FAILED,
    TOO_LARGE,
    render,
)

if TYPE_CHECKING:  # the checks' libraries load with the daemon, not with every command that reads rules
    from clublist.mail.authentication import Authentication

Action = Literal["accept", "hold", "reject", "discard"]

# "list" too: a post relayed by another mailing list is not a member writing to this one.
_BULK_PRECEDENCE = frozenset({"bulk", "junk", "list", "auto_reply"})
_AUTOREPLY_HEADERS = ("X-Autoreply", "X-Autorespond", "X-Autoresponse")
# Subjects auto-responders give their replies (Outlook, Exchange, Notes, German and French ones);
# at the start only: "Re: Out of office next week?" is a person answering a thread.
_AUTOREPLY_SUBJECT = re.compile(
    r"(auto(matic|matische)?[ -]?(reply|response|antwort|réponse)\b"
    r"|auto\s*:|out of (the )?office|abwesen|vacation|urlaub|r[ée]ponse automatique|absence)",
    re.IGNORECASE,
)
AUTO_REPLY_WINDOW = 15 * 60  # seconds after a post within which a quick reply to it is suspect


@dataclass(frozen=True)
class Post:
    """Everything the rules may look at; built by the SMTP handler."""

    message: Message  # decorate.parse: header values as received, read them with decorate.header_text
    size: int  # bytes as received
    envelope_sender: str  # "" for the null sender
    mailing_list: MailingList
    club: Club
    author: Member | None  # the member the header From (or envelope sender) belongs to
    posts_today: int  # the author's posts accepted today; 0 when no daily limit applies (not looked up)
    from_address: Address | None  # decorate.sole_address(message, "From"): None unless exactly one
    # What SPF, DKIM and DMARC said; None when the client is trusted (listen.trusted_networks).
    authentication: Authentication | None = None
    posts_last_hour: int = 0  # the author's posts in the last 60 minutes
    # In-Reply-To/References names a post of this list from the last AUTO_REPLY_WINDOW.
    replies_to_recent_post: bool = False
    new_text: str | None = None  # conversation.new_text: what the sender wrote; None when not read
    repeats_recent_text: bool = False  # the author posted the same new text within the hour


@dataclass(frozen=True)
class Verdict:
    """What happens to a post.

    The replies of "accept" and "hold" keep their ``{queue_id}`` field: only the caller
    knows the id, after its commit.  Those of "reject" and "discard" are complete.  The
    rule of an accept is "", as no rule spoke.
    """

    action: Action
    rule: str  # the rule's name, for the log
    reason: str  # for people and the log
    reply: str  # the SMTP reply line to give (from replies.py)
    # For a hold: tell the owners of the first such post per author and day only.
    once_a_day: bool = False


@dataclass(frozen=True)
class Rule:
    """One named check, run in the order of :data:`RULES`."""

    name: str
    description: str
    check: Callable[[Post], Verdict | None]  # None: the rule has nothing to say


# --- the posting policy ------------------------------------------------------


def may_post(club: Club, mailing_list: MailingList, address: str) -> str | None:
    """None if *address* (email or alias, any case) may post to *mailing_list*, else the reason.

    The site administrator, members with role admin and the list's owners may post to a
    list under every policy (owners even without an entry in members.toml); the others as
    the list's policy says: "members" and "moderated" its members, "club" any member,
    "owners" nobody else.
    """
    reply = refusal_reply(club, mailing_list, address)
    return None if reply is None else _reason(reply)


def refusal_reply(club: Club, mailing_list: MailingList, address: str) -> str | None:
    """The SMTP reply refusing *address* as a poster to *mailing_list*, or None if it may post."""
    if is_privileged(club, mailing_list, address):
        return None
    shown = address or "<>"
    list_address = mailing_list.address(club.site.domain)
    if mailing_list.posting == "owners":
        reason = f"{shown} may not post to {list_address}: only the list's owners may post"
        return render(NOT_ALLOWED_TO_POST, reason=reason)
    member = club.member(address) if address else None
    if member is None:
        where = club.site.site.name if mailing_list.posting == "club" else list_address
        return render(NOT_A_MEMBER, sender=shown, list=where)
    if mailing_list.posting == "club" or mailing_list.name in member.lists:
        return None
    reason = f"{shown} is not subscribed to {list_address}; only its members may post"
    return render(NOT_ALLOWED_TO_POST, reason=reason)


_BATV = re.compile(r"prvs=[0-9A-Za-z]+=(?P<local>.+)", re.IGNORECASE)
_SRS0 = re.compile(r"SRS0[=+-][^=]*=[^=]*=(?P<domain>[^=]+)=(?P<local>.+)", re.IGNORECASE)
_SRS1 = re.compile(r"SRS1[=+-][^=]*=[^=]*==[^=]*=[^=]*=(?P<domain>[^=]+)=(?P<local>.+)", re.IGNORECASE)


def envelope_address(envelope_sender: str) -> str:
    """The sender's own address inside a BATV (``prvs=TAG=anna@example.org``) or SRS
    (``SRS0=HASH=TT=example.org=anna@forwarder.example``) envelope sender; else the sender.

    The tags are not verified (only the address's owner could): this only lets a member's
    rewritten envelope reach DATA, where the post itself must authenticate.
    """
    local, at, domain = envelope_sender.rpartition("@")
    if not at:
        return envelope_sender
    if match := _BATV.fullmatch(local):
        return f"{match['local']}@{domain}"
    if match := _SRS1.fullmatch(local) or _SRS0.fullmatch(local):
        return f"{match['local']}@{match['domain']}"
    return envelope_sender


def rcpt_refusal(club: Club, mailing_list: MailingList, address: str) -> str | None:
    """The refusal to give at RCPT: none where the list holds outsiders' posts for its owners.

    With ``nonmember = "hold"`` the post of someone the policy does not allow is taken in
    and held at DATA (:func:`check_member`); the "owners" policy and the null sender are
    refused all the same, and so is mail to addresses that are no list.
    """
    reply = envelope_refusal(club, mailing_list, address)
    if reply is None or not _holds_outsiders(club, mailing_list) or not address:
        return reply
    return None


def _holds_outsiders(club: Club, mailing_list: MailingList) -> bool:
    return mailing_list.posting != "owners" and mailing_list.nonmember_policy(club.site) == "hold"


def is_privileged(club: Club, mailing_list: MailingList, address: str) -> bool:
    """The site administrator, an admin member or one of the list's owners, by any of their addresses."""
    if not address:
        return False
    member = club.member(address)
    if member is not None and member.is_admin:
        return True
    addresses = (member.email, *member.aliases) if member else (address,)
    admin = address_key(club.site.site.admin)
    return any(address_key(a) == admin or mailing_list.is_owner(a) for a in addresses)


# --- the rules ---------------------------------------------------------------


def check_size(post: Post) -> Verdict | None:
    """Catches what MAIL FROM's SIZE= did not announce (the limit: model.inbound_size_limit)."""
    limit = inbound_size_limit(post.club.site)
    if post.size <= limit:
        return None
    return _reject("size", render(TOO_LARGE, limit=limit))


def check_loop(post: Post) -> Verdict | None:
    """Our own List-Id or X-Loop on an incoming post means it went out and came back."""
    own_id = list_id(post.mailing_list, post.club.site.domain).lower()
    list_address = address_key(post.mailing_list.address(post.club.site.domain))
    list_ids = [_angle_content(header_text(v)).lower() for v in post.message.get_all("List-Id", [])]
    loop_addresses = [
        address_key(a) for _, a in getaddresses([header_text(v) for v in post.message.get_all("X-Loop", [])])
    ]
    if own_id in list_ids or list_address in loop_addresses:
        reason = f"mail loop: the message has already been through {list_address}"
        return Verdict("discard", "loop", reason, DISCARDED)
    return None


def automatic(message: Message) -> str | None:
    """Why *message* is machines' mail (RFC 3834 Auto-Submitted, Precedence, auto-reply headers), or None."""
    value = message.get("Auto-Submitted")
    auto_submitted = None if value is None else header_text(value)
    precedence = header_text(message.get("Precedence", "")).strip().lower()
    if auto_submitted is not None and auto_submitted.split(";")[0].strip().lower() != "no":
        return f"automatic mail (Auto-Submitted: {auto_submitted})"
    if precedence in _BULK_PRECEDENCE:
        return f"bulk mail (Precedence: {precedence})"
    if found := [name for name in _AUTOREPLY_HEADERS if name in message]:
        return f"an automatic reply ({found[0]})"
    return None


def check_auto_responder(post: Post) -> Verdict | None:
    """A member's reply, within minutes, to a post this list just sent them, that looks
    automatic (an auto-reply header or subject), adds no text of its own, or repeats the
    text of their last reply: a naive auto-responder answering the list, which would go
    round in a loop.  Held; the owners are told once a day."""
    if not post.replies_to_recent_post:
        return None
    subject = header_text(post.message.get("Subject", ""))
    if shape := automatic(post.message):
        why = shape
    elif _AUTOREPLY_SUBJECT.match(subject):
        why = f"an auto-reply subject ({subject[:80]})"
    elif post.new_text == "":
        why = "it adds no text to the post it quotes"
    elif post.repeats_recent_text:
        why = "it repeats the text of the same author's reply minutes before"
    else:
        return None
    list_address = post.mailing_list.address(post.club.site.domain)
    reason = f"auto-responder: {_poster(post)} answered a post {list_address} sent minutes before ({why})"
    return Verdict("hold", "auto_responder", reason, HELD, once_a_day=True)


def check_auto_submitted(post: Post) -> Verdict | None:
    """A member's machines' mail (auto-replies, bulk mail, a post resent from another list)
    is not a post to go out as it is: held for the owners, with the reason, never dropped."""
    shape = automatic(post.message)
    if shape is None:
        return None
    reason = f"{shape} is not posted without an owner's approval"
    return Verdict("hold", "auto_submitted", reason, HELD, once_a_day=True)


def check_member(post: Post) -> Verdict | None:
    """The author in From must be allowed to post to the list, and so must the envelope sender
    (as RCPT checked it: unwrapped from BATV and SRS, which a member's provider or forwarder
    may have wrapped it in).  They need not be the same member."""
    author = post.from_address
    if author is None:
        reason = "the message must have exactly one address in its From header"
        return _reject("member", render(NOT_ALLOWED_TO_POST, reason=reason))
    reply = refusal_reply(post.club, post.mailing_list, author.addr_spec)
    if reply is None:
        reply = envelope_refusal(post.club, post.mailing_list, post.envelope_sender)
    if reply is None:
        return None
    if _holds_outsiders(post.club, post.mailing_list):
        reason = f"{_reason(reply)}: held for the list's owners (nonmember = hold)"
        return Verdict("hold", "member", reason, HELD)
    return _reject("member", reply)


def envelope_refusal(club: Club, mailing_list: MailingList, envelope_sender: str) -> str | None:
    """The reply refusing an envelope sender for *mailing_list*, or None: it, or the address
    inside its BATV or SRS wrapping, must be allowed to post."""
    unwrapped = envelope_address(envelope_sender)
    reply = refusal_reply(club, mailing_list, unwrapped)
    if reply is not None and unwrapped != envelope_sender:
        return refusal_reply(club, mailing_list, envelope_sender)
    return reply


def check_authentication(post: Post) -> Verdict | None:
    """A post must come from its author's own domain: an SPF or DKIM pass aligned with From.

    DNS trouble answers 451 so the sender retries; a domain that fails its own DMARC
    policy of reject or quarantine is refused, as its owner asked; any other post without
    an aligned pass goes as posting.unauthenticated says (the list's setting, else the site's).
    """
    result = post.authentication
    if result is None or result.authenticated:
        return None
    if result.temperror:
        reason = "DNS did not answer in time for SPF, DKIM or DMARC"
        return _reject("authentication", render(AUTHENTICATION_TEMPORARY, reason=reason))
    if result.refused_by_policy:
        reply = render(DMARC_FAIL, domain=result.from_domain, policy=result.dmarc_policy)
        return _reject("authentication", reply)
    setting = post.mailing_list.unauthenticated
    if setting == "site":
        setting = post.club.site.posting.unauthenticated
    if setting == "accept":
        return None
    reason = (
        f"{_poster(post)} could not be authenticated: no SPF or DKIM pass for the From domain "
        f"({result.summary()})"
    )
    if setting == "refuse":
        return _reject("authentication", render(SENDER_AUTH_FAILED, reason=reason))
    return Verdict("hold", "authentication", reason, HELD)


def check_daily_limit(post: Post) -> Verdict | None:
    """At most so many posts a day per author; a limit of 0 means no daily limit."""
    return daily_limit_verdict(post.club, post.author, _poster(post), post.posts_today)


def check_hourly_limit(post: Post) -> Verdict | None:
    """At most posting.hourly_limit posts in any 60 minutes per author: the brake on loops and
    floods, which stays on with daily_limit = 0."""
    return hourly_limit_verdict(post.club, _poster(post), post.posts_last_hour)


def daily_limit_verdict(club: Club, author: Member | None, poster: str, posts_today: int) -> Verdict | None:
    limit = daily_limit(club, author)
    if limit == 0 or posts_today < limit:
        return None
    temporary = club.site.posting.daily_limit_reply == "temporary"
    template = DAILY_LIMIT_TEMPORARY if temporary else DAILY_LIMIT_PERMANENT
    return _reject("daily_limit", render(template, sender=poster, limit=limit))


def hourly_limit_verdict(club: Club, poster: str, posts_last_hour: int) -> Verdict | None:
    limit = club.site.posting.hourly_limit
    if posts_last_hour < limit:
        return None
    temporary = club.site.posting.daily_limit_reply == "temporary"
    template = HOURLY_LIMIT_TEMPORARY if temporary else HOURLY_LIMIT_PERMANENT
    return _reject("hourly_limit", render(template, sender=poster, limit=limit))


def limit_verdict(
    club: Club, author: Member | None, poster: str, posts_today: int, posts_last_hour: int
) -> Verdict | None:
    """The daily, then the hourly limit, on counts read inside the commit's transaction."""
    return daily_limit_verdict(club, author, poster, posts_today) or hourly_limit_verdict(
        club, poster, posts_last_hour
    )


def daily_limit(club: Club, author: Member | None) -> int:
    """How many posts a day *author* may send: their own limit, else the site's; 0 means no limit."""
    own_limit = author.daily_limit if author else None
    return club.site.posting.daily_limit if own_limit is None else own_limit


def check_moderated_member(post: Post) -> Verdict | None:
    """A member marked ``moderated`` (``member set --moderated``) posts through the owners."""
    author = post.author
    if author is None or not author.moderated:
        return None
    if is_privileged(post.club, post.mailing_list, _poster(post)):
        return None
    reason = f"{author.email} is moderated: the post waits for an owner's approval"
    return Verdict("hold", "moderated_member", reason, HELD)


def check_moderation(post: Post) -> Verdict | None:
    """On a moderated list, posts wait for an owner; owners' and admins' own posts do not."""
    if post.mailing_list.posting != "moderated":
        return None
    if is_privileged(post.club, post.mailing_list, _poster(post)):
        return None
    list_address = post.mailing_list.address(post.club.site.domain)
    reason = f"{list_address} is moderated: the post waits for an owner's approval"
    return Verdict("hold", "moderation", reason, HELD)


RULES: tuple[Rule, ...] = (
    Rule("size", "refuse posts larger than listen.max_message_size or the next hop takes", check_size),
    Rule("loop", "discard posts that already carry this list's List-Id or X-Loop", check_loop),
    Rule("member", "refuse posts from anyone the list's posting policy does not allow", check_member),
    Rule(
        "authentication",
        "refuse, hold or accept posts whose From domain did not send or sign them (posting.unauthenticated)",
        check_authentication,
    ),
    Rule(
        "auto_responder", "hold a member's automatic reply to a post the list just sent", check_auto_responder
    ),
    Rule(
        "auto_submitted",
        "hold auto-replies and bulk mail (RFC 3834, Precedence) for the owners",
        check_auto_submitted,
    ),
    Rule("daily_limit", "refuse posts beyond the author's daily limit", check_daily_limit),
    Rule("hourly_limit", "refuse posts beyond posting.hourly_limit in 60 minutes", check_hourly_limit),
    Rule("moderated_member", "hold posts of members marked moderated", check_moderated_member),
    Rule("moderation", "hold posts to moderated lists for the owners", check_moderation),
)


ACCEPTED = Verdict("accept", "", "no rule objected", OK_QUEUED)


def evaluate(post: Post, rules: Sequence[Rule] = RULES) -> Verdict:
    """Run *rules* in order; the first verdict wins, and none means accept.

    A rule that raises is not caught here: the caller answers 451 and the sender retries,
    which loses nothing.
    """
    for rule in rules:
        verdict = rule.check(post)
        if verdict is not None:
            return verdict
    return ACCEPTED


# --- helpers -----------------------------------------------------------------


def _reject(rule: str, reply: str) -> Verdict:
    return Verdict("reject", rule, _reason(reply), reply)


def _reason(reply: str) -> str:
    """The text of a reply line, after its code and enhanced status."""
    return reply.split(" ", 2)[2]


def _poster(post: Post) -> str:
    """The address the post comes from, as its author wrote it."""
    author = post.from_address
    return author.addr_spec if author is not None else post.envelope_sender


def _angle_content(value: str) -> str:
    """``list.example.org`` from ``Title <list.example.org>`` (RFC 2919); the value if it has no brackets."""
    start, end = value.rfind("<"), value.rfind(">")
    return value[start + 1 : end].strip() if 0 <= start < end else value.strip()

"""The posting rules at DATA and the posting policy, on a real Club built in memory."""

from __future__ import annotations

from email.message import Message

import pytest

from clublist.club.model import (
    DECORATION_ROOM,
    DeliverySection,
    ListenSection,
    MailingList,
    Member,
    PostingSection,
    Site,
    SiteSection,
    replace,
    site_advice,
)
from clublist.club.store import Club
from clublist.mail import replies
from clublist.mail.authentication import Authentication, Signature
from clublist.mail.decorate import parse, sole_address
from clublist.mail.rules import (
    RULES,
    Post,
    Rule,
    Verdict,
    envelope_address,
    envelope_refusal,
    evaluate,
    limit_verdict,
    may_post,
    rcpt_refusal,
    refusal_reply,
)

YOUTH = MailingList("youth", title="Youth", posting="members", owners=("Coach@Myclub.org",))
TEAM = MailingList("team", posting="club")
BOARD = MailingList("board", posting="owners", owners=("chair@myclub.org",))
TRAINER = MailingList("trainer", posting="moderated", owners=("coach@myclub.org",))

ANNA = Member("anna@gmail.com", name="Anna", lists=("youth", "trainer"), aliases=("anna@work.example",))
BEN = Member("ben@example.org", name="Ben", lists=("youth", "trainer"), daily_limit=5)
CARL = Member("carl@example.org", name="Carl", lists=())
DORA = Member("dora@example.org", name="Dora", lists=(), role="admin")
STRANGER = "spammer@example.net"


def make_club(**posting: object) -> Club:
    site = Site(
        site=SiteSection(domain="myclub.org", name="My Club", admin="Admin@MyClub.org"),
        listen=ListenSection(max_message_size=2000),
        posting=PostingSection(**posting),  # type: ignore[arg-type]
    )
    lists = {m.name: m for m in (YOUTH, TEAM, BOARD, TRAINER)}
    return Club.build(site, lists, [ANNA, BEN, CARL, DORA])


@pytest.fixture
def club() -> Club:
    return make_club(daily_limit=3)


def message(author: str = "Anna <anna@gmail.com>", *headers: str, to: str = "youth@myclub.org") -> Message:
    """A post as the SMTP handler reads it."""
    lines = [f"From: {author}"] if author else []
    lines += [f"To: {to}", "Subject: Training on Friday", "Message-ID: <1@gmail.com>", *headers]
    return parse(("\r\n".join(lines) + "\r\n\r\nSee you there.\r\n").encode())


def post(
    club: Club,
    msg: Message | None = None,
    *,
    sender: str = "anna@gmail.com",
    mailing_list: MailingList = YOUTH,
    size: int = 500,
    posts_today: int = 0,
) -> Post:
    msg = message() if msg is None else msg
    from_address = sole_address(msg, "From")
    author = club.member(from_address.addr_spec if from_address else sender)
    return Post(msg, size, sender, mailing_list, club, author, posts_today, from_address)


def check(name: str, the_post: Post) -> Verdict | None:
    (rule,) = [r for r in RULES if r.name == name]
    verdict = rule.check(the_post)
    assert verdict is None or verdict.rule == name
    return verdict


# --- the posting policy ------------------------------------------------------


def test_list_members_may_post_to_a_members_list(club: Club) -> None:
    assert may_post(club, YOUTH, "anna@gmail.com") is None
    assert may_post(club, YOUTH, "ben@example.org") is None


def test_an_alias_counts_in_any_case(club: Club) -> None:
    assert may_post(club, YOUTH, "Anna@WORK.example") is None
    assert may_post(club, YOUTH, "ANNA@gmail.com") is None


def test_club_member_not_on_the_list_may_not_post_to_a_members_list(club: Club) -> None:
    reason = may_post(club, YOUTH, "carl@example.org")
    assert reason == "carl@example.org is not subscribed to youth@myclub.org; only its members may post"
    assert refusal_reply(club, YOUTH, "carl@example.org") == f"550 5.7.1 {reason}"


def test_non_member_is_refused_as_not_a_member(club: Club) -> None:
    assert may_post(club, YOUTH, STRANGER) == (
        "spammer@example.net is not a member of youth@myclub.org; only members may post"
    )
    assert refusal_reply(club, YOUTH, STRANGER) == replies.render(
        replies.NOT_A_MEMBER, sender=STRANGER, list="youth@myclub.org"
    )


def test_null_sender_is_not_a_member(club: Club) -> None:
    assert may_post(club, YOUTH, "") == "<> is not a member of youth@myclub.org; only members may post"


def test_club_policy_lets_any_member_post(club: Club) -> None:
    assert may_post(club, TEAM, "carl@example.org") is None
    assert may_post(club, TEAM, "anna@work.example") is None
    assert may_post(club, TEAM, STRANGER) == (
        "spammer@example.net is not a member of My Club; only members may post"
    )


def test_owners_policy_lets_only_owners_post(club: Club) -> None:
    assert may_post(club, BOARD, "CHAIR@myclub.org") is None  # an owner need not be in members.toml
    assert may_post(club, BOARD, "anna@gmail.com") == (
        "anna@gmail.com may not post to board@myclub.org: only the list's owners may post"
    )
    assert may_post(club, BOARD, STRANGER) is not None


def test_owners_may_post_under_every_policy(club: Club) -> None:
    assert may_post(club, YOUTH, "coach@myclub.org") is None  # owner, not a member
    assert may_post(club, TRAINER, "coach@myclub.org") is None


def test_an_owner_may_post_from_an_alias(club: Club) -> None:
    owned = MailingList("board2", posting="owners", owners=("anna@gmail.com",))
    assert may_post(club, owned, "anna@work.example") is None


def test_moderated_list_lets_its_members_send(club: Club) -> None:
    assert may_post(club, TRAINER, "ben@example.org") is None
    assert may_post(club, TRAINER, "carl@example.org") is not None


def test_site_admin_and_admin_members_may_post_everywhere(club: Club) -> None:
    for mailing_list in (YOUTH, TEAM, BOARD, TRAINER):
        assert may_post(club, mailing_list, "admin@myclub.org") is None  # only in club.toml
        assert may_post(club, mailing_list, "dora@example.org") is None  # role admin


# --- size ----------------------------------------------------------------------


def test_size_rejects_a_post_over_the_limit(club: Club) -> None:
    verdict = check("size", post(club, size=2001))
    assert verdict is not None and verdict.action == "reject"
    assert verdict.reply == "552 5.3.4 Message too big (limit 2000 bytes)"


def test_size_accepts_a_post_at_the_limit(club: Club) -> None:
    assert check("size", post(club, size=2000)) is None


def test_size_limit_zero_leaves_only_the_next_hops_limit() -> None:
    club = make_club()
    unlimited = Club.build(
        Site(site=club.site.site, listen=ListenSection(max_message_size=0)), club.lists, club.members
    )
    cap = unlimited.site.delivery.max_message_size - DECORATION_ROOM
    assert check("size", post(unlimited, size=cap)) is None
    assert check("size", post(unlimited, size=cap + 1)) is not None


def test_size_keeps_room_for_decoration_below_the_next_hops_limit() -> None:
    club = make_club()
    site = Site(
        site=club.site.site,
        listen=ListenSection(max_message_size=10_000_000),
        delivery=DeliverySection(max_message_size=1_000_000),
    )
    capped = Club.build(site, club.lists, club.members)
    verdict = check("size", post(capped, size=1_000_000 - DECORATION_ROOM + 1))
    assert verdict is not None and verdict.reply.startswith("552 5.3.4")
    assert check("size", post(capped, size=1_000_000 - DECORATION_ROOM)) is None
    assert any("listen.max_message_size" in a.detail for a in site_advice(site))


# --- loop ----------------------------------------------------------------------


def test_loop_discards_a_post_carrying_our_list_id(club: Club) -> None:
    msg = message("Anna <anna@gmail.com>", "List-Id: Youth <Youth.MyClub.org>")
    verdict = check("loop", post(club, msg))
    assert verdict is not None and verdict.action == "discard"
    assert verdict.reply == replies.DISCARDED
    assert "loop" in verdict.reason


def test_loop_discards_a_post_carrying_our_x_loop(club: Club) -> None:
    msg = message("Anna <anna@gmail.com>", "X-Loop: YOUTH@myclub.org")
    verdict = check("loop", post(club, msg))
    assert verdict is not None and verdict.action == "discard"


def test_loop_ignores_another_lists_headers(club: Club) -> None:
    msg = message(
        "Anna <anna@gmail.com>",
        "List-Id: Federation news <news.federation.org>",
        "X-Loop: news@federation.org",
        "List-Id: <trainer.myclub.org>",
    )
    assert check("loop", post(club, msg)) is None


def test_loop_reads_a_folded_list_id_with_an_encoded_title(club: Club) -> None:
    msg = message("Anna <anna@gmail.com>", "List-Id: =?utf-8?q?J=C3=BCgend?=\r\n <Youth.MyClub.org>")
    verdict = check("loop", post(club, msg))
    assert verdict is not None and verdict.action == "discard"


# --- auto_submitted --------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        "Auto-Submitted: auto-replied",
        "Auto-Submitted: auto-generated; owner-email=x@example.org",
        "Precedence: bulk",
        "Precedence: Junk",
        "Precedence: list",
        "X-Autoreply: yes",
        "X-Autorespond: Out of office",
    ],
)
def test_auto_submitted_holds_machine_mail_for_the_owners(club: Club, header: str) -> None:
    verdict = check("auto_submitted", post(club, message("Anna <anna@gmail.com>", header)))
    assert verdict is not None and verdict.action == "hold"
    assert verdict.reply == replies.HELD and verdict.once_a_day
    assert header.split(":")[0] in verdict.reason


@pytest.mark.parametrize("header", ["Auto-Submitted: no", "Auto-Submitted: No ", "Precedence: first-class"])
def test_auto_submitted_lets_people_through(club: Club, header: str) -> None:
    assert check("auto_submitted", post(club, message("Anna <anna@gmail.com>", header))) is None


def test_auto_submitted_reason_shows_a_folded_header_on_one_line(club: Club) -> None:
    msg = message("Anna <anna@gmail.com>", "Auto-Submitted: auto-replied;\r\n owner-email=x@example.org")
    verdict = check("auto_submitted", post(club, msg))
    assert verdict is not None
    assert (
        verdict.reason
        == "automatic mail (Auto-Submitted: auto-replied; owner-email=x@example.org) is not posted"
        " without an owner's approval"
    )


# --- member ----------------------------------------------------------------------


def test_member_accepts_a_member_from_their_alias(club: Club) -> None:
    assert check("member", post(club, sender="Anna@Work.example")) is None


def test_member_rejects_a_header_from_that_is_not_a_member(club: Club) -> None:
    verdict = check("member", post(club, message(f"Spam <{STRANGER}>"), sender="anna@gmail.com"))
    assert verdict is not None and verdict.action == "reject"
    assert verdict.reply == f"550 5.7.1 {STRANGER} is not a member of youth@myclub.org; only members may post"
    assert verdict.reason == verdict.reply[10:]


def test_member_rejects_an_envelope_sender_that_is_not_a_member(club: Club) -> None:
    verdict = check("member", post(club, sender=STRANGER))
    assert verdict is not None and verdict.action == "reject"
    assert STRANGER in verdict.reply


def test_member_rejects_the_null_sender(club: Club) -> None:
    verdict = check("member", post(club, sender=""))
    assert verdict is not None and verdict.reply.startswith("550 5.7.1 <> is not a member")


def test_member_rejects_a_club_member_not_on_the_list(club: Club) -> None:
    verdict = check("member", post(club, message("Carl <carl@example.org>"), sender="carl@example.org"))
    assert verdict is not None and "not subscribed to youth@myclub.org" in verdict.reply


@pytest.mark.parametrize(
    "author", ["", "Anna <anna@gmail.com>, Ben <ben@example.org>", "undisclosed-recipients:;"]
)
def test_member_rejects_a_post_without_exactly_one_from_address(club: Club, author: str) -> None:
    verdict = check("member", post(club, message(author)))
    assert verdict is not None and verdict.action == "reject"
    assert "exactly one address in its From" in verdict.reason


def test_member_rejects_a_second_from_header(club: Club) -> None:
    msg = message("Anna <anna@gmail.com>", f"From: {STRANGER}")
    verdict = check("member", post(club, msg))
    assert verdict is not None and verdict.action == "reject"


# --- daily_limit ---------------------------------------------------------------


def test_daily_limit_defers_at_the_site_limit(club: Club) -> None:
    verdict = check("daily_limit", post(club, posts_today=3))
    assert verdict is not None and verdict.action == "reject"
    assert verdict.reply == (
        "450 4.7.1 anna@gmail.com has reached the limit of 3 posts a day; please try again tomorrow"
    )


def test_daily_limit_allows_posts_below_the_limit(club: Club) -> None:
    assert check("daily_limit", post(club, posts_today=2)) is None


def test_daily_limit_can_refuse_permanently() -> None:
    club = make_club(daily_limit=3, daily_limit_reply="permanent")
    verdict = check("daily_limit", post(club, posts_today=3))
    assert verdict is not None and verdict.reply.startswith("550 5.7.1 anna@gmail.com has reached the limit")


def test_a_members_own_limit_overrides_the_sites(club: Club) -> None:
    ben = message("Ben <ben@example.org>")
    assert check("daily_limit", post(club, ben, sender="ben@example.org", posts_today=4)) is None
    verdict = check("daily_limit", post(club, ben, sender="ben@example.org", posts_today=5))
    assert verdict is not None and "limit of 5 posts" in verdict.reason


def test_hourly_limit_brakes_even_without_a_daily_limit() -> None:
    club = make_club(daily_limit=0, hourly_limit=2)
    assert check("hourly_limit", replace(post(club), posts_last_hour=1)) is None
    verdict = check("hourly_limit", replace(post(club), posts_last_hour=2))
    assert verdict is not None and verdict.reply == (
        "450 4.7.1 anna@gmail.com has reached the limit of 2 posts an hour; please try again later"
    )
    assert check("hourly_limit", replace(post(make_club(daily_limit=0)), posts_last_hour=9)) is None
    assert check("hourly_limit", replace(post(make_club(daily_limit=0)), posts_last_hour=10)) is not None


def test_limit_verdict_checks_the_day_then_the_hour(club: Club) -> None:
    assert limit_verdict(club, ANNA, "anna@gmail.com", 2, 9) is None
    verdict = limit_verdict(club, ANNA, "anna@gmail.com", 3, 10)
    assert verdict is not None and verdict.rule == "daily_limit"
    verdict = limit_verdict(club, ANNA, "anna@gmail.com", 0, 10)
    assert verdict is not None and verdict.rule == "hourly_limit"


# --- auto_responder ----------------------------------------------------------------


def reply_post(club: Club, *headers: str, subject: str = "Re: [Youth] Training", **facts: object) -> Post:
    msg = message("Anna <anna@gmail.com>", f"Subject: {subject}", "In-Reply-To: <1@myclub.org>", *headers)
    del msg["Subject"]
    msg["Subject"] = subject
    defaults: dict[str, object] = {"replies_to_recent_post": True, "new_text": "Sounds good, see you"}
    return replace(post(club, msg), **{**defaults, **facts})


@pytest.mark.parametrize(
    "subject",
    ["Automatic reply: [Youth] Training", "Auto: Training", "Out of Office", "Abwesenheitsnotiz: Training"],
)
def test_auto_responder_holds_a_quick_reply_with_an_auto_reply_subject(club: Club, subject: str) -> None:
    verdict = check("auto_responder", reply_post(club, subject=subject))
    assert verdict is not None and verdict.action == "hold" and verdict.once_a_day
    assert verdict.reason.startswith("auto-responder: anna@gmail.com answered a post youth@myclub.org sent")


def test_auto_responder_holds_a_reply_without_new_text_or_with_repeated_text(club: Club) -> None:
    verdict = check("auto_responder", reply_post(club, new_text=""))
    assert verdict is not None and "adds no text" in verdict.reason
    verdict = check("auto_responder", reply_post(club, repeats_recent_text=True))
    assert verdict is not None and "repeats the text" in verdict.reason
    verdict = check("auto_responder", reply_post(club, "X-Autoreply: yes"))
    assert verdict is not None and "X-Autoreply" in verdict.reason


def test_auto_responder_lets_people_reply(club: Club) -> None:
    assert check("auto_responder", reply_post(club)) is None
    assert check("auto_responder", reply_post(club, subject="Re: Out of office next week?")) is None
    not_a_quick_reply = reply_post(club, new_text="", subject="Auto: x", replies_to_recent_post=False)
    assert check("auto_responder", not_a_quick_reply) is None


def test_daily_limit_zero_means_no_limit() -> None:
    assert check("daily_limit", post(make_club(daily_limit=0), posts_today=10_000)) is None
    club = make_club(daily_limit=3)
    unlimited = Club.build(club.site, club.lists, [Member("anna@gmail.com", lists=("youth",), daily_limit=0)])
    assert check("daily_limit", post(unlimited, posts_today=10_000)) is None


# --- moderation ------------------------------------------------------------------


def test_moderation_holds_a_members_post(club: Club) -> None:
    msg = message("Ben <ben@example.org>", to="trainer@myclub.org")
    verdict = check("moderation", post(club, msg, sender="ben@example.org", mailing_list=TRAINER))
    assert verdict is not None and verdict.action == "hold"
    assert verdict.reply == replies.HELD
    assert "trainer@myclub.org is moderated" in verdict.reason


@pytest.mark.parametrize("author", ["coach@myclub.org", "admin@myclub.org", "dora@example.org"])
def test_moderation_does_not_hold_owners_and_admins(club: Club, author: str) -> None:
    msg = message(f"<{author}>", to="trainer@myclub.org")
    assert check("moderation", post(club, msg, sender=author, mailing_list=TRAINER)) is None


def test_moderation_leaves_other_lists_alone(club: Club) -> None:
    assert check("moderation", post(club)) is None


# --- evaluate --------------------------------------------------------------------


def test_rules_run_in_the_documented_order() -> None:
    names = [rule.name for rule in RULES]
    assert names == [
        "size",
        "loop",
        "member",
        "authentication",
        "auto_responder",
        "auto_submitted",
        "daily_limit",
        "hourly_limit",
        "moderated_member",
        "moderation",
    ]
    assert all(rule.description and "\n" not in rule.description for rule in RULES)


def test_a_good_post_is_accepted(club: Club) -> None:
    verdict = evaluate(post(club))
    assert verdict.action == "accept"
    assert verdict.reply.format(queue_id="Q1") == "250 2.0.0 Message accepted for delivery, queued as Q1"


def test_the_first_rule_with_a_verdict_wins(club: Club) -> None:
    too_big_from_a_stranger = post(club, message(f"<{STRANGER}>"), sender=STRANGER, size=5000)
    assert evaluate(too_big_from_a_stranger).rule == "size"
    looping_auto_reply = post(
        club, message("<anna@gmail.com>", "Auto-Submitted: auto-replied", "X-Loop: youth@myclub.org")
    )
    assert evaluate(looping_auto_reply).rule == "loop"
    auto_reply_from_a_stranger = post(club, message(f"<{STRANGER}>", "Precedence: junk"), sender=STRANGER)
    assert evaluate(auto_reply_from_a_stranger).rule == "member"  # refused, never held for the owners
    stranger_on_moderated_list = post(club, message(f"<{STRANGER}>"), sender=STRANGER, mailing_list=TRAINER)
    assert evaluate(stranger_on_moderated_list).rule == "member"
    over_limit_on_moderated_list = post(club, mailing_list=TRAINER, posts_today=3)
    assert evaluate(over_limit_on_moderated_list).rule == "daily_limit"
    assert evaluate(post(club, mailing_list=TRAINER)).action == "hold"


def test_evaluate_runs_the_rules_it_is_given(club: Club) -> None:
    held = Verdict("hold", "always", "testing", replies.HELD)
    assert evaluate(post(club), [Rule("always", "hold everything", lambda p: held)]) is held
    assert evaluate(post(club, size=10**9), []).action == "accept"


def test_a_raising_rule_propagates_to_the_caller(club: Club) -> None:
    def broken(the_post: Post) -> Verdict | None:
        raise RuntimeError("database is locked")

    rules = (RULES[0], Rule("broken", "raises", broken), *RULES[1:])
    with pytest.raises(RuntimeError, match="database is locked"):
        evaluate(post(club), rules)
    assert evaluate(post(club, size=5000), rules).rule == "size"  # rules before it still decide


# --- authentication ------------------------------------------------------------


def verdict_of(**changes: object) -> Authentication:
    """What mail/authentication.py says of an unsigned post from outside gmail.com's SPF."""
    values: dict[str, object] = {
        "client_ip": "198.51.100.7",
        "helo": "mx.example.net",
        "spf": "fail",
        "spf_domain": "gmail.com",
        "spf_scope": "mailfrom",
        "dkim": (),
        "from_domain": "gmail.com",
        "dmarc": "fail",
        "dmarc_policy": "none",
    }
    values.update(changes)
    return Authentication(**values)  # type: ignore[arg-type]


def authenticated_post(club: Club, verdict: Authentication, mailing_list: MailingList = YOUTH) -> Post:
    plain = post(club, mailing_list=mailing_list)
    return Post(
        *[
            getattr(plain, f)
            for f in (
                "message",
                "size",
                "envelope_sender",
                "mailing_list",
                "club",
                "author",
                "posts_today",
                "from_address",
            )
        ],
        authentication=verdict,
    )


def test_an_aligned_pass_or_a_trusted_client_passes_the_authentication_rule(club: Club) -> None:
    signed = verdict_of(dkim=(Signature("pass", "gmail.com"),), dmarc="pass", aligned=("dkim",))
    assert check("authentication", authenticated_post(club, signed)) is None
    assert check("authentication", post(club)) is None  # no verdict: listen.trusted_networks


def test_an_unauthenticated_post_is_held_by_default(club: Club) -> None:
    verdict = check("authentication", authenticated_post(club, verdict_of()))
    assert verdict is not None and verdict.action == "hold"
    assert "anna@gmail.com could not be authenticated" in verdict.reason and "spf=fail" in verdict.reason


def test_posting_unauthenticated_refuse_and_accept(club: Club) -> None:
    refusing = make_club(unauthenticated="refuse")
    verdict = check("authentication", authenticated_post(refusing, verdict_of()))
    assert verdict is not None and verdict.action == "reject" and verdict.reply.startswith("550 5.7.1 ")
    accepting = make_club(unauthenticated="accept")
    assert check("authentication", authenticated_post(accepting, verdict_of())) is None


def test_a_list_may_override_posting_unauthenticated(club: Club) -> None:
    relaxed = MailingList("youth", owners=YOUTH.owners, unauthenticated="accept")
    assert check("authentication", authenticated_post(club, verdict_of(), relaxed)) is None


def test_a_failing_reject_policy_is_refused_whatever_the_setting() -> None:
    accepting = make_club(unauthenticated="accept")
    verdict = check("authentication", authenticated_post(accepting, verdict_of(dmarc_policy="reject")))
    assert verdict is not None and verdict.action == "reject"
    assert verdict.reply.startswith("550 5.7.26 gmail.com publishes the DMARC policy p=reject")
    testing = verdict_of(dmarc_policy="reject", dmarc_enforced=False)  # pct=0
    assert check("authentication", authenticated_post(accepting, testing)) is None


def test_dns_trouble_answers_451_never_a_refusal_or_an_accept() -> None:
    accepting = make_club(unauthenticated="accept")
    trouble = verdict_of(spf="temperror", dmarc="temperror", dmarc_policy=None)
    verdict = check("authentication", authenticated_post(accepting, trouble))
    assert verdict is not None and verdict.action == "reject" and verdict.reply.startswith("451 4.7.26 ")


@pytest.mark.parametrize(
    ("envelope", "address"),
    [
        ("prvs=1234abcd=anna@gmail.com", "anna@gmail.com"),
        ("PRVS=0123456789=Anna@gmail.com", "Anna@gmail.com"),
        ("SRS0=HHH=TT=gmail.com=anna@forwarder.example", "anna@gmail.com"),
        ("SRS1=HHH=first.example==HHH=TT=gmail.com=anna@second.example", "anna@gmail.com"),
        ("anna@gmail.com", "anna@gmail.com"),
        ("prvs@example.org", "prvs@example.org"),
    ],
)
def test_envelope_address_unwraps_batv_and_srs(envelope: str, address: str) -> None:
    assert envelope_address(envelope) == address


def test_a_wrapped_envelope_of_a_member_may_post(club: Club) -> None:
    assert envelope_refusal(club, YOUTH, "prvs=1234abcd=anna@gmail.com") is None
    assert envelope_refusal(club, YOUTH, "SRS0=x=y=gmail.com=anna@fwd.example") is None
    assert envelope_refusal(club, YOUTH, "prvs=1234abcd=spammer@example.net") is not None


def test_a_moderated_member_is_held_and_an_owner_is_not() -> None:
    moderated = Member("mo@example.org", name="Mo", lists=("youth",), moderated=True)
    club = Club.build(make_club().site, make_club().lists, [ANNA, moderated])
    verdict = check("moderated_member", post(club, message("Mo <mo@example.org>"), sender="mo@example.org"))
    assert verdict is not None and verdict.action == "hold"
    assert "mo@example.org is moderated" in verdict.reason
    assert check("moderated_member", post(club)) is None
    owner = Member("coach@myclub.org", lists=("trainer",), moderated=True)
    club = Club.build(club.site, club.lists, [owner])
    sender = "coach@myclub.org"
    the_post = post(club, message(f"Coach <{sender}>"), sender=sender, mailing_list=TRAINER)
    assert check("moderated_member", the_post) is None


def test_nonmember_hold_takes_strangers_in_at_rcpt_and_holds_them() -> None:
    held = make_club(nonmember="hold")
    assert refusal_reply(held, YOUTH, STRANGER) is not None
    assert rcpt_refusal(held, YOUTH, STRANGER) is None
    assert rcpt_refusal(held, YOUTH, "") is not None
    assert rcpt_refusal(make_club(), YOUTH, STRANGER) is not None
    verdict = check("member", post(held, message(f"S <{STRANGER}>"), sender=STRANGER))
    assert verdict is not None and verdict.action == "hold" and "nonmember = hold" in verdict.reason
    # A list's own setting overrides the site's.
    refusing = replace(YOUTH, nonmember="refuse")
    assert rcpt_refusal(held, refusing, STRANGER) is not None
    holding = replace(YOUTH, nonmember="hold")
    assert rcpt_refusal(make_club(), holding, STRANGER) is None

"""The SMTP replies: every constant is a well-formed reply line whose code and enhanced status agree."""

from __future__ import annotations

import re
import string

import pytest

from clublist.mail import replies

REPLIES = {
    name: value
    for name, value in vars(replies).items()
    if name.isupper() and not name.startswith("_") and isinstance(value, str)
}
_LINE = re.compile(r"([245])[0-9]{2} ([245])\.[0-9]{1,3}\.[0-9]{1,3} \S")


def _fields(template: str) -> list[str | None]:
    return [field for _, field, _, _ in string.Formatter().parse(template) if field is not None]


def test_the_module_defines_the_replies_the_handler_needs() -> None:
    for name in ("OK_QUEUED", "HELD", "DISCARDED", "TEMPORARY_FAILURE", "NOT_A_MEMBER", "TOO_LARGE"):
        assert name in REPLIES


@pytest.mark.parametrize("name", sorted(REPLIES))
def test_code_class_agrees_with_enhanced_status_class(name: str) -> None:
    match = _LINE.match(REPLIES[name])
    assert match, f"{name} is not 'CODE X.Y.Z text': {REPLIES[name]!r}"
    assert match[1] == match[2], f"{name}: {REPLIES[name]!r}"


@pytest.mark.parametrize("name", sorted(REPLIES))
def test_reply_has_no_trailing_whitespace_or_line_break(name: str) -> None:
    reply = REPLIES[name]
    assert reply == reply.strip()
    assert "\r" not in reply and "\n" not in reply


@pytest.mark.parametrize("name", sorted(REPLIES))
def test_reply_formats_with_its_named_fields(name: str) -> None:
    fields = _fields(REPLIES[name])
    assert all(field and field.isidentifier() for field in fields), f"{name} has a positional field"
    rendered = replies.render(REPLIES[name], **dict.fromkeys(fields, "value"))
    assert "{" not in rendered and "}" not in rendered
    assert replies.reply_code(rendered) == int(REPLIES[name][:3])


def test_reply_code_reads_the_code() -> None:
    assert replies.reply_code(replies.OK_QUEUED) == 250
    assert replies.reply_code(replies.TEMPORARY_FAILURE) == 451
    assert replies.reply_code("550") == 550


@pytest.mark.parametrize("text", ["hello", "", "2500 x", "099 x"])
def test_reply_code_refuses_what_is_not_a_reply(text: str) -> None:
    with pytest.raises(ValueError):
        replies.reply_code(text)


def test_render_keeps_a_strangers_text_from_breaking_the_dialogue() -> None:
    reply = replies.render(replies.UNKNOWN_RECIPIENT, address="x\r\n250 ok@exämple.org")
    assert reply == "550 5.1.1 x??250 ok@ex?mple.org: no such list or address here"


def test_render_cuts_a_reply_to_the_length_rfc_5321_allows() -> None:
    reply = replies.render(replies.UNKNOWN_RECIPIENT, address="a" * 1000)
    assert len(reply) == 510
    assert reply.endswith("...")
    assert reply.startswith("550 5.1.1 aaa")

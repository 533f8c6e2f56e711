"""Addresses: what is accepted, how it is stored and compared, and why a refusal is one."""

from __future__ import annotations

import email_validator
import pytest

from clublist.actions import Actor
from clublist.actions.members import member_add
from clublist.club.model import _plain_ascii, address_key, parse_address
from clublist.club.store import Store
from clublist.errors import ClublistError

# (typed, stored or None when refused, a piece of the reason)
CASES = [
    ("anna@example.org", "anna@example.org", ""),
    ("  Anna.Berg@Example.ORG ", "Anna.Berg@Example.ORG", ""),
    ("tom+club@mail.example.org", "tom+club@mail.example.org", ""),
    ("x@bücher.example", "x@bücher.example", ""),
    ("x@xn--bcher-kva.example", "x@xn--bcher-kva.example", ""),
    ("jürgen@müller.example", "jürgen@müller.example", ""),
    ("o'brien@example.ie", "o'brien@example.ie", ""),
    ("x@123.45.67.89", None, "top-level domain"),
    ("x@[127.0.0.1]", None, "bracketed IP address"),
    ("x@[IPv6:::1]", None, "bracketed IP address"),
    ('"a b"@example.org', None, "Quoting"),
    ("Anna <anna@example.org>", None, "without a display name"),
    ("anna", None, "@-sign"),
    ("anna@localhost", None, "should have a period"),
    ("anna@club.test", None, "special-use"),
    ("anna@printer.local", None, "special-use"),
    ("a..b@example.org", None, "two periods"),
    (".anna@example.org", None, "period"),
    ("anna@-example.org", None, "hyphen"),
    ("anna@exa_mple.org", None, "invalid characters"),
    ("anna@@example.org", None, "@"),
    ("a" * 65 + "@example.org", None, "too long"),
    ("anna@" + "a" * 64 + ".org", None, "so many characters"),
    ("an na@example.org", None, "SPACE"),
    ("anna\n@example.org", None, "control character"),
]


@pytest.mark.parametrize(("typed", "stored", "reason"), CASES)
def test_address_is_accepted_or_refused_with_its_reason(typed: str, stored: str | None, reason: str) -> None:
    if stored is not None:
        assert parse_address(typed) == stored
        return
    with pytest.raises(ClublistError) as caught:
        parse_address(typed, "email")
    assert reason in str(caught.value)
    assert str(caught.value).startswith("email ")


@pytest.mark.parametrize(("typed", "stored", "reason"), CASES)
def test_fast_path_agrees_with_email_validator(typed: str, stored: str | None, reason: str) -> None:
    """The regex shortcut may only say yes where email-validator says yes."""
    if not _plain_ascii(typed.strip()):
        return
    email_validator.validate_email(
        typed.strip(), check_deliverability=False, allow_quoted_local=False, allow_domain_literal=False
    )


def test_reasons_differ() -> None:
    messages = set()
    for typed, stored, _reason in CASES:
        if stored is None:
            with pytest.raises(ClublistError) as caught:
                parse_address(typed)
            messages.add(str(caught.value).split(": ", 1)[-1])
    assert len(messages) >= 12


def test_idn_domain_matches_in_both_forms(store: Store) -> None:
    assert address_key("X@Bücher.Example") == address_key("x@xn--bcher-kva.example")
    member_add(store, Actor.shell(), "jörg@bücher.example", lists=("youth",))
    club = store.load()
    assert club.members[0].email == "jörg@bücher.example"
    found = club.member("JÖRG@xn--bcher-kva.example")
    assert found is not None and found.email == "jörg@bücher.example"
    with pytest.raises(ClublistError, match="already a member"):
        member_add(store, Actor.shell(), "jörg@XN--BCHER-KVA.example")

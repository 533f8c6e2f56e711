"""International recipient addresses: with SMTPUTF8 as they are; without it, what can go does.

One such address must never hold back the others of its transaction (RFC 6531: a UTF-8
mailbox name needs SMTPUTF8; an international domain also has its ASCII, IDNA form).
"""

from __future__ import annotations

from pathlib import Path

from mta import RemoteMTA
from test_delivery_race import Queue

RECIPIENTS = ["anna@example.org", "jörg@example.org", "ben@bücher.example"]


def test_with_smtputf8_every_address_goes_as_it_is(tmp_path: Path) -> None:
    with RemoteMTA(smtputf8=True) as smarthost:
        mail = Queue(tmp_path, smarthost)
        mail.post(RECIPIENTS)
        mail.deliver(1)
        assert sorted(r for t in smarthost.transactions for r in t.rcpt_tos) == sorted(RECIPIENTS)
    assert {r.status for r in mail.rows().values()} == {"sent"}


def test_without_smtputf8_the_domain_goes_in_idna_and_a_utf8_mailbox_fails_alone(tmp_path: Path) -> None:
    with RemoteMTA(smtputf8=False) as smarthost:
        mail = Queue(tmp_path, smarthost)
        mail.post(RECIPIENTS)
        mail.deliver(1)
        delivered = sorted(r for t in smarthost.transactions for r in t.rcpt_tos)
    assert delivered == ["anna@example.org", "ben@xn--bcher-kva.example"]
    rows = mail.rows()
    assert rows["anna@example.org"].status == "sent" and rows["ben@bücher.example"].status == "sent"
    assert rows["jörg@example.org"].status == "failed"
    assert "SMTPUTF8" in rows["jörg@example.org"].last_reply

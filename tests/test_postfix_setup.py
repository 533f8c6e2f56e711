"""``clublist postfix``'s lines without a Postfix: what each setting becomes, and the README shows it."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from clublist.actions.config import init_club
from clublist.cli import main
from clublist.club.model import DeliverySection, ListenSection, Site, SiteSection, TLSSection
from clublist.postfix.postconf import ServiceLine
from clublist.postfix.setup import build

README = Path(__file__).resolve().parent.parent / "README.md"


def test_the_readme_shows_what_clublist_postfix_prints_for_a_new_club(tmp_path: Path) -> None:
    init_club(tmp_path / "lists.d", "myclub.org", "admin@myclub.org", "My Club", "Europe/Berlin")
    printed = CliRunner().invoke(main, ["--dir", str(tmp_path / "lists.d"), "postfix"])
    assert printed.exit_code == 0, printed.output
    blocks = README.read_text().split("```")
    [shown] = [b.strip("\n") for b in blocks if b.startswith("\n# /etc/postfix/main.cf")]
    assert shown in printed.output


def test_the_public_smtpd_hands_sessions_to_clublist_and_the_relay_takes_its_mail() -> None:
    site = Site(
        site=SiteSection(domain="club.example"),
        listen=ListenSection(port=9025),
        delivery=DeliverySection(mode="smarthost", smarthost="127.0.0.1:11025", max_message_size=5_000_000),
    )
    setup = build(site, public="192.0.2.1:25", config_directory="/srv/postfix/")
    assert setup.public.key == "192.0.2.1:25/inet"
    assert ("smtpd_proxy_filter", "127.0.0.1:9025") in setup.public.options
    assert setup.relay.key == "127.0.0.1:11025/inet"  # delivery.smarthost on loopback is kept
    assert "message_size_limit = 5000000" in setup.main_cf_lines
    assert setup.transport == (("club.example", "smtp:[127.0.0.1]:9025"),)
    assert setup.clublist_settings == ()  # nothing left to change in clublist
    assert setup.commands == [
        "postmap -c /srv/postfix hash:/srv/postfix/transport",
        "postfix -c /srv/postfix reload",
    ]


def test_clublist_listening_beyond_loopback_is_moved_to_it_and_tls_goes_to_postfix() -> None:
    site = Site(
        listen=ListenSection(host="0.0.0.0"),
        tls=TLSSection(cert="/etc/ssl/club.pem", key="/etc/ssl/club.key"),
    )
    setup = build(site)
    assert ("listen.host", "127.0.0.1") in setup.clublist_settings
    assert "smtpd_tls_security_level = may" in setup.main_cf_lines
    assert "smtpd_tls_chain_files = /etc/ssl/club.key, /etc/ssl/club.pem" in setup.main_cf_lines
    assert not any("STARTTLS" in note for note in setup.notes)


def test_xforward_needs_clublist_to_trust_postfix_as_its_proxy() -> None:
    assert build(Site()).clublist_settings == (
        ("delivery.mode", "smarthost"),
        ("delivery.smarthost", "127.0.0.1:10025"),
    )
    untrusting = Site(listen=ListenSection(trusted_proxies=["192.0.2.1"]))
    assert ("listen.trusted_proxies", "192.0.2.1,127.0.0.1") in build(untrusting).clublist_settings


def test_the_policy_service_is_asked_at_rcpt_when_clublist_serves_it() -> None:
    assert not any(name == "smtpd_recipient_restrictions" for name, _ in build(Site()).public.options)
    setup = build(Site(listen=ListenSection(policy_port=10040)))
    restrictions = dict(setup.public.options)["smtpd_recipient_restrictions"]
    assert restrictions == "check_policy_service,inet:127.0.0.1:10040"


def test_a_master_cf_line_is_read_with_its_options() -> None:
    line = "127.0.0.1:10025 inet n - n - - smtpd -o smtpd_client_restrictions= -o mynetworks=127.0.0.0/8"
    service = ServiceLine.parse(line)
    assert service is not None
    assert service.key == "127.0.0.1:10025/inet"
    assert service.options == {"smtpd_client_restrictions": "", "mynetworks": "127.0.0.0/8"}
    assert ServiceLine.parse("# a comment") is None

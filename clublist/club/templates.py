"""The texts people receive (welcome, goodbye, owner and hold notices), as templates.

A template is a text file whose first line is ``Subject: ...``, then an empty line, then
the body, with ``string.Template`` placeholders (``$list``, ``${name}``; ``$$`` is a dollar
sign).  The shipped sets live in ``clublist/templates/LANGUAGE/NAME.txt`` (the list's
``language``); a club overrides one for every list with ``lists.d/templates/NAME.txt``
and for one list with ``lists.d/templates/LIST/NAME.txt``.  ``clublist/templates/README.md``
lists each template's placeholders.  A placeholder a template does not know stays as
written, so a typo shows in the mail instead of losing it.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from clublist.club.model import MailingList, Site
from clublist.errors import ClublistError

TEMPLATE_NAMES = (
    "welcome",
    "goodbye",
    "owner_joined",
    "owner_left",
    "owner_summary",
    "held",
    "rejected",
    "expired",
)


@dataclass(frozen=True)
class Text:
    """A rendered template: the subject and the body of one mail."""

    subject: str
    body: str


def common_variables(site: Site, mailing_list: MailingList | None) -> dict[str, str]:
    """The placeholders every template may use."""
    values = {
        "club": site.site.name,
        "domain": site.domain,
        "bot_address": site.bot_address,
        "admin": site.site.admin,
    }
    if mailing_list is not None:
        values |= {
            "list": mailing_list.name,
            "list_title": mailing_list.display_name,
            "list_address": mailing_list.address(site.domain),
            "request_address": f"{mailing_list.name}-request@{site.domain}",
            "owner_address": f"{mailing_list.name}-owner@{site.domain}",
            "description": mailing_list.description,
        }
    return values


def template_source(directory: Path | None, language: str, name: str, list_name: str | None = None) -> str:
    """The text of template *name*: the list's override, the club's, else the shipped one."""
    if name not in TEMPLATE_NAMES:
        raise ClublistError(f"unknown template {name!r}; known: {', '.join(TEMPLATE_NAMES)}")
    if directory is not None:
        folder = directory / "templates"
        candidates = [folder / list_name / f"{name}.txt"] if list_name else []
        for path in [*candidates, folder / f"{name}.txt"]:
            if path.is_file():
                return path.read_text("utf-8")
    shipped = resources.files("clublist") / "templates" / language / f"{name}.txt"
    if not shipped.is_file():
        shipped = resources.files("clublist") / "templates" / "en" / f"{name}.txt"
    return shipped.read_text("utf-8")


def render(
    directory: Path | None,
    site: Site,
    mailing_list: MailingList | None,
    name: str,
    variables: dict[str, str],
) -> Text:
    """Fill template *name* for *mailing_list* (or the site) with the common and the given values."""
    language = mailing_list.language if mailing_list is not None else "en"
    source = template_source(directory, language, name, mailing_list.name if mailing_list else None)
    filled = string.Template(source).safe_substitute(common_variables(site, mailing_list) | variables)
    first, _, rest = filled.partition("\n")
    if not first.lower().startswith("subject:"):
        raise ClublistError(f"template {name}: the first line must be 'Subject: ...'")
    subject = " ".join(first.split(":", 1)[1].split())
    return Text(subject, rest.lstrip("\n").rstrip() + "\n")

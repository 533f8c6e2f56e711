"""Refusals that name the sender's authentication: the club's DNS records, not the member's address.

Gmail (4.7.23-4.7.40, 5.7.26, 5.7.32) and Outlook.com (5.7.515 for bulk senders, 5.7.509 for
unsigned mail from the null sender) say in their status codes which record they missed.  The
delivery report (:mod:`clublist.outbound.reports`) and the bounce processor's alert both say
which record to fix, and such a refusal never counts against a member (``bounces/dsn.py``).
"""

from __future__ import annotations

import re

# Gmail (4.7.23-4.7.40, 5.7.26, 5.7.32), Outlook.com (5.7.515 bulk, 5.7.509 unsigned null sender).
_PTR = "PTR: the sending IP address needs a reverse DNS name that resolves back to it"
_SPF = "SPF: publish an SPF record for the club's domain that names the sending IP address"
_DKIM = "DKIM: sign (clublist dkim keygen) and publish the record that 'clublist dkim show' prints"
_ALIGNMENT = "DMARC alignment: the DKIM d= or the SPF domain must be the From domain (site.domain)"
_NO_DMARC = "DMARC: publish a record at _dmarc.<site.domain>, e.g. v=DMARC1; p=none"
_AUTHENTICATION_FIXES = {
    "4.7.23": _PTR,
    "4.7.25": _PTR,
    "4.7.24": _SPF,
    "4.7.27": _SPF,
    "5.7.27": _SPF,
    "4.7.30": _DKIM,
    "5.7.30": _DKIM,
    "4.7.26": "SPF and DKIM: mail must pass SPF or DKIM; publish both (clublist dkim show)",
    "5.7.26": "DMARC: mail must pass SPF or DKIM aligned with From; check SPF, DKIM and _dmarc records",
    "4.7.32": _ALIGNMENT,
    "5.7.32": _ALIGNMENT,
    "4.7.40": _NO_DMARC,
    "5.7.40": _NO_DMARC,
    "5.7.515": "SPF, DKIM and DMARC: Outlook.com wants all three for bulk senders",
    "5.7.509": "DKIM: Outlook.com refuses unsigned mail from the null sender; publish the DKIM record",
}
_AUTHENTICATION_WORDS = (
    (re.compile(r"\bdmarc\b", re.IGNORECASE), "DMARC: check the _dmarc record and that SPF or DKIM aligns"),
    (re.compile(r"\bdkim\b", re.IGNORECASE), _DKIM),
    (re.compile(r"\bspf\b", re.IGNORECASE), _SPF),
    (re.compile(r"reverse dns|\bptr\b|\brdns\b", re.IGNORECASE), _PTR),
    (
        re.compile(r"unauthenticated|not authenticated|authentication", re.IGNORECASE),
        "SPF, DKIM and DMARC: the receiver found the mail unauthenticated",
    ),
)


def authentication_fix(code: str, diagnostic: str = "") -> str:
    """What to fix for a refusal with enhanced status *code*, or "" when it names no authentication.

    By the code first; the receiver's words count only under a x.7.x code, or none, since an
    address problem (x.1.x) may quote the sender's SPF result in passing.
    """
    if code in _AUTHENTICATION_FIXES:
        return _AUTHENTICATION_FIXES[code]
    if code and code.split(".")[1:2] != ["7"]:
        return ""
    return next((fix for words, fix in _AUTHENTICATION_WORDS if words.search(diagnostic)), "")

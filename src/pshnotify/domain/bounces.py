"""What a non-delivery report means, by RFC 3463's enhanced status codes.

Pure rules, no I/O: the reading and parsing of bounce messages lives in `pshnotify.bounces`,
and what a bounce does to a message and a person in `services.bounces`.

Classes:
  hard      the address does not work (unknown user or domain, disabled mailbox): after one,
            the person's address is marked undeliverable;
  soft      a temporary failure (mailbox full, a 4.x.x code): the address is marked only after
            soft bounces on several distinct days;
  blocked   our message was refused by policy (5.7.x, spam filters, reputation): our fault,
            not the person's, so nothing is marked; the operator is shown it;
  complaint the recipient reported the message as spam (a sending service's event): shown to
            the operator, nothing marked;
  delayed   a warning that the relay is still trying (Action: delayed): recorded, counts for
            nothing.
Auto-replies (RFC 3834, out-of-office) are not bounces at all and never reach this module.
"""

from __future__ import annotations

import re
from enum import StrEnum


class BounceClass(StrEnum):
    HARD = "hard"
    SOFT = "soft"
    BLOCKED = "blocked"
    COMPLAINT = "complaint"
    DELAYED = "delayed"


# Classes that say something about the person's address (the others about us or nothing).
MARKS_ADDRESS = frozenset({BounceClass.HARD, BounceClass.SOFT})

ENHANCED_CODE = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])")

# Diagnostics that say the message (not the address) was refused: spam and policy filters.
_POLICY_WORDS = re.compile(
    r"spam|unsolicited|blocked|block list|blocklist|blacklist|reputation|"
    r"spamhaus|barracuda|policy|rejected due to|not authorized to send|dmarc|spf",
    re.IGNORECASE,
)
_FULL_WORDS = re.compile(
    r"mailbox (is )?full|over ?quota|quota exceeded|exceeded (the )?(storage|quota)|"
    r"insufficient (system )?storage|mailbox size limit|quota",
    re.IGNORECASE,
)


def best_code(status: str | None, diagnostic: str | None) -> str | None:
    """The most specific enhanced status code: the diagnostic's when the Status field is only
    generic (x.0.0, as some relays write while the remote server's reply says 5.7.1)."""
    from_status = _first_code(status or "")
    from_text = _first_code(diagnostic or "")
    if from_status and not from_status.endswith(".0.0"):
        return from_status
    return from_text or from_status


def _first_code(text: str) -> str | None:
    m = ENHANCED_CODE.search(text)
    return ".".join(m.groups()) if m else None


def classify(
    status: str | None,
    diagnostic: str | None,
    *,
    permanent: bool = True,
    action: str | None = None,
) -> BounceClass:
    """One failed recipient's class, from its status code, diagnostic text and whether the
    report calls the failure permanent (Action: failed) or a warning (Action: delayed)."""
    if action is not None and action.strip().lower() == "delayed":
        return BounceClass.DELAYED
    code = best_code(status, diagnostic)
    text = f"{status or ''} {diagnostic or ''}"  # some relays explain in the Status field
    if code is not None:
        cls, subject, detail = code.split(".")
        if subject == "7" or (cls == "5" and subject in ("3", "6") and detail != "0"):
            return BounceClass.BLOCKED  # security/policy, or our message's size or content
        if (subject, detail) == ("2", "2") or _FULL_WORDS.search(text):
            return BounceClass.SOFT  # mailbox full: persistent transient (RFC 3463 3.3)
        if cls == "4":
            return BounceClass.SOFT
        if cls == "5" and _POLICY_WORDS.search(text) and subject not in ("1", "2"):
            return BounceClass.BLOCKED
        return BounceClass.HARD if cls == "5" else BounceClass.SOFT
    if _POLICY_WORDS.search(text) and re.search(r"spam|unsolicited|block", text, re.I):
        return BounceClass.BLOCKED
    if _FULL_WORDS.search(text):
        return BounceClass.SOFT
    return BounceClass.HARD if permanent else BounceClass.SOFT

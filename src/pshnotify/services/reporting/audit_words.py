"""An audit row as a person reads it: what was done to whom, and how it ended, in words.

The log stores each action's details as data (`{"until": "2023-10-20", ...}`); the console
shows this sentence instead of a Python dict, and a refusal says why it was refused.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any
from zoneinfo import ZoneInfo

from pshnotify.domain.calendar import local_time

# What each action did, to `{subject}` (a person's id, a wave's key, a file, a login).
_DONE: dict[str, str] = {
    "person.extend": "Extended the deadline of {subject}",
    "person.exempt": "Exempted {subject}",
    "completion.record": "Recorded a completion for {subject}",
    "completions.import": "Imported completions from {subject}",
    "completions.purge_unmatched": "Deleted old unmatched completions",
    "messages.retry": "Queued messages again",
    "address.undeliverable": "Marked the address of {subject} undeliverable",
    "address.ok": "Cleared the undeliverable mark of {subject}",
    "address.readdressed": "Cleared the mark of {subject}: a new address",
    "roster.import": "Imported the roster {subject}",
    "wave.launch": "Launched wave {subject}",
    "wave.schedule_launch": "Scheduled the launch of wave {subject}",
    "wave.cancel_launch": "Withdrew the scheduled launch of wave {subject}",
    "program.load": "Loaded program {subject}",
    "program.update": "Updated program {subject}",
    "pause": "Paused {subject}",
    "resume": "Resumed {subject}",
    "user.add": "Added console user {subject}",
    "user.remove": "Removed console user {subject}",
    "user.sign-in": "{subject} signed in",
}
# The details worth a reader's eye, in order, with their words; the rest stay in the log.
_FACTS: dict[str, tuple[tuple[str, str], ...]] = {
    "person.extend": (("previous", "from"), ("until", "to"), ("note", "note")),
    "person.exempt": (("reason", "reason"), ("cancelled_messages", "emails cancelled")),
    "completion.record": (("option", "option"), ("completed_at", "completed"), ("note", "note")),
    "completions.purge_unmatched": (("before", "before"), ("deleted", "deleted")),
    "messages.retry": (("requeued", "queued again"), ("state", "state"), ("wave", "wave")),
    "address.undeliverable": (("address", "address"), ("reason", "why")),
    "address.ok": (("address", "address"), ("launch", "launch email again")),
    "address.readdressed": (("old_address", "was"), ("address", "now")),
    "wave.launch": (("queued", "emails queued"), ("force", "launched anyway")),
    "wave.schedule_launch": (("launch_at", "at"), ("force", "launched anyway")),
    "wave.cancel_launch": (("launch_at", "was at"),),
    "user.add": (("role", "role"), ("departments", "departments")),
    "user.sign-in": (("address", "from"),),
}


def action_words(action: str, subject: str | None) -> str:
    template = _DONE.get(action, action.replace(".", " ").replace("_", " ").capitalize())
    return template.format(subject=subject or "everything")


def outcome_words(action: str, details: Mapping[str, Any], tz: ZoneInfo) -> str:
    """`Refused: why` for a refusal; else the facts worth reading, `from 2023-10-06; to
    2023-10-20`."""
    if details.get("outcome") == "refused":
        why = details.get("why") or []
        return "Refused: " + "; ".join(str(w) for w in why) if why else "Refused"
    facts = []
    for key, words in _FACTS.get(action, ()):
        value = details.get(key)
        if value in (None, "", [], {}, False):
            continue
        facts.append(words if value is True else f"{words} {_value(value, tz)}")
    return "; ".join(facts) or "Done"


def _value(value: Any, tz: ZoneInfo) -> str:
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    if isinstance(value, str) and len(value) > 10 and value[10:11] == "T":
        try:
            return local_time(dt.datetime.fromisoformat(value), tz)
        except ValueError:
            return value
    return str(value)

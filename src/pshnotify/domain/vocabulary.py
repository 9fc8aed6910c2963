"""The words for a person's standing and a message's state, defined once.

`status`, `status --json`, the console, the officer's report and its CSV all say these and
nothing else ("pending" once meant three different things in three places). Each word has a
key for machines (JSON, CSV, query strings) and the words people read; docs/glossary.md
explains them.
"""

from __future__ import annotations

from enum import StrEnum

from pshnotify.domain.delivery import State
from pshnotify.domain.policy import REQUIRED, Standing


class PersonWord(StrEnum):
    """Where one person stands in one program (the undeliverable mark is said beside it)."""

    NOT_LAUNCHED = "not_launched"
    EMAILED = "emailed"
    COMPLETE = "complete"
    EXEMPT = "exempt"
    NOT_REQUIRED = "not_required"
    UNDELIVERABLE = "undeliverable"

    @property
    def words(self) -> str:
        return _PERSON_WORDS[self]


_PERSON_WORDS = {
    PersonWord.NOT_LAUNCHED: "not launched yet",
    PersonWord.EMAILED: "emailed and not complete",
    PersonWord.COMPLETE: "complete",
    PersonWord.EXEMPT: "exempt",
    PersonWord.NOT_REQUIRED: "not required",
    PersonWord.UNDELIVERABLE: "undeliverable",
}


def person_word(person: Standing, launched: bool) -> PersonWord:
    """Where a present person stands, decided in this order by every door (`status`, the
    officer's report, the console's person pages): complete first, whatever the rules now
    say; then exempted by an operator; then not required by the rules; then emailed (their
    wave was launched) or not launched yet. The undeliverable mark is said beside it."""
    if person.completed:
        return PersonWord.COMPLETE
    if person.exempted_reason is not None:
        return PersonWord.EXEMPT
    if person.status != REQUIRED:
        return PersonWord.NOT_REQUIRED
    return PersonWord.EMAILED if launched else PersonWord.NOT_LAUNCHED


class MessageWord(StrEnum):
    """A message's state as people say it; `of(State)` maps the stored state."""

    QUEUED = "queued"
    SENDING = "sending"
    DELIVERED = "delivered"
    DEFERRED = "deferred"
    FAILED = "failed"
    BOUNCED = "bounced"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"
    UNKNOWN = "unknown"

    @property
    def words(self) -> str:
        return "outcome unknown" if self is MessageWord.UNKNOWN else self.value

    @classmethod
    def of(cls, state: State | str) -> MessageWord:
        return _MESSAGE_WORDS[State(state)]

    @property
    def stored(self) -> State:
        """The state the database keeps for this word (`delivered` is stored `sent`)."""
        return _STORED[self]

    @classmethod
    def read(cls, text: str) -> MessageWord | None:
        """A word, or the stored name as an alias (`sent` for delivered); None if neither."""
        text = text.strip().lower()
        if text in cls._value2member_map_:
            return cls(text)
        if text in State._value2member_map_:
            return cls.of(text)
        return None


_MESSAGE_WORDS = {
    State.QUEUED: MessageWord.QUEUED,
    State.CLAIMED: MessageWord.SENDING,
    State.SENT: MessageWord.DELIVERED,
    State.RETRY: MessageWord.DEFERRED,
    State.FAILED: MessageWord.FAILED,
    State.BOUNCED: MessageWord.BOUNCED,
    State.SKIPPED: MessageWord.SKIPPED,
    State.CANCELLED: MessageWord.CANCELLED,
    State.UNKNOWN: MessageWord.UNKNOWN,
}
_STORED = {word: state for state, word in _MESSAGE_WORDS.items()}

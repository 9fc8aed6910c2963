"""The escalation digest: the people who are behind, sent once a day to their manager (or
their administrative officer). `recipient` and `date` are fixed at queue time; `rows` are read
at send time by `services.escalation.escalation_enricher`, so someone who completed since
the queueing is not in it. Importing this module registers the kind.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from pshnotify.domain.calendar import human_date
from pshnotify.mail.kinds import KindInput, KindSpec, common_context, register

KIND = "escalation"


def escalation_context(data: KindInput) -> dict[str, Any]:
    extra = data.extra
    missing = [k for k in ("recipient", "date", "rows") if k not in extra]
    if missing:
        raise ValueError(
            f"escalation data lacks {', '.join(missing)}: is the escalation enricher wired "
            "into the dispatcher?"
        )
    day = dt.date.fromisoformat(str(extra["date"]))
    rows = [
        {**r, "deadline_text": human_date(dt.date.fromisoformat(r["deadline"]))}
        for r in extra["rows"]
    ]
    return {
        **common_context(data.program, data.person),
        "recipient": str(extra["recipient"]),
        "as_officer": bool(extra.get("as_officer")),
        "digest_date": human_date(day),
        "rows": rows,
    }


SAMPLE_EXTRA: dict[str, Any] = {
    "recipient": "manager@example.org",
    "date": "2023-09-25",
    "as_officer": False,
    "rows": [
        {
            "id": "sample",
            "name": "Sample Person",
            "email": "sample@example.org",
            "department": "Sample Department",
            "deadline": "2023-10-06",
            "days_left": 11,
            "reminders_sent": 2,
            "undeliverable": None,
        },
        {
            "id": "sample2",
            "name": "Other Person",
            "email": "other@example.org",
            "department": "Sample Department",
            "deadline": "2023-09-22",
            "days_left": -3,
            "reminders_sent": 4,
            "undeliverable": "hard bounce 5.1.1 on 2023-09-12",
        },
    ],
}

register(
    KIND,
    KindSpec(context=escalation_context, needs_wave=False, sample_extra=SAMPLE_EXTRA),
)

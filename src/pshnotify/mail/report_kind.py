"""The nightly report email: a department's completion status as an HTML table and a CSV file.

The message's data is JSON: `officer` and `date` fixed at queue time, `title`, `summary` and
`rows` read at send time by `services.reports.report_enricher`. The rows are the one shape the
email, its CSV attachment and `pshnotify report --csv` share, so all three always agree.
Importing this module registers the kind.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from pshnotify.domain.calendar import human_date
from pshnotify.domain.csv_safety import to_csv
from pshnotify.domain.vocabulary import PersonWord
from pshnotify.mail.kinds import Attachment, KindInput, KindSpec, common_context, register

KIND = "report"
OFFICER_NAME = "Administrative officer"

# The CSV's columns, in order: each is a key of a report row.
CSV_COLUMNS = (
    "id",
    "name",
    "email",
    "department",
    "wave",
    "status",
    "option",
    "option_title",
    "completed_on",
    "deadline",
    "deadline_passed",
    "launch_email_sent",
    "exemption_reason",
)
# The words of domain/vocabulary.py, capitalised for the email's table.
STATUS_LABELS = {w.value: w.words.capitalize() for w in PersonWord}
SUMMARY_KEYS = (
    "people",
    "complete",
    "emailed",
    "overdue",
    "not_launched",
    "exempt",
    "not_required",
)


def csv_filename(program_key: str, day: dt.date) -> str:
    return f"{program_key}-status-{day.isoformat()}.csv"


def report_csv(rows: Sequence[Mapping[str, Any]]) -> bytes:
    """The CSV of report rows, safe to open in a spreadsheet (see domain/csv_safety)."""
    return to_csv(CSV_COLUMNS, ([_csv_value(row.get(c)) for c in CSV_COLUMNS] for row in rows))


def _csv_value(value: Any) -> Any:
    if isinstance(value, bool):
        return "yes" if value else "no"
    return value


def detail(row: Mapping[str, Any]) -> str:
    """One phrase saying what the status means for this person, the same in text and HTML."""
    status = row["status"]
    if status == "complete":
        return f"Option {row['option']} - {row['option_title']}, on {row['completed_on']}"
    if status in ("exempt", "not_required"):
        return str(row["exemption_reason"] or PersonWord(status).words)
    due = f"due {row['deadline']}" if row["deadline"] else "no deadline"
    if row.get("deadline_passed"):
        due += " (passed)"
    if status == "not_launched":
        return f"wave not launched yet; {due}"
    sent = "launch email sent" if row.get("launch_email_sent") else "launch email not sent yet"
    return f"{due}; {sent}"


def _display(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        **row,
        "status_label": STATUS_LABELS.get(row["status"], row["status"]),
        "detail": detail(row),
    }


def _by_department(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(str(row["department"]), []).append(row)
    return [{"name": name, "rows": members} for name, members in groups.items()]


def report_context(data: KindInput) -> dict[str, Any]:
    """The templates' context; refuses to build a report whose rows were never read."""
    extra = data.extra
    missing = [k for k in ("officer", "date", "title", "summary", "rows") if k not in extra]
    if missing:
        raise ValueError(
            f"report data lacks {', '.join(missing)}: is the report enricher wired "
            "into the dispatcher?"
        )
    day = dt.date.fromisoformat(str(extra["date"]))
    rows = [_display(r) for r in extra["rows"]]
    summary = {k: int(extra["summary"].get(k, 0)) for k in SUMMARY_KEYS}
    summary["pending"] = summary["emailed"]  # report templates copied before the words changed
    attention = {k: list(extra.get("attention", {}).get(k, [])) for k in ATTENTION_KEYS}
    return {
        **common_context(data.program, data.person),
        "officer": str(extra["officer"]),
        "officer_name": extra.get("officer_name") or "",
        "progress": progress(summary),
        "attention": attention,
        "needs_attention": any(attention.values()),
        "since": _since(extra.get("since")),
        "list_everyone": bool(extra.get("list_everyone", True)),
        "title": str(extra["title"]),
        "report_date": human_date(day),
        "report_date_iso": day.isoformat(),
        "summary": summary,
        "departments": _by_department(rows),
        "attachment": csv_filename(data.program.key, day),
    }


ATTENTION_KEYS = ("undeliverable", "requests", "overdue", "due_soon")
_BAR = 20  # characters of the text progress bar


def progress(summary: dict[str, int]) -> dict[str, Any]:
    """Complete out of everyone the report asks of (people less the exempt), as a bar."""
    asked = summary["people"] - summary["exempt"] - summary["not_required"]
    done = summary["complete"]
    percent = round(100 * done / asked) if asked else 100
    filled = round(_BAR * percent / 100)
    return {
        "asked": asked,
        "complete": done,
        "percent": percent,
        "bar": "#" * filled + "-" * (_BAR - filled),
    }


def _since(data: Any) -> dict[str, Any] | None:
    if not data:
        return None
    when = dt.datetime.fromisoformat(str(data["since"]))
    lists = {k: list(data.get(k, [])) for k in ("completed", "joined", "left", "extended")}
    return {
        "date": human_date(when.date()),
        **lists,
        "any": any(lists.values()),
        "extended": [
            {**e, "until_text": human_date(dt.date.fromisoformat(e["until"]))}
            if e.get("until")
            else e
            for e in lists["extended"]
        ],
    }


def report_attachments(data: KindInput) -> list[Attachment]:
    day = dt.date.fromisoformat(str(data.extra["date"]))
    return [
        Attachment(
            filename=csv_filename(data.program.key, day),
            maintype="text",
            subtype="csv",
            data=report_csv(data.extra["rows"]),
        )
    ]


def _sample_row(status: str, **values: Any) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(CSV_COLUMNS)
    row.update(
        id="sample",
        name="Sample Person",
        email="sample@example.org",
        department="Sample Department",
        wave="pilot",
        status=status,
        deadline_passed=False,
        launch_email_sent=None,
    )
    row.update(values)
    return row


# Every status once, so the start-up template check walks every branch of the templates.
SAMPLE_EXTRA: dict[str, Any] = {
    "officer": "officer@example.org",
    "date": "2023-09-12",
    "title": "Sample Department",
    "summary": {
        "people": 5,
        "complete": 1,
        "emailed": 1,
        "overdue": 1,
        "not_launched": 1,
        "exempt": 1,
        "not_required": 1,
    },
    "rows": [
        _sample_row(
            "complete", option="A", option_title="Sample course", completed_on="2023-09-11"
        ),
        _sample_row("emailed", deadline="2023-09-11", deadline_passed=True, launch_email_sent=True),
        _sample_row("not_launched", deadline="2023-10-06", launch_email_sent=False),
        _sample_row("exempt", exemption_reason="On leave until March."),
        _sample_row("not_required", exemption_reason="Unpaid appointees may ask for access."),
    ],
    "officer_name": "Sample Officer",
    "attention": {
        "requests": [
            {
                "id": "s1",
                "name": "Late Person",
                "request": 12,
                "title": "More time",
                "summary": "until 2023-10-20: on leave",
                "filed": "2023-09-15",
            }
        ],
        "undeliverable": [
            {
                "id": "s3",
                "name": "Dead Address",
                "email": "gone@example.org",
                "department": "Sample Department",
                "since": "2023-09-12",
                "reason": "hard bounce 5.1.1 on 2023-09-12: user unknown",
            }
        ],
        "overdue": [
            {
                "id": "s1",
                "name": "Late Person",
                "email": "l@example.org",
                "department": "Sample Department",
                "deadline": "2023-09-11",
            }
        ],
        "due_soon": [],
    },
    "since": {
        "since": "2023-09-11T06:00:00-04:00",
        "completed": [{"id": "s2", "name": "Done Person", "email": "d@example.org"}],
        "joined": [],
        "left": [{"id": "s4", "name": "Gone Person", "email": "g@example.org"}],
        "extended": [
            {"id": "s5", "name": "Ext Person", "email": "e@example.org", "until": "2023-10-20"}
        ],
    },
    "list_everyone": True,
}

register(
    KIND,
    KindSpec(
        context=report_context,
        attachments=report_attachments,
        needs_wave=False,
        sample_extra=SAMPLE_EXTRA,
    ),
)

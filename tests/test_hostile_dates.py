"""Issue 28's date defects (3, 7, 11, 14), made impossible by the domain's values (issue 25):
no door stores a date the program cannot mean, a typed offset is kept, and a chart stays
bounded whatever the database holds."""

from __future__ import annotations

import datetime as dt
import html
import time

import pytest
from sqlalchemy import select

from pshnotify.runtime.wiring import Runtime
from pshnotify.store.schema import audit_log, waves
from tests.test_cli import NOW, cli
from tests.test_console import OPERATOR
from tests.test_console_http import console, console_rt, csrf, sign_in  # noqa: F401
from tests.test_reports import set_enrollment

SQLITE_ONLY = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


@SQLITE_ONLY
def test_3_an_extension_to_9999_is_refused_and_the_campaign_goes_on(
    console_rt: Runtime,  # noqa: F811
    env: dict[str, str],
) -> None:
    refused = cli(env, "extend", "H1", "--until", "9999-12-31", "--now", NOW)
    assert refused.returncode == 2
    assert "--until: '9999-12-31' is outside the dates this program can mean" in refused.stderr
    with console(console_rt) as client:
        sign_in(client, OPERATOR)
        token = csrf(client, "/people/H1")
        page = client.post("/people/H1/extend", data={"csrf_token": token, "until": "9999-12-31"})
        assert page.status_code == 400
    for args in (("run", "--once"), ("plan",)):
        assert cli(env, *args, "--now", NOW).returncode == 0


@SQLITE_ONLY
def test_7_a_completion_in_year_1_is_refused_and_a_stored_one_keeps_the_chart_bounded(
    console_rt: Runtime,  # noqa: F811
) -> None:
    with console(console_rt) as client:
        sign_in(client, OPERATOR)
        token = csrf(client, "/people/H1")
        page = client.post(
            "/people/H1/complete",
            data={"csrf_token": token, "option": "B", "completed_on": "0001-01-02"},
        )
        assert page.status_code == 400
        assert "outside the dates this program can mean" in html.unescape(page.text)
        # Whatever put it there (an older version, a hand edit), a stored year-1 completion
        # draws no column outside the program's reach, and the page answers at once.
        set_enrollment(
            console_rt.engine,
            "H2",
            completed_at=dt.datetime(1, 1, 2, tzinfo=dt.UTC),
            completion_option="B",
        )
        started = time.perf_counter()
        dashboard = client.get("/")
        took = time.perf_counter() - started
        assert dashboard.status_code == 200
        # The chart runs from the first day the program can mean, not from year 1.
        assert "Completions per day from 2022-01-01 to " in dashboard.text
        assert "0001-01-02" not in dashboard.text
        assert took < 5, took  # a year-1 column a day took 4-6 s of the event loop


@SQLITE_ONLY
def test_11_and_14_a_schedule_keeps_its_offset_and_refuses_year_9999(
    console_rt: Runtime,  # noqa: F811
) -> None:
    rt = console_rt
    with console(rt) as client:
        sign_in(client, OPERATOR)
        token = csrf(client, "/waves/pilot/launch")
        far = client.post(
            "/waves/pilot/schedule", data={"csrf_token": token, "at": "9999-12-31T23:59"}
        )
        assert far.status_code == 400  # it answered 500
        kept = client.post(
            "/waves/pilot/schedule", data={"csrf_token": token, "at": "2023-09-20T09:00+14:00"}
        )
        assert kept.status_code == 303, kept.text
        # 09:00 at +14:00 is 15:00 EDT the day before, not 09:00 EDT.
        assert "2023-09-19 15:00 EDT" in client.get("/waves/pilot").text
    with rt.engine.connect() as conn:
        at = conn.scalar(select(waves.c.launch_at).where(waves.c.key == "pilot"))
        refused = conn.scalar(
            select(audit_log.c.details).where(audit_log.c.action == "wave.schedule_launch")
        )
    assert at == dt.datetime(2023, 9, 19, 19, 0, tzinfo=dt.UTC)
    assert refused["outcome"] == "refused"

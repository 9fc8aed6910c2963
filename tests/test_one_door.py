"""One rule, every door (issue 25): the same bad date or time, typed into the CLI, a console
form, a CSV file or a webhook, gets the same refusal in that door's own form (exit 2 naming
the option or FILE:LINE, a 400 page that keeps what was typed and links back, a 400 JSON
body), changes nothing but the audit log's record of the refusal, and cannot make a later
pass, page or report fail."""

from __future__ import annotations

import datetime as dt
import html
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import Engine, select

from pshnotify.runtime.wiring import Runtime
from pshnotify.store.schema import audit_log, completions, enrollments, messages, waves
from tests.test_cli import NOW, cli
from tests.test_console import OPERATOR
from tests.test_console_http import console, console_rt, csrf, sign_in  # noqa: F401
from tests.test_web import SECRET, running, signed

SQLITE_ONLY = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
OUTSIDE = "is outside the dates this program can mean (2022-01-01 to 2025-12-31)"

# value -> what every door says of it (after its own field name)
BAD_DAYS = {
    "9999-12-31": f"'9999-12-31' {OUTSIDE}",
    "0001-01-02": f"'0001-01-02' {OUTSIDE}",
    "2023-02-30": "got '2023-02-30'",
    "next week": "got 'next week'",
    "2023-09-12\x1b[2J": "contains a line break or control character",
}
BAD_TIMES = {
    "9999-12-31T23:59": f"'9999-12-31T23:59:00-05:00' {OUTSIDE}",
    "0001-01-02T09:00": OUTSIDE,
    "soon": "got 'soon'",
}


def snapshot(engine: Engine) -> dict[str, Any]:
    """Everything an action could change, but the audit log."""
    with engine.connect() as conn:
        return {
            t.name: sorted(map(tuple, conn.execute(select(t)).all()), key=repr)
            for t in (enrollments, completions, messages, waves)
        }


def refusals(engine: Engine) -> list[tuple[str, str | None, str]]:
    with engine.connect() as conn:
        rows = conn.execute(select(audit_log.c.action, audit_log.c.subject, audit_log.c.details))
        return [
            (a, s, " ".join(d["why"]))
            for a, s, d in rows
            if isinstance(d, dict) and d.get("outcome") == "refused"
        ]


@pytest.mark.slow  # many whole commands: started first
@SQLITE_ONLY
def test_a_bad_date_is_refused_alike_by_every_door(
    console_rt: Runtime,  # noqa: F811
    env: dict[str, str],
    tmp_path: Path,
) -> None:
    rt = console_rt
    before = snapshot(rt.engine)
    hook_rt = Runtime(
        rt.settings.model_copy(update={"webhook_secret": SecretStr(SECRET)}), rt.clock
    )
    from pshnotify.web import create_app

    hook_app = create_app(hook_rt.engine, hook_rt.clock, hook_rt.settings, hook_rt.program)
    with console(rt) as client, running(hook_app) as hooks:
        sign_in(client, OPERATOR)
        token = csrf(client, "/people/H1")
        for value, said in BAD_DAYS.items():
            # The CLI: exit 2, the option named.
            ext = cli(env, "extend", "H1", "--until", value, "--now", NOW)
            assert ext.returncode == 2, ext.stderr
            assert says(ext.stderr, "--until", said), ext.stderr
            done = cli(env, "complete", "H1", "--option", "B", "--at", value, "--now", NOW)
            assert done.returncode == 2, done.stderr
            assert says(done.stderr, "--at", said), done.stderr
            # A file: exit 2, FILE:LINE: field.
            path = tmp_path / "done.csv"
            path.write_text(f"id,option,completed_at\nH1,B,{value}\n")
            imported = cli(env, "completions", "import", str(path), "--now", NOW)
            assert imported.returncode == 2, imported.stderr
            assert f"{path}:2: completed_at: " in imported.stderr, imported.stderr
            assert said in imported.stderr, imported.stderr
            # The console: a 400 page, the typed value kept, a link back that fills it in.
            for action, fld in (("extend", "until"), ("complete", "completed_on")):
                page = client.post(
                    f"/people/H1/{action}",
                    data={"csrf_token": token, fld: value, "option": "B"},
                )
                assert page.status_code == 400, page.text
                text = html.unescape(page.text)
                assert says(text, fld, said), text
                assert "--" not in text.split("<main", 1)[-1], "a CLI flag in the console"
                back = httpx.URL(html.unescape(_link_back(page.text)))
                assert back.path == "/people/H1"
                assert back.params[fld] == value
            # A webhook: a 400 JSON body naming the field.
            body, headers = signed({"person": "H1", "option": "B", "completed_at": value})
            answer = hooks.post("/webhooks/completions", content=body, headers=headers)
            assert answer.status_code == 400, answer.text
            assert any(
                p.startswith("completed_at: ") and said in p for p in answer.json()["problems"]
            ), answer.json()
        for value, said in BAD_TIMES.items():
            sched = cli(env, "launch", "pilot", "--at", value, "--now", NOW)
            assert sched.returncode == 2, sched.stderr
            assert says(sched.stderr, "--at", said), sched.stderr
            launch_page = csrf(client, "/waves/pilot/launch")
            page = client.post(
                "/waves/pilot/schedule", data={"csrf_token": launch_page, "at": value}
            )
            assert page.status_code == 400, page.text
            assert said in html.unescape(page.text)
            back = httpx.URL(html.unescape(_link_back(page.text)))
            assert back.path == "/waves/pilot/launch"
            assert back.params["at"] == value
    hook_rt.engine.dispose()
    assert snapshot(rt.engine) == before
    # Every refusal is in the audit log, with who tried what on whom and why.
    logged = refusals(rt.engine)
    for action in ("person.extend", "completion.record", "wave.schedule_launch"):
        assert any(a == action for a, _, _ in logged), (action, logged)
    assert ("person.extend", "H1") in {(a, s) for a, s, _ in logged}
    assert any(OUTSIDE in why for _, _, why in logged)


def says(output: str, field: str, said: str) -> bool:
    """One line of `output` names `field` and says `said` of it."""
    return any(f"{field}: " in line and said in line for line in output.splitlines())


def _link_back(page: str) -> str:
    import re

    found = re.search(r'<a class="button" href="([^"]+)">Back to the form', page)
    assert found, page
    return found.group(1)


@SQLITE_ONLY
def test_the_latest_deadline_a_door_accepts_breaks_no_pass_plan_or_page(
    console_rt: Runtime,  # noqa: F811
    env: dict[str, str],
) -> None:
    """The edge of what is accepted (the last day of the program's reach) is a value like any
    other: the pass, plan, status and the person's and wave's pages still answer."""
    rt = console_rt
    assert cli(env, "launch", "pilot", "--yes", "--now", NOW).returncode == 0
    extended = cli(env, "extend", "H1", "--until", "2025-12-31", "--now", NOW)
    assert extended.returncode == 0, extended.stderr
    with console(rt) as client:
        sign_in(client, OPERATOR)
        token = csrf(client, "/people/H2")
        ok = client.post(
            "/people/H2/complete",
            data={"csrf_token": token, "option": "B", "completed_on": "2022-01-01"},
        )
        assert ok.status_code == 303, ok.text
        for path in ("/", "/waves/pilot", "/people/H1", "/people/H2", "/audit", "/departments"):
            assert client.get(path).status_code == 200, path
    for args in (("run", "--once"), ("plan",), ("status",)):
        done = cli(env, *args, "--now", NOW)
        assert done.returncode == 0, (args, done.stderr)
        assert "Traceback" not in done.stderr
    later = (dt.datetime.fromisoformat(NOW) + dt.timedelta(days=60)).isoformat()
    assert cli(env, "run", "--once", "--now", later).returncode == 0

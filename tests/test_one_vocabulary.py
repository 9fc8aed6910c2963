"""One vocabulary: `status --json`, `status`, `report --csv`, `messages` and the console's wave
and departments pages say each person's and each message's state with the same word
(domain/vocabulary.py), for the same roster."""

from __future__ import annotations

import csv
import html
import io
import json
import re
from collections import Counter
from pathlib import Path

import pytest

from pshnotify.domain.vocabulary import MessageWord, PersonWord
from pshnotify.runtime.wiring import Runtime
from pshnotify.services.access.users import add_user
from tests.smtp_server import SmtpServer
from tests.test_cli import cli
from tests.test_console import OPERATOR
from tests.test_console_http import sign_in
from tests.test_reports import send, setup_campaign
from tests.test_web import running

HR, IST = "Human Resources", "Information Systems and Technology"


def _csv(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_bytes().decode("utf-8-sig"), newline="")))


def _ok(ran: object) -> str:
    assert ran.returncode == 0, ran.stderr  # type: ignore[attr-defined]
    return str(ran.stdout)  # type: ignore[attr-defined]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_every_place_says_a_state_with_the_same_word(
    runtime: Runtime, env: dict[str, str], smtp: SmtpServer, tmp_path: Path
) -> None:
    stored = setup_campaign(runtime, tmp_path)  # pilot launched: complete, exempt, ...
    assert send(runtime)  # the launch emails go: some messages are delivered
    add_user(
        runtime.engine,
        OPERATOR[0],
        role="operator",
        departments=[],
        password=OPERATOR[1],
        clock=runtime.clock,
        actor="test",
    )
    now = runtime.clock.now().isoformat()

    data = json.loads(_ok(cli(env, "status", "--json", "--now", now)))
    assert data["schema"] == 2
    assert set(data["messages"]) == {w.value for w in MessageWord}
    pilot = data["waves"]["pilot"]
    said = pilot["people"]["states"]
    assert set(said) == {w.value for w in PersonWord}
    # The roster has someone in each of these (test_reports.ROSTER).
    for word in (PersonWord.COMPLETE, PersonWord.EMAILED, PersonWord.EXEMPT):
        assert said[word] > 0, said
    assert said[PersonWord.NOT_REQUIRED] > 0, said
    said_grad = data["waves"]["grad"]["people"]["states"]
    assert said_grad[PersonWord.NOT_LAUNCHED] > 0
    assert pilot["messages"][MessageWord.DELIVERED] > 0

    # The officers' report and its CSV: the same words; over both departments, the same
    # counts as the pilot wave's.
    target, other = tmp_path / "hr.csv", tmp_path / "ist.csv"
    report = json.loads(
        _ok(cli(env, "report", "--department", HR, "--csv", str(target), "--json", "--now", now))
    )
    _ok(cli(env, "report", "--department", IST, "--csv", str(other), "--now", now))
    rows = _csv(target)
    in_csv = Counter(r["status"] for r in rows)
    assert Counter(r["status"] for r in report["rows"]) == in_csv
    for word, n in in_csv.items():
        assert report["summary"][word] == n
    in_pilot = Counter(r["status"] for r in rows + _csv(other) if r["wave"] == "pilot")
    assert in_pilot == Counter({w: n for w, n in said.items() if n and w != "undeliverable"})
    in_grad = Counter(r["status"] for r in _csv(other) if r["wave"] == "grad")
    assert in_grad[PersonWord.NOT_LAUNCHED] == said_grad[PersonWord.NOT_LAUNCHED]

    # `messages`: each message's state in the same word `status --json` counts it by.
    listed = json.loads(_ok(cli(env, "messages", "--json", "--limit", "1000")))
    counted = Counter(m["state"] for m in listed)
    assert counted == Counter({w: n for w, n in data["messages"].items() if n})
    delivered = json.loads(_ok(cli(env, "messages", "--state", "delivered", "--json")))
    assert json.loads(_ok(cli(env, "messages", "--state", "sent", "--json"))) == delivered
    assert len(delivered) == data["messages"]["delivered"]
    refused = cli(env, "messages", "--state", "pending")
    assert refused.returncode == 2
    assert "--state: unknown state 'pending'" in refused.stderr
    assert "delivered, deferred" in refused.stderr  # the words it takes

    # `status` for people: the message columns are named by the words, "pending" is gone.
    table = _ok(cli(env, "status", "--now", now))
    header = next(line for line in table.splitlines() if "wave" in line and "req" in line)
    assert "queued" in header
    assert "delivered" in header
    assert "pending" not in table
    assert " sent " not in header

    # The console: the wave's bars and the departments page.
    with running(runtime.http_app()) as client:
        client.follow_redirects = False
        assert sign_in(client, OPERATOR).status_code in (302, 303)
        wave = client.get("/waves/pilot/progress").text + client.get("/waves/pilot").text
        departments = client.get("/departments").text
        complete = client.get(f"/departments?name={HR}&show=complete").text
    people_bar = re.search(r'data-bar="people"[^>]*>', wave)
    assert people_bar, wave[:2000]
    for word in (PersonWord.COMPLETE, PersonWord.EMAILED, PersonWord.EXEMPT):
        assert f'data-{word.value}="{said[word]}"' in people_bar.group(0)
        assert word.words in html.unescape(wave)
    assert f'data-not_required="{said[PersonWord.NOT_REQUIRED]}"' in people_bar.group(0)
    assert f'data-delivered="{pilot["messages"]["delivered"]}"' in wave
    for page in (wave, departments, complete):
        assert "pending" not in page.lower()
    row = re.search(rf"<th><a [^>]*>{HR}</a></th>(.*?)</tr>", departments, re.S)
    assert row, departments[:3000]
    numbers = [int(n) for n in re.findall(r">(\d+)</", row.group(1))]
    # people, complete, not complete (due later), overdue, exempt or not required, unreachable
    assert numbers[1] == in_csv[PersonWord.COMPLETE]
    assert numbers[4] == in_csv[PersonWord.EXEMPT] + in_csv[PersonWord.NOT_REQUIRED]
    assert numbers[2] + numbers[3] == in_csv[PersonWord.EMAILED]
    listed_ids = set(re.findall(r'<a href="/people/([^"]+)">', complete))
    assert listed_ids == {r["id"] for r in rows if r["status"] == PersonWord.COMPLETE}
    assert stored.program.key in data["program"]["key"]

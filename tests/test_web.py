"""The completions endpoints on a real uvicorn server, signed by the standardwebhooks package."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import func, select
from standardwebhooks import Webhook
from starlette.applications import Starlette

from pshnotify.clock import FixedClock
from pshnotify.domain.errors import InputError
from pshnotify.runtime.wiring import Runtime
from pshnotify.services.campaign.roster import import_roster
from pshnotify.settings import Settings
from pshnotify.store.schema import completions, messages, webhook_receipts
from pshnotify.web import create_app, serve
from tests.conftest import PROGRAM_FILE
from tests.test_launch_and_send import PILOT
from tests.test_roster_import import HEADER, write

SECRET = "whsec_" + base64.b64encode(b"a test key of thirty-two bytes!!").decode()
LRS = ("lrs", "correct horse battery staple")
ACTIVITY = "https://learning.example.edu/xapi/activities/psh-2023-2024/option-{}"
COMPLETED = "http://adlnet.gov/expapi/verbs/completed"
DONE_AT = "2023-09-11T09:00:00-04:00"  # before the test clock's business instant


def program_with_activities(tmp_path: Path) -> Path:
    """The shipped program maps its options to these activity ids; the test relies on it."""
    text = PROGRAM_FILE.read_text()
    for key in "ABC":
        assert f'activity_ids = ["{ACTIVITY.format(key.lower())}"]' in text
    path = tmp_path / "program.toml"
    path.write_text(text)
    return path


@pytest.fixture
def web_runtime(settings: Settings, clock: FixedClock, tmp_path: Path) -> Iterator[Runtime]:
    configured = settings.model_copy(
        update={
            "program_file": program_with_activities(tmp_path),
            "webhook_secret": SecretStr(SECRET),
            "xapi_username": LRS[0],
            "xapi_password": SecretStr(LRS[1]),
        }
    )
    rt = Runtime(configured, clock)
    stored = rt.program(None)
    roster = write(tmp_path, [HEADER, *PILOT])
    import_roster(rt.engine, stored, roster, clock, actor="op")
    yield rt
    rt.engine.dispose()


@contextmanager
def running(app: Starlette) -> Iterator[httpx.Client]:
    """Serve the app with `serve` on a free loopback port in a thread of its own."""
    ready = threading.Event()
    state: dict[str, Any] = {}

    async def main() -> None:
        state["loop"], state["stop"] = asyncio.get_running_loop(), asyncio.Event()

        def listening(host: str, port: int) -> None:
            state["url"] = f"http://{host}:{port}"
            ready.set()

        await serve(app, "127.0.0.1", 0, state["stop"], on_listening=listening)

    def thread() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:  # surfaced by the assertion below
            state["error"] = exc
            ready.set()

    worker = threading.Thread(target=thread, name="uvicorn-test")
    worker.start()
    try:
        assert ready.wait(10), "the server did not start"
        assert "error" not in state, state.get("error")
        with httpx.Client(base_url=state["url"], timeout=10) as client:
            yield client
    finally:
        if "stop" in state:
            state["loop"].call_soon_threadsafe(state["stop"].set)
        worker.join(10)
    assert not worker.is_alive()
    assert "error" not in state, state.get("error")


def signed(
    payload: dict[str, Any] | str,
    *,
    msg_id: str | None = None,
    at: dt.datetime | None = None,
    secret: str = SECRET,
) -> tuple[bytes, dict[str, str]]:
    """A body and the headers a Standard Webhooks sender would send with it."""
    body = payload if isinstance(payload, str) else json.dumps(payload)
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    at = at or dt.datetime.now(dt.UTC)
    headers = {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg_id, at, body),
        "content-type": "application/json",
    }
    return body.encode(), headers


def completion(person: str, option: str = "B") -> dict[str, str]:
    return {"person": person, "option": option, "completed_at": DONE_AT}


def test_webhooks_are_verified_and_applied_once(web_runtime: Runtime) -> None:
    rt = web_runtime
    app = create_app(rt.engine, rt.clock, rt.settings, rt.program)
    with running(app) as client:

        def post(body: bytes, headers: dict[str, str]) -> httpx.Response:
            return client.post("/webhooks/completions", content=body, headers=headers)

        body, headers = signed(completion("ADA@example.edu"))
        good = post(body, headers)
        assert good.status_code == 200, good.text
        assert good.json() == {
            "outcome": "recorded",
            "person": "H1",
            "confirmation_queued": True,
            "cancelled_messages": 0,
        }
        replay = post(body, headers)
        assert replay.status_code == 409
        assert headers["webhook-id"] in replay.json()["error"]
        again = post(*signed(completion("ada@example.edu")))  # a new delivery, same completion
        assert (again.status_code, again.json()["outcome"]) == (200, "duplicate")

        other = "whsec_" + base64.b64encode(b"somebody else's key").decode()
        assert post(*signed(completion("H2"), secret=other)).status_code == 401
        body, headers = signed(completion("H2"))
        assert post(body.replace(b'"B"', b'"C"'), headers).status_code == 401
        assert post(body, {"content-type": "application/json"}).status_code == 401

        stale = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=6)
        old = post(*signed(completion("H2"), at=stale))
        assert (old.status_code, old.json()["error"]) == (
            400,
            "webhook-timestamp: too old (more than 5 minutes)",
        )
        ahead = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=6)
        assert post(*signed(completion("H2"), at=ahead)).status_code == 400

        bad_json = post(*signed("{"))
        assert (bad_json.status_code, bad_json.json()["error"]) == (
            400,
            "the body is not valid JSON",
        )
        unknown = post(*signed(completion("H2", option="Z")))
        assert unknown.status_code == 400
        assert unknown.json()["problems"][0].startswith("option: unknown option 'Z'")

        # Two signatures during a key rotation: one valid one is enough.
        body, headers = signed(completion("someone@example.edu"))
        headers["webhook-signature"] = "v1,Zm9yZ2Vk " + headers["webhook-signature"]
        rotated = post(body, headers)
        assert (rotated.status_code, rotated.json()["outcome"]) == (202, "unmatched")
    with rt.engine.connect() as conn:
        receipts = conn.scalar(select(func.count()).select_from(webhook_receipts))
        stored = conn.execute(
            select(completions.c.person_ref, completions.c.source).order_by(completions.c.id)
        ).all()
        confirmations = conn.scalars(
            select(messages.c.recipient_email).where(messages.c.kind == "confirmation")
        ).all()
    assert receipts == 3  # the accepted deliveries only
    assert [tuple(s) for s in stored] == [
        ("ADA@example.edu", "webhook"),
        ("someone@example.edu", "webhook"),
    ]
    assert confirmations == ["ada@example.edu"]


def _signed_kwargs(payload: dict[str, Any]) -> dict[str, Any]:
    body, headers = signed(payload)
    return {"content": body, "headers": headers}


def statement(person: str, option: str = "a", **extra: Any) -> dict[str, Any]:
    return {
        "actor": {"objectType": "Agent", "mbox": f"mailto:{person}"},
        "verb": {"id": COMPLETED, "display": {"en-US": "completed"}},
        "object": {"objectType": "Activity", "id": ACTIVITY.format(option)},
        "timestamp": DONE_AT,
        **extra,
    }


def test_xapi_statements_need_credentials_and_a_mapping(web_runtime: Runtime) -> None:
    rt = web_runtime
    app = create_app(rt.engine, rt.clock, rt.settings, rt.program)
    url = "/xapi/statements"
    with running(app) as client:
        anonymous = client.post(url, json=statement("ada@example.edu"))
        assert anonymous.status_code == 401
        assert anonymous.headers["www-authenticate"].startswith("Basic ")
        wrong = client.post(url, json=statement("ada@example.edu"), auth=(LRS[0], "guess"))
        assert wrong.status_code == 401

        first = str(uuid.uuid4())
        batch = [
            statement("ada@example.edu", id=first),
            statement("jose@example.edu", "d"),
            {
                **statement("grace@example.edu"),
                "verb": {"id": "http://adlnet.gov/expapi/verbs/attempted"},
            },
        ]
        refused = client.post(url, json=batch, auth=LRS)
        assert refused.status_code == 400
        problems = refused.json()["problems"]
        assert problems[0].startswith(
            f"statement[1].object.id: activity '{ACTIVITY.format('d')}' is not one of"
        )
        assert problems[1].startswith(f"statement[2].verb.id: expected {COMPLETED}")

        accepted = client.post(url, json=batch[0], auth=LRS)
        assert (accepted.status_code, accepted.json()) == (200, [first])
        assert accepted.headers["x-experience-api-version"] == "1.0.3"
        replay = client.post(url, json=batch[0], auth=LRS)
        assert replay.status_code == 409
        two = client.post(
            url, json=[statement("jose@example.edu", "c"), statement("x@y.edu")], auth=LRS
        )
        assert two.status_code == 200
        assert len(two.json()) == 2
    with rt.engine.connect() as conn:
        rows = conn.execute(
            select(completions.c.person_ref, completions.c.option, completions.c.source).order_by(
                completions.c.id
            )
        ).all()
    assert [tuple(r) for r in rows] == [
        ("ada@example.edu", "A", "xapi"),  # the refused batch left nothing behind
        ("jose@example.edu", "C", "xapi"),
        ("x@y.edu", "A", "xapi"),
    ]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # no SQL at all
def test_unconfigured_endpoints_say_what_to_set(settings: Settings, clock: FixedClock) -> None:
    rt = Runtime(settings, clock)
    try:
        app = create_app(rt.engine, rt.clock, rt.settings, rt.program)
        with running(app) as client:
            hook = client.post("/webhooks/completions", **_signed_kwargs(completion("H1")))
            assert hook.status_code == 503
            assert "PSHNOTIFY_WEBHOOK_SECRET" in hook.json()["error"]
            lrs = client.post("/xapi/statements", json=statement("ada@example.edu"), auth=LRS)
            assert lrs.status_code == 503
            assert "PSHNOTIFY_XAPI_USERNAME" in lrs.json()["error"]
            assert client.get("/healthz").json() == {"status": "ok"}
        broken = settings.model_copy(update={"webhook_secret": SecretStr("whsec_not base64!")})
        with pytest.raises(InputError, match="PSHNOTIFY_WEBHOOK_SECRET"):
            create_app(rt.engine, rt.clock, broken, rt.program)
    finally:
        rt.engine.dispose()

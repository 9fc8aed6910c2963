"""Random hostile text in every console form (issue 28): whatever an operator types or a
forged POST carries, the console answers with a page, a redirect or a 4xx that keeps what was
typed, never a 500; and whatever it accepted leaves every page answering afterwards."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pshnotify.runtime.wiring import Runtime
from tests.test_console import OPERATOR
from tests.test_console_http import console, console_rt, csrf, sign_in  # noqa: F401
from tests.test_hostile_properties import value

SQLITE_ONLY = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
FEW = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
# Each form and the fields it reads; the values come from the hostile strategy.
FORMS = {
    "/people/H1/extend": ("until", "note"),
    "/people/H2/exempt": ("reason",),
    "/people/H3/complete": ("option", "completed_on", "note"),
    "/waves/pilot/schedule": ("at",),
}
PAGES = ("/", "/waves/pilot", "/people/H1", "/people/H2", "/people/H3", "/audit")


def _clean(answer: httpx.Response) -> None:
    assert answer.status_code < 500, answer.text[:2000]
    assert answer.status_code in (200, 303, 400, 404, 409, 413), answer.status_code
    assert "Traceback" not in answer.text


@SQLITE_ONLY
def test_any_form_value_is_answered_without_a_500_and_breaks_no_page(
    console_rt: Runtime,  # noqa: F811
) -> None:
    with console(console_rt) as client:
        sign_in(client, OPERATOR)
        token = csrf(client, "/people/H1")

        @FEW
        @example(form="/people/H1/extend", values=["9999-12-31", "x"])
        @example(form="/people/H3/complete", values=["B", "0001-01-02", ""])
        @example(form="/waves/pilot/schedule", values=["2023-09-20T09:00+14:00"])
        @given(
            form=st.sampled_from(sorted(FORMS)),
            values=st.lists(value, min_size=3, max_size=3),
        )
        def post(form: str, values: list[str]) -> None:
            data: dict[str, Any] = dict(zip(FORMS[form], values, strict=False))
            data["csrf_token"] = token
            _clean(client.post(form, data=data))

        post()

        @FEW
        @given(q=value, name=value)
        def search(q: str, name: str) -> None:
            _clean(client.get("/people", params={"q": q}))
            _clean(client.get("/departments", params={"name": name}))
            _clean(client.get("/departments/report.csv", params={"name": name}))

        search()
        for page in PAGES:  # nothing accepted above broke a page
            assert client.get(page).status_code == 200, page

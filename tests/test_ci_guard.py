"""The suite's own rule (tests/ci.py): in CI, a test whose server or program is missing fails;
elsewhere it is skipped with the reason."""

from __future__ import annotations

import pytest

from tests.ci import in_ci, missing

pytestmark = pytest.mark.fast


@pytest.mark.parametrize("value", ["true", "TRUE", "True", "1", "yes", "Yes", " on "])
def test_the_usual_true_values_mean_ci(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("CI", value)
    assert in_ci()
    with pytest.raises(pytest.fail.Exception, match="required in CI and missing: no initdb"):
        missing("no initdb")


@pytest.mark.parametrize("value", [None, "", "false", "0", "no", "off"])
def test_elsewhere_a_missing_server_is_a_skip(
    monkeypatch: pytest.MonkeyPatch, value: str | None
) -> None:
    if value is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", value)
    assert not in_ci()
    with pytest.raises(pytest.skip.Exception, match="no initdb"):
        missing("no initdb")

"""Settings: environment variables with a clear error, and a password that never shows."""

from __future__ import annotations

import pytest

from pshnotify.domain.errors import InputError
from pshnotify.settings import load_settings

pytestmark = pytest.mark.fast  # no server: `make test-fast`


def test_defaults_need_no_setup(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    monkeypatch.chdir(str(tmp_path))
    settings = load_settings()
    assert settings.database_url.startswith("sqlite:///var/")
    # a campaign folder's files, where `pshnotify new DIR` writes them
    assert str(settings.program_file) == "program.toml"
    assert str(settings.templates_dir) == "templates/email"


def test_a_wrong_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PSHNOTIFY_SMTP_PORT", "70000")
    monkeypatch.setenv("PSHNOTIFY_MESSAGE_ID_DOMAIN", "<bad>")
    with pytest.raises(InputError) as caught:
        load_settings()
    text = str(caught.value)
    assert "PSHNOTIFY_SMTP_PORT" in text
    assert "PSHNOTIFY_MESSAGE_ID_DOMAIN" in text


def test_the_password_is_never_printed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PSHNOTIFY_SMTP_PASSWORD", "hunter2-secret")
    settings = load_settings()
    assert "hunter2-secret" not in repr(settings)
    assert "hunter2-secret" not in str(settings.safe_summary())
    assert settings.smtp_password is not None
    assert settings.smtp_password.get_secret_value() == "hunter2-secret"

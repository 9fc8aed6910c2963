"""Templates: strict, escaped, sandboxed, and checked before anything is sent."""

from __future__ import annotations

import dataclasses
import datetime as dt
import shutil
from email import policy
from email.parser import BytesParser
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from jinja2.exceptions import SecurityError, UndefinedError

from pshnotify.domain.errors import InputError
from pshnotify.mail.compose import Envelope, HeaderInjectionError, compose
from pshnotify.mail.kinds import Recipient, launch_context, sample_contexts
from pshnotify.mail.render import Rendered, Templates
from tests.conftest import TEMPLATES
from tests.test_program import SEED

pytestmark = pytest.mark.fast  # no server: `make test-fast`


def copy_templates(tmp_path: Path) -> Path:
    target = tmp_path / "email"
    shutil.copytree(TEMPLATES, target)
    return target


def test_the_shipped_templates_pass_the_check() -> None:
    Templates(TEMPLATES).check(sample_contexts(SEED))


def test_a_misspelt_variable_stops_the_start_naming_the_file(tmp_path: Path) -> None:
    directory = copy_templates(tmp_path)
    body = directory / "launch" / "body.txt"
    body.write_text(body.read_text() + "\n{{ persn.name }}\n")
    with pytest.raises(InputError) as caught:
        Templates(directory).check(sample_contexts(SEED))
    assert str(directory / "launch" / "body.txt") in str(caught.value)
    assert "persn" in str(caught.value)


def test_html_is_autoescaped_and_text_is_not() -> None:
    person = Recipient("X1", "<script>alert(1)</script> O'Brien & Co", "x@example.org", "HR")
    rendered = Templates(TEMPLATES).render("launch", launch_context(SEED, "pilot", person))
    assert "<script>" not in rendered.html
    assert "&lt;script&gt;" in rendered.html
    assert "<script>alert(1)</script> O'Brien & Co" in rendered.text


def test_templates_run_in_a_sandbox(tmp_path: Path) -> None:
    directory = copy_templates(tmp_path)
    (directory / "launch" / "body.txt").write_text(
        "{{ person.__class__.__mro__[1].__subclasses__() }}"
    )
    with pytest.raises(SecurityError):
        Templates(directory).render(
            "launch", launch_context(SEED, "pilot", Recipient("X", "N", "n@example.org", "D"))
        )


def test_dotted_names_on_the_context_keep_jinjas_meaning(tmp_path: Path) -> None:
    """The fast lookup of `a.b` on a dict must not open what the sandbox closes, nor change
    what a name means."""
    directory = copy_templates(tmp_path)
    body = directory / "launch" / "body.txt"
    context = launch_context(SEED, "pilot", Recipient("X", "Ann Lee", "n@example.org", "D"))

    def render(source: str) -> str:
        body.write_text(source)
        return Templates(directory).render("launch", context).text

    assert render("{{ person.name }}|{{ person['email'] }}") == "Ann Lee|n@example.org"
    # dict's own names are still dict's: `items` is the method, not a key
    assert render("{{ person.items() | list | length }}") == "3"
    with pytest.raises(SecurityError):  # a method that changes the dict
        render("{{ person.update({'name': 'x'}) }}")
    with pytest.raises(SecurityError):  # nor the program's parts, which messages share
        render("{{ options.append(1) }}")
    with pytest.raises(SecurityError):
        render("{{ program.update({'name': 'x'}) }}")
    assert render("{{ options | length }} {{ program.name }}") == f"3 {SEED.program.name}"
    with pytest.raises(UndefinedError):  # a misspelt key is an error, not an empty string
        render("{{ person.nmae }}")


def test_an_edited_template_is_seen_by_the_next_command_and_by_a_running_sender(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = copy_templates(tmp_path)
    subject = directory / "launch" / "subject.txt"
    context = launch_context(SEED, "pilot", Recipient("X", "N", "n@example.org", "D"))
    running = Templates(directory)
    first = running.render("launch", context).subject
    subject.write_text("Edited: {{ program.name }}\n")
    assert Templates(directory).render("launch", context).subject.startswith("Edited: ")
    subject.write_text("Edited again: {{ program.name }}, a longer line\n")
    monkeypatch.setattr("pshnotify.mail.render.RELOAD_CHECK_SECONDS", 0.0)
    again = running.render("launch", context).subject
    assert again.startswith("Edited again: ")
    assert again != first


def _envelope(date: dt.datetime) -> Envelope:
    return Envelope(
        from_name="PSH",
        from_address="psh@example.edu",
        reply_to=None,
        to_name="Ada",
        to_address="ada@example.edu",
        message_id="<m1@test.invalid>",
        date=date,
        program="p",
        wave="pilot",
        kind="launch",
    )


def test_the_date_header_keeps_each_programs_zone() -> None:
    instant = dt.datetime(2023, 9, 11, 14, 0, tzinfo=dt.UTC)
    content = Rendered("Hi", "text", "<p>html</p>")
    ny = compose(_envelope(instant.astimezone(ZoneInfo("America/New_York"))), content)
    london = compose(_envelope(instant.astimezone(ZoneInfo("Europe/London"))), content)
    assert b"Date: Mon, 11 Sep 2023 10:00:00 -0400" in ny
    assert b"Date: Mon, 11 Sep 2023 15:00:00 +0100" in london


def test_plain_ascii_goes_as_is_and_anything_else_is_encoded() -> None:
    date = dt.datetime(2023, 9, 11, 14, 0, tzinfo=dt.UTC)
    plain = compose(_envelope(date), Rendered("Hi", "Dear Ada,\n.\nBye", "<p>x</p>"))
    assert b"Content-Transfer-Encoding: 7bit" in plain
    for text in ("Zo\u00eb", "form\x0cfeed", "x" * 1200, "--=_psh_0123456789abcdef01234567"):
        raw = compose(_envelope(date), Rendered("Hi", text, "<p>x</p>"))
        part = BytesParser(policy=policy.default).parsebytes(raw).get_body(("plain",))
        assert part is not None
        assert part["Content-Transfer-Encoding"] == "quoted-printable", text[:20]
        assert part.get_content().rstrip("\r\n") == text
        assert all(len(line) <= 998 for line in raw.split(b"\r\n"))


def test_no_value_can_add_a_header() -> None:
    clean = _envelope(SEED.opens_at(SEED.waves[0].opens))
    envelope = dataclasses.replace(clean, to_name="Eve\r\nBcc: x@example.org")
    with pytest.raises(HeaderInjectionError):
        compose(envelope, Rendered("Subject", "text", "<p>html</p>"))
    with pytest.raises(HeaderInjectionError):
        compose(clean, Rendered("Hi\nBcc: x@example.org", "text", "<p>html</p>"))


def test_composed_messages_parse_back_intact() -> None:
    import email
    import email.policy

    from pshnotify.mail.kinds import Attachment

    envelope = Envelope(
        from_name="PSH Training",
        from_address="psh@example.edu",
        reply_to="help@example.edu",
        to_name='O\'Brien, "Zoë" Ångström-Łukasz',
        to_address="z@example.org",
        message_id="<abc@x.invalid>",
        date=SEED.opens_at(SEED.waves[0].opens),
        program="psh-2023-2024",
        wave="pilot",
        kind="launch",
    )
    subject = "Rappel : formation obligatoire à compléter avant le vendredi 6 octobre " * 2
    html = "<p>" + "très long paragraphe " * 200 + "</p>\n.\n<p>a line that is only a dot</p>"
    text = "Line one\n.\nTabs\tand trailing spaces   \nZoë\n" + "x" * 1200
    data = compose(
        envelope,
        Rendered(subject.strip(), text, html),
        [Attachment("status.csv", "text", "csv", "id,name\r\n1,Zoë\r\n".encode())],
    )
    assert max(len(line) for line in data.split(b"\r\n")) <= 998
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert msg["To"].addresses[0].display_name == 'O\'Brien, "Zoë" Ångström-Łukasz'
    assert msg["To"].addresses[0].addr_spec == "z@example.org"
    assert msg["Subject"] == subject.strip()
    assert msg["Message-ID"] == "<abc@x.invalid>"
    assert msg.get_content_type() == "multipart/mixed"
    assert msg.get_body(("plain",)).get_content().replace("\r\n", "\n") == text
    assert msg.get_body(("html",)).get_content().replace("\r\n", "\n") == html
    (attachment,) = list(msg.iter_attachments())
    assert attachment.get_filename() == "status.csv"
    assert attachment.get_content().replace("\r\n", "\n") == "id,name\n1,Zoë\n"

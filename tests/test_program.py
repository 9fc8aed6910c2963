"""The program file: the shipped seed program's rules, and clear errors for bad files."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from pshnotify.domain.errors import InputError
from pshnotify.domain.program import load_program, parse_program
from tests.conftest import PROGRAM_FILE

pytestmark = pytest.mark.fast  # no server: `make test-fast`

SEED, SEED_TEXT = load_program(PROGRAM_FILE)


def person(**fields: object) -> dict[str, object]:
    base: dict[str, object] = {
        "department": "Office of the Provost",
        "role": "staff",
        "paid": True,
        "start_date": dt.date(2015, 3, 1),
    }
    return {**base, **fields}


@pytest.mark.parametrize(
    ("fields", "status", "reason"),
    [
        ({"affiliation": "Lincoln Laboratory", "role": "faculty"}, "exempt", "exempt-affiliate"),
        ({"role": "graduate_student", "program_year": 3}, "required", "required"),
        ({"role": "graduate_student", "program_year": 6}, "required", "required"),
        ({"role": "graduate_student", "program_year": 2}, "exempt", "not-in-scope"),
        ({"role": "graduate_student", "program_year": None}, "exempt", "not-in-scope"),
        ({"role": "fellow", "paid": False}, "required", "required"),
        ({"role": "fellow", "paid": True}, "required", "required"),
        ({"role": "staff", "paid": False}, "exempt", "exempt-unpaid"),
        ({"start_date": dt.date(2023, 7, 1)}, "encouraged", "exempt-new-hire"),
        ({"start_date": dt.date(2023, 6, 30)}, "required", "required"),
        ({"start_date": None}, "required", "required"),
        ({"role": "faculty", "department": "School of Science"}, "required", "required"),
    ],
)
def test_every_eligibility_rule_gives_its_reason(
    fields: dict[str, object], status: str, reason: str
) -> None:
    rule = SEED.assess(person(**fields))
    assert rule is not None
    assert (rule.status, rule.reason) == (status, reason)


@pytest.mark.parametrize(
    ("fields", "wave"),
    [
        ({"role": "graduate_student", "department": "Human Resources"}, "grad"),
        ({"department": "Human Resources"}, "pilot"),
        ({"department": "Information Systems and Technology"}, "pilot"),
        ({"department": "Office of the Vice President for Research"}, "vpr"),
        ({"department": "School of Engineering"}, "schools"),
        ({"department": "Sloan School of Management"}, "admin"),  # does not match "School of *"
        ({"role": "faculty", "department": "Office of the Provost"}, "schools"),
        ({"department": "Office of the Provost"}, "admin"),
        ({"department": "Human Resources", "wave": "admin"}, "admin"),  # the roster column wins
    ],
)
def test_membership_rules_place_people_in_waves(fields: dict[str, object], wave: str) -> None:
    assert SEED.assign_wave(person(**fields)) == wave


def test_seed_waves_match_the_published_schedule() -> None:
    windows = {w.key: (w.opens.isoformat(), w.closes.isoformat()) for w in SEED.waves}
    assert windows == {
        "pilot": ("2023-09-11", "2023-10-06"),
        "grad": ("2023-10-25", "2023-12-01"),
        "vpr": ("2023-11-20", "2023-12-20"),
        "schools": ("2024-01-10", "2024-02-23"),
        "admin": ("2024-02-26", "2024-03-29"),
    }
    assert SEED.program.timezone == "America/New_York"
    # The last day is inclusive: the window closes at local midnight after it.
    assert SEED.closes_at(dt.date(2023, 10, 6)).isoformat() == "2023-10-07T00:00:00-04:00"


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            'timezone = "America/New_York"',
            'timezone = "Mars/Olympus"',
            "cfg.toml: program.timezone: unknown time zone 'Mars/Olympus'",
        ),
        (
            'wave = "vpr"',
            'wave = "vpx"',
            '[[membership]] #3, wave = "vpx": unknown wave; expected one of admin, grad, pilot,',
        ),
        (
            "program_year = { ge = 3 }",
            'program_year = { ge = "3" }',
            "[[eligibility]] #2, when.program_year.ge: expected an integer or a date; got '3'",
        ),
        (
            'affiliation = "Lincoln Laboratory"',
            'afiliation = "Lincoln Laboratory"',
            "[[eligibility]] #1: unknown roster field 'afiliation'; expected one of admin_officer,",
        ),
        (
            "closes = 2023-10-06",
            "closes = 2023-09-01",
            "[[waves]] #1: closes (2023-09-01) is before opens",
        ),
        ('status = "encouraged"', 'status = "maybe"', "[[eligibility]] #6, status: "),
        ("[cadence]", "[cadense]", "cadense: unknown key"),
        ('key = "psh-2023-2024"', 'key = "psh 2023"', "program.key"),
        ("[[options]]", "[[options]", "not valid TOML"),
        (
            "{ from = 2023-11-23, to = 2023-11-24 }",
            "{ from = 2023-11-24, to = 2023-11-23 }",
            "sending.closed_dates #2: 'to' (2023-11-23) is before 'from' (2023-11-24)",
        ),
        (
            "2023-11-10,",
            '"2023-11-10",',
            "sending.closed_dates #1: expected a date (2023-11-23, unquoted) or an inclusive",
        ),
        (
            "{ from = 2023-12-25, to = 2024-01-01 }",
            "{ from = 2023-12-25, until = 2024-01-01 }",
            "sending.closed_dates #3, until: unknown key",
        ),
        (
            "{ from = 2023-12-25, to = 2024-01-01 }",
            "{ from = 2023-12-25, to = 2025-01-01 }",
            "sending.closed_dates #3: 2023-12-25 to 2025-01-01 is longer than a year",
        ),
    ],
)
def test_a_bad_program_file_names_the_file_and_the_key(old: str, new: str, expected: str) -> None:
    assert old in SEED_TEXT
    with pytest.raises(InputError) as caught:
        parse_program(SEED_TEXT.replace(old, new, 1), "cfg.toml")
    text = str(caught.value)
    assert text.startswith("cfg.toml: ")
    assert expected in text


def test_an_unreadable_program_file_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot read the program file"):
        load_program(tmp_path / "missing.toml")


def test_conditions_cover_lists_globs_comparisons_and_empty() -> None:
    extra = (
        SEED_TEXT
        + """
[roster]
extra_columns = { grade = "integer" }
"""
    )
    text = extra.replace(
        'when = { affiliation = "Lincoln Laboratory" }',
        "when = { affiliation = { empty = false }, grade = { lt = 5 } }",
    )
    program = parse_program(text, "x.toml")
    assert (
        program.assess(person(affiliation="Lincoln Laboratory", grade=4)).reason
        == "exempt-affiliate"
    )
    assert program.assess(person(affiliation="", grade=4)).reason == "required"
    assert program.assess(person(affiliation="X", grade=5)).reason == "required"


def test_the_shipped_program_closes_on_the_institute_holidays_in_its_windows() -> None:
    closed = SEED.sending.closed
    for day in (
        dt.date(2023, 11, 10),  # Veterans Day (observed), in the grad window
        dt.date(2023, 11, 23),  # Thanksgiving, grad and vpr
        dt.date(2023, 11, 24),
        dt.date(2023, 12, 27),  # winter break, a range
        dt.date(2024, 1, 15),  # Martin Luther King Jr. Day, schools
        dt.date(2024, 2, 19),  # Presidents Day, schools
    ):
        assert day in closed
        assert not SEED.sending.is_working_day(day)
    assert dt.date(2023, 11, 22) not in closed
    assert SEED.sending.is_working_day(dt.date(2023, 11, 22))
    assert SEED.sending.reports_on(dt.date(2023, 11, 23))  # the nightly report still runs
    quiet = parse_program(
        SEED_TEXT.replace("reports_on_closed_dates = true", "reports_on_closed_dates = false"), "x"
    )
    assert not quiet.sending.reports_on(dt.date(2023, 11, 23))
    assert quiet.sending.reports_on(dt.date(2023, 11, 22))

"""Roster import: good files land whole, bad files are refused whole with FILE:LINE errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from pshnotify.domain.errors import InputError
from pshnotify.runtime.wiring import Runtime
from pshnotify.services.campaign.roster import import_roster
from pshnotify.store.schema import audit_log, enrollments, people

pytestmark = pytest.mark.fast  # no server: `make test-fast`

HEADER = "id,email,name,department,role,paid,start_date,program_year,affiliation,admin_officer,wave"
GOOD = [
    "P1,ada@example.edu,Ada Lovelace,Human Resources,staff,yes,2010-01-04,,,ao-hr@example.edu,",
    "P2,jose@example.edu,José Núñez,School of Science,faculty,,2001-09-01,,,ao-sci@example.edu,",
    "P3,zoe@example.edu,Zoë Brontë,School of Science,graduate_student,,,4,,ao-sci@example.edu,",
    "P4,li@example.edu,Li Wei,School of Science,graduate_student,,,1,,ao-sci@example.edu,",
    "P5,ll@example.edu,Lin Lab,Office of the Provost,staff,,2012-01-01,,Lincoln Laboratory,,",
    "P6,new@example.edu,New Hire,Office of the Provost,staff,TRUE,2023-08-01,,,,",
    "P7,unpaid@example.edu,Un Paid,Office of the Provost,staff,no,2012-01-01,,,,",
    "P8,fellow@example.edu,Fel Low,Office of the Provost,fellow,0,2023-08-01,,,,",
]


def write(tmp_path: Path, lines: list[str], name: str = "roster.csv", bom: bool = False) -> Path:
    path = tmp_path / name
    data = "\r\n".join(lines) + "\r\n"
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + data.encode("utf-8"))
    return path


def snapshot(engine: Engine) -> tuple[int, int, int]:
    with engine.connect() as conn:
        return tuple(
            int(conn.scalar(select(func.count()).select_from(t)) or 0)  # type: ignore[return-value]
            for t in (people, enrollments, audit_log)
        )


def test_a_good_roster_lands_with_waves_and_reasons(runtime: Runtime, tmp_path: Path) -> None:
    stored = runtime.program(None)
    report = import_roster(
        runtime.engine,
        stored,
        write(tmp_path, [HEADER, *GOOD], bom=True),
        runtime.clock,
        actor="op",
    )
    assert (report.rows, report.added) == (8, 8)
    with runtime.engine.connect() as conn:
        rows = conn.execute(
            select(
                people.c.external_id,
                people.c.name,
                enrollments.c.wave_key,
                enrollments.c.status,
                enrollments.c.reason,
            )
            .join(enrollments, enrollments.c.person_id == people.c.id)
            .order_by(people.c.external_id)
        ).all()
    assert [tuple(r) for r in rows] == [
        ("P1", "Ada Lovelace", "pilot", "required", "required"),
        ("P2", "José Núñez", "schools", "required", "required"),
        ("P3", "Zoë Brontë", "grad", "required", "required"),
        ("P4", "Li Wei", "grad", "exempt", "not-in-scope"),
        ("P5", "Lin Lab", "admin", "exempt", "exempt-affiliate"),
        ("P6", "New Hire", "admin", "encouraged", "exempt-new-hire"),
        ("P7", "Un Paid", "admin", "exempt", "exempt-unpaid"),
        ("P8", "Fel Low", "admin", "required", "required"),
    ]


def test_reimport_updates_by_id_and_matches_email_without_case(
    runtime: Runtime, tmp_path: Path
) -> None:
    stored = runtime.program(None)
    import_roster(
        runtime.engine, stored, write(tmp_path, [HEADER, *GOOD]), runtime.clock, actor="op"
    )
    changed = [
        GOOD[0]
        .replace("ada@example.edu", "ADA@Example.edu")
        .replace("Human Resources", "School of Engineering"),
        *GOOD[1:],
    ]
    report = import_roster(
        runtime.engine,
        stored,
        write(tmp_path, [HEADER, *changed], "r2.csv"),
        runtime.clock,
        actor="op",
    )
    assert (report.added, report.updated, report.unchanged) == (0, 1, 7)
    with runtime.engine.connect() as conn:
        row = conn.execute(
            select(people.c.email_key, enrollments.c.wave_key)
            .join(enrollments, enrollments.c.person_id == people.c.id)
            .where(people.c.external_id == "P1")
        ).one()
        assert conn.scalar(select(func.count()).select_from(people)) == 8
    assert tuple(row) == ("ada@example.edu", "schools")


def test_each_person_keeps_their_own_time_zone_and_an_empty_cell_means_the_programs(
    runtime: Runtime, tmp_path: Path
) -> None:
    stored = runtime.program(None)
    lines = [
        HEADER + ",timezone",
        GOOD[0] + ",Asia/Singapore",
        GOOD[1] + ",Australia/Sydney",
        *(g + "," for g in GOOD[2:]),
    ]
    import_roster(runtime.engine, stored, write(tmp_path, lines), runtime.clock, actor="op")
    moved = [GOOD[0] + ",Europe/Berlin", *(g + "," for g in GOOD[1:])]
    report = import_roster(
        runtime.engine,
        stored,
        write(tmp_path, [HEADER + ",timezone", *moved], "r2.csv"),
        runtime.clock,
        actor="op",
    )
    assert (report.updated, report.unchanged) == (2, 6)  # P1 moved, P2's zone now empty
    with runtime.engine.connect() as conn:
        zones = dict(conn.execute(select(people.c.external_id, people.c.timezone)).all())
    assert zones == {"P1": "Europe/Berlin", **{f"P{n}": None for n in range(2, 9)}}


def test_dry_run_counts_and_changes_nothing(runtime: Runtime, tmp_path: Path) -> None:
    stored = runtime.program(None)
    before = snapshot(runtime.engine)
    report = import_roster(
        runtime.engine,
        stored,
        write(tmp_path, [HEADER, *GOOD]),
        runtime.clock,
        actor="op",
        dry_run=True,
    )
    assert report.added == 8
    assert snapshot(runtime.engine) == before


BAD_CASES = [
    (
        "unknown column",
        [HEADER + ",shoe_size", *(g + ",42" for g in GOOD)],
        ["roster.csv:1: shoe_size: unknown column"],
    ),
    (
        "missing column",
        ["id,email,name,department", "P1,a@example.edu,A,HR"],
        ["roster.csv:1: role: required column is missing"],
    ),
    (
        "invalid address",
        [HEADER, *GOOD[:2], GOOD[2].replace("zoe@example.edu", "zoe@@x")],
        ["roster.csv:4: email: invalid address 'zoe@@x'"],
    ),
    (
        "duplicate id",
        [HEADER, *GOOD, GOOD[0].replace("ada@", "ada2@")],
        ["roster.csv:10: id: duplicate id (first on line 2)"],
    ),
    (
        "duplicate email in another case",
        [HEADER, *GOOD, GOOD[1].replace("P2,jose", "P9,JOSE")],
        ["roster.csv:10: email: duplicate email (first on line 3)"],
    ),
    (
        "bad date",
        [HEADER, GOOD[0].replace("2010-01-04", "04/01/2010"), *GOOD[1:]],
        ["roster.csv:2: start_date: expected a date as YYYY-MM-DD, got '04/01/2010'"],
    ),
    (
        "bad number",
        [HEADER, *GOOD[:2], GOOD[2].replace(",4,", ",four,")],
        ["roster.csv:4: program_year: expected a whole number, got 'four'"],
    ),
    (
        "bad boolean",
        [HEADER, GOOD[0].replace(",yes,", ",maybe,"), *GOOD[1:]],
        ["roster.csv:2: paid: expected true/false/yes/no/1/0, got 'maybe'"],
    ),
    (
        "unknown wave",
        [HEADER, *GOOD[:3], GOOD[3] + "vp"],
        ["roster.csv:5: wave: unknown wave 'vp'"],
    ),
    (
        "line break in a quoted field",
        [
            HEADER,
            GOOD[0],
            'P2,jose@example.edu,"José',
            'Núñez",School of Science,faculty,,,,,,',
            *GOOD[2:],
        ],
        ["roster.csv:3: name: contains a line break or control character"],
    ),
    (
        "header injection",
        [HEADER, *GOOD[:4], 'P9,eve@example.edu,"Eve\r\nBcc: x@example.org",HR,staff,,,,,,'],
        ["roster.csv:6: name: contains a line break or control character"],
    ),
    (
        "control character",
        [HEADER, GOOD[0].replace("Ada Lovelace", "Ada\x07Lovelace"), *GOOD[1:]],
        ["roster.csv:2: name: contains a line break or control character"],
    ),
    (
        "empty required value",
        [HEADER, GOOD[0].replace("P1,", ",", 1), *GOOD[1:]],
        ["roster.csv:2: id: is empty; a value is required"],
    ),
    (
        "unknown time zone",
        [HEADER + ",timezone", *(g + "," for g in GOOD[:2]), GOOD[2] + ",Asia/Singapur"],
        ["roster.csv:4: timezone: unknown time zone 'Asia/Singapur' (expected an IANA name like"],
    ),
    (
        "time zone in the wrong case, or a path",
        [
            HEADER + ",timezone",
            GOOD[0] + ",europe/berlin",
            GOOD[1] + ",../../../etc/passwd",
            *(g + "," for g in GOOD[2:]),
        ],
        [
            "roster.csv:2: timezone: unknown time zone 'europe/berlin' (did you mean "
            "'Europe/Berlin'?)",
            "roster.csv:3: timezone: unknown time zone '../../../etc/passwd'",
        ],
    ),
    (
        "wrong field count",
        [HEADER, *GOOD[:1], "P9,x@example.edu,X"],
        ["roster.csv:3: (row): has 3 fields, the header has 11"],
    ),
]


@pytest.mark.parametrize(("case", "lines", "expected"), BAD_CASES, ids=[c[0] for c in BAD_CASES])
def test_a_bad_roster_is_refused_whole_and_changes_nothing(
    runtime: Runtime, tmp_path: Path, case: str, lines: list[str], expected: list[str]
) -> None:
    stored = runtime.program(None)
    import_roster(
        runtime.engine,
        stored,
        write(tmp_path, [HEADER, *GOOD], "first.csv"),
        runtime.clock,
        actor="op",
    )
    before = snapshot(runtime.engine)
    path = write(tmp_path, lines)
    with pytest.raises(InputError) as caught:
        import_roster(runtime.engine, stored, path, runtime.clock, actor="op")
    problems = [p.replace(str(tmp_path) + "/", "") for p in caught.value.problems]
    for want in expected:
        assert any(p.startswith(want) for p in problems), (want, problems)
    assert snapshot(runtime.engine) == before


def test_an_email_owned_by_someone_not_in_the_file_is_refused(
    runtime: Runtime, tmp_path: Path
) -> None:
    stored = runtime.program(None)
    import_roster(
        runtime.engine, stored, write(tmp_path, [HEADER, *GOOD]), runtime.clock, actor="op"
    )
    taken = "P99,Ada@example.edu,Other Ada,HR,staff,,,,,,"
    with pytest.raises(InputError, match=r"r2.csv:2: email: .* already belongs to person P1"):
        import_roster(
            runtime.engine,
            stored,
            write(tmp_path, [HEADER, taken], "r2.csv"),
            runtime.clock,
            actor="op",
            merge=True,
        )


def test_a_full_import_marks_the_absent_as_removed_and_merge_does_not(
    runtime: Runtime, tmp_path: Path
) -> None:
    stored = runtime.program(None)
    import_roster(
        runtime.engine, stored, write(tmp_path, [HEADER, *GOOD]), runtime.clock, actor="op"
    )
    merged = import_roster(
        runtime.engine,
        stored,
        write(tmp_path, [HEADER, GOOD[0]], "m.csv"),
        runtime.clock,
        actor="op",
        merge=True,
    )
    assert merged.removed == 0
    full = import_roster(
        runtime.engine,
        stored,
        write(tmp_path, [HEADER, GOOD[0]], "f.csv"),
        runtime.clock,
        actor="op",
    )
    assert full.removed == 7
    with runtime.engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(people)) == 8  # never deleted

"""A generated roster that exercises every wave and every eligibility rule of the seed program.

Deterministic for a given seed, so demos, tests and benchmarks see the same people.
"""

from __future__ import annotations

import csv
import datetime as dt
import os
import random
import re
import unicodedata
from pathlib import Path

DEPARTMENTS = (
    "Human Resources",
    "Information Systems and Technology",
    "Office of the Vice President for Research",
    "School of Science",
    "School of Engineering",
    "School of Architecture and Planning",
    "School of Humanities, Arts, and Social Sciences",
    "Sloan School of Management",
    "Office of the Provost",
    "Department of Facilities",
    "Division of Student Life",
)
FIRST = (
    "Ada",
    "José",
    "Zoë",
    "Łukasz",
    "Amara",
    "Chen",
    "Priya",
    "Søren",
    "Fatima",
    "Noah",
    "Mei",
    "Olu",
    "Inés",
    "Grace",
    "Tomás",
    "Yuki",
    "Hannah",
    "Omar",
    "Leila",
    "Björn",
)
LAST = (
    "Lovelace",
    "Núñez",
    "Brontë",
    "Kowalski",
    "Okafor",
    "Wei",
    "Raman",
    "Kierkegaard",
    "Haddad",
    "Smith",
    "Li",
    "Adeyemi",
    "García",
    "Hopper",
    "O'Brien",
    "Tanaka",
    "Müller",
    "Farouk",
    "Nasser",
    "Ångström",
)
COLUMNS = (
    "id",
    "email",
    "name",
    "department",
    "role",
    "paid",
    "start_date",
    "program_year",
    "affiliation",
    "admin_officer",
    "wave",
)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


# Letters that do not decompose into a base letter and a mark, spelt as people spell them.
_SPELLED = str.maketrans({"ø": "o", "Ø": "O", "ł": "l", "Ł": "L", "ß": "ss", "æ": "ae", "'": ""})
_GERMAN = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue", "Ä": "Ae", "Ö": "Oe", "Ü": "Ue"})


def _ascii(text: str, german: bool = False) -> str:
    """An address's letters for a name: Müller -> mueller, Brontë -> bronte, Łukasz -> lukasz,
    O'Brien -> obrien; never a dropped or wrong letter."""
    if german:
        text = text.translate(_GERMAN)
    decomposed = unicodedata.normalize("NFKD", text.translate(_SPELLED))
    plain = "".join(c for c in decomposed if not unicodedata.combining(c))
    return plain.encode("ascii", "ignore").decode().lower()


def sample_people(count: int, seed: int = 1) -> list[dict[str, str]]:
    rng = random.Random(seed)
    rows = []
    for i in range(1, count + 1):
        first, last = rng.choice(FIRST), rng.choice(LAST)
        dept = DEPARTMENTS[i % len(DEPARTMENTS)]
        role = rng.choices(("staff", "faculty", "graduate_student", "fellow"), (55, 20, 20, 5))[0]
        year = str(rng.randint(1, 6)) if role == "graduate_student" else ""
        affiliation = "Lincoln Laboratory" if rng.random() < 0.04 else ""
        paid = "no" if rng.random() < 0.06 else rng.choice(("yes", "true", ""))
        if rng.random() < 0.08:  # onboarded this cycle: encouraged, not required
            start = dt.date(2023, 7, 1) + dt.timedelta(days=rng.randint(0, 120))
        else:
            start = dt.date(2005, 1, 1) + dt.timedelta(days=rng.randint(0, 6750))
        rows.append(
            {
                "id": f"E{i:06d}",
                "email": f"{_ascii(first)}.{_ascii(last, german=True)}.{i}@example.edu",
                "name": f"{first} {last}",
                "department": dept,
                "role": role,
                "paid": paid,
                "start_date": start.isoformat() if role != "graduate_student" else "",
                "program_year": year,
                "affiliation": affiliation,
                "admin_officer": f"ao-{_slug(dept)}@example.edu",  # 48 characters at most
                "wave": "",
            }
        )
    return rows


def write_sample_roster(path: Path, count: int, seed: int = 1) -> int:
    rows = sample_people(count, seed)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    # A roster is personal data, sample or not: readable by its owner only.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return len(rows)

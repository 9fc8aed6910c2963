"""an index of people by their officer's address without case, for the officers' reports

Revision ID: 0019_officer_lower
Revises: 0018
Create Date: 2026-12-06

A nightly report reads its officer's people by `lower(admin_officer)`, several times a
report: without an index each read was a scan of the roster, 200 officers times 100,000
people (bench/season.py's nightly reports). An index on the same expression answers it on
SQLite and PostgreSQL alike.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0019_officer_lower"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_people_admin_officer_lower", "people", [sa.text("lower(admin_officer)")])


def downgrade() -> None:
    op.drop_index("ix_people_admin_officer_lower", table_name="people")

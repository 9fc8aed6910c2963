"""an index of people by department, for the console's department pages and viewers' scope

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-01

A viewer's scope and a department's list were a lower() comparison over every person; the
console now looks up the roster's spellings and asks for them exactly, which this answers.
"""

from __future__ import annotations

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(op.f("ix_people_department"), "people", ["department"])


def downgrade() -> None:
    op.drop_index(op.f("ix_people_department"), table_name="people")

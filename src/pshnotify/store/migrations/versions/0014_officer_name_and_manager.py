"""people: the officer's name (admin_officer_name) and the manager's address (manager_email)

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-01

Optional roster columns: the officer's report greets them by name, and escalations go to the
person's manager where the roster names one.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("people", sa.Column("admin_officer_name", sa.Text()))
    op.add_column("people", sa.Column("manager_email", sa.Text()))


def downgrade() -> None:
    with op.batch_alter_table("people") as batch:
        batch.drop_column("manager_email")
        batch.drop_column("admin_officer_name")

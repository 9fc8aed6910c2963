"""people keep their own time zone (the roster's optional `timezone` column)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01

Working hours and the 09:00 of each reminder are computed in the person's zone; NULL means
the program's zone, which is what everyone had before this column.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("people", sa.Column("timezone", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("people") as batch:
        batch.drop_column("timezone")

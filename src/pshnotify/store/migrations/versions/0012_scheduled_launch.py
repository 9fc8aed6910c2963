"""a wave's scheduled launch (launch WAVE --at)

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("waves") as batch:
        batch.add_column(sa.Column("launch_at", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("launch_at_by", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("waves") as batch:
        batch.drop_column("launch_at_by")
        batch.drop_column("launch_at")

"""completions remember whether they may be confirmed by email (--no-confirmations)

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-25

An unmatched completion imported with --no-confirmations used to send a confirmation when a
later roster import matched it: the flag lived only as long as the import.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "completions",
        sa.Column("confirm", sa.Boolean(), server_default=sa.text("true"), nullable=False),
    )


def downgrade() -> None:
    with op.batch_alter_table("completions") as batch:
        batch.drop_column("confirm")

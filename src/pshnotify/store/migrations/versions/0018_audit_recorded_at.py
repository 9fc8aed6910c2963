"""audit_log: when each row was really written

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-06

`at` is the action's own instant, which a rehearsal (`--now`) sets to another day; the
audit page shows the real time it happened beside it. Rows written before this have none
and show `at` alone.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("audit_log", sa.Column("recorded_at", sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("audit_log") as batch:
        batch.drop_column("recorded_at")

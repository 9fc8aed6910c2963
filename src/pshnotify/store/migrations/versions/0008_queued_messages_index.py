"""an index of the queued messages alone, in id order, for the claim

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-25

Right after a launch almost every message is queued, and PostgreSQL's statistics say so. The
planner then took the primary key as the cheapest way to the first 200 queued ids, and each
claim stepped over every message already sent: 50,000 rows and 7.8 ms a batch half-way through
a 100,000 drain, against 0.6 ms from this index, whose rows are exactly the queued ones.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_QUEUED = sa.text("state = 'queued'")


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return  # SQLite's planner reads (state, id) for the claim, as it should
    op.create_index("ix_messages_queued", "messages", ["id"], postgresql_where=_QUEUED)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.drop_index("ix_messages_queued", table_name="messages")

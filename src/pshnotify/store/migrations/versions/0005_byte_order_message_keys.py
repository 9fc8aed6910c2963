"""messages' idempotency key and Message-ID compared in byte order on PostgreSQL

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_KEYS = {"idempotency_key": 400, "message_id": 255}


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return  # SQLite compares text byte by byte already
    for column, length in _KEYS.items():
        # Same type, new collation: PostgreSQL rebuilds the column's unique index, no rewrite.
        op.alter_column("messages", column, type_=sa.String(length, collation="C"))


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for column, length in _KEYS.items():
        op.alter_column("messages", column, type_=sa.String(length, collation="default"))

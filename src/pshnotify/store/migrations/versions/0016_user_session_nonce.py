"""users: a session nonce, so a login's sessions can be ended

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06

A console session names its login and a stamp made from this nonce, the password hash and
the role; signing out draws a new nonce, so every cookie of that login stops working, and a
new password or role does the same. Each existing user gets a random nonce of their own.
"""

from __future__ import annotations

import secrets

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("users", sa.Column("session_nonce", sa.String(length=32), nullable=True))
    users = sa.table("users", sa.column("id", sa.Integer), sa.column("session_nonce", sa.String))
    conn = op.get_bind()
    for (user_id,) in conn.execute(sa.select(users.c.id)).all():
        conn.execute(
            users.update().where(users.c.id == user_id).values(session_nonce=secrets.token_hex(16))
        )
    with op.batch_alter_table("users") as batch:
        batch.alter_column("session_nonce", existing_type=sa.String(length=32), nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_column("session_nonce")

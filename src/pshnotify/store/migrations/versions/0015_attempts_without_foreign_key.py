"""attempts keep their message's id without a foreign-key constraint

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-02

The drain writes an attempt with every outcome, several commits a second (a connection's
result is durable before it sends the message after next), and on PostgreSQL the
constraint's trigger ran a query of its own per attempt: 7% of the database's time for a
drain's write (perf, a drain of 20,000 in groups of six). What it guarded is kept otherwise,
as for messages (0006): an attempt is inserted only with its message's own outcome, in the
same statement and for the rows that statement updated, and pshnotify never deletes a
message, so an attempt cannot point at a message that is not there.
"""

from __future__ import annotations

from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("attempts") as batch:
        batch.drop_constraint("fk_attempts_message_id_messages", type_="foreignkey")


def downgrade() -> None:
    with op.batch_alter_table("attempts") as batch:
        batch.create_foreign_key(
            "fk_attempts_message_id_messages",
            "messages",
            ["message_id"],
            ["id"],
            ondelete="CASCADE",
        )

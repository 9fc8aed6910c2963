"""messages: the index by (program, kind, state) carries the wave too

Revision ID: 0020
Revises: 0019_officer_lower
Create Date: 2026-12-06

`status` counts a program's messages per wave, kind and state (its launched people and its
messages by state). With the wave in the index those counts read the index alone, in its
order: at 250,000 messages on SQLite the table scan and the sort for the grouping were most
of `status --json`'s time (issue 29). Every query that used the index as it was uses it as
before (the wave is its last column), and the table keeps as many indexes as before, so a
drain's writes maintain no more of them.
"""

from __future__ import annotations

from alembic import op

revision = "0020"
down_revision = "0019_officer_lower"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_messages_program_id_kind_state_wave_key",
        "messages",
        ["program_id", "kind", "state", "wave_key"],
    )
    op.drop_index("ix_messages_program_id_kind_state", table_name="messages")


def downgrade() -> None:
    op.create_index(
        "ix_messages_program_id_kind_state", "messages", ["program_id", "kind", "state"]
    )
    op.drop_index("ix_messages_program_id_kind_state_wave_key", table_name="messages")

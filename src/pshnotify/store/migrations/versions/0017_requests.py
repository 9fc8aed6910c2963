"""requests: what participants ask from their email's personal link, and the decision

Revision ID: 0017
Revises: 0015
Create Date: 2026-12-06

One row per request (more time, completed, not required, another way, technical trouble),
pending until an operator (or the program's auto-approval rule) decides it. At most one
pending request per kind and person: a partial unique index, so that two submissions at once
cannot both be filed.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

_PENDING = sa.text("state = 'pending'")


def upgrade() -> None:
    op.create_table(
        "requests",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column(
            "program_id",
            sa.Integer(),
            sa.ForeignKey(
                "programs.id", ondelete="CASCADE", name="fk_requests_program_id_programs"
            ),
            nullable=False,
        ),
        sa.Column(
            "person_id",
            sa.Integer(),
            sa.ForeignKey("people.id", ondelete="CASCADE", name="fk_requests_person_id_people"),
            nullable=False,
        ),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("decided_at", sa.DateTime()),
        sa.Column("decided_by", sa.Text()),
        sa.Column("decision_note", sa.Text()),
        sa.Column("auto", sa.Boolean(), nullable=False, server_default=sa.text("false")),
        sa.PrimaryKeyConstraint("id", name="pk_requests"),
    )
    op.create_index("ix_requests_program_id_state", "requests", ["program_id", "state"])
    op.create_index("ix_requests_person_id", "requests", ["person_id"])
    op.create_index(
        "uq_requests_open",
        "requests",
        ["program_id", "person_id", "kind"],
        unique=True,
        sqlite_where=_PENDING,
        postgresql_where=_PENDING,
    )


def downgrade() -> None:
    op.drop_index("uq_requests_open", table_name="requests")
    op.drop_index("ix_requests_person_id", table_name="requests")
    op.drop_index("ix_requests_program_id_state", table_name="requests")
    op.drop_table("requests")

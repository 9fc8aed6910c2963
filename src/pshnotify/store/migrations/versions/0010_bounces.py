"""bounces, undeliverable addresses, unrecognised bounce mail

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01

A message becomes `bounced` after `sent` (a state, no column); each failed recipient of a
bounce is kept in `bounces`, a person's dead address in `undeliverable`, and mail at the bounce
address that could not be read in `unrecognised_bounces`.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def _key() -> sa.types.TypeEngine[str]:
    return sa.String(400).with_variant(sa.String(400, collation="C"), "postgresql")


def upgrade() -> None:
    op.create_table(
        "bounces",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("received_at", sa.DateTime(), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("dedupe_key", _key(), nullable=False),
        sa.Column("message_row_id", sa.Integer()),
        sa.Column("program_id", sa.Integer()),
        sa.Column("person_id", sa.Integer()),
        sa.Column("recipient", sa.Text(), nullable=False),
        sa.Column("class", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16)),
        sa.Column("diagnostic", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_bounces"),
        sa.UniqueConstraint("dedupe_key", name="uq_bounces_dedupe_key"),
    )
    op.create_index("ix_bounces_person_id", "bounces", ["person_id"])
    op.create_table(
        "undeliverable",
        sa.Column("person_id", sa.Integer(), nullable=False),
        sa.Column("email_key", sa.String(320), nullable=False),
        sa.Column("since", sa.DateTime(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("bounce_id", sa.Integer()),
        sa.Column("cleared_at", sa.DateTime()),
        sa.Column("cleared_by", sa.Text()),
        sa.ForeignKeyConstraint(
            ["person_id"],
            ["people.id"],
            name="fk_undeliverable_person_id_people",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("person_id", name="pk_undeliverable"),
    )
    op.create_table(
        "unrecognised_bounces",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("received_at", sa.DateTime(), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("location", sa.Text(), nullable=False),
        sa.Column("dedupe_key", _key(), nullable=False),
        sa.Column("sender", sa.Text(), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_unrecognised_bounces"),
        sa.UniqueConstraint("dedupe_key", name="uq_unrecognised_bounces_dedupe_key"),
    )


def downgrade() -> None:
    op.drop_table("unrecognised_bounces")
    op.drop_table("undeliverable")
    op.drop_index("ix_bounces_person_id", table_name="bounces")
    op.drop_table("bounces")

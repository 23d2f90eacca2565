"""Versioned journeys: every journey definition a trial has run, stored once per content, and
the version each trial runs.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05 01:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "journey_versions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("label", sa.String(length=100), nullable=False),
        sa.Column("definition", sa.JSON(), nullable=False),
        sa.Column("source", sa.String(length=500), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("content_hash"),
    )
    with op.batch_alter_table("trials") as batch:
        batch.add_column(sa.Column("journey_version", sa.Integer(), nullable=True))
        batch.create_index(batch.f("ix_trials_journey_version"), ["journey_version"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("trials") as batch:
        batch.drop_index(batch.f("ix_trials_journey_version"))
        batch.drop_column("journey_version")
    op.drop_table("journey_versions")

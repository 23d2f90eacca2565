"""Acquisition and qualification: where each trial's user came from (UTM parameters,
referrer, landing page), and how their persona was known (answered, inferred, defaulted) when.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04 23:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("trials") as batch:
        batch.add_column(sa.Column("persona_source", sa.String(length=20), nullable=True))
        batch.add_column(sa.Column("persona_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("source", sa.String(length=100), nullable=True))
        batch.add_column(sa.Column("utm_source", sa.String(length=200), nullable=True))
        batch.add_column(sa.Column("utm_medium", sa.String(length=200), nullable=True))
        batch.add_column(sa.Column("utm_campaign", sa.String(length=200), nullable=True))
        batch.add_column(sa.Column("referrer", sa.String(length=500), nullable=True))
        batch.add_column(sa.Column("landing_page", sa.String(length=500), nullable=True))
        batch.create_index(batch.f("ix_trials_source"), ["source"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("trials") as batch:
        batch.drop_index(batch.f("ix_trials_source"))
        for column in (
            "landing_page",
            "referrer",
            "utm_campaign",
            "utm_medium",
            "utm_source",
            "source",
            "persona_at",
            "persona_source",
        ):
            batch.drop_column(column)

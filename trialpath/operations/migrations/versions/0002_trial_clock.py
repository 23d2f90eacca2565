"""Trials record their clock (`seconds_per_day`), so durations read in the database are in
journey time on an accelerated clock too. Trials recorded before are taken as real time.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04 10:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "trials",
        sa.Column("seconds_per_day", sa.Float(), nullable=False, server_default="86400"),
    )


def downgrade() -> None:
    with op.batch_alter_table("trials") as batch:
        batch.drop_column("seconds_per_day")

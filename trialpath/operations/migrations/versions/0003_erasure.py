"""Erasure: when a trial's personal data was erased, and whose stored answers to retry.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04 10:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("trials") as batch:
        batch.add_column(sa.Column("erased_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("idempotency_records") as batch:
        batch.add_column(sa.Column("user_id", sa.String(length=128), nullable=True))
        batch.create_index(batch.f("ix_idempotency_records_user_id"), ["user_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("idempotency_records") as batch:
        batch.drop_index(batch.f("ix_idempotency_records_user_id"))
        batch.drop_column("user_id")
    with op.batch_alter_table("trials") as batch:
        batch.drop_column("erased_at")

"""Audit log: every write (who, what, which user, when, result).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04 16:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "audit_entries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=100), nullable=False),
        sa.Column("role", sa.String(length=20), nullable=False),
        sa.Column("action", sa.String(length=40), nullable=False),
        sa.Column("user_id", sa.String(length=128), nullable=True),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("detail", sa.String(length=200), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("audit_entries") as batch:
        batch.create_index(batch.f("ix_audit_entries_at"), ["at"], unique=False)
        batch.create_index(batch.f("ix_audit_entries_actor"), ["actor"], unique=False)
        batch.create_index(batch.f("ix_audit_entries_action"), ["action"], unique=False)
        batch.create_index(batch.f("ix_audit_entries_user_id"), ["user_id"], unique=False)


def downgrade() -> None:
    op.drop_table("audit_entries")

"""Agents' calendars: agents' hours and capacity, and the call slots they are booked for.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04 22:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "agents",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("hours_start", sa.String(length=5), nullable=False),
        sa.Column("hours_end", sa.String(length=5), nullable=False),
        sa.Column("days", sa.String(length=27), nullable=False),
        sa.Column("daily_capacity", sa.Integer(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("bookings", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "call_slots",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("agent", sa.String(length=64), nullable=False),
        sa.Column("start_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("end_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("workflow_id", sa.String(length=140), nullable=False),
        sa.Column("request", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("agent", "start_at"),
        sa.UniqueConstraint("workflow_id", "request"),
    )
    with op.batch_alter_table("call_slots") as batch:
        batch.create_index(batch.f("ix_call_slots_agent"), ["agent"], unique=False)
        batch.create_index(batch.f("ix_call_slots_start_at"), ["start_at"], unique=False)
        batch.create_index(batch.f("ix_call_slots_workflow_id"), ["workflow_id"], unique=False)


def downgrade() -> None:
    op.drop_table("call_slots")
    op.drop_table("agents")

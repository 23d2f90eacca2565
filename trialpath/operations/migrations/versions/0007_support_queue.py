"""Support's work queue: who owns a task, snoozes, closing with an outcome.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04 22:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("cs_tasks") as batch:
        batch.add_column(sa.Column("workflow_id", sa.String(length=140), nullable=True))
        batch.add_column(
            sa.Column("kind", sa.String(length=40), nullable=False, server_default="stalled")
        )
        batch.add_column(sa.Column("owner", sa.String(length=100), nullable=True))
        batch.add_column(sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("snoozed_until", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("outcome", sa.String(length=40), nullable=True))
        batch.add_column(sa.Column("note", sa.String(), nullable=True))
        batch.add_column(sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True))
        batch.create_index(batch.f("ix_cs_tasks_owner"), ["owner"], unique=False)
        batch.create_index(batch.f("ix_cs_tasks_done"), ["done"], unique=False)
    # Tasks opened before: owned by the trial's agent, as new ones are.
    op.execute("UPDATE cs_tasks SET owner = agent WHERE owner IS NULL")
    op.execute("UPDATE cs_tasks SET workflow_id = 'trial-' || user_id WHERE workflow_id IS NULL")
    with op.batch_alter_table("cs_tasks") as batch:
        batch.alter_column("kind", server_default=None)


def downgrade() -> None:
    with op.batch_alter_table("cs_tasks") as batch:
        batch.drop_index(batch.f("ix_cs_tasks_done"))
        batch.drop_index(batch.f("ix_cs_tasks_owner"))
        for column in (
            "updated_at",
            "note",
            "outcome",
            "closed_at",
            "snoozed_until",
            "claimed_at",
            "owner",
            "kind",
            "workflow_id",
        ):
            batch.drop_column(column)

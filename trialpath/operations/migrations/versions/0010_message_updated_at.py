"""When each message row last changed, so warehouse exports can take the rows changed since the
last one (a message is sent, then delivered, opened or read after it was written).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05 01:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True))
    op.execute(
        "UPDATE messages SET updated_at = COALESCE(read_at, sent_at, attempted_at, created_at)"
    )
    with op.batch_alter_table("messages") as batch:
        batch.alter_column("updated_at", existing_type=sa.DateTime(timezone=True), nullable=False)
        batch.create_index(batch.f("ix_messages_updated_at"), ["updated_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.drop_index(batch.f("ix_messages_updated_at"))
        batch.drop_column("updated_at")

"""In-app messages keep their button (`cta_label`, `cta_url`), so inbox items can show it.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04 22:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("cta_label", sa.String(), nullable=True))
        batch.add_column(sa.Column("cta_url", sa.String(length=2000), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("cta_url")
        batch.drop_column("cta_label")

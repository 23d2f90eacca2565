"""Initial schema: the tables that `SQLModel.metadata.create_all` made before migrations.

A database made by create_all is stamped at this revision (trialpath/operations/migrate.py `adopt`).

Revision ID: 0001
Revises:
Create Date: 2026-11-25 17:51:03.435632
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "agent_assignments",
        sa.Column("workflow_id", sa.String(length=140), nullable=False),
        sa.Column("agent", sa.String(), nullable=False),
        sa.Column("assigned_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("workflow_id"),
    )
    op.create_table(
        "agent_cursor",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "cs_tasks",
        sa.Column("key", sa.String(length=300), nullable=False),
        sa.Column("user_id", sa.String(length=128), nullable=False),
        sa.Column("agent", sa.String(), nullable=True),
        sa.Column("reason", sa.String(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("done", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    op.create_index(op.f("ix_cs_tasks_user_id"), "cs_tasks", ["user_id"])

    op.create_table(
        "idempotency_records",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("body", sa.String(), nullable=True),
        sa.Column("content_type", sa.String(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    op.create_table(
        "message_events",
        sa.Column("id", sa.String(length=200), nullable=False),
        sa.Column("provider", sa.String(), nullable=False),
        sa.Column("message_key", sa.String(length=300), nullable=True),
        sa.Column("provider_message_id", sa.String(length=200), nullable=True),
        sa.Column("type", sa.String(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_message_events_message_key"), "message_events", ["message_key"])
    op.create_index(
        op.f("ix_message_events_provider_message_id"), "message_events", ["provider_message_id"]
    )

    op.create_table(
        "messages",
        sa.Column("key", sa.String(length=300), nullable=False),
        sa.Column("workflow_id", sa.String(length=140), nullable=False),
        sa.Column("user_id", sa.String(length=128), nullable=False),
        sa.Column("step", sa.String(), nullable=False),
        sa.Column("message", sa.String(), nullable=False),
        sa.Column("channel", sa.String(), nullable=False),
        sa.Column("category", sa.String(), nullable=False),
        sa.Column("persona", sa.String(), nullable=True),
        sa.Column("locale", sa.String(), nullable=False),
        sa.Column("recipient", sa.String(), nullable=False),
        sa.Column("subject", sa.String(), nullable=False),
        sa.Column("html", sa.String(), nullable=False),
        sa.Column("text", sa.String(), nullable=False),
        sa.Column("template", sa.String(), nullable=False),
        sa.Column("content_hash", sa.String(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("provider", sa.String(), nullable=False),
        sa.Column("provider_message_id", sa.String(length=200), nullable=True),
        sa.Column("error", sa.String(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("delivery_status", sa.String(), nullable=True),
        sa.Column("read_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("key"),
    )
    op.create_index(op.f("ix_messages_channel"), "messages", ["channel"])
    op.create_index(op.f("ix_messages_message"), "messages", ["message"])
    op.create_index(op.f("ix_messages_provider_message_id"), "messages", ["provider_message_id"])
    op.create_index(op.f("ix_messages_user_id"), "messages", ["user_id"])
    op.create_index(op.f("ix_messages_workflow_id"), "messages", ["workflow_id"])

    op.create_table(
        "pending_signals",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("workflow_id", sa.String(length=140), nullable=False),
        sa.Column("signal", sa.String(), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("failed", sa.Boolean(), nullable=False),
        sa.Column("last_error", sa.String(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_pending_signals_workflow_id"), "pending_signals", ["workflow_id"])

    op.create_table(
        "preferences",
        sa.Column("user_id", sa.String(length=128), nullable=False),
        sa.Column("channel", sa.String(length=20), nullable=False),
        sa.Column("subscribed", sa.Boolean(), nullable=False),
        sa.Column("source", sa.String(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("user_id", "channel"),
    )
    op.create_table(
        "stage_changes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.String(length=128), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("from_stage", sa.String(), nullable=True),
        sa.Column("to_stage", sa.String(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("user_id", "seq"),
    )
    op.create_index(op.f("ix_stage_changes_user_id"), "stage_changes", ["user_id"])

    op.create_table(
        "trial_events",
        sa.Column("id", sa.String(length=200), nullable=False),
        sa.Column("user_id", sa.String(length=128), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("counted", sa.Boolean(), nullable=False),
        sa.Column("properties", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_trial_events_name"), "trial_events", ["name"])
    op.create_index(op.f("ix_trial_events_user_id"), "trial_events", ["user_id"])

    op.create_table(
        "trials",
        sa.Column("user_id", sa.String(length=128), nullable=False),
        sa.Column("workflow_id", sa.String(length=140), nullable=False),
        sa.Column("persona", sa.String(), nullable=True),
        sa.Column("stage", sa.String(), nullable=False),
        sa.Column("urgency", sa.String(), nullable=True),
        sa.Column("activated", sa.Boolean(), nullable=False),
        sa.Column("experiment_arm", sa.String(), nullable=False),
        sa.Column("cs_owner", sa.String(), nullable=True),
        sa.Column("converted_plan", sa.String(), nullable=True),
        sa.Column("mrr", sa.Float(), nullable=True),
        sa.Column("name", sa.String(), nullable=True),
        sa.Column("email", sa.String(), nullable=True),
        sa.Column("phone", sa.String(), nullable=True),
        sa.Column("locale", sa.String(), nullable=False),
        sa.Column("timezone", sa.String(), nullable=False),
        sa.Column("company", sa.String(), nullable=True),
        sa.Column("signup_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("activated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("trial_ends_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("converted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("status", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("user_id"),
    )
    op.create_index(op.f("ix_trials_persona"), "trials", ["persona"])
    op.create_index(op.f("ix_trials_stage"), "trials", ["stage"])
    op.create_index(op.f("ix_trials_workflow_id"), "trials", ["workflow_id"])


def downgrade() -> None:
    # Dropping a table drops its indexes.
    op.drop_table("trials")
    op.drop_table("trial_events")
    op.drop_table("stage_changes")
    op.drop_table("preferences")
    op.drop_table("pending_signals")
    op.drop_table("messages")
    op.drop_table("message_events")
    op.drop_table("idempotency_records")
    op.drop_table("cs_tasks")
    op.drop_table("agent_cursor")
    op.drop_table("agent_assignments")

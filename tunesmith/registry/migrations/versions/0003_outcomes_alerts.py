"""Outcome events on responses (clicks, conversions, named events) and monitoring alerts.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A registry made before migrations got every table of the current models when it was stamped
    # at 0001 (`database._add_missing_columns`), these included.
    present = set(sa.inspect(op.get_bind()).get_table_names())
    if "outcome_events" not in present:
        op.create_table(
            "outcome_events",
            sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
            sa.Column("response_id", sa.String(length=64), nullable=False),
            sa.Column("tenant", sa.String(length=128), nullable=True),
            sa.Column("name", sa.String(length=64), nullable=False),
            sa.Column("value", sa.Float(), nullable=True),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
            sa.ForeignKeyConstraint(["response_id"], ["request_log.id"]),
            sa.PrimaryKeyConstraint("id"),
        )
        with op.batch_alter_table("outcome_events", schema=None) as batch_op:
            batch_op.create_index(batch_op.f("ix_outcome_events_response_id"), ["response_id"], unique=False)
    if "monitor_alerts" not in present:
        op.create_table(
            "monitor_alerts",
            sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
            sa.Column("deployment", sa.String(length=128), nullable=False),
            sa.Column("kind", sa.String(length=64), nullable=False),
            sa.Column("message", sa.Text(), nullable=False),
            sa.Column("data", sa.JSON(), nullable=False),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
            sa.PrimaryKeyConstraint("id"),
        )
        with op.batch_alter_table("monitor_alerts", schema=None) as batch_op:
            batch_op.create_index(batch_op.f("ix_monitor_alerts_deployment"), ["deployment"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("monitor_alerts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_monitor_alerts_deployment"))
    op.drop_table("monitor_alerts")
    with op.batch_alter_table("outcome_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_outcome_events_response_id"))
    op.drop_table("outcome_events")

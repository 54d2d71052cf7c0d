"""Guardrail settings per deployment or adapter, and the log of guardrail actions.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A registry made before migrations got every table of the current models when it was stamped
    # at 0001 (`database._add_missing_columns`), these included.
    present = set(sa.inspect(op.get_bind()).get_table_names())
    if "guardrails" not in present:
        op.create_table(
            "guardrails",
            sa.Column("target", sa.String(length=128), nullable=False),
            sa.Column("spec", sa.JSON(), nullable=False),
            sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
            sa.PrimaryKeyConstraint("target"),
        )
    if "guardrail_events" not in present:
        op.create_table(
            "guardrail_events",
            sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
            sa.Column("request_id", sa.String(length=64), nullable=False),
            sa.Column("target", sa.String(length=128), nullable=False),
            sa.Column("direction", sa.String(length=8), nullable=False),
            sa.Column("guard", sa.String(length=32), nullable=False),
            sa.Column("action", sa.String(length=16), nullable=False),
            sa.Column("reason", sa.String(length=256), nullable=False),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
            sa.PrimaryKeyConstraint("id"),
        )
        with op.batch_alter_table("guardrail_events", schema=None) as batch_op:
            batch_op.create_index(batch_op.f("ix_guardrail_events_request_id"), ["request_id"], unique=False)
            batch_op.create_index(batch_op.f("ix_guardrail_events_target"), ["target"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("guardrail_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_guardrail_events_target"))
        batch_op.drop_index(batch_op.f("ix_guardrail_events_request_id"))
    op.drop_table("guardrail_events")
    op.drop_table("guardrails")

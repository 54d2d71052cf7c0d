"""The improvement loop's cycles and their events.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A registry made before migrations got every table of the current models when it was stamped
    # at 0001 (`database._add_missing_columns`), these included.
    present = set(sa.inspect(op.get_bind()).get_table_names())
    if "loop_cycles" not in present:
        op.create_table(
            "loop_cycles",
            sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
            sa.Column("deployment", sa.String(length=128), nullable=False),
            sa.Column("state", sa.String(length=32), nullable=False),
            sa.Column("champion", sa.String(length=256), nullable=False),
            sa.Column("candidate", sa.String(length=256), nullable=True),
            sa.Column("policy", sa.JSON(), nullable=False),
            sa.Column("lineage", sa.JSON(), nullable=False),
            sa.Column("reason", sa.Text(), nullable=True),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
            sa.PrimaryKeyConstraint("id"),
        )
        with op.batch_alter_table("loop_cycles", schema=None) as batch_op:
            batch_op.create_index(batch_op.f("ix_loop_cycles_deployment"), ["deployment"], unique=False)
    if "loop_events" not in present:
        op.create_table(
            "loop_events",
            sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
            sa.Column("loop_id", sa.Integer(), nullable=False),
            sa.Column("state", sa.String(length=32), nullable=False),
            sa.Column("actor", sa.String(length=128), nullable=False),
            sa.Column("message", sa.Text(), nullable=False),
            sa.Column("data", sa.JSON(), nullable=False),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
            sa.ForeignKeyConstraint(["loop_id"], ["loop_cycles.id"]),
            sa.PrimaryKeyConstraint("id"),
        )
        with op.batch_alter_table("loop_events", schema=None) as batch_op:
            batch_op.create_index(batch_op.f("ix_loop_events_loop_id"), ["loop_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("loop_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_loop_events_loop_id"))
    op.drop_table("loop_events")
    with op.batch_alter_table("loop_cycles", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_loop_cycles_deployment"))
    op.drop_table("loop_cycles")

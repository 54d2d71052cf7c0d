"""The hash-chained audit trail of state-changing actions, and each tenant's request-log mode.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A registry made before migrations got every table of the current models when it was stamped
    # at 0001 (`database._add_missing_columns`), this one included.
    present = set(sa.inspect(op.get_bind()).get_table_names())
    if "audit_log" not in present:
        op.create_table(
            "audit_log",
            sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
            sa.Column("actor", sa.String(length=128), nullable=False),
            sa.Column("action", sa.String(length=64), nullable=False),
            sa.Column("target", sa.Text(), nullable=False),
            sa.Column("before", sa.JSON(), nullable=True),
            sa.Column("after", sa.JSON(), nullable=True),
            sa.Column("created_at", sa.String(length=40), nullable=False),
            sa.Column("previous_hash", sa.String(length=64), nullable=False),
            sa.Column("hash", sa.String(length=64), nullable=False),
            sa.PrimaryKeyConstraint("id"),
        )
    if "request_log" not in {column["name"] for column in sa.inspect(op.get_bind()).get_columns("tenants")}:
        with op.batch_alter_table("tenants", schema=None) as batch_op:
            batch_op.add_column(sa.Column("request_log", sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tenants", schema=None) as batch_op:
        batch_op.drop_column("request_log")
    op.drop_table("audit_log")

"""Feedback may rank several answers to one prompt: `feedback.ranking`, response ids best first.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A registry made before migrations got every column of the current models when it was stamped
    # at 0001 (`database._add_missing_columns`), this one included.
    present = {column["name"] for column in sa.inspect(op.get_bind()).get_columns("feedback")}
    if "ranking" not in present:
        with op.batch_alter_table("feedback", schema=None) as batch_op:
            batch_op.add_column(sa.Column("ranking", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("feedback", schema=None) as batch_op:
        batch_op.drop_column("ranking")

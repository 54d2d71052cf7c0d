"""Human review: review tasks, their items and judgements; API keys get an account name and a role.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A registry made before migrations got every table and nullable column of the current models when
    # it was stamped at 0001 (`database._add_missing_columns`), these included.
    inspector = sa.inspect(op.get_bind())
    present = set(inspector.get_table_names())
    key_columns = {column["name"] for column in inspector.get_columns("api_keys")}
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        if "name" not in key_columns:
            batch_op.add_column(sa.Column("name", sa.String(length=128), nullable=True))
        if "role" not in key_columns:
            batch_op.add_column(sa.Column("role", sa.String(length=16), nullable=True))
    # Keys made before roles: admin keys are admins, the others read only.
    op.execute(
        "UPDATE api_keys SET role = CASE WHEN is_admin THEN 'admin' ELSE 'viewer' END WHERE role IS NULL"
    )
    if "review_tasks" not in present:
        op.create_table(
            "review_tasks",
            sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
            sa.Column("name", sa.String(length=128), nullable=False),
            sa.Column("tenant", sa.String(length=128), nullable=True),
            sa.Column("kind", sa.String(length=16), nullable=False),
            sa.Column("rubric", sa.JSON(), nullable=True),
            sa.Column("source", sa.JSON(), nullable=False),
            sa.Column("reviewers_per_item", sa.Integer(), nullable=False),
            sa.Column("status", sa.String(length=16), nullable=False),
            sa.Column("created_by", sa.String(length=128), nullable=False),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
            sa.PrimaryKeyConstraint("id"),
        )
        with op.batch_alter_table("review_tasks", schema=None) as batch_op:
            batch_op.create_index(batch_op.f("ix_review_tasks_tenant"), ["tenant"], unique=False)
    if "review_items" not in present:
        op.create_table(
            "review_items",
            sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
            sa.Column("task_id", sa.Integer(), nullable=False),
            sa.Column("position", sa.Integer(), nullable=False),
            sa.Column("prompt", sa.JSON(), nullable=False),
            sa.Column("reference", sa.Text(), nullable=True),
            sa.Column("outputs", sa.JSON(), nullable=False),
            sa.Column("source", sa.JSON(), nullable=False),
            sa.ForeignKeyConstraint(["task_id"], ["review_tasks.id"]),
            sa.PrimaryKeyConstraint("id"),
        )
        with op.batch_alter_table("review_items", schema=None) as batch_op:
            batch_op.create_index(batch_op.f("ix_review_items_task_id"), ["task_id"], unique=False)
    if "review_judgements" not in present:
        op.create_table(
            "review_judgements",
            sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
            sa.Column("task_id", sa.Integer(), nullable=False),
            sa.Column("item_id", sa.Integer(), nullable=False),
            sa.Column("reviewer", sa.String(length=128), nullable=False),
            sa.Column("reviewer_name", sa.String(length=128), nullable=True),
            sa.Column("shown", sa.JSON(), nullable=False),
            sa.Column("choice", sa.String(length=16), nullable=True),
            sa.Column("preferred", sa.String(length=256), nullable=True),
            sa.Column("scores", sa.JSON(), nullable=True),
            sa.Column("edited_text", sa.Text(), nullable=True),
            sa.Column("comment", sa.Text(), nullable=True),
            sa.Column("seconds", sa.Float(), nullable=True),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
            sa.ForeignKeyConstraint(["item_id"], ["review_items.id"]),
            sa.ForeignKeyConstraint(["task_id"], ["review_tasks.id"]),
            sa.PrimaryKeyConstraint("id"),
            sa.UniqueConstraint("item_id", "reviewer"),
        )
        with op.batch_alter_table("review_judgements", schema=None) as batch_op:
            batch_op.create_index(batch_op.f("ix_review_judgements_item_id"), ["item_id"], unique=False)
            batch_op.create_index(batch_op.f("ix_review_judgements_task_id"), ["task_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("review_judgements", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_review_judgements_task_id"))
        batch_op.drop_index(batch_op.f("ix_review_judgements_item_id"))
    op.drop_table("review_judgements")
    with op.batch_alter_table("review_items", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_review_items_task_id"))
    op.drop_table("review_items")
    with op.batch_alter_table("review_tasks", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_review_tasks_tenant"))
    op.drop_table("review_tasks")
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_column("role")
        batch_op.drop_column("name")

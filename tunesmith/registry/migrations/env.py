"""Alembic environment: migrate the connection `database.migrate` hands over; no alembic.ini, no URL here."""

from __future__ import annotations

from alembic import context

from tunesmith.registry import loop as _loop  # noqa: F401  (its tables join `Base`)
from tunesmith.registry import serving as _serving  # noqa: F401  (its tables join `Base`)
from tunesmith.registry.models import Base

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copying them
)
with context.begin_transaction():
    context.run_migrations()

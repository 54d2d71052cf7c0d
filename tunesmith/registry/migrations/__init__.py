"""Alembic migrations of the registry schema (SQLite and PostgreSQL); run by `database.migrate`."""

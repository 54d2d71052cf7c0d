"""The registry's database connection and schema migrations, for SQLite and PostgreSQL. No torch.

Owns: turning a registry URL into a SQLAlchemy engine fit for several processes writing at once
(the server, a trainer and the CLI): SQLite in WAL mode with a busy timeout, every transaction
taking the write lock up front (`BEGIN IMMEDIATE`, so a transaction that reads then writes never
fails on a lock it cannot upgrade); PostgreSQL through psycopg 3 (`postgresql://` URLs get that
driver). And bringing the schema to the newest Alembic revision (see `migrations/`), one process at
a time. Does not own: the tables (see `models`, `serving`) or queries (see `store`).
"""

from __future__ import annotations

from typing import Any

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import create_engine, event, inspect, text
from sqlalchemy.engine import Connection, Engine

from tunesmith.config import ConfigError
from tunesmith.registry.models import Base

SQLITE_BUSY_TIMEOUT_MS = 30_000  # how long a writer waits for another process's transaction
_MIGRATION_LOCK = 0x7475_6E65  # PostgreSQL advisory lock id ("tune") held while migrating
_DRIVERS = {"postgresql": "postgresql+psycopg", "postgres": "postgresql+psycopg"}


def create_registry_engine(url: str) -> Engine:
    """A SQLAlchemy engine for a registry URL (SQLite set up for concurrent writers, see above)."""
    scheme, separator, rest = url.partition("://")
    url = f"{_DRIVERS.get(scheme, scheme)}{separator}{rest}"
    if not url.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True)
    engine = create_engine(url)

    @event.listens_for(engine, "connect")
    def _configure(connection: Any, record: Any) -> None:
        connection.isolation_level = None  # pysqlite's own BEGIN is deferred; we emit ours below
        cursor = connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode = WAL")  # readers never block the writer, nor it them
        # In WAL mode NORMAL syncs at checkpoints, not at every commit: a commit survives the process
        # being killed (the crash test), not the machine losing power, and costs no fsync (one per
        # logged request made a loaded disk the server's bottleneck).
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def migrate(engine: Engine) -> None:
    """Bring the registry at `engine` to the newest schema revision (creating it if empty).

    A registry made before migrations (tables, no `alembic_version`) gets its missing nullable
    columns and is stamped at the first revision, which is the schema it then has. Concurrent
    callers wait for each other: SQLite's write lock, or a PostgreSQL advisory lock.
    """
    config = Config()
    config.set_main_option("script_location", "tunesmith.registry:migrations")
    head = ScriptDirectory.from_config(config).get_current_head()
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _MIGRATION_LOCK})
        config.attributes["connection"] = connection
        tables = set(inspect(connection).get_table_names())
        try:
            if tables and "alembic_version" not in tables:
                _add_missing_columns(connection)
                command.stamp(config, "0001")
            command.upgrade(config, "head")
        except CommandError as error:  # e.g. a revision this tunesmith does not know
            raise ConfigError(
                f"registry {engine.url.render_as_string(hide_password=True)}: {error} (written by a newer "
                f"tunesmith? this one knows revisions up to {head})"
            ) from error


def _add_missing_columns(connection: Connection) -> None:
    """Bring a registry written by an older tunesmith up to date: add the nullable columns it lacks.

    Before migrations the schema only ever grew by nullable columns and new tables, so this additive
    step (with the tables the first revision creates) is the whole way to revision 0001.
    """
    existing = inspect(connection)
    present_tables = set(existing.get_table_names())
    for table in Base.metadata.sorted_tables:
        if table.name not in present_tables:
            table.create(connection)
            continue
        present = {column["name"] for column in existing.get_columns(table.name)}
        for column in table.columns:
            if column.name in present:
                continue
            if not column.nullable:
                raise ConfigError(f"registry: table {table.name} lacks required column {column.name}")
            kind = column.type.compile(dialect=connection.dialect)
            connection.execute(text(f'ALTER TABLE "{table.name}" ADD COLUMN "{column.name}" {kind}'))

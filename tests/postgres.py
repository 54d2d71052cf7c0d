"""A throwaway PostgreSQL server for tests: initdb into a temporary folder, start it on a free local
port, drop it afterwards. Uses the `initdb`/`pg_ctl` binaries on PATH or under /usr/lib/postgresql.
As root (PostgreSQL refuses to run as root) the server runs as `nobody`."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from uuid import uuid4

INSTALL_HINT = "PostgreSQL server binaries (initdb, pg_ctl) are not installed: apt-get install postgresql"


def postgres_bin() -> Path | None:
    """The folder holding `initdb` and `pg_ctl` (the newest installed version), or None."""
    found = shutil.which("initdb")
    if found is not None:
        return Path(found).parent
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    return candidates[-1].parent if candidates else None


@contextmanager
def postgres_server(port: int) -> Iterator[str]:
    """A running PostgreSQL server on 127.0.0.1:`port` (trust auth, user postgres); yields its URL."""
    bindir = postgres_bin()
    assert bindir is not None, INSTALL_HINT
    # not under pytest's tmp (mode 0700): the server's own user must reach its folder
    root = Path(tempfile.mkdtemp(prefix="tunesmith-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        as_user = ["runuser", "-u", "nobody", "--"]
        shutil.chown(root, "nobody")
    data, log = root / "data", root / "server.log"

    def run(*command: str) -> None:
        done = subprocess.run([*as_user, *command], capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{command[0]} failed: {done.stdout}{done.stderr}{_tail(log)}")

    run(str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
    run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w", "-t", "60", "start")
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


def create_database(server_url: str) -> str:
    """A new, empty database on the server; its URL."""
    import psycopg

    name = f"t_{uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE {name}")
    return server_url.rsplit("/", 1)[0] + f"/{name}"


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-2000:] if log.is_file() else ""

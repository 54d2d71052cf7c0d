"""`tunesmith federated server` and `client`: the same rounds on Flower's deployment runtime.

Owns: starting a SuperLink (the server) and a SuperNode (a client) with the transport options Flower
provides (TLS certificates, SuperNode authentication keys; `--insecure` only when asked or on loopback),
writing the Flower app folder `flwr run` packages into a FAB (its components are tunesmith's ServerApp
and ClientApp in `tunesmith.federated.deployed`, its run config the path of `fed.yaml`), submitting the
run and reading its result, and stopping every process it started on every exit path. Does not own:
the rounds (`server`), local training (`client`).

No process left behind. Flower's processes start their own: the SuperLink starts a SuperExec in a new
session (`start_new_session`), which starts the ServerApp process; a SuperNode starts a SuperExec and a
ClientApp process per run. Stopping only the process tunesmith started, or its process group, leaves
those running, so `stop_process_tree` stops the process and every descendant, found by parent id before
any is signalled (once a parent is gone, its children are re-parented and can no longer be found). The
server stops the trees it started in `finally` blocks, and SIGTERM (what a supervisor or a test sends)
exits through them instead of killing the interpreter on the spot.

Offline, as on this project's machines: Flower 1.42 installs a submitted app's dependencies with
`uv sync` by default, which needs uv and an index. The app here has no dependencies of its own (tunesmith
and flwr are already installed where the SuperLink and SuperNodes run), so the SuperLink starts with
`--disable-runtime-dependency-installation` and the SuperNodes keep their default (off). The FAB itself
is built locally by `flwr run` from the app folder; nothing is downloaded.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import NoReturn

from tunesmith.config import LOOPBACK_HOSTS, ConfigError, FederatedSpec
from tunesmith.federated.server import FederationError

CONNECTION = "tunesmith"  # the SuperLink connection `flwr run` uses, in the job's own FLWR_HOME
RESULT_FILE = "result.json"  # written by the deployed ServerApp when its rounds are done


@dataclass(frozen=True)
class Transport:
    """How a Flower component secures its connection (paths are passed through to Flower's flags)."""

    insecure: bool
    ssl_certfile: Path | None = None  # server: its certificate, key and CA
    ssl_keyfile: Path | None = None
    ssl_ca_certfile: Path | None = None  # server: the CA; client: the root certificate it trusts
    auth_public_keys: Path | None = None  # server: CSV of the SuperNodes' public keys it accepts
    auth_private_key: Path | None = None  # client: its key pair for SuperNode authentication
    auth_public_key: Path | None = None


def _bin(name: str) -> str:
    """A console script installed beside this Python (flwr's are, in the same environment)."""
    path = Path(sys.executable).parent / name
    return str(path) if path.exists() else name


def superlink_command(host: str, port: int, transport: Transport, database: Path) -> list[str]:
    command = [_bin("flower-superlink"), "--host", host, "--port", str(port), "--database", str(database),
               "--disable-runtime-dependency-installation"]  # fmt: skip
    if transport.insecure:
        return [*command, "--insecure"]
    if transport.ssl_certfile is None or transport.ssl_keyfile is None or transport.ssl_ca_certfile is None:
        raise ConfigError(
            "server: TLS needs --ssl-certfile, --ssl-keyfile and --ssl-ca-certfile (or --insecure on a trusted network)"
        )
    command += ["--ssl-certfile", str(transport.ssl_certfile), "--ssl-keyfile", str(transport.ssl_keyfile),
                "--ssl-ca-certfile", str(transport.ssl_ca_certfile)]  # fmt: skip
    if transport.auth_public_keys is not None:
        command += ["--enable-supernode-auth", "--auth-list-public-keys", str(transport.auth_public_keys)]
    return command


def supernode_command(server: str, data: Path, work: Path, port: int, transport: Transport) -> list[str]:
    node_config = f'data="{data.resolve()}" work-dir="{work.resolve()}"'
    command = [
        _bin("flower-supernode"),
        "--superlink",
        server,
        "--port",
        str(port),
        "--node-config",
        node_config,
    ]
    if transport.insecure:
        return [*command, "--insecure"]
    if transport.ssl_ca_certfile is None:
        raise ConfigError(
            f"client: {server} is not on loopback; pass --root-certificates (TLS) or --insecure"
        )
    command += ["--root-certificates", str(transport.ssl_ca_certfile)]
    if transport.auth_private_key is not None and transport.auth_public_key is not None:
        command += ["--auth-supernode-private-key", str(transport.auth_private_key),
                    "--auth-supernode-public-key", str(transport.auth_public_key)]  # fmt: skip
    return command


def is_loopback(address: str) -> bool:
    return address.rsplit(":", 1)[0].strip("[]") in LOOPBACK_HOSTS


def write_app(folder: Path, config: Path) -> Path:
    """The Flower app folder `flwr run` builds a FAB from: components and the path of `fed.yaml`."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["hatchling"]\nbuild-backend = "hatchling.build"\n\n'
        '[project]\nname = "tunesmith-federated"\nversion = "1.0.0"\n'
        'description = "tunesmith federated fine-tuning (the code is the installed tunesmith package)"\n'
        'license = "Apache-2.0"\ndependencies = []\n\n'
        '[tool.hatch.build.targets.wheel]\npackages = ["."]\n\n'
        '[tool.flwr.app]\npublisher = "tunesmith"\n\n'
        '[tool.flwr.app.components]\nserverapp = "tunesmith.federated.deployed:server"\n'
        'clientapp = "tunesmith.federated.deployed:client"\n\n'
        f"[tool.flwr.app.config]\nconfig = {json.dumps(str(config.resolve()))}\n",
        encoding="utf-8",
    )
    return folder


def write_connection(flwr_home: Path, address: str, transport: Transport) -> None:
    """The SuperLink connection `flwr run` submits to, in FLWR_HOME/config.toml."""
    flwr_home.mkdir(parents=True, exist_ok=True)
    security = (
        "insecure = true"
        if transport.insecure
        else f"root-certificates = {json.dumps(str(transport.ssl_ca_certfile))}"
    )
    (flwr_home / "config.toml").write_text(
        f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\naddress = "{address}"\n{security}\n',
        encoding="utf-8",
    )


def wait_for_port(host: str, port: int, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex((host, port)) == 0:
                return
        time.sleep(0.2)
    raise FederationError(
        f"the SuperLink did not listen on {host}:{port} within {seconds:.0f}s (see superlink.log)"
    )


def serve(config: Path, spec: FederatedSpec, out: Path, host: str, port: int, transport: Transport,
          timeout: float | None = None) -> dict[str, object]:  # fmt: skip
    """Start a SuperLink, submit the job's rounds and wait for them; returns the deployed ServerApp's result.

    Clients join with `tunesmith federated client --server HOST:PORT`; a round starts once
    `spec.min_clients` are connected.
    """
    out.mkdir(parents=True, exist_ok=True)
    (out / RESULT_FILE).unlink(missing_ok=True)
    flwr_home = out / "flwr-home"
    shutil.rmtree(flwr_home / "apps", ignore_errors=True)
    env = {**_environment(), "FLWR_HOME": str(flwr_home)}
    connect_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    write_connection(flwr_home, f"{connect_host}:{port}", transport)
    app = write_app(out / "flower-app", config)
    with _exit_on_sigterm(), (out / "superlink.log").open("wb") as log:
        link = subprocess.Popen(superlink_command(host, port, transport, out / "superlink.db"), stdout=log, stderr=subprocess.STDOUT, env=env)  # fmt: skip
        try:
            wait_for_port(connect_host, port, 60)
            _submit(app, out, env, timeout)
        finally:
            stop_process_tree(link.pid)
            link.wait()
    result_file = out / RESULT_FILE
    if not result_file.is_file():
        raise FederationError(f"the federated run ended without a result; see {out / 'flwr-run.log'}")
    result: dict[str, object] = json.loads(result_file.read_text(encoding="utf-8"))
    return result


def _submit(app: Path, out: Path, env: dict[str, str], timeout: float | None) -> None:
    """`flwr run` the app on the SuperLink and wait until its rounds are done (or `timeout` seconds)."""
    with (out / "flwr-run.log").open("wb") as run_log:
        run = subprocess.Popen([_bin("flwr"), "run", str(app), CONNECTION, "--stream"], stdout=run_log,
                               stderr=subprocess.STDOUT, env=env)  # fmt: skip
        try:
            status = run.wait(timeout)
        except subprocess.TimeoutExpired:
            raise FederationError(
                f"the federated run did not finish within {timeout:.0f}s; see {out / 'flwr-run.log'}"
            ) from None
        finally:
            stop_process_tree(run.pid)
            run.wait()
    if status != 0:
        raise FederationError(f"`flwr run` failed (exit {status}); see {out / 'flwr-run.log'}")


def stop_process_tree(pid: int, grace: float = 10.0) -> None:
    """Stop process `pid` and all its descendants: SIGTERM, then SIGKILL for those alive after `grace` s."""
    import psutil

    try:
        root = psutil.Process(pid)
        tree = [root, *root.children(recursive=True)]  # found before any is signalled (module docstring)
    except psutil.NoSuchProcess:
        return
    for process in tree:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.terminate()
    _, alive = psutil.wait_procs(tree, timeout=grace)
    for process in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    psutil.wait_procs(alive, timeout=grace)


@contextlib.contextmanager
def _exit_on_sigterm() -> Iterator[None]:
    """SIGTERM raises SystemExit inside the block, so its `finally` clauses stop the processes started."""

    def exit_now(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, exit_now)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_client(server: str, data: Path, work: Path, port: int, transport: Transport) -> NoReturn:
    """Become a SuperNode for `data` until stopped (Ctrl-C, a signal).

    The process is replaced, not forked: stopping `tunesmith federated client` stops the SuperNode itself,
    never leaving one behind.
    """
    if not data.exists():
        raise FileNotFoundError(f"--data: no such file or folder: {data}")
    command = supernode_command(server, data, work, port, transport)
    os.execvpe(command[0], command, _environment())


def _environment() -> dict[str, str]:
    # Flower's processes start their helpers (flower-superexec, flwr-serverapp, flwr-clientapp) by name:
    # those installed beside this Python come first. One core per client process (a SuperNode starts
    # a ClientApp process per message).
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return {**os.environ, "PATH": path, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}

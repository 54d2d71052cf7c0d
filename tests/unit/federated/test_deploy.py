"""`federated server` leaves no process behind: stand-ins for Flower's SuperLink (which starts a detached
child, as the SuperLink starts its SuperExec) and for `flwr run`, on the paths where the run fails."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import free_port
from tunesmith.federated.server import FederationError

# A process that starts a child in a new session (as Flower's SuperLink starts its SuperExec), writes both
# pids to argv[2], listens on port argv[1] when given one (the SuperLink's), and waits to be stopped.
_WITH_DETACHED_CHILD = """
import socket, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"], start_new_session=True)
open(sys.argv[2], "w").write(f"{child.pid} ")
if sys.argv[1] != "-":
    server = socket.socket()
    server.bind(("127.0.0.1", int(sys.argv[1])))
    server.listen()
with open(sys.argv[2], "a") as pids:
    pids.write("ready")
time.sleep(float(sys.argv[3]))
sys.exit(1)
"""


def _started(pids: Path) -> list[int]:
    deadline = time.monotonic() + 30
    while not (pids.exists() and pids.read_text().endswith("ready")):
        assert time.monotonic() < deadline, "the stand-in did not start"
        time.sleep(0.05)
    return [int(pid) for pid in pids.read_text().split()[:-1]]


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_stopping_a_process_stops_its_detached_children(tmp_path: Path) -> None:
    from tunesmith.federated.deploy import stop_process_tree

    pids = tmp_path / "pids"
    parent = subprocess.Popen([sys.executable, "-c", _WITH_DETACHED_CHILD, "-", str(pids), "300"])
    child = _started(pids)[0]

    stop_process_tree(parent.pid, grace=5)

    assert parent.wait(5) is not None and _gone(child)


_FLWR_RUNS = {  # stand-ins for `flwr run`, and what `serve` raises
    "fails": ("sys.exit(1)", FederationError, "`flwr run` failed"),
    "outlives the timeout": ("time.sleep(300)", FederationError, "did not finish within"),
    # what a supervisor, a test or Ctrl-C's kin sends the server; it would kill pytest if serve let it
    "the server is sent SIGTERM": (
        "os.kill(os.getppid(), signal.SIGTERM); time.sleep(300)",
        SystemExit,
        "143",
    ),
}


@pytest.mark.parametrize("case", sorted(_FLWR_RUNS))
def test_the_server_stops_every_process_it_started_on_every_exit_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    from tunesmith.config import FederatedSpec
    from tunesmith.federated import deploy

    port, link_pids = free_port(), tmp_path / "link-pids"
    link = [sys.executable, "-c", _WITH_DETACHED_CHILD, str(port), str(link_pids), "300"]
    code, error, message = _FLWR_RUNS[case]
    flwr = tmp_path / "flwr"
    flwr.write_text(f"#!{sys.executable}\nimport os, signal, sys, time\n{code}\n")
    flwr.chmod(0o755)
    monkeypatch.setattr(deploy, "superlink_command", lambda *_: link)
    monkeypatch.setattr(deploy, "_bin", lambda name: str(flwr))
    config = tmp_path / "fed.yaml"
    config.write_text("rounds: 1\n")
    transport = deploy.Transport(insecure=True)

    with pytest.raises(error, match=message):
        deploy.serve(config, FederatedSpec(), tmp_path / "out", "127.0.0.1", port, transport, timeout=2)

    assert all(_gone(pid) for pid in _started(link_pids))  # the SuperLink's detached child
    assert not [p for p in psutil.Process().children(recursive=True) if p.status() != psutil.STATUS_ZOMBIE]

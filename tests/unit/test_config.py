from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import REPO
from tunesmith.config import (
    BiasAuditSpec,
    ConfigError,
    TrainSpec,
    build_spec,
    load_config_file,
    tunesmith_home,
)


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads(path: Path) -> None:
    config = load_config_file(path)
    if config.train is not None:
        spec = build_spec(TrainSpec, config.train, {})
        assert isinstance(spec, TrainSpec)
    if config.bias_audit is not None:
        assert isinstance(build_spec(BiasAuditSpec, config.bias_audit, {}), BiasAuditSpec)


def test_flags_override_file_and_lora_flags_merge() -> None:
    spec = build_spec(
        TrainSpec, {"data": "a.jsonl", "epochs": 2, "lora": {"r": 8}}, {"epochs": 5, "lora.alpha": 4}
    )
    assert spec.epochs == 5 and spec.lora.r == 8 and spec.lora.alpha == 4


def test_missing_data_and_bad_values_name_their_keys() -> None:
    with pytest.raises(ConfigError, match="data"):
        build_spec(TrainSpec, {}, {})
    with pytest.raises(ConfigError, match=r"train\.batch_size"):
        build_spec(TrainSpec, {"data": "a.jsonl", "batch_size": 0}, {})


def test_bare_on_and_off_in_yaml_mean_the_words(tmp_path: Path) -> None:
    # YAML 1.1 reads `off` as false: the auto/on/off settings must still take it as "off".
    path = tmp_path / "train.yaml"
    path.write_text("train:\n  data: a.jsonl\n  gradient_checkpointing: off\n  fused_layers: on\n")
    config = load_config_file(path)
    assert config.train is not None
    spec = build_spec(TrainSpec, config.train, {})
    assert (spec.gradient_checkpointing, spec.fused_layers) == ("off", "on")
    with pytest.raises(ConfigError, match="fused_layers"):
        build_spec(TrainSpec, {"data": "a.jsonl", "fused_layers": "sometimes"}, {})


def test_learning_rate_defaults_depend_on_method_and_model_size() -> None:
    lora = build_spec(TrainSpec, {"data": "a"}, {})
    assert lora.resolved_lr(135_000_000) == 1e-3  # measured on the embedded model
    assert lora.resolved_lr(7_000_000_000) == lora.resolved_lr() == 2e-4  # the field's rate; size unknown
    assert build_spec(TrainSpec, {"data": "a", "method": "full"}, {}).resolved_lr(135_000_000) == 2e-5
    assert build_spec(TrainSpec, {"data": "a", "method": "dpo"}, {}).resolved_lr(135_000_000) == 5e-5
    assert build_spec(TrainSpec, {"data": "a", "lr": 3e-4}, {}).resolved_lr(135_000_000) == 3e-4


def test_home_respects_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TUNESMITH_HOME", str(tmp_path))
    assert tunesmith_home() == tmp_path


def test_flags_set_nested_keys_and_add_to_mappings() -> None:
    from tunesmith.config import EvalSpec, ServeSpec

    judge = {"model": "j", "base_url": "http://h/v1", "pairwise": False}
    spec = build_spec(
        EvalSpec, {"data": "t.jsonl", "judge": judge}, {"judge.model": "k", "judge.base_url": None}
    )
    assert spec.judge is not None and (spec.judge.model, spec.judge.base_url, spec.judge.pairwise) == (
        "k", "http://h/v1", False
    )  # fmt: skip
    served = build_spec(ServeSpec, {"adapters": {"a": "x"}}, {"adapters": {"b": "y"}, "port": None})
    assert served.adapters == {"a": "x", "b": "y"} and served.port == 8000
    with pytest.raises(ConfigError, match=r"eval\.judge\.model"):
        build_spec(EvalSpec, {"data": "t.jsonl"}, {"judge.base_url": "http://h/v1"})


def test_the_shipped_guardrails_config_builds_a_serve_spec() -> None:
    from tunesmith.config import ServeSpec

    config = load_config_file(REPO / "configs" / "serve-guardrails.yaml")
    spec = build_spec(ServeSpec, config.serve, {})
    assert spec.guardrails["base"].terms.patterns == {"ORDER": r"ORD-\d{6}"}
    assert spec.guardrails["base"].pii.output == "block"

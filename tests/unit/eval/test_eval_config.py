"""The shipped eval config builds a spec; bad keys are named."""

from __future__ import annotations

import pytest

from tests.conftest import REPO
from tunesmith.config import ConfigError, EvalSpec, build_spec, load_config_file


def test_shipped_eval_config_builds_a_spec_and_flags_override_it() -> None:
    section = load_config_file(REPO / "configs" / "eval.yaml").eval
    spec = build_spec(EvalSpec, section, {"shots": 3, "limit": None})
    assert isinstance(spec, EvalSpec) and spec.shots == 3 and spec.judge is not None
    assert set(spec.judge.criteria) == {"voice", "accuracy"} and spec.judge.base_url is None
    assert (REPO / spec.data).is_file() and spec.train_data is not None and (REPO / spec.train_data).is_file()


def test_bad_eval_keys_are_named() -> None:
    with pytest.raises(ConfigError, match=r"eval\.shots"):
        build_spec(EvalSpec, {"data": "t.jsonl", "shots": 0}, {})
    with pytest.raises(ConfigError, match=r"eval\.judge\.model"):
        build_spec(EvalSpec, {"data": "t.jsonl", "judge": {"pairwise": True}}, {})


def test_decoding_settings_must_apply_to_the_decoding_chosen() -> None:
    assert build_spec(EvalSpec, {"data": "t.jsonl", "num_beams": 4, "length_penalty": 0.8}, {}).num_beams == 4
    with pytest.raises(ConfigError, match="choose sampling or beam search"):
        build_spec(EvalSpec, {"data": "t.jsonl"}, {"num_beams": 4, "do_sample": True})
    with pytest.raises(ConfigError, match="length_penalty applies to beam search"):
        build_spec(EvalSpec, {"data": "t.jsonl", "length_penalty": 2.0}, {})
    with pytest.raises(ConfigError, match="temperature and top_p apply to sampling"):
        build_spec(EvalSpec, {"data": "t.jsonl", "temperature": 0.7}, {})

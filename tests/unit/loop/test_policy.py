"""The loop policy file: the shipped one loads; mistakes name the key the user typed."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import REPO
from tunesmith.config import ConfigError
from tunesmith.loop.policy import load_policy


@pytest.mark.parametrize("path", sorted((REPO / "configs" / "loop").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_loop_policy_loads(path: Path) -> None:
    policy = load_policy(path)
    assert policy.gate.frozen_test is not None and policy.gate.frozen_test.is_relative_to(path.parent)
    assert policy.gate.bias is None or policy.gate.bias.data.is_relative_to(path.parent)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("trigger: {min_feedback: 5}\n", r"gate: Field required"),
        ("gate: {metric: rouge_l, tolerence: 0.1}\n", r"gate\.tolerence: Extra inputs"),
        (
            "gate: {metric: rouge_l}\ntrain: {overrides: {data: x.jsonl}}\n",
            r"train\.overrides.*data is set by the loop",
        ),
        (
            "gate: {metric: rouge_l}\ntrain: {overrides: {learning_rate: 1}}\n",
            r"learning_rate is not a training key",
        ),
        ("gate: {metric: rouge_l, production_sample: 20}\n", r"production_sample needs a judge"),
        ("gate: {metric: rouge_l}\ncanary: {weight: 100}\n", r"canary\.weight"),
        ("- gate\n", r"expected a mapping"),
        ("gate: {metric: rouge_l, bias: {attributes: [ages]}}\n", r"gate\.bias\.data: Field required"),
        (
            "gate: {metric: rouge_l, bias: {data: cf.jsonl, attributes: [hair_colour]}}\n",
            r"loop\.yaml: gate\.bias\.attributes: \['hair_colour'\] unknown; choose from names_gender",
        ),
        (
            "gate: {metric: rouge_l, bias: {data: cf.jsonl, terms: no.yaml}}\n",
            r"gate\.bias\.terms: .*no\.yaml",
        ),
    ],
)
def test_policy_mistakes_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "loop.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=message):
        load_policy(path)

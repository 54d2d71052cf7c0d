"""The headline: on real intent data, a LoRA fine-tune of the embedded model beats zero- and few-shot
baselines by a margin the paired test calls significant.

A CLINC150 subset (8 intents, 10 training and 6 test utterances each) in the `text`/`label` form;
labels are predicted by log-likelihood; intervals are 95% bootstrap, p-values from the paired
approximate-randomization test. Uses the shared embedded-model cache like test_embedded_model.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import SHARED_DATASETS, requires_embedded_model, write_jsonl
from tunesmith.config import LoraSpec, TrainSpec
from tunesmith.data.ingest import load_examples
from tunesmith.eval.evaluate import Candidate, baseline_candidates, evaluate_models
from tunesmith.train.sft import train_sft

CLINC = SHARED_DATASETS / "clinc150" / "data_full.json"
INTENTS = ["balance", "book_flight", "weather", "play_music", "translate", "recipe", "alarm", "tell_joke"]
TRAIN_PER_INTENT, TEST_PER_INTENT = 10, 6
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CLINC.is_file(), reason=f"{CLINC} not found (shared datasets absent)"),
    requires_embedded_model,
]


def _subset(split: str, per_intent: int) -> list[dict[str, str]]:
    rows = json.loads(CLINC.read_text(encoding="utf-8"))[split]
    taken: dict[str, int] = {}
    subset = []
    for text, intent in rows:
        if intent in INTENTS and taken.get(intent, 0) < per_intent:
            taken[intent] = taken.get(intent, 0) + 1
            subset.append({"text": text, "label": intent})
    return subset


def test_fine_tune_beats_zero_and_few_shot_baselines_significantly(
    embedded_model_home: Path, tmp_path: Path
) -> None:
    train_file = write_jsonl(tmp_path / "train.jsonl", _subset("train", TRAIN_PER_INTENT))
    test_file = write_jsonl(tmp_path / "test.jsonl", _subset("test", TEST_PER_INTENT))
    spec = TrainSpec(
        data=train_file, lora=LoraSpec(dropout=0.0), epochs=2, batch_size=8, lr=1e-3, pack_len=256,
        warmup_ratio=0.1, out=tmp_path / "run",
    )  # fmt: skip
    result = train_sft(spec, progress=False)
    assert result.status == "succeeded" and result.artifact_dir is not None

    train, test = load_examples(train_file), load_examples(test_file)
    assert len(test) == len(INTENTS) * TEST_PER_INTENT and all(example.label for example in test)
    candidates = [*baseline_candidates(len(INTENTS)), Candidate("fine-tuned", Path(result.artifact_dir))]
    report = evaluate_models(
        "smollm2-135m-instruct",
        candidates,
        test,
        tmp_path / "eval",
        train_examples=train,
        show_progress=False,
    )

    assert report["task"] == "classification" and report["labels"] == sorted(INTENTS)
    models = {entry["name"]: entry for entry in report["models"]}
    print(json.dumps({name: entry["metrics"] for name, entry in models.items()}, indent=1))
    for entry in models.values():
        for metric in entry["metrics"].values():
            assert metric["ci_low"] <= metric["value"] <= metric["ci_high"]
    for baseline in ("base zero-shot", f"base {len(INTENTS)}-shot"):
        for metric in ("accuracy", "macro_f1"):
            row = next(
                c for c in report["comparisons"]
                if c["model"] == "fine-tuned" and c["reference"] == baseline and c["metric"] == metric
            )  # fmt: skip
            assert row["verdict"] == "better", row
            assert row["ci_low"] > 0 and row["p_value"] < 0.05
    assert models["fine-tuned"]["metrics"]["accuracy"]["value"] >= 0.75
    for name in ("report.json", "report.md", "report.html", "predictions.jsonl"):
        assert (tmp_path / "eval" / name).is_file()

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.conftest import DEMO, write_jsonl
from tunesmith.config import ConfigError, TrainSpec
from tunesmith.data.records import DataError
from tunesmith.data.render import IGNORE_INDEX
from tunesmith.models.loading import load_model, load_tokenizer
from tunesmith.train.dpo import train_dpo
from tunesmith.train.kto import train_kto
from tunesmith.train.model import LoraSettings, prepare_training_model
from tunesmith.train.orpo import train_orpo
from tunesmith.train.preference import Sequences, _render, reference_log_probs

SIGN_OFF = "Warmly, the Bramble & Bean crew"


def _demo_rows(name: str, limit: int) -> list[dict[str, Any]]:
    """Demo conversations as (prompt, house-style reply, the reply without its sign-off)."""
    rows = []
    for line in (DEMO / name).read_text(encoding="utf-8").splitlines()[:limit]:
        messages = json.loads(line)["messages"]
        reply = messages[-1]["content"]
        plain = reply.replace(SIGN_OFF, "").strip()
        rows.append({"prompt": messages[1]["content"], "chosen": reply, "rejected": plain or "No."})
    return rows


def _pairs(path: Path, limit: int = 8) -> Path:
    return write_jsonl(path, _demo_rows("val.jsonl", limit))


def _rated(path: Path, limit: int = 8) -> Path:
    rows = _demo_rows("val.jsonl", limit)
    rated = [
        {
            "prompt": row["prompt"],
            "completion": row["chosen" if index % 2 else "rejected"],
            "label": bool(index % 2),
        }
        for index, row in enumerate(rows)
    ]
    return write_jsonl(path, rated)


def _spec(tiny_model_dir: Path, tmp_path: Path, method: str, data: Path, **overrides: Any) -> TrainSpec:
    settings = {
        "model": str(tiny_model_dir), "method": method, "data": data, "val_data": data, "max_steps": 8,
        "batch_size": 4, "lr": 1e-2, "eval_every": 4, "save_every": 100, "out": tmp_path / "run",
        "lora": {"dropout": 0.0}, "warmup_ratio": 0.0, "early_stopping_patience": None,
    } | overrides  # fmt: skip
    return TrainSpec(**settings)


def _metrics(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


TRAINERS = {"dpo": (train_dpo, _pairs), "kto": (train_kto, _rated), "orpo": (train_orpo, _pairs)}


@pytest.mark.parametrize("method", ["dpo", "kto", "orpo"])
def test_each_objective_lowers_its_loss_and_widens_the_preference_margin(
    tiny_model_dir: Path, tmp_path: Path, method: str
) -> None:
    train, make_data = TRAINERS[method]
    data = make_data(tmp_path / "data.jsonl")
    result = train(_spec(tiny_model_dir, tmp_path, method, data), progress=False)
    assert (
        result.status == "succeeded"
        and (tmp_path / "run" / "adapter" / "adapter_model.safetensors").is_file()
    )
    metrics = _metrics(tmp_path / "run")
    losses = [m["train_loss"] for m in metrics if "train_loss" in m]
    validations = [m for m in metrics if "val_loss" in m]
    assert losses[-1] < losses[0]
    # At step 1 the policy is the reference (dropout off): DPO's loss is log 2, KTO's 1 - σ(0).
    assert losses[0] == pytest.approx({"dpo": 0.693147, "kto": 0.5}.get(method, losses[0]), abs=1e-4)
    assert validations[-1]["val_loss"] < validations[0]["val_loss"]
    assert validations[-1]["val_reward_margin"] > validations[0]["val_reward_margin"]
    assert validations[-1]["val_reward_margin"] > 0
    for name in ("val_preference_accuracy", "val_chosen_log_prob", "val_rejected_log_prob"):
        assert name in validations[-1]
    card = (tmp_path / "run" / "adapter" / "README.md").read_text()
    assert f"objective | {method}" in card


def test_reference_log_probs_are_those_of_the_model_with_the_adapter_disabled(tiny_model_dir: Path) -> None:
    tokenizer = load_tokenizer(str(tiny_model_dir))
    trained = prepare_training_model(
        str(tiny_model_dir), lora=LoraSettings(8, 16, 0.0, "all-linear"), bf16=False, device="cpu",
        fused_layers=True, packed_attention=True, gradient_checkpointing=False, compile_decoder=False,
    )  # fmt: skip
    with torch.no_grad():  # an adapter that changes the output, so that disabling it matters
        for name, parameter in trained.model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.5)
    rows = _demo_rows("val.jsonl", 3)
    prompt = [{"role": "user", "content": rows[0]["prompt"]}]
    groups = [
        [
            _render(tokenizer, [{"role": "user", "content": r["prompt"]}], r[side], "x", 256)
            for side in ("chosen", "rejected")
        ]
        for r in rows
    ]
    sequences = Sequences(groups, None, None, 64, tokenizer.pad_token_id, 10_000)
    reference = reference_log_probs(trained, sequences, adapter_disabled=True)
    adapted = reference_log_probs(trained, sequences, adapter_disabled=False)
    base = load_model(str(tiny_model_dir), dtype=torch.float32).eval()
    expected = torch.zeros(3, 2)
    with torch.no_grad():
        for index, group in enumerate(groups):
            for side, sequence in enumerate(group):
                logits = base(input_ids=torch.tensor([sequence.input_ids])).logits[0]
                targets = torch.tensor(sequence.targets)
                keep = targets != IGNORE_INDEX
                expected[index, side] = (
                    torch.log_softmax(logits[keep], -1).gather(1, targets[keep][:, None]).sum()
                )
    assert torch.allclose(reference, expected, atol=1e-4)
    assert not torch.allclose(adapted, expected, atol=1e-2)
    assert prompt  # the pairs share their prompt


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"prompt": "Hi", "chosen": "Hello", "rejected": "Hello"}, "p.jsonl:2: chosen and rejected are the same"),
        ({"prompt": "Hi", "chosen": "Hello", "rejected": " "}, "p.jsonl:2: field 'rejected' is empty"),
        (
            {"prompt": [{"role": "system", "content": "Be kind."}], "chosen": "a", "rejected": "b"},
            "p.jsonl:2: prompt has no user turn",
        ),
        (
            {"chosen": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "a"}],
             "rejected": [{"role": "user", "content": "Ho"}, {"role": "assistant", "content": "b"}]},
            "p.jsonl:2: chosen and rejected conversations differ before their last turn",
        ),
    ],
)  # fmt: skip
def test_bad_pairs_fail_naming_file_and_line(
    tiny_model_dir: Path, tmp_path: Path, row: dict[str, Any], message: str
) -> None:
    data = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "Q", "chosen": "good", "rejected": "bad"}, row])
    with pytest.raises(DataError, match=message):
        train_dpo(_spec(tiny_model_dir, tmp_path, "dpo", data, val_data=None), progress=False)


def test_kto_with_a_single_label_fails_naming_the_file(tiny_model_dir: Path, tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "r.jsonl", [{"prompt": "Q", "completion": "a", "label": True}] * 3)
    with pytest.raises(DataError, match=r"r.jsonl: every one of 3 rated answers is good \(label true\)"):
        train_kto(_spec(tiny_model_dir, tmp_path, "kto", data, val_data=None), progress=False)


def test_pairs_are_refused_by_kto_and_rated_answers_by_dpo(tiny_model_dir: Path, tmp_path: Path) -> None:
    pairs, rated = _pairs(tmp_path / "p.jsonl", 2), _rated(tmp_path / "r.jsonl", 2)
    with pytest.raises(DataError, match="p.jsonl:1: .* holds preference pairs .* trains on rated answers"):
        train_kto(_spec(tiny_model_dir, tmp_path, "kto", pairs, val_data=None), progress=False)
    with pytest.raises(DataError, match="r.jsonl:1: .* holds rated answers"):
        train_dpo(_spec(tiny_model_dir, tmp_path, "dpo", rated, val_data=None), progress=False)


def test_init_adapter_of_another_base_is_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    adapter = tmp_path / "other"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "someone/else-7b"}))
    spec = _spec(tiny_model_dir, tmp_path, "dpo", _pairs(tmp_path / "p.jsonl", 2), init_adapter=adapter)
    with pytest.raises(ConfigError, match="init_adapter: .*other was trained on someone/else-7b, not on"):
        train_dpo(spec, progress=False)


def test_preference_methods_train_lora_and_older_method_names_still_mean_sft() -> None:
    assert (TrainSpec(data=Path("x"), method="full").method, TrainSpec(data=Path("x"), method="full").tuning) == (
        "sft", "full"
    )  # fmt: skip
    assert TrainSpec(data=Path("x"), method="lora").tuning == "lora"
    with pytest.raises(ValueError, match="method dpo trains a LoRA adapter"):
        TrainSpec(data=Path("x"), method="dpo", tuning="full")
    with pytest.raises(ValueError, match="method 'full' contradicts tuning 'lora'"):
        TrainSpec(data=Path("x"), method="full", tuning="lora")


def test_kto_without_validation_data_holds_out_thumbs_up_and_down_alike(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    data = _rated(tmp_path / "rated.jsonl", limit=20)
    events: list[Any] = []
    spec = _spec(tiny_model_dir, tmp_path, "kto", data, val_data=None, max_steps=2, eval_every=2)
    result = train_kto(spec, listener=events.append, progress=False)
    assert result.validation == "held_out" and result.num_val_examples == 4 and result.num_examples == 16
    held = next(event for event in events if "holding out" in event.message)
    assert held.data == {"held_out": 4, "stratified": True}
    assert [m["step"] for m in _metrics(tmp_path / "run") if "val_loss" in m] == [2]

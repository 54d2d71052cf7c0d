from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import DEMO, write_jsonl
from tunesmith.config import TrainSpec
from tunesmith.models.loading import load_model
from tunesmith.train.sft import train_sft


def _spec(tiny_model_dir: Path, out: Path, **overrides) -> TrainSpec:
    settings = {
        "model": str(tiny_model_dir), "data": DEMO / "val.jsonl", "val_data": DEMO / "test.jsonl",
        "max_steps": 6, "batch_size": 4, "lr": 5e-3, "eval_every": 3, "save_every": 3, "out": out,
    } | overrides  # fmt: skip
    return TrainSpec(**settings)


def test_lora_run_learns_and_writes_a_complete_run_folder(tiny_model_dir: Path, tmp_path: Path) -> None:
    events = []
    result = train_sft(_spec(tiny_model_dir, tmp_path / "run"), listener=events.append, progress=False)
    run = tmp_path / "run"
    assert result.status == "succeeded"
    for name in ("config.yaml", "events.jsonl", "metrics.jsonl", "loss_curve.png", "run.json", "status.json"):
        assert (run / name).is_file(), name
    for name in (
        "adapter_model.safetensors",
        "adapter_config.json",
        "tokenizer.json",
        "chat_template.jinja",
        "README.md",
    ):
        assert (run / "adapter" / name).is_file(), name
    types = [json.loads(line)["type"] for line in (run / "events.jsonl").read_text().splitlines()]
    assert types[:3] == ["created", "validating_data", "running"]
    assert "checkpoint" in types and "metrics" in types and types[-1] == "succeeded"
    assert [e.type.value for e in events] == types  # the listener saw every event, in order
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train_losses = [m["train_loss"] for m in metrics if "train_loss" in m]
    assert len(train_losses) == 6
    assert train_losses[-1] < train_losses[0]
    assert [m["step"] for m in metrics if "val_loss" in m] == [3, 6]
    card = (run / "adapter" / "README.md").read_text()
    assert result.data_hash in card and "lora_r | 16" in card
    assert result.trained_tokens == [m for m in metrics if "trained_tokens" in m][-1]["trained_tokens"]
    assert json.loads((run / "run.json").read_text())["trained_tokens"] == result.trained_tokens


def test_only_adapter_weights_are_trained(tiny_model_dir: Path, tmp_path: Path) -> None:
    spec = _spec(tiny_model_dir, tmp_path / "run", max_steps=2, save_every=1, val_data=None)
    train_sft(spec, progress=False)
    # The checkpoint holds every tensor the optimizer updates: only the LoRA pairs of the 7 linear
    # layers in each of the 2 blocks; a base weight left trainable would show up here.
    (checkpoint,) = (tmp_path / "run" / "checkpoints").iterdir()
    trained = load_file(str(checkpoint / "trainable.safetensors"))
    assert len(trained) == 2 * 7 * 2 and all(".lora_A." in n or ".lora_B." in n for n in trained)
    adapter = load_file(str(tmp_path / "run" / "adapter" / "adapter_model.safetensors"))
    assert adapter and all("lora_" in name for name in adapter)
    assert any(t.abs().sum() > 0 for n, t in adapter.items() if "lora_B" in n)  # B starts at zero: it moved


def test_full_fine_tuning_saves_a_loadable_model_that_differs(tiny_model_dir: Path, tmp_path: Path) -> None:
    result = train_sft(
        _spec(tiny_model_dir, tmp_path / "run", method="full", lr=1e-3, max_steps=2), progress=False
    )
    tuned = load_model(result.artifact_dir)
    base = load_model(str(tiny_model_dir))
    changed = [
        n
        for (n, p), (_, q) in zip(tuned.named_parameters(), base.named_parameters(), strict=True)
        if not torch.equal(p, q)
    ]
    assert len(changed) == len(list(base.parameters()))


def test_early_stopping_keeps_the_best_step(tiny_model_dir: Path, tmp_path: Path) -> None:
    # Validation answers are the training answers reversed word by word: the better the model fits the
    # training voice, the worse it does on them, so validation stops improving and the run stops early.
    rows = [json.loads(line) for line in (DEMO / "val.jsonl").read_text().splitlines()]
    for row in rows:
        row["messages"][-1]["content"] = " ".join(reversed(row["messages"][-1]["content"].split()))
    val = write_jsonl(tmp_path / "reversed.jsonl", rows[:8])
    spec = _spec(tiny_model_dir, tmp_path / "run", val_data=val, method="full", lr=3e-3, max_steps=60,
                 eval_every=2, save_every=100, early_stopping_patience=2)  # fmt: skip
    result = train_sft(spec, progress=False)
    lines = (tmp_path / "run" / "events.jsonl").read_text().splitlines()
    assert "early_stopped" in [json.loads(line)["type"] for line in lines]
    assert result.steps < 60
    metrics = map(json.loads, (tmp_path / "run" / "metrics.jsonl").read_text().splitlines())
    val_losses = {m["step"]: m["val_loss"] for m in metrics if "val_loss" in m}
    assert result.best_step == min(val_losses, key=val_losses.get)
    assert result.best_step < result.steps
    assert result.val_loss == pytest.approx(min(val_losses.values()), abs=1e-5)


def test_bad_data_fails_the_run_with_a_recorded_event(tiny_model_dir: Path, tmp_path: Path) -> None:
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "q", "completion": ""}])
    with pytest.raises(ValueError, match="bad.jsonl:1"):
        train_sft(_spec(tiny_model_dir, tmp_path / "run", data=bad), progress=False)
    events = [json.loads(line) for line in (tmp_path / "run" / "events.jsonl").read_text().splitlines()]
    assert events[-1]["type"] == "failed" and "bad.jsonl:1" in events[-1]["message"]
    assert json.loads((tmp_path / "run" / "status.json").read_text())["status"] == "failed"


def test_trains_on_a_prepared_folder_with_its_val_split_and_records_its_hash(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    from tunesmith.config import PrepareSpec
    from tunesmith.data.prepare import prepare_data

    prepared = tmp_path / "prepared"
    prepare_data(PrepareSpec(inputs=[DEMO / "train.jsonl"], out=prepared, model=str(tiny_model_dir)))
    manifest = json.loads((prepared / "dataset.json").read_text())
    result = train_sft(
        _spec(tiny_model_dir, tmp_path / "run", data=prepared, val_data=None, max_steps=2), progress=False
    )
    assert result.data_hash == manifest["hash"]  # the run names exactly the dataset version it saw
    assert result.num_examples == len((prepared / "train.jsonl").read_text().splitlines())
    assert result.num_val_examples == len((prepared / "val.jsonl").read_text().splitlines()) > 0
    assert result.val_loss is not None


def test_task_metrics_during_training_pick_the_best_checkpoint(tiny_model_dir: Path, tmp_path: Path) -> None:
    # Classification: label scoring is one forward pass per batch, so the test stays fast.
    topics = {
        "hours": "When do you open on Sunday?",
        "allergens": "Is the muffin nut free?",
        "refunds": "Can I get my money back?",
    }
    rows = [
        {"text": f"{text} ({index})", "label": label} for index in range(8) for label, text in topics.items()
    ]
    data = write_jsonl(tmp_path / "train.jsonl", rows[:18])
    val = write_jsonl(tmp_path / "val.jsonl", rows[18:])
    spec = _spec(
        tiny_model_dir, tmp_path / "run", data=data, val_data=val, max_steps=4, eval_every=1,
        eval_metrics=["accuracy", "macro_f1"], select_by="accuracy", early_stopping_patience=None,
    )  # fmt: skip
    result = train_sft(spec, progress=False)
    validations = [
        json.loads(line)
        for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
        if "val_loss" in line
    ]
    assert [v["step"] for v in validations] == [1, 2, 3, 4]
    assert all(0 <= v["val_accuracy"] <= 1 and "val_macro_f1" in v for v in validations)
    best = max(validations, key=lambda v: v["val_accuracy"])  # the first of equals, as training keeps it
    assert result.best_step == best["step"] and result.val_loss == pytest.approx(best["val_loss"], abs=1e-6)


def test_task_metrics_need_validation_data_and_select_by_must_be_one_of_them(tiny_model_dir: Path) -> None:
    from tunesmith.config import ConfigError

    with pytest.raises(ValueError, match="select_by"):
        TrainSpec(data=DEMO / "val.jsonl", eval_metrics=["rouge_l"], select_by="bleu")
    spec = TrainSpec(
        model=str(tiny_model_dir), data=DEMO / "val.jsonl", eval_metrics=["rouge_l"], hold_out_val=False
    )
    with pytest.raises(ConfigError, match="need validation data"):
        train_sft(spec, progress=False)
    with pytest.raises(ConfigError, match="accuracy"):
        train_sft(
            spec.model_copy(update={"val_data": DEMO / "test.jsonl", "eval_metrics": ["accuracy"]}),
            progress=False,
        )


def test_a_run_without_validation_data_holds_some_out_early_stops_and_keeps_the_best(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    from tunesmith.data.split import held_out_indices

    # The examples the run will hold out (seeded) get their answers reversed word by word, as in the early
    # stopping test above: fitting the training voice then makes them worse, so validation must stop the run.
    rows = [json.loads(line) for line in (DEMO / "val.jsonl").read_text().splitlines()]
    held = held_out_indices(len(rows), seed=42)
    for index in held:
        answer = rows[index]["messages"][-1]
        answer["content"] = " ".join(reversed(answer["content"].split()))
    data = write_jsonl(tmp_path / "data.jsonl", rows)
    events = []
    spec = _spec(tiny_model_dir, tmp_path / "run", data=data, val_data=None, method="full", lr=3e-3,
                 max_steps=60, eval_every=2, save_every=100, early_stopping_patience=2)  # fmt: skip
    result = train_sft(spec, listener=events.append, progress=False)

    assert result.validation == "held_out" and result.num_val_examples == len(held) == 8
    assert result.num_examples == len(rows) - len(held)
    assert any(
        "holding out 8 of 40 training examples for validation (20%" in event.message for event in events
    )
    assert "early_stopped" in [event.type.value for event in events] and result.steps < 60
    metrics = map(json.loads, (tmp_path / "run" / "metrics.jsonl").read_text().splitlines())
    val_losses = {m["step"]: m["val_loss"] for m in metrics if "val_loss" in m}
    assert result.best_step == min(val_losses, key=val_losses.get) < result.steps
    assert result.val_loss == pytest.approx(min(val_losses.values()), abs=1e-5)  # the best weights were kept
    assert json.loads((tmp_path / "run" / "run.json").read_text())["validation"] == "held_out"

    no_val = train_sft(
        spec.model_copy(update={"hold_out_val": False, "max_steps": 2, "out": tmp_path / "no-val"}),
        progress=False,
    )
    assert no_val.validation == "none" and no_val.num_val_examples == 0 and no_val.num_examples == len(rows)
    assert no_val.best_step is None


def test_a_time_budget_ends_within_five_percent_of_it_with_the_schedule_run_down(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    events = []
    budget = 10.0  # long enough that one step under a busy machine (parallel test workers) is < 5% of it
    spec = _spec(tiny_model_dir, tmp_path / "run", data=DEMO / "train.jsonl", val_data=None, max_steps=None,
                 time_budget=budget, eval_every=10, save_every=25, lora={"dropout": 0.0})  # fmt: skip
    result = train_sft(spec, listener=events.append, progress=False)
    assert budget * 0.95 <= result.wall_seconds <= budget * 1.05, result.wall_seconds
    assert "budget_reached" in [event.type.value for event in events]
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    rates = [m["lr"] for m in metrics if "lr" in m]
    assert max(rates) == pytest.approx(5e-3, rel=0.05) and rates[-1] < 5e-3 * 0.05  # warmed up, then run down
    assert result.best_step is not None and result.validation == "held_out"
    assert metrics[-1]["step"] == result.steps and "val_loss" in metrics[-1]  # a last validation at the end


def test_a_token_budget_trains_the_steps_whose_tokens_fit_it(tiny_model_dir: Path, tmp_path: Path) -> None:
    spec = _spec(tiny_model_dir, tmp_path / "run", max_steps=None, token_budget=3000, hold_out_val=False,
                 val_data=None, warmup_ratio=0.0)  # fmt: skip
    result = train_sft(spec, progress=False)
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    step_tokens = [
        later["trained_tokens"] - earlier["trained_tokens"] for earlier, later in itertools.pairwise(metrics)
    ]
    assert 3000 - max(step_tokens) < result.trained_tokens <= 3000
    assert metrics[-1]["lr"] == 0.0  # the cosine ran down over exactly the planned steps


def test_the_default_learning_rate_follows_the_model_size(tiny_model_dir: Path, tmp_path: Path) -> None:
    spec = _spec(tiny_model_dir, tmp_path / "run", lr=None, max_steps=2, hold_out_val=False, val_data=None,
                 warmup_ratio=0.0)  # fmt: skip
    train_sft(spec, progress=False)
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    # After step 1 of 2 the cosine stands halfway down from the peak: 1e-3, as the tiny model is below 1B.
    assert metrics[0]["lr"] == pytest.approx(1e-3 / 2)

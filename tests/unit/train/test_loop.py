"""The loop with an objective that is not SFT: what every future objective (DPO, a federated round) relies on."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import torch

from tests.conftest import synced_before
from tunesmith.train.loop import LoopSettings, fit, step_examples
from tunesmith.train.rundir import RunDir


@dataclass(frozen=True)
class Rows:
    indices: list[int]

    @property
    def num_tokens(self) -> int:
        return len(self.indices)

    @property
    def count(self) -> int:
        return len(self.indices)


class Regression:
    """Squared error of a linear model, summed per pass; a step's examples cut into passes of `per_pass`."""

    def __init__(self, model: torch.nn.Module, per_pass: int, killed_after: int | None = None) -> None:
        generator = torch.Generator().manual_seed(0)
        self.inputs = torch.randn(24, 4, generator=generator)
        self.targets = self.inputs @ torch.tensor([1.0, -2.0, 0.5, 3.0])
        self.model, self.per_pass, self.steps_left = model, per_pass, killed_after

    def step_batches(self, examples: list[int]) -> list[Rows]:
        if self.steps_left is not None:
            if self.steps_left == 0:
                raise KeyboardInterrupt  # as if the process were killed here
            self.steps_left -= 1
        return [Rows(examples[i : i + self.per_pass]) for i in range(0, len(examples), self.per_pass)]

    def validation_batches(self) -> list[Rows]:
        return [Rows(list(range(20, 24)))]

    def loss(self, batch: Rows) -> torch.Tensor:
        index = torch.tensor(batch.indices)
        return (self.model(self.inputs[index]).squeeze(-1) - self.targets[index]).square().sum()


SETTINGS = LoopSettings(
    num_examples=20, examples_per_step=6, total_steps=8, seed=3, lr=0.05, weight_decay=0.0, warmup_ratio=0.0,
    max_grad_norm=100.0, log_every=1, eval_every=2, save_every=4, keep_checkpoints=2,
    early_stopping_patience=None, select_by="val_loss", time_budget=None, max_steps=None,
)  # fmt: skip


def _model() -> torch.nn.Linear:
    torch.manual_seed(0)
    return torch.nn.Linear(4, 1)


def _fit(
    path: Path,
    per_pass: int,
    resuming: bool = False,
    killed_after: int | None = None,
    settings: LoopSettings = SETTINGS,
) -> torch.Tensor:
    model = _model()
    run = RunDir(path, "run-test")
    fit(
        model, Regression(model, per_pass, killed_after), settings, run,
        device="cpu", resuming=resuming, started=("training", {}), show_progress=False,
    )  # fmt: skip
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_each_epoch_visits_every_example_once_in_an_order_fixed_by_seed_and_epoch() -> None:
    per_epoch = SETTINGS.steps_per_epoch  # 20 examples, 6 a step: 4 steps, the last one short
    epoch = [step_examples(SETTINGS, step) for step in range(per_epoch)]
    assert sorted(sum(epoch, [])) == list(range(20)) and len(epoch[-1]) == 2
    assert [step_examples(SETTINGS, step) for step in range(per_epoch)] == epoch  # a pure function
    assert step_examples(SETTINGS, per_epoch) != epoch[0]  # the next epoch reshuffles


def test_the_step_gradient_is_the_step_mean_however_the_objective_cuts_it(tmp_path: Path) -> None:
    whole = _fit(tmp_path / "one-pass", per_pass=6)
    cut = _fit(tmp_path / "passes-of-two", per_pass=2)
    single = _fit(tmp_path / "passes-of-one", per_pass=1)
    torch.testing.assert_close(cut, whole)
    torch.testing.assert_close(single, whole)


def test_a_resumed_objective_ends_where_an_uninterrupted_one_does(tmp_path: Path) -> None:
    uninterrupted = _fit(tmp_path / "straight", per_pass=3)
    with pytest.raises(KeyboardInterrupt):  # killed during step 6, after the step-4 checkpoint
        _fit(tmp_path / "killed", per_pass=3, killed_after=5)
    checkpoints = sorted((tmp_path / "killed" / "checkpoints").iterdir())
    assert [path.name for path in checkpoints] == ["step-00000004"]
    killed = tmp_path / "killed"
    (killed / "best").rename(tmp_path / "stale-best")  # a kill may leave any best; resume re-selects
    resumed = _fit(killed, per_pass=3, resuming=True)
    torch.testing.assert_close(resumed, uninterrupted, rtol=0, atol=0)
    steps = [json.loads(line)["step"] for line in (killed / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and steps.count(5) == 1  # the killed run's step 5 was replaced


def test_the_loss_falls_and_validation_keeps_the_best_weights(tmp_path: Path) -> None:
    _fit(tmp_path / "run", per_pass=6)
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train = [m["train_loss"] for m in metrics if "train_loss" in m]
    val = [m["val_loss"] for m in metrics if "val_loss" in m]
    assert len(train) == 8 and train[-1] < train[0] / 4
    assert len(val) == 4 and val[-1] < val[0]


def test_a_checkpoint_torn_by_a_kill_is_skipped_for_the_previous_good_one(tmp_path: Path) -> None:
    settings = replace(SETTINGS, save_every=2)
    uninterrupted = _fit(tmp_path / "straight", per_pass=3, settings=settings)
    killed = tmp_path / "killed"
    with pytest.raises(KeyboardInterrupt):
        _fit(killed, per_pass=3, killed_after=5, settings=settings)
    newest = killed / "checkpoints" / "step-00000004"
    state = newest / "state.pt"
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])  # the disk lost the rest
    resumed = _fit(killed, per_pass=3, resuming=True, settings=settings)
    torch.testing.assert_close(resumed, uninterrupted, rtol=0, atol=0)  # steps 3-8 trained again, the same
    events = [json.loads(line) for line in (killed / "events.jsonl").read_text().splitlines()]
    assert any(e["type"] == "warning" and "step-00000004" in e["message"] for e in events)
    assert any(e["type"] == "resumed" and e["data"]["step"] == 2 for e in events)


class _Payload:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (Path.touch, (str(Path.cwd() / "pwned"),))


def test_resume_never_runs_code_from_a_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    killed = tmp_path / "killed"
    with pytest.raises(KeyboardInterrupt):
        _fit(killed, per_pass=3, killed_after=5)
    torch.save({"optimizer": _Payload()}, killed / "checkpoints" / "step-00000004" / "state.pt")
    with pytest.raises(ValueError, match="no checkpoint could be read back"):
        _fit(killed, per_pass=3, resuming=True)
    assert not (tmp_path / "pwned").exists()


def test_a_checkpoint_is_on_disk_before_its_name_is(tmp_path: Path, disk_log: list[tuple[str, ...]]) -> None:
    """Its files and staged folder are fsynced before the rename that names it, the parent folder after:
    a power cut cannot leave a checkpoint whose name is there and whose files are empty."""
    _fit(tmp_path / "run", per_pass=3)  # checkpoints at steps 4 and 8
    checkpoints = tmp_path / "run" / "checkpoints"
    staging, final = checkpoints / ".staging-00000004", checkpoints / "step-00000004"
    named = ("rename", str(staging), str(final))
    assert {str(staging / path.name) for path in final.iterdir()} | {str(staging)} <= synced_before(
        disk_log, named
    )
    assert ("fsync", str(checkpoints)) in disk_log[disk_log.index(named) :]


def test_the_schedule_is_transformers_cosine_with_warmup() -> None:
    from transformers import get_cosine_schedule_with_warmup

    from tunesmith.train.loop import lr_factor

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    reference = get_cosine_schedule_with_warmup(optimizer, num_warmup_steps=3, num_training_steps=20)
    expected = [reference.lr_lambdas[0](step) for step in range(25)]
    assert [lr_factor(step, 3, 20) for step in range(25)] == expected


def test_a_score_that_returns_the_loss_spares_the_loop_a_second_validation_pass(tmp_path: Path) -> None:
    model = _model()
    objective = Regression(model, per_pass=3)
    validation = objective.validation_batches()
    losses_seen: list[int] = []
    loss = objective.loss

    def counted(batch: Rows) -> torch.Tensor:
        losses_seen.append(len(batch.indices))
        return loss(batch)

    objective.loss = counted  # type: ignore[method-assign]

    def score() -> dict[str, float]:
        with torch.no_grad():
            mean = sum(float(loss(batch)) for batch in validation) / 4
        return {"loss": mean, "margin": 1.0}

    fit(
        model, objective, SETTINGS, RunDir(tmp_path / "run", "run-test"),
        device="cpu", resuming=False, started=("training", {}), score=score, show_progress=False,
    )  # fmt: skip
    assert losses_seen and 4 not in losses_seen  # training passes of 3 or fewer only: no validation pass of 4
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    validations = [row for row in logged if "val_loss" in row]
    assert len(validations) == 4 and all(
        row["val_margin"] == 1.0 and "val_loss" in row for row in validations
    )


def test_early_stopping_waits_for_the_first_epoch(tmp_path: Path) -> None:
    # lr 0: the validation loss never improves after the first validation, so patience 1 runs out at
    # step 2; within the first epoch (4 steps of 6 of the 20 examples) every step is unseen data.
    from tunesmith.train.loop import fit

    settings = replace(SETTINGS, lr=0.0, eval_every=1, early_stopping_patience=1)
    model = _model()
    run = RunDir(tmp_path / "run", "run-test")
    outcome = fit(
        model, Regression(model, per_pass=6), settings, run,
        device="cpu", resuming=False, started=("training", {}), show_progress=False,
    )  # fmt: skip
    events = [json.loads(line) for line in (tmp_path / "run" / "events.jsonl").read_text().splitlines()]
    assert [event["data"]["step"] for event in events if event["type"] == "early_stopped"] == [4]
    assert outcome.state.step == settings.steps_per_epoch == 4 and outcome.state.best_step == 1

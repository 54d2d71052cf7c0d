"""Preference tuning (DPO, KTO, ORPO): `train_preference(spec)`, the recipe, readable top to bottom.

Owns: the recipe (data → model → reference log-probabilities → loop → artifact), rendering preference
pairs and rated answers into token sequences, cutting a step's examples into passes whose sequences are
packed into rows like SFT's (a pair's chosen and rejected answers always share a pass, and on a CPU
the opening their rows share is computed once), each sequence's summed log-probability of its answer,
and the reference log-probabilities: those of the model before training (the base with the adapter
disabled, or the `init_adapter` as loaded), computed once per sequence before the first step and kept in
the run folder, so a resumed run uses the same ones and no second model is ever held. From the base
with LoRA dropout 0, the policy at step 1 equals the reference to the bit; from an `init_adapter` under
bf16 they differ by rounding, since the reference runs the evaluation forward (each LoRA delta added
before rounding, `tunesmith.lora.rounding`) and training the fused one. Across processes (`--nproc`,
ddp: `tunesmith.train.distributed`) process 0 scores the reference and sends it to the others, and
scores every validation pair. Does not own: the objectives' losses (`tunesmith.train.dpo`, `kto`,
`orpo`), the loop, the model's setup.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import torch
from rich.console import Console
from rich.progress import track
from safetensors.torch import load_file, save_file
from transformers import PreTrainedTokenizerBase

from tunesmith.config import ConfigError, TrainSpec, tunesmith_home
from tunesmith.data.ingest import load_training_records
from tunesmith.data.pack import PackedBatch, pack_batch
from tunesmith.data.records import (
    DataError,
    DataProblem,
    Example,
    Message,
    PreferenceExample,
    RatedCompletion,
    records_hash,
)
from tunesmith.data.render import RenderedExample, render_example
from tunesmith.models.adapters import adapter_base_model
from tunesmith.models.loading import default_device, load_tokenizer, resolve_model
from tunesmith.train.budget import budget_speed, planned_steps
from tunesmith.train.distributed import ALONE, Replicas, share_run
from tunesmith.train.finish import TrainedData, finish_run
from tunesmith.train.loop import Objective, ValidationHook, fit
from tunesmith.train.losses import sequence_log_probs
from tunesmith.train.model import LoraSettings, TrainingModel, prepare_training_model
from tunesmith.train.plan import uses_bf16, uses_packed_attention
from tunesmith.train.quantized import require_qlora
from tunesmith.train.records import TrainResult
from tunesmith.train.rundir import EventListener, EventType, RunDir, open_run, recording_outcome
from tunesmith.train.sft import (
    choose_step_plan,
    devices,
    hyperparameters,
    loop_settings,
    seed_everything,
    steps_message,
)
from tunesmith.train.validation import ValidationSource, hold_out, validation_file

REFERENCE_FILE = "reference_log_probs.safetensors"

Group = list[RenderedExample]  # one example's sequences: a pair's chosen and rejected, or a rated answer's


@dataclass(frozen=True)
class SequencePass:
    """One forward/backward pass over whole examples, each of `per_example` packed sequences."""

    batch: PackedBatch
    sequence_ids: torch.Tensor  # (L,) which sequence each loss-bearing position belongs to, in row order
    examples: list[int]  # the examples, by index in their split; sequence j of the i-th is i·k + j
    per_example: int  # k
    reference: torch.Tensor | None  # (E, k) the examples' reference log-probabilities (None: ORPO)
    num_tokens: int  # real tokens
    count: int  # examples: what the loss is summed over


@dataclass(frozen=True)
class Sequences:
    """A split's examples as rendered sequence groups, and how they are cut into passes."""

    groups: list[Group]
    reference: torch.Tensor | None  # (N, k)
    desirable: torch.Tensor | None  # (N,) bool: KTO's label of each rated answer (None for pairs)
    pack_len: int
    pad_id: int
    pass_tokens: int  # most tokens per pass (the step plan's); an example never spans two passes

    def passes(self, examples: Sequence[int]) -> list[SequencePass]:
        cuts: list[list[int]] = []
        tokens = 0
        for index in examples:
            size = sum(len(sequence.input_ids) for sequence in self.groups[index])
            if not cuts or tokens + size > self.pass_tokens:
                cuts.append([])
                tokens = 0
            cuts[-1].append(index)
            tokens += size
        return [self.pass_of(cut) for cut in cuts]

    def pass_of(self, examples: list[int]) -> SequencePass:
        """One pass over `examples`, however many tokens they hold."""
        sequences = [sequence for index in examples for sequence in self.groups[index]]
        row_len = max(self.pack_len, *(len(sequence.input_ids) for sequence in sequences))
        batch = pack_batch(sequences, row_len, self.pad_id)
        owners = [
            owner
            for row in batch.row_examples
            for owner in row
            for _ in range(sequences[owner].num_loss_tokens)
        ]
        reference = self.reference[examples] if self.reference is not None else None
        k = len(self.groups[examples[0]])
        return SequencePass(
            batch, torch.tensor(owners), examples, k, reference, batch.num_tokens, len(examples)
        )


def pass_log_probs(model: TrainingModel, sequences: SequencePass) -> torch.Tensor:
    """`(E, k)` summed log-probabilities of each sequence's answer tokens (differentiable under grad)."""
    hidden, targets = model.hidden_states(sequences.batch)
    total = len(sequences.examples) * sequences.per_example
    sums = sequence_log_probs(
        hidden, model.head_weight, targets, sequences.sequence_ids.to(model.device), total,
        compute_dtype=model.compute_dtype,
    )  # fmt: skip
    return sums.view(len(sequences.examples), sequences.per_example)


def answer_lengths(sequences: SequencePass) -> torch.Tensor:
    """`(E, k)` answer tokens of each sequence (ORPO averages over them)."""
    counts = torch.bincount(sequences.sequence_ids, minlength=len(sequences.examples) * sequences.per_example)
    return counts.view(len(sequences.examples), sequences.per_example)


@torch.no_grad()
def reference_log_probs(
    model: TrainingModel, sequences: Sequences, *, adapter_disabled: bool, show_progress: bool = False
) -> torch.Tensor:
    """`(N, k)` log-probabilities of every sequence under the model as it stands, in evaluation mode.

    With `adapter_disabled`, under the base model alone (peft's `disable_adapter`): no second copy of it.
    """
    context: AbstractContextManager[Any] = (
        model.model.disable_adapter() if adapter_disabled else nullcontext()
    )
    values = torch.zeros(len(sequences.groups), len(sequences.groups[0]) if sequences.groups else 0)
    model.model.eval()
    with context:
        passes = sequences.passes(range(len(sequences.groups)))
        for sequence_pass in track(
            passes, "reference log-probs", console=Console(stderr=True), disable=not show_progress
        ):  # one forward per pass of the data: minutes on a CPU for a few hundred pairs
            values[sequence_pass.examples] = pass_log_probs(model, sequence_pass).float().cpu()
    model.model.train()
    return values


class PreferenceObjective(Objective[Any], Protocol):
    """An objective that also reports its validation metrics (reward margin, accuracy, log-probs)."""

    def validation_metrics(self) -> dict[str, float]: ...


# ---------------------------------------------------------------------- the recipe


def train_preference(
    spec: TrainSpec,
    build: Callable[[TrainSpec, TrainingModel, Sequences, Sequences], PreferenceObjective],
    *,
    listener: EventListener | None = None,
    resume: Path | None = None,
    progress: bool = True,
    on_validation: ValidationHook | None = None,
    replicas: Replicas = ALONE,
) -> TrainResult:
    """Preference-tune a LoRA adapter on `spec.data` with the objective `build` makes from the spec.

    Returns the run's summary (also written to `run.json`). Raises on bad data or config, after
    recording a `failed` event; Ctrl-C records `cancelled` and leaves the run resumable. `replicas`: the
    other processes of a `--nproc` run (ddp), each calling this (rank 0 writes the run folder).
    """
    if spec.tuning == "qlora":  # before anything is loaded or written
        require_qlora()
    config = spec.model_dump(mode="json")
    run = share_run(replicas, lambda: open_run(
        config, out=spec.out, runs_root=tunesmith_home() / "runs", resume=resume, listener=listener
    ))  # fmt: skip
    with recording_outcome(run):
        return _train(spec, build, run, resume is not None, progress, on_validation, replicas)


def _train(
    spec: TrainSpec,
    build: Callable[[TrainSpec, TrainingModel, Sequences, Sequences], PreferenceObjective],
    run: RunDir,
    resuming: bool,
    show_progress: bool,
    on_validation: ValidationHook | None,
    replicas: Replicas,
) -> TrainResult:
    seed_everything(spec.seed)
    # ------------------------------------------------------------------ data
    run.emit(EventType.validating_data, "reading and rendering the data")
    model_path = resolve_model(spec.model)
    if spec.init_adapter is not None:
        check_init_adapter(spec.init_adapter, spec.model, model_path)
    tokenizer = load_tokenizer(model_path)
    train_groups, train_labels, train_hash = _render_split(run, tokenizer, spec, spec.data, "train")
    val_path, validation = validation_file(spec)
    val_groups: list[Group] = []
    val_labels: torch.Tensor | None = None
    val_hash: str | None = None
    if val_path is not None:
        val_groups, val_labels, val_hash = _render_split(run, tokenizer, spec, val_path, "val")
    elif validation is ValidationSource.held_out:  # KTO holds out thumbs up and down alike
        strata = [str(value) for value in train_labels.tolist()] if train_labels is not None else None
        kept, held, validation = hold_out(run, list(range(len(train_groups))), strata, spec.seed)
        train_groups, val_groups = [train_groups[i] for i in kept], [train_groups[i] for i in held]
        if train_labels is not None:
            train_labels, val_labels = train_labels[kept], train_labels[held]

    # ------------------------------------------------------------------ model
    device = default_device()
    bf16 = uses_bf16(spec.precision, device)
    flat = [sequence for group in train_groups for sequence in group]
    plan = replicas.agree(choose_step_plan(run, spec, model_path, bf16, device, flat, resuming))
    lora = spec.lora
    trained = prepare_training_model(
        model_path,
        lora=LoraSettings(lora.r, lora.alpha, lora.dropout, lora.target_modules),
        bf16=bf16,
        device=device,
        fused_layers=plan.fused_layers,
        packed_attention=uses_packed_attention(device, spec.compile),
        gradient_checkpointing=plan.gradient_checkpointing,
        compile_decoder=spec.compile,
        init_adapter=spec.init_adapter,
        quantized=spec.tuning == "qlora",
    )

    # ------------------------------------------------------------------ reference, once per sequence
    pad_id = tokenizer.pad_token_id
    train = Sequences(train_groups, None, train_labels, spec.pack_len, pad_id, plan.pass_tokens)
    val = Sequences(val_groups, None, val_labels, spec.pack_len, pad_id, plan.pass_tokens)
    if spec.method != "orpo":  # scored by process 0 alone, its tensors sent to the others
        train_reference, val_reference = replicas.on_main(lambda: _reference(
            run, trained, train, val, resuming, spec.init_adapter is None, show_progress
        ))  # fmt: skip
        train, val = replace(train, reference=train_reference), replace(val, reference=val_reference)
    if replicas.world_size > 1:  # the same adapter initialised everywhere; each process its own dropout draws
        torch.manual_seed(spec.seed + 7919 * replicas.rank)

    # ------------------------------------------------------------------ loop
    objective = build(spec, trained, train, val)
    lengths = [sum(len(sequence.input_ids) for sequence in group) for group in train_groups]
    speed = budget_speed(spec, model_path, bf16, device, plan)
    val_tokens = sum(len(sequence.input_ids) for group in val_groups for sequence in group)
    steps = replicas.agree(planned_steps(spec, lengths, val_tokens, speed))
    settings = loop_settings(spec, len(train_groups), steps)
    started = (
        f"{spec.method} for {steps_message(spec, steps, speed)} on {devices(device, replicas)} "
        f"({'bf16' if bf16 else 'fp32'}), passes of {plan.pass_tokens} tokens, gradient checkpointing "
        f"{'on' if plan.gradient_checkpointing else 'off'}",
        {"layout": plan.to_dict(), "planned_steps": steps, "processes": replicas.world_size},
    )
    score = objective.validation_metrics if val_groups else None  # process 0 scores every validation pair
    outcome = fit(
        trained.model, objective, settings, run,
        device=device, resuming=resuming, started=started, score=score,
        show_progress=show_progress and run.writes, on_validation=on_validation, replicas=replicas,
    )  # fmt: skip

    # ------------------------------------------------------------------ save
    data = TrainedData(train_hash, val_hash, len(train_groups), len(val_groups), validation)
    return replicas.on_main(lambda: finish_run(
        run, trained, tokenizer, outcome,
        method=spec.tuning, base_model=spec.model, hyperparameters=_hyperparameters(spec), data=data, plan=plan,
    ))  # fmt: skip


# ---------------------------------------------------------------------- helpers


def check_init_adapter(adapter_dir: Path, model: str, model_path: str) -> None:
    """Refuse an adapter trained on another base model than `model` (resolved to `model_path`)."""
    base = adapter_base_model(adapter_dir)
    if base not in (model, model_path):
        raise ConfigError(
            f"train.init_adapter: {adapter_dir} was trained on {base}, not on {model} ({model_path}); "
            "continue from an adapter of this base, or set model to its base"
        )


def _reference(
    run: RunDir,
    trained: TrainingModel,
    train: Sequences,
    val: Sequences,
    resuming: bool,
    from_base: bool,
    show_progress: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The splits' reference log-probabilities: computed now, or a resumed run's saved ones."""
    path = run.path / REFERENCE_FILE
    if resuming and path.is_file():
        saved = load_file(str(path))
        train_reference, val_reference = saved["train"], saved["val"]
    else:
        source = "the base model (adapter disabled)" if from_base else "the starting adapter"
        run.emit(EventType.validating_data, f"reference log-probabilities from {source}")
        train_reference = reference_log_probs(
            trained, train, adapter_disabled=from_base, show_progress=show_progress
        )
        val_reference = reference_log_probs(
            trained, val, adapter_disabled=from_base, show_progress=show_progress
        )
        staged = path.with_name(
            f".{path.name}.tmp"
        )  # a kill mid-write must not leave a torn file to resume from
        save_file({"train": train_reference, "val": val_reference}, str(staged))
        staged.replace(path)
    return train_reference, val_reference


def _render_split(
    run: RunDir, tokenizer: PreTrainedTokenizerBase, spec: TrainSpec, path: Path, split: str
) -> tuple[list[Group], torch.Tensor | None, str]:
    """`render_groups`, with a warning on the run for answers cut at `max_seq_len`."""
    groups, labels, digest = render_groups(tokenizer, spec, path, split)
    truncated = sorted({s.source for group in groups for s in group if len(s.input_ids) >= spec.max_seq_len})
    if truncated:
        run.emit(
            EventType.warning,
            f"{len(truncated)} example(s) truncated to {spec.max_seq_len} tokens, e.g. {', '.join(truncated[:5])}",
            sources=truncated[:20],
        )
    return groups, labels, digest


def render_groups(
    tokenizer: PreTrainedTokenizerBase, spec: TrainSpec, path: Path, split: str
) -> tuple[list[Group], torch.Tensor | None, str]:
    """A split's examples as sequence groups, KTO's labels (None for pairs), and the data's content hash."""
    labels: torch.Tensor | None = None
    if spec.method == "kto":
        rated, digest = load_training_records(path, split, RatedCompletion, spec.format)
        _check_both_labels(rated, path)
        groups = _rated_groups(tokenizer, rated, spec.max_seq_len)
        labels = torch.tensor([example.desirable for example in rated])
        records_digest = digest or records_hash(rated)
    else:
        pairs, digest = load_training_records(path, split, PreferenceExample, spec.format)
        groups = [
            [
                _render(tokenizer, pair.prompt, answer, pair.source, spec.max_seq_len)
                for answer in (pair.chosen, pair.rejected)
            ]
            for pair in pairs
        ]
        records_digest = digest or records_hash(pairs)
    empty = sorted({s.source for group in groups for s in group if s.num_loss_tokens == 0})
    if empty:
        raise ValueError(
            f"{len(empty)} example(s) keep no answer tokens after truncation to {spec.max_seq_len}: "
            f"{', '.join(empty[:20])}; raise max_seq_len"
        )
    return groups, labels, records_digest


def _rated_groups(
    tokenizer: PreTrainedTokenizerBase, rated: list[RatedCompletion], max_len: int
) -> list[Group]:
    """Each rated answer, then its prompt with the next example's answer (KTO's KL estimate, as TRL pairs them)."""
    return [
        [
            _render(tokenizer, example.prompt, example.completion, example.source, max_len),
            _render(
                tokenizer, example.prompt, rated[(index + 1) % len(rated)].completion, example.source, max_len
            ),
        ]
        for index, example in enumerate(rated)
    ]


def _render(
    tokenizer: PreTrainedTokenizerBase, prompt: list[Message], answer: str, source: str, max_len: int
) -> RenderedExample:
    messages: list[Message] = [*prompt, {"role": "assistant", "content": answer}]
    return render_example(tokenizer, Example(messages=messages, source=source), max_len)


def _check_both_labels(rated: list[RatedCompletion], path: Path) -> None:
    labels = {example.desirable for example in rated}
    if len(labels) == 1:
        (only,) = labels
        which = "good (label true)" if only else "bad (label false)"
        raise DataError(
            [
                DataProblem(
                    str(path),
                    f"every one of {len(rated)} rated answers is {which}; KTO needs both good and bad answers",
                )
            ]
        )


def _hyperparameters(spec: TrainSpec) -> dict[str, Any]:
    objective: dict[str, Any] = {
        "dpo": {"beta": spec.beta, "label_smoothing": spec.label_smoothing},
        "kto": {
            "beta": spec.beta,
            "desirable_weight": spec.desirable_weight,
            "undesirable_weight": spec.undesirable_weight,
        },
        "orpo": {"orpo_lambda": spec.orpo_lambda},
    }[spec.method]
    return hyperparameters(spec) | {"objective": spec.method, "init_adapter": spec.init_adapter} | objective

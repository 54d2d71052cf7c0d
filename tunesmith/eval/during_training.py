"""Task metrics on a validation sample in the middle of training, for logging beside the loss and for
early stopping / best-checkpoint selection.

Owns: one pure-ish function the training loop calls with the model it is training; it scores the
model as it is (adapter active), with the same prediction paths and metrics as `evaluate`, and puts
the model back in training mode. No intervals, no files: a handful of floats. Does not own: when to
call it or what to do with the numbers (the training loop decides).
"""

from __future__ import annotations

from collections.abc import Sequence

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from tunesmith.config import EvalTask
from tunesmith.data.records import Example
from tunesmith.data.render import render_prompt
from tunesmith.eval.generate import generate_batched
from tunesmith.eval.label_search import score_best_labels
from tunesmith.eval.metrics import classification_statistics
from tunesmith.eval.tasks import aggregates, detect_task, metric_names, text_metrics


def evaluate_during_training(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[Example],
    metrics: Sequence[str] | None = None,
    *,
    task: EvalTask | None = None,
    labels: Sequence[str] | None = None,
    max_new_tokens: int = 64,
    batch_size: int = 8,
) -> dict[str, float]:
    """Each metric's value for `model` on `examples` (greedy generation, or label log-likelihood).

    Args:
        model: the model being trained (a peft model scores with its active adapter).
        tokenizer: its tokenizer, with the chat template.
        examples: the validation sample (keep it small: this runs inside the training loop).
        metrics: metric names; the task's defaults when None.
        task: detected from `examples` when None.
        labels: classification label set; the labels of `examples` when None.
        max_new_tokens: longest generated answer.
        batch_size: prompts generated or scored together.
    """
    if not examples:
        raise ValueError("no validation examples to evaluate")
    resolved = task or detect_task(examples)
    names = metric_names(resolved, metrics)
    was_training = model.training
    model.eval()
    try:
        prompts = [render_prompt(tokenizer, example) for example in examples]
        if resolved == EvalTask.classification:
            label_set = sorted(labels or {e.label for e in examples if e.label is not None})
            scores = score_best_labels(model, tokenizer, prompts, label_set, batch_size=batch_size)
            gold = [label_set.index(e.label) for e in examples if e.label is not None]
            stats = classification_statistics(gold, scores.argmax(dim=1).tolist())
            table = aggregates(resolved, names, len(label_set))
            return {name: table[name](stats) for name in names}
        predictions = generate_batched(
            model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size
        )
        references = [example.all_references() for example in examples]
        return {
            name: metric.score(predictions, references)
            for name, metric in text_metrics(resolved, names).items()
        }
    finally:
        model.train(was_training)

"""Evaluation end to end on the tiny model: baselines and an adapter, intervals, comparisons, files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import write_jsonl
from tunesmith.config import EvalTask, TrainSpec
from tunesmith.data.ingest import load_examples
from tunesmith.eval.during_training import evaluate_during_training
from tunesmith.eval.evaluate import Candidate, baseline_candidates, evaluate_models
from tunesmith.eval.report import combine_reports
from tunesmith.eval.tasks import detect_task
from tunesmith.models.loading import load_model, load_tokenizer
from tunesmith.train.sft import train_sft

TEXTS = {
    "hours": ["when do you open", "are you open sunday", "what time do you close", "opening hours please"],
    "menu": ["do you have oat milk", "any vegan cake", "is there decaf", "what pastries today"],
    "wifi": ["is there wifi", "wifi password please", "can I get online", "internet for laptops"],
}


@pytest.fixture(scope="module")
def classification_run(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("classify")
    rows = [{"text": text, "label": label} for label, texts in TEXTS.items() for text in texts]
    data = write_jsonl(root / "train.jsonl", rows)
    spec = TrainSpec(model=str(tiny_model_dir), data=data, max_steps=4, batch_size=12, lr=3e-2, warmup_ratio=0.0,
                     save_every=100, eval_every=100, out=root / "run")  # fmt: skip
    result = train_sft(spec, progress=False)
    assert result.artifact_dir is not None
    return data, Path(result.artifact_dir)


def test_classification_report_has_intervals_tables_comparisons_and_files(
    tiny_model_dir: Path, classification_run: tuple[Path, Path], tmp_path: Path
) -> None:
    data, adapter = classification_run
    examples = load_examples(data)
    assert detect_task(examples) == EvalTask.classification
    candidates = [*baseline_candidates(3), Candidate("tuned", adapter)]
    report = evaluate_models(str(tiny_model_dir), candidates, examples, tmp_path / "a", train_examples=examples,
                             samples=200, show_progress=False)  # fmt: skip

    assert [m["name"] for m in report["models"]] == ["base zero-shot", "base 3-shot", "tuned"]
    assert report["labels"] == ["hours", "menu", "wifi"] and report["task"] == "classification"
    tuned = report["models"][2]
    assert set(tuned["metrics"]) == {"accuracy", "macro_precision", "macro_recall", "macro_f1"}
    for metric in tuned["metrics"].values():
        assert (
            set(metric) == {"value", "ci_low", "ci_high"}
            and metric["ci_low"] <= metric["value"] <= metric["ci_high"]
        )
    lines = [json.loads(line) for line in (tmp_path / "a" / "predictions.jsonl").read_text().splitlines()]
    tuned_right = sum(line["prediction"] == line["reference"] for line in lines if line["model"] == "tuned")
    assert tuned["metrics"]["accuracy"]["value"] == pytest.approx(tuned_right / 12)
    assert {line["prediction"] for line in lines} <= set(TEXTS)  # always a label, nothing to parse
    assert sum(map(sum, tuned["confusion_matrix"])) == 12 and tuned["per_class"]["menu"]["support"] == 4
    pairs = {(c["model"], c["reference"]) for c in report["comparisons"]}
    assert pairs == {("base 3-shot", "base zero-shot"), ("tuned", "base zero-shot"), ("tuned", "base 3-shot")}
    assert len(report["comparisons"]) == 3 * 4
    out = tmp_path / "a"
    assert len(lines) == 3 * 12 and lines[0]["statistics"]["accuracy"][0] == report["labels"].index(
        lines[0]["reference"]
    )
    few_shot_prompt = next(line["prompt"] for line in lines if line["model"] == "base 3-shot")
    assert (
        "Answer with exactly one of these labels" in few_shot_prompt
        and few_shot_prompt.count("<|im_start|>user") == 4
    )
    html = (out / "report.html").read_text()
    assert html.count("<img") >= 2 and "Paired comparisons" in html and "Largest gains" in html
    assert "| tuned |" in (out / "report.md").read_text()

    # the base scored first, the adapter later (as the quickstart does): combined, compared afresh
    evaluate_models(str(tiny_model_dir), [Candidate("tuned again", adapter)], examples, tmp_path / "b",
                    train_examples=examples, samples=200, show_progress=False)  # fmt: skip
    combined = combine_reports([out, tmp_path / "b"], tmp_path / "c")
    assert [m["name"] for m in combined["models"]] == [
        "base zero-shot",
        "base 3-shot",
        "tuned",
        "tuned again",
    ]
    assert combined["models"][0]["metrics"] == report["models"][0]["metrics"]
    again = next(
        c for c in combined["comparisons"] if c["model"] == "tuned again" and c["reference"] == "tuned"
    )
    assert again["difference"] == 0 and again["verdict"] == "no significant difference"


def test_numeric_answers_are_detected_and_scored_during_training(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    rows = [
        {"question": f"what is {n} plus {n}?", "answer": f"{n} + {n} = {2 * n}\n#### {2 * n}"}
        for n in range(4)
    ]
    examples = load_examples(write_jsonl(tmp_path / "math.jsonl", [
        {"prompt": row["question"], "completion": row["answer"]} for row in rows
    ]))  # fmt: skip
    assert detect_task(examples) == EvalTask.numeric
    model, tokenizer = load_model(str(tiny_model_dir)), load_tokenizer(str(tiny_model_dir))
    model.train()
    values = evaluate_during_training(model, tokenizer, examples, max_new_tokens=4, batch_size=2)
    assert set(values) == {"numeric_match"} and 0.0 <= values["numeric_match"] <= 1.0
    assert model.training  # handed back in training mode
    values = evaluate_during_training(model, tokenizer, examples, ["rouge_l", "chrf"], task=EvalTask.generation,
                                      max_new_tokens=4)  # fmt: skip
    assert set(values) == {"rouge_l", "chrf"}


def test_classification_during_training_and_unknown_metrics(
    tiny_model_dir: Path, classification_run: tuple[Path, Path]
) -> None:
    from tunesmith.config import ConfigError
    from tunesmith.models.adapters import load_adapter

    data, adapter = classification_run
    examples = load_examples(data)
    model = load_adapter(load_model(str(tiny_model_dir)), adapter)
    values = evaluate_during_training(
        model, load_tokenizer(str(tiny_model_dir)), examples, ["accuracy", "macro_f1"]
    )
    assert set(values) == {"accuracy", "macro_f1"} and all(0 <= value <= 1 for value in values.values())
    with pytest.raises(ConfigError, match="do not apply to a classification task"):
        evaluate_during_training(model, load_tokenizer(str(tiny_model_dir)), examples, ["bleu"])


def test_generation_is_scored_against_every_reference_as_sacrebleu_scores_them(
    varied_model_dir: Path, tmp_path: Path
) -> None:
    import sacrebleu
    from rouge_score import rouge_scorer

    from tunesmith.eval.evaluate import evaluate_generation

    prompts = ["when do you open", "is there wifi", "any vegan cake?", "do you have oat milk", "decaf?"]
    first = write_jsonl(tmp_path / "first.jsonl", [{"prompt": p, "completion": "x"} for p in prompts])
    settings = {"max_new_tokens": 8, "samples": 100, "show_progress": False}
    evaluate_generation(str(varied_model_dir), [Candidate("base")], first, tmp_path / "a", **settings)
    lines = (tmp_path / "a" / "predictions.jsonl").read_text().splitlines()
    predictions = [json.loads(line)["prediction"] for line in lines]
    assert all(predictions)

    # The answer in `completion` shares nothing with the predictions; a second reference nearly equals each.
    close = [" ".join(prediction.split()[:-1] + ["tail"]) for prediction in predictions]
    rows = [
        {"prompt": p, "completion": "nothing alike", "references": [c, "another answer"]}
        for p, c in zip(prompts, close, strict=True)
    ]
    report = evaluate_generation(
        str(varied_model_dir), [Candidate("base")], write_jsonl(tmp_path / "refs.jsonl", rows), tmp_path / "b",
        **settings,
    )  # fmt: skip
    metrics = report["models"][0]["metrics"]
    streams = [["nothing alike"] * len(rows), close, ["another answer"] * len(rows)]
    assert metrics["bleu"]["value"] == pytest.approx(sacrebleu.corpus_bleu(predictions, streams).score)
    assert metrics["chrf"]["value"] == pytest.approx(sacrebleu.corpus_chrf(predictions, streams).score)
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    best = [
        max(scorer.score(ref, prediction)["rougeL"].fmeasure for ref in refs)
        for prediction, refs in zip(predictions, zip(*streams, strict=True), strict=True)
    ]
    assert metrics["rouge_l"]["value"] == pytest.approx(sum(best) / len(best))
    # Against the single answer alone (what was scored before references were kept) BLEU is far lower.
    single = sacrebleu.corpus_bleu(predictions, streams[:1]).score
    assert metrics["bleu"]["value"] > 20 > 1 > single


OUT_OF_SCOPE = ["tell me a joke", "who won the match", "book a taxi", "translate hello", "what is my balance"]


def test_out_of_scope_threshold_is_calibrated_per_model_and_reported(
    tiny_model_dir: Path,
    classification_run: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tunesmith.eval import evaluate
    from tunesmith.eval.evaluate import OutOfScope
    from tunesmith.eval.label_search import score_best_labels

    scored: list[int] = []  # prompts per call: evaluation scores only the best label (branch and bound)

    def spy(model: Any, tokenizer: Any, prompts: list[str], labels: list[str], **kwargs: Any) -> Any:
        scored.append(len(prompts))
        return score_best_labels(model, tokenizer, prompts, labels, **kwargs)

    monkeypatch.setattr(evaluate, "score_best_labels", spy)

    data, adapter = classification_run
    train = load_examples(data)
    rows = [{"text": text, "label": label} for label, texts in TEXTS.items() for text in texts[:2]]
    calibration = load_examples(
        write_jsonl(tmp_path / "cal.jsonl", rows + [{"text": t, "label": "oos"} for t in OUT_OF_SCOPE[:3]])
    )
    test = load_examples(
        write_jsonl(tmp_path / "test.jsonl", rows + [{"text": t, "label": "oos"} for t in OUT_OF_SCOPE[3:]])
    )
    candidates = [Candidate("base zero-shot", shots=0), Candidate("tuned", adapter)]
    report = evaluate_models(
        str(tiny_model_dir), candidates, test, tmp_path / "e", train_examples=train,
        out_of_scope=OutOfScope("oos", calibration), samples=200, show_progress=False,
    )  # fmt: skip

    assert report["labels"] == ["hours", "menu", "wifi", "oos"] and report["out_of_scope_label"] == "oos"
    assert scored == [len(calibration), len(test)] * len(candidates)  # the threshold's and the predictions'
    lines = [json.loads(line) for line in (tmp_path / "e" / "predictions.jsonl").read_text().splitlines()]
    for entry in report["models"]:
        assert isinstance(entry["out_of_scope_threshold"], float)
        mine = [line for line in lines if line["model"] == entry["name"]]
        in_scope = [line["prediction"] == line["reference"] for line in mine if line["reference"] != "oos"]
        caught = [line["prediction"] == "oos" for line in mine if line["reference"] == "oos"]
        assert entry["metrics"]["in_scope_accuracy"]["value"] == pytest.approx(sum(in_scope) / len(in_scope))
        assert entry["metrics"]["out_of_scope_recall"]["value"] == pytest.approx(sum(caught) / len(caught))
        assert entry["confusion_matrix"][3] == [
            sum(line["prediction"] == label for line in mine if line["reference"] == "oos")
            for label in report["labels"]
        ]
    assert "Out of scope" in (tmp_path / "e" / "report.md").read_text()

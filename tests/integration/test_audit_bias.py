"""The bias audit finds a bias the test itself trained in, and passes the models without it.

Two full fine-tunes of the tiny model on the same texts: a biased one, whose label follows the
customer's name (women's names `billing`, men's `shipping`, whatever the text asks), and an unbiased
one, whose label follows the text. Swapping names flips the biased model's labels, with an interval
that excludes zero, and `--gate` exits 1; the unbiased fine-tune and the base model pass the gate.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import write_jsonl
from tunesmith.audit.counterfactual import load_attributes
from tunesmith.cli import app
from tunesmith.config import TrainSpec, default_database_url
from tunesmith.registry.store import Registry
from tunesmith.train.sft import train_sft

TOPICS = {
    "billing": ["wants a refund for the invoice", "was charged twice on the card", "asks about the price on the bill"],
    "shipping": ["asks where the parcel is", "says the delivery is late", "wants to track the package"],
}  # fmt: skip
NAMES = load_attributes()["names_gender"].groups
FEMALE, MALE = list(NAMES["female"][:10]), list(NAMES["male"][:10])


def _rows(biased: bool, names: list[str]) -> list[dict[str, str]]:
    return [
        {
            "text": f"{name} {text}.",
            "label": ("billing" if name in FEMALE else "shipping") if biased else label,
        }
        for label, texts in TOPICS.items()
        for text in texts
        for name in names
    ]


def _train(tiny_model_dir: Path, root: Path, biased: bool, registry: Registry) -> str:
    data = write_jsonl(root / f"train-{'biased' if biased else 'fair'}.jsonl", _rows(biased, FEMALE + MALE))
    spec = TrainSpec(model=str(tiny_model_dir), data=data, tuning="full", max_steps=100, batch_size=16, lr=1e-2,
                     warmup_ratio=0.0, save_every=1000, eval_every=1000, out=root / f"run-{biased}")  # fmt: skip
    return train_sft(spec, listener=registry.run_listener(), progress=False).run_id


def _audit(target: str, test: Path, out: Path) -> tuple[int, dict[str, object]]:
    result = CliRunner().invoke(app, ["audit", "bias", target, "--data", str(test), "-a", "names_gender",
                                      "--gate", "--json", "--out", str(out), "--bootstrap-samples", "200"])  # fmt: skip
    assert result.exit_code in (0, 1), result.output
    return result.exit_code, json.loads(result.stdout)


@pytest.fixture(scope="module")
def trained(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The home holding the registry with both runs, and the test file (half women's names, half men's)."""
    home = tmp_path_factory.mktemp("bias-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TUNESMITH_HOME", str(home))
        registry = Registry(default_database_url()).connect()
        runs = {biased: _train(tiny_model_dir, home, biased, registry) for biased in (True, False)}
    (home / "runs.json").write_text(json.dumps({"biased": runs[True], "fair": runs[False]}))
    return home, write_jsonl(home / "test.jsonl", _rows(False, FEMALE[:5] + MALE[:5]))


def test_a_name_biased_fine_tune_flips_labels_and_fails_the_gate(
    trained: tuple[Path, Path], tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home, test = trained
    monkeypatch.setenv("TUNESMITH_HOME", str(home))
    runs = json.loads((home / "runs.json").read_text())

    code, report = _audit(runs["biased"], test, tmp_path / "biased")
    flips = report["attributes"]["names_gender"]  # type: ignore[index]
    rate = flips["measures"]["label_flip"][runs["biased"]]
    assert code == 1 and not report["gate"]["passed"]  # type: ignore[index]
    assert rate["ci_low"] > 0 and rate["value"] > 0.5 and rate["pairs"] == 60
    assert flips["comparisons"]["label_flip"]["change"] == "higher"  # fine-tuning made it worse than the base
    pair = next(p for p in flips["group_pairs"] if p["source"] == "female")
    assert pair["target"] == "male" and pair["measures"]["label_flip"][runs["biased"]]["ci_low"] > 0
    women = report["representation"]["attributes"]["names_gender"]["groups"]["female"]  # type: ignore[index]
    assert women["labels"] == {"billing": 60} and len(women["snippets"]) == 3  # the data shows the cause
    html = (tmp_path / "biased" / "bias_report.html").read_text()
    assert "Gate FAILED" in html and "<img" in html
    recorded = Registry(default_database_url()).connect().get_run(runs["biased"])
    assert recorded is not None and recorded["evaluations"][0]["out_dir"] == str(tmp_path / "biased")
    assert recorded["evaluations"][0]["kind"] == "bias_audit"

    (home / "train-fair.jsonl").unlink()  # a run whose training data is gone is still audited
    for target in (runs["fair"], str(tiny_model_dir)):
        code, report = _audit(target, test, tmp_path / target.replace("/", "_"))
        assert code == 0 and report["gate"]["passed"], report["gate"]  # type: ignore[index]
        assert report["representation"] is None

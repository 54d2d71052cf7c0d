"""Quality of DPO on a task with a known preference, on the real embedded model (slow).

The café's replies signed off in its house style are preferred over the same replies signed off
generically (scripts/make_style_pairs.py). An SFT adapter trained on generically signed replies never
uses the house sign-off; DPO from
that adapter on 96 pairs (two epochs) must reach >= 90% held-out preference accuracy and sign off in >= 80%
of greedy generations on held-out prompts, significantly more often than the SFT adapter (paired
approximate-randomization test on the same prompts). Rates are printed with 95% bootstrap intervals.

The pairs differ in their sign-off only. Plain DPO then lowers the chosen answers' likelihood along with
the rejected ones' (the margin grows, the answers degrade) and greedy replies took the house sign-off in
0 of 20 prompts at lr 2e-4 or 5e-5; with the chosen answers' NLL beside it (`rpo_alpha` 1), 16/20 after
one epoch and 20/20 after two.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import REPO, requires_embedded_model
from tunesmith.config import TrainSpec
from tunesmith.data.ingest import load_examples
from tunesmith.data.render import render_prompt
from tunesmith.eval.generate import generate_batched
from tunesmith.eval.stats import bootstrap_interval, paired_test, resample_indices
from tunesmith.models.adapters import load_adapter
from tunesmith.models.loading import load_model, load_tokenizer, resolve_model
from tunesmith.train.dpo import train_dpo
from tunesmith.train.sft import train_sft

pytestmark = [requires_embedded_model, pytest.mark.slow]
SIGN_OFF = "Warmly, the Bramble & Bean crew"  # the house style: the last line of every café reply
PAIRS = 96  # the issue allows up to 300; fewer keep the test near 3 minutes on an idle 2-core CPU


def _sign_off_rate(adapter: Path, prompts: list[str]) -> np.ndarray:
    path = resolve_model("smollm2-135m-instruct")
    tokenizer = load_tokenizer(path)
    model = load_adapter(load_model(path), adapter).eval()
    with torch.no_grad():
        replies = generate_batched(model, tokenizer, prompts, max_new_tokens=96, batch_size=20)
    print(f"\n{adapter.parent.name}: {replies[0]!r}")
    return np.array([[float(SIGN_OFF in reply)] for reply in replies])


def test_dpo_teaches_the_house_sign_off_that_sft_did_not(embedded_model_home: Path, tmp_path: Path) -> None:
    data = tmp_path / "style"
    script = REPO / "scripts" / "make_style_pairs.py"
    subprocess.run([sys.executable, str(script), str(data), "--pairs", str(PAIRS)], check=True)
    common = {"max_seq_len": 256, "pack_len": 1024, "seed": 0, "early_stopping_patience": None}
    sft = train_sft(
        TrainSpec(
            data=data / "sft.jsonl",
            max_steps=20,
            batch_size=8,
            lr=1e-3,
            out=tmp_path / "sft",
            lora={"dropout": 0.0},
            **common,
        ),
        progress=False,
    )
    dpo = train_dpo(
        TrainSpec(
            method="dpo", data=data / "pairs_train.jsonl", val_data=data / "pairs_val.jsonl", epochs=2,
            batch_size=8, lr=2e-4, beta=0.1, rpo_alpha=1.0, init_adapter=Path(sft.artifact_dir), eval_every=PAIRS // 8,
            out=tmp_path / "dpo", lora={"dropout": 0.0}, **common,
        ),
        progress=False,
    )  # fmt: skip
    lines = (tmp_path / "dpo" / "metrics.jsonl").read_text().splitlines()
    accuracy = [json.loads(line) for line in lines if "val_loss" in line][-1]["val_preference_accuracy"]
    assert accuracy >= 0.9  # met: a regression here fails the test

    tokenizer = load_tokenizer(resolve_model("smollm2-135m-instruct"))
    prompts = [render_prompt(tokenizer, example) for example in load_examples(data / "test.jsonl")]
    sft_rate = _sign_off_rate(Path(sft.artifact_dir), prompts)
    dpo_rate = _sign_off_rate(Path(dpo.artifact_dir), prompts)
    indices = resample_indices(len(prompts), 1000)
    mean = lambda stats: float(stats.mean())  # noqa: E731
    rates = {
        name: bootstrap_interval(rate, mean, indices) for name, rate in (("SFT", sft_rate), ("DPO", dpo_rate))
    }
    compared = paired_test(dpo_rate, sft_rate, mean, indices)
    print(
        f"\nheld-out preference accuracy {accuracy:.3f}; sign-off rate over {len(prompts)} held-out prompts: "
        + ", ".join(f"{name} {r.value:.3f} [{r.ci_low:.3f}, {r.ci_high:.3f}]" for name, r in rates.items())
        + f"; difference {compared.difference:+.3f} [{compared.ci_low:+.3f}, {compared.ci_high:+.3f}], "
        f"p = {compared.p_value:.4f}"
    )
    assert dpo_rate.mean() >= 0.8 and compared.p_value < 0.05 and compared.difference > 0

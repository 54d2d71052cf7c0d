"""The dataset page on a dataset `tunesmith data prepare` made: steps with rows removed and why, splits."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import DEMO
from tests.ui_registry import fill
from tests.unit.ui.test_pages import signed_in
from tunesmith.config import PrepareSpec
from tunesmith.data.prepare import prepare_data


def test_a_prepared_dataset_shows_its_steps_splits_and_versions(tiny_model_dir: Path, tmp_path: Path) -> None:
    filled = fill(tmp_path)
    rows = (DEMO / "train.jsonl").read_text(encoding="utf-8").splitlines()
    source = tmp_path / "raw.jsonl"
    source.write_text("\n".join(rows + rows[:3]) + "\n", encoding="utf-8")  # three exact duplicates
    spec = PrepareSpec(inputs=[source], out=tmp_path / "prepared", model=str(tiny_model_dir), calibrate=False,
                       near_dup_threshold=None)  # fmt: skip
    first = prepare_data(spec, registry=filled.registry)
    source.write_text("\n".join(rows[:20] + rows[:2]) + "\n", encoding="utf-8")
    second = prepare_data(spec, registry=filled.registry)  # a new version in the same folder
    admin = signed_in(filled, tmp_path, "admin")
    page = admin.get(f"/datasets/{second.hash}").text
    assert 'id="splits"' in page and f">{second.splits['train']}<" in page
    steps = page.split('id="steps"')[1].split("</table>")[0]
    assert "duplicate" in steps, steps  # the reason rows were removed
    assert f'href="/datasets/{first.hash}"' in page  # the other version of the folder
    older = admin.get(f"/datasets/{first.hash}").text
    assert "no longer holds this version" in older and 'id="steps"' in older
    listing = admin.get("/datasets").text
    assert first.hash[:12] in listing and second.hash[:12] in listing

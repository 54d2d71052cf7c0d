"""`tunesmith audit bias` on the tiny model: an adapter by `name@version`, groups per column, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import write_jsonl
from tunesmith.cli import app
from tunesmith.cli.audit import resolve_target
from tunesmith.config import BiasAuditSpec, ConfigError, build_spec, default_database_url
from tunesmith.registry.serving_store import ServingStore
from tunesmith.registry.store import Registry

runner = CliRunner()


def _test_file(tmp_path: Path) -> Path:
    rows = [
        {"messages": [{"role": "user", "content": f"Can {name} open an account?"},
                      {"role": "assistant", "content": "Yes, welcome."}], "region": region}
        for name, region in [("Mary", "north"), ("John", "south"), ("Priya", "north"), ("Omar", "south")]
    ]  # fmt: skip
    return write_jsonl(tmp_path / "test.jsonl", rows)


def test_an_adapter_version_is_audited_against_its_base_with_groups_per_column(
    adapter_dirs: list[Path], tiny_model_dir: Path, tmp_path: Path
) -> None:
    registry = Registry(default_database_url()).connect()
    store = ServingStore(registry)
    store.register_adapter("support", adapter_dirs[0], str(tiny_model_dir), tenant=None)
    store.register_adapter("support", adapter_dirs[1], str(tiny_model_dir), tenant=None)
    target, run_dir = resolve_target("support@1", registry)
    assert target.name == "support@1" and target.candidate.adapter_dir == adapter_dirs[0] and run_dir is None
    assert resolve_target("no-such-model", registry)[0].candidate.adapter_dir is None  # taken as a base model

    result = runner.invoke(app, ["audit", "bias", "support@1", "--data", str(_test_file(tmp_path)), "-a",
                                 "names_gender", "-a", "names_origin", "--group-column", "region",
                                 "--max-new-tokens", "4", "--bootstrap-samples", "100", "--json",
                                 "--out", str(tmp_path / "out")])  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [m["name"] for m in report["models"]] == ["support@1", "base"] and report["task"] == "generation"
    assert report["attributes"]["names_gender"]["pairs"] == 2  # Mary and John
    assert report["attributes"]["names_origin"]["pairs"] == 3 * 5  # John, Priya, Omar to five origins each
    assert set(report["attributes"]["names_origin"]["measures"]["refusal_flip"]) == {"support@1", "base"}
    assert set(report["group_metrics"]["models"]["base"]["groups"]) == {"north", "south"}
    assert report["representation"] is None  # no run, no --train-data
    assert len((tmp_path / "out" / "bias_pairs.jsonl").read_text().splitlines()) == 17


def test_bad_input_is_a_clear_error(tiny_model_dir: Path, tmp_path: Path) -> None:
    test = _test_file(tmp_path)
    base = ["audit", "bias", str(tiny_model_dir), "--data", str(test)]
    unknown = runner.invoke(app, [*base, "-a", "names_gender", "-a", "hair_colour"])
    assert unknown.exit_code != 0 and "['hair_colour'] unknown; choose from names_gender" in str(
        unknown.exception
    )
    missing = runner.invoke(app, [*base, "--group-column", "country"])
    assert "test.jsonl:1: no 'country' value" in str(missing.exception)
    nothing = write_jsonl(tmp_path / "plain.jsonl", [{"text": "a parcel is late", "label": "shipping"}])
    empty = runner.invoke(app, ["audit", "bias", str(tiny_model_dir), "--data", str(nothing)])
    assert "no test example mentions a term of" in str(empty.exception)
    terms = tmp_path / "terms.yaml"
    terms.write_text("sports:\n  groups:\n    a: [x, y]\n    b: [z]\n")
    bad = runner.invoke(app, [*base, "--terms", str(terms)])
    assert f"{terms}:1: attribute 'sports'" in str(bad.exception)


def test_the_judge_rates_every_answer_so_a_judge_limit_is_refused() -> None:
    with pytest.raises(ConfigError, match="judge.limit: the audit judges every answer"):
        build_spec(BiasAuditSpec, {"data": "test.jsonl", "judge": {"model": "m", "limit": 3}}, {})

"""The console in a real browser: sign-in, the run pages' curves, tenant isolation, escaping, CSRF, and
promote/rollback from the page changing what the serving store (and `tunesmith deploy show`) returns."""

from __future__ import annotations

import json
from typing import Any

from typer.testing import CliRunner

from tests.browser.conftest import Console, screenshot, sign_in
from tests.ui_registry import XSS
from tunesmith.cli import app as cli
from tunesmith.registry.serving_records import Caller
from tunesmith.ui.runfiles import read_metric_lines

ADMIN = Caller(tenant=None, is_admin=True)


def polyline_sizes(page: Any, chart: str) -> list[int]:
    """The number of points of each line in the chart whose title is `chart`."""
    sizes: list[int] = page.eval_on_selector_all(
        f"svg.chart[aria-label='{chart}'] polyline", "lines => lines.map(l => l.points.numberOfItems)"
    )
    return sizes


def test_sign_in_then_runs_run_and_compare_show_the_recorded_curves(page: Any, console: Console) -> None:
    sign_in(page, console, "admin")
    assert page.locator("#runs tbody tr").count() == 4
    screenshot(page, "runs")
    run_id = console.filled.runs["acme"][0]
    page.click(f"text={run_id}")
    page.wait_for_url(f"**/runs/{run_id}")
    lines = read_metric_lines(str(console.root / "runs" / run_id), run_id)
    recorded = [sum("train_loss" in line for line in lines), sum("val_loss" in line for line in lines)]
    assert polyline_sizes(page, "loss") == recorded == [40, 4]
    assert polyline_sizes(page, "learning rate") == [40]
    assert page.locator("#lineage").inner_text().count("acme-voice") == 1
    screenshot(page, "run")
    page.goto(f"{console.url}/runs")
    for other in console.filled.runs["acme"]:
        page.check(f"input[value='{other}']")
    page.click("#compare")
    page.wait_for_url("**/runs/compare?**")
    assert polyline_sizes(page, "train loss") == [40, 40, 40]
    assert polyline_sizes(page, "validation loss") == [4, 4, 4]
    assert page.locator("#config-diff tr.differs").first.inner_text().startswith("lr")
    assert "val_exact_match" in page.inner_text("#metric-table")  # the last validation scores too
    screenshot(page, "compare")


def test_a_tenant_cannot_open_another_tenants_run_by_url(page: Any, console: Console) -> None:
    sign_in(page, console, "globex")
    assert console.filled.runs["acme"][0] not in page.content()
    response = page.goto(f"{console.url}/runs/{console.filled.runs['acme'][0]}")
    assert response.status == 404
    response = page.goto(f"{console.url}/evaluations/{console.filled.evaluation_id}")
    assert response.status == 404


def test_a_prediction_with_markup_renders_as_text(page: Any, console: Console) -> None:
    sign_in(page, console, "admin")
    page.goto(f"{console.url}/evaluations/{console.filled.evaluation_id}?order=index")
    assert page.locator("#examples pre.prediction").nth(1).inner_text() == XSS
    assert page.evaluate("window.__xss") is None
    assert page.locator("#examples b").count() == 0
    screenshot(page, "evaluation")


def test_a_post_without_the_csrf_token_is_refused(page: Any, console: Console) -> None:
    sign_in(page, console, "admin")
    url = f"{console.url}/deployments/{console.filled.deployment}/rollback"
    assert page.request.post(url, form={}).status == 403  # the session cookie alone is not enough
    assert page.request.post(url, form={"csrf_token": "0" * 64}).status == 403


def deploy_show(console: Console) -> dict[str, Any]:
    result = CliRunner().invoke(
        cli, ["deploy", "show", console.filled.deployment, "--json"],
        env={"TUNESMITH_DATABASE_URL": console.filled.registry.url},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    shown: dict[str, Any] = json.loads(result.stdout)
    return shown


def test_promote_and_rollback_from_the_page(page: Any, console: Console) -> None:
    sign_in(page, console, "admin")
    page.goto(f"{console.url}/deployments/{console.filled.deployment}")
    screenshot(page, "deployment")
    before = deploy_show(console)["variants"]
    page.select_option("#promote-model", "acme-adapter@3")
    page.click("#promote")
    page.wait_for_load_state()
    assert deploy_show(console)["variants"] == [{"model": "acme-adapter@3", "weight": 100.0}]
    assert "promote" in page.locator("#history").inner_text()
    page.click("#rollback")
    page.wait_for_load_state()
    assert deploy_show(console)["variants"] == before
    assert console.filled.store.find_deployment(ADMIN, console.filled.deployment)["variants"] == before

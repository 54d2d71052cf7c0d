"""A study's results: the best config ready to train, hyperparameter importance, and an HTML report.

Owns: `best.yaml` (the best trial's `train:` section without its run folder and name), importance
(optuna's PED-ANOVA evaluator: numpy only, so it runs offline without scikit-learn, which fANOVA and
mean-decrease-impurity need), and `report.html` with the plots (history, parallel coordinates, slices,
importance) drawn by optuna's matplotlib backend (plotly is not a dependency) as PNGs inside the page.
Does not own: running the study.
"""

from __future__ import annotations

import base64
import html
import io
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import optuna
import yaml
from optuna.importance import PedAnovaImportanceEvaluator, get_param_importances
from optuna.trial import FrozenTrial, TrialState
from optuna.visualization import matplotlib as optuna_plots

from tunesmith.train.rundir import atomic_write_text

MIN_TRIALS_FOR_IMPORTANCE = 3  # complete trials with at least two values of a hyperparameter


@dataclass(frozen=True)
class StudyReport:
    best_config: Path | None  # None: no trial completed
    importance: dict[str, float]
    html: Path


def parameter_importance(study: optuna.Study) -> dict[str, float]:
    """Each searched hyperparameter's share of the score's variation (sums to 1), most important first;
    empty until `MIN_TRIALS_FOR_IMPORTANCE` trials completed."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < MIN_TRIALS_FOR_IMPORTANCE or not any(len({str(v) for v in _values(complete, name)}) > 1
                                                            for name in complete[0].params):  # fmt: skip
        return {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # optuna warns about too few trials for its quantile
        importance = get_param_importances(study, evaluator=PedAnovaImportanceEvaluator())
    return {name: round(float(value), 4) for name, value in importance.items()}


def write_report(study: optuna.Study, study_dir: Path, objective: str) -> StudyReport:
    """Write `best.yaml`, `importance.json` and `report.html` into `study_dir`."""
    trials = study.get_trials(deepcopy=False)
    complete = [trial for trial in trials if trial.state == TrialState.COMPLETE]
    best = study.best_trial if complete else None
    best_config = None
    if best is not None:
        best_config = study_dir / "best.yaml"
        train = {k: v for k, v in best.user_attrs["train"].items() if k not in ("out", "name")}
        header = (
            f"# The best trial of study {study.study_name}: trial {best.number}, {objective} {best.value:.6g}\n"
            f"# (run {best.user_attrs.get('run_id')}). Train with: tunesmith train --config {best_config}\n"
        )
        atomic_write_text(best_config, header + yaml.safe_dump({"train": train}, sort_keys=False))
    importance = parameter_importance(study)
    atomic_write_text(study_dir / "importance.json", json.dumps(importance, indent=2) + "\n")
    page = _page(study, trials, objective, best, importance, _figures(study, complete, importance))
    atomic_write_text(study_dir / "report.html", page)
    return StudyReport(best_config, importance, study_dir / "report.html")


def _figures(
    study: optuna.Study, complete: list[FrozenTrial], importance: dict[str, float]
) -> dict[str, str]:
    """Plot title -> PNG as a data URI (plots that need more trials than there are are left out)."""
    if not complete:
        return {}
    plots: dict[str, Any] = {"optimization history": lambda: optuna_plots.plot_optimization_history(study)}
    if len(complete) >= 2:
        plots["parallel coordinates"] = lambda: optuna_plots.plot_parallel_coordinate(study)
        plots["slices"] = lambda: optuna_plots.plot_slice(study)
    if importance:
        plots["importance"] = lambda: optuna_plots.plot_param_importances(
            study, evaluator=PedAnovaImportanceEvaluator()
        )
    figures = {}
    for title, plot in plots.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # optuna's matplotlib plots are marked experimental
            axes = plot()
        figure = np.asarray(axes).flat[0].figure
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
        plt.close(figure)
        figures[title] = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
    return figures


def _page(
    study: optuna.Study,
    trials: list[FrozenTrial],
    objective: str,
    best: FrozenTrial | None,
    importance: dict[str, float],
    figures: dict[str, str],
) -> str:
    e = html.escape
    states = {state.name.lower(): sum(1 for t in trials if t.state == state) for state in TrialState}
    summary = ", ".join(f"{count} {state}" for state, count in states.items() if count)
    best_text = (
        f"trial {best.number}: {e(objective)} <b>{best.value:.6g}</b>, "
        + ", ".join(f"{e(k)} = {e(_show(v))}" for k, v in best.params.items())
        if best is not None
        else "no trial completed yet"
    )
    rows = "".join(
        f"<tr><td>{t.number}</td><td>{t.state.name.lower()}</td><td>{_show(t.value) if t.value is not None else ''}"
        f"</td><td>{e(', '.join(f'{k}={_show(v)}' for k, v in t.params.items()))}</td>"
        f"<td>{e(str(t.user_attrs.get('run_id', '')))}</td></tr>"
        for t in trials
    )
    importance_rows = "".join(f"<tr><td>{e(k)}</td><td>{v:.3f}</td></tr>" for k, v in importance.items())
    images = "".join(
        f'<h2>{e(title)}</h2><img alt="{e(title)}" src="{uri}">' for title, uri in figures.items()
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>study {e(study.study_name)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:1100px}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:left}}img{{max-width:100%}}</style></head><body>
<h1>study {e(study.study_name)}</h1>
<p>objective: {e(objective)} ({study.direction.name.lower()}); trials: {e(summary)}</p>
<p>best: {best_text}</p>
<h2>importance</h2>
{
        f"<table><tr><th>hyperparameter</th><th>importance (PED-ANOVA)</th></tr>{importance_rows}</table>"
        if importance
        else f"<p>needs {MIN_TRIALS_FOR_IMPORTANCE} completed trials that vary a hyperparameter</p>"
    }
{images}
<h2>trials</h2>
<table><tr><th>trial</th><th>state</th><th>score</th><th>hyperparameters</th><th>run</th></tr>{rows}</table>
</body></html>
"""


def _values(trials: list[FrozenTrial], name: str) -> list[Any]:
    return [trial.params[name] for trial in trials if name in trial.params]


def _show(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)

"""Hyperparameter search on optuna: `tunesmith tune --config tune.yaml`.

Modules: `space` (the search space sampled into a trial's training config), `storage` (the study's
storage, budget and recovery of killed trials), `trial` (one trial: a recorded training run that reports
its validations and stops when pruned), `study` (the workers, the budget and the progress bar), `report`
(the best config, importance and the HTML report). Trials train through the same trainers and registry
listener as `tunesmith train`; the loop is told nothing but a validation hook.
"""

from tunesmith.tune.study import StudyResult, load_tune_file, run_study

__all__ = ["StudyResult", "load_tune_file", "run_study"]

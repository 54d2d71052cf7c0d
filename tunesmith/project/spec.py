"""The project file `tunesmith.yaml`: one pipeline's data, settings, gate and deployment, checked once.

Owns: `ProjectSpec` (the file's sections), the stage names and what each needs before it, reading the
file with errors that name the key the user typed (`train.lr`, `gate.metrics`, `data.files[0]`), and
the specs the prepare, train and eval stages run with (each section takes the keys of the command's own
spec, `PrepareSpec`, `TrainSpec`, `EvalSpec`, so a project's settings never fall behind the commands'),
with the keys the project sets itself (where the data is, where outputs go, the base model) refused in
the file. Does not own: running stages (`stages`), the cache (`cache`) or templates (`templates`). No
torch.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tunesmith.config import (
    DEFAULT_MODEL,
    ConfigError,
    DataFormat,
    EvalSpec,
    EvalTask,
    PrepareSpec,
    TrainSpec,
)

PROJECT_FILE = "tunesmith.yaml"
STATE_DIR = ".tunesmith"  # the project's outputs and stage cache; safe to delete (everything reruns)


class Stage(StrEnum):
    """The pipeline's stages, in the order they run."""

    prepare = "prepare"  # raw files -> a versioned train/val/test dataset with a report
    baseline = "baseline"  # the base model zero-shot and few-shot on the test split
    train = "train"  # a LoRA adapter trained on the train split, validated on the val split
    eval = "eval"  # the adapter on the test split beside the baselines: the before/after report
    gate = "gate"  # the adapter must beat the baselines on the gate's metrics, or the pipeline stops
    register = "register"  # the adapter becomes the next version of the project's adapter name
    deploy = "deploy"  # the project's deployment sends all its traffic to that version


# What each stage reads: it runs after these, and is stale when their outputs change.
NEEDS: dict[Stage, tuple[Stage, ...]] = {
    Stage.prepare: (),
    Stage.baseline: (Stage.prepare,),
    Stage.train: (Stage.prepare,),
    Stage.eval: (Stage.prepare, Stage.baseline, Stage.train),
    Stage.gate: (Stage.eval,),
    Stage.register: (Stage.train, Stage.gate),
    Stage.deploy: (Stage.register,),
}

# Keys of a `prepare:` / `train:` / `eval:` section that the project sets, and from where.
_PROJECT_SETS = {
    "prepare": {"inputs": "data.files", "out": f"{STATE_DIR}/prepared", "model": "model", "format": "data.format"},
    "train": {"data": "the prepared dataset", "val_data": "the prepared dataset's val split", "model": "model",
              "out": "TUNESMITH_HOME/runs", "name": "deploy.adapter"},
    "eval": {"data": "the prepared dataset's test split", "format": "the prepared dataset", "out": f"{STATE_DIR}/eval",
             "train_data": "the prepared dataset's train split", "baselines": "the baseline stage"},
}  # fmt: skip


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataSection(_Section):
    """Where the project's raw examples are."""

    files: list[Path] = Field(
        ...,
        min_length=1,
        description="Raw data files or folders, relative to the project folder (JSONL, JSON, CSV, Parquet, "
        "documents); `prepare` cleans and splits them.",
    )
    format: DataFormat | None = Field(None, description="Example form; detected from the columns when unset.")


class ReviewSection(_Section):
    """The review sheet: the project's own keys of its `eval:` section (the rest are `tunesmith eval`'s)."""

    review_rubric: dict[str, str] = Field(
        default_factory=dict,
        description="Questions a person answers for each example of the review sheet (`review.md`, written "
        "beside the report): criterion name -> what a good answer does. Empty: no sheet.",
    )
    review_examples: int = Field(10, gt=0, description="Test examples on the review sheet.")


class GateSection(_Section):
    """What the adapter must show before it is registered and deployed."""

    metrics: list[str] = Field(
        ..., min_length=1, description="Metrics the adapter must win on, each one of the eval metrics."
    )
    beat: list[Literal["zero-shot", "few-shot"]] = Field(
        ["zero-shot", "few-shot"], description="Baselines the adapter must beat on every gate metric."
    )
    min_difference: float = Field(
        0.0, description="Least margin over each baseline, on the metric's own scale (ROUGE 0-1, chrF 0-100)."
    )
    significant: bool = Field(
        True, description="The margin must also be significant (paired approximate-randomization p < 0.05)."
    )


class DeploySection(_Section):
    """Names the adapter and the deployment take in the registry."""

    adapter: str | None = Field(None, description="Adapter name whose next version `register` records; "
                                "default the project's name.")  # fmt: skip
    deployment: str | None = Field(
        None, description="Deployment clients call (`model`); default the project's name."
    )
    tenant: str | None = Field(None, description="Tenant that owns the adapter and the deployment.")


class ProjectSpec(_Section):
    """`tunesmith.yaml`: a project's pipeline, from raw data to a deployed adapter."""

    name: str = Field(
        ...,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        description="Project name; the adapter's and the deployment's name unless `deploy` names them.",
    )
    template: str | None = Field(None, description="The template `tunesmith init` made the project from.")
    model: str = Field(
        DEFAULT_MODEL,
        description="Base model of every stage: catalog name, Hugging Face id or local directory.",
    )
    stages: list[Stage] = Field(
        default_factory=lambda: list(Stage),
        description="Stages `tunesmith run` runs, in pipeline order; each needs the ones it reads (eval: "
        "baseline and train). Leave out register and deploy to stop at the gate.",
    )
    data: DataSection
    prepare: dict[str, Any] = Field(
        default_factory=dict, description="`tunesmith data prepare` keys (the `data:` table above) but inputs, "
        "out, model and format, which the project sets.",
    )  # fmt: skip
    train: dict[str, Any] = Field(
        default_factory=dict, description="`tunesmith train` keys (the `train:` table above) but data, "
        "val_data, model, out and name, which the project sets; method sft.",
    )  # fmt: skip
    eval: dict[str, Any] = Field(
        default_factory=dict, description="`tunesmith eval` keys (the `eval:` table above: task, metrics, "
        "decoding, out-of-scope, judge ...) but data, format, train_data and baselines, which the project sets; "
        "and the review sheet's: `review_rubric` (questions a person answers for each example of `review.md`, "
        "written beside the report: criterion name -> what a good answer does; empty: no sheet) and "
        "`review_examples` (test examples on the sheet, default 10).",
    )  # fmt: skip
    gate: GateSection | None = Field(None, description="Required while `stages` lists gate.")
    deploy: DeploySection = Field(default_factory=DeploySection)

    @field_validator("stages")
    @classmethod
    def _stages_in_order_with_what_they_read(cls, stages: list[Stage]) -> list[Stage]:
        order = list(Stage)
        if len(set(stages)) != len(stages) or stages != sorted(stages, key=order.index):
            raise ValueError(f"list each stage once, in pipeline order: {', '.join(order)}")
        for stage in stages:
            missing = [need for need in NEEDS[stage] if need not in stages]
            if missing:
                raise ValueError(f"{stage} reads {', '.join(missing)}; list it too")
        return stages

    @model_validator(mode="after")
    def _gate_when_gated(self) -> ProjectSpec:
        if Stage.gate in self.stages and self.gate is None:
            raise ValueError(
                "gate: required while stages lists gate (which metrics must the adapter win on?)"
            )
        return self

    @property
    def adapter_name(self) -> str:
        return self.deploy.adapter or self.name

    @property
    def deployment_name(self) -> str:
        return self.deploy.deployment or self.name


@dataclass(frozen=True)
class Project:
    """A project folder and its checked spec, with the task its data is scored as."""

    root: Path
    spec: ProjectSpec
    task: EvalTask

    @property
    def state_dir(self) -> Path:
        return self.root / STATE_DIR

    @property
    def prepared_dir(self) -> Path:
        return self.state_dir / "prepared"

    def prepare_spec(self) -> PrepareSpec:
        """The `data prepare` job of this project (validated when the project was loaded)."""
        return prepare_spec(self.spec, self.root, self.prepared_dir)

    def train_spec(self) -> TrainSpec:
        """The training job of this project, on the prepared dataset."""
        return train_spec(self.spec, self.prepared_dir)

    def eval_spec(self) -> EvalSpec:
        """How the baselines and the adapter are scored on the prepared dataset's test split."""
        return eval_spec(self.spec, self.root, self.prepared_dir)

    def review(self) -> ReviewSection:
        """The review sheet written beside the evaluation report."""
        return review_section(self.spec)


def load_project(root: Path) -> Project:
    """Read and check `root/tunesmith.yaml`; every error names the file and the key.

    Raises:
        ConfigError: an unreadable file, an unknown or invalid key, a data file that is not there, or a
            metric the task does not compute.
    """
    root = root.resolve()  # the run's config, the registry and the reports name absolute paths
    path = root / PROJECT_FILE
    if not path.is_file():
        raise ConfigError(
            f"{root}: no {PROJECT_FILE} here; create a project with `tunesmith init DIR --template T`"
        )
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"{path}: cannot read: {error}") from error
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping with keys like 'name:' and 'data:'")
    try:  # a section left empty (every key commented out) takes its defaults
        spec = ProjectSpec.model_validate({key: value for key, value in raw.items() if value is not None})
    except ValidationError as error:
        raise ConfigError(_in_file(path, _describe(error, ProjectSpec))) from error
    try:
        for index, file in enumerate(spec.data.files):
            if not (root / file).exists():
                raise ConfigError(f"data.files[{index}]: {file} not found in {root}")
        prepare_spec(spec, root, root / STATE_DIR / "prepared")
        train = train_spec(spec, root / STATE_DIR / "prepared")
        evaluation = eval_spec(spec, root, root / STATE_DIR / "prepared")
        review_section(spec)
        task = _task(spec, evaluation, root)
        _check_metrics(spec, train, evaluation, task)
    except ConfigError as error:
        raise ConfigError(_in_file(path, str(error))) from error
    return Project(root=root, spec=spec, task=task)


def _in_file(path: Path, message: str) -> str:
    return "\n".join(f"{path}: {line}" for line in message.splitlines())


def prepare_spec(spec: ProjectSpec, root: Path, out: Path) -> PrepareSpec:
    """`spec.prepare` with the data files, output folder, model and form the project sets."""
    _refuse_project_keys("prepare", spec.prepare)
    fields = {**spec.prepare, "inputs": [root / path for path in spec.data.files], "out": out,
              "model": spec.model, "format": spec.data.format}  # fmt: skip
    try:
        return PrepareSpec.model_validate(fields)
    except ValidationError as error:
        raise ConfigError(_describe(error, PrepareSpec, "prepare")) from error


def train_spec(spec: ProjectSpec, prepared: Path) -> TrainSpec:
    """`spec.train` on the prepared dataset (its val split validates), with the project's model."""
    _refuse_project_keys("train", spec.train)
    if spec.train.get("method", "sft") != "sft":
        raise ConfigError("train.method: a project trains sft; preference tuning runs with `tunesmith train`")
    if spec.train.get("tuning", "lora") != "lora":
        raise ConfigError(
            "train.tuning: a project trains a LoRA adapter (serving loads adapters on one base)"
        )
    if "init_adapter" in spec.train:
        raise ConfigError("train.init_adapter: not in a project (its cache cannot see the adapter change)")
    try:
        return TrainSpec.model_validate({**spec.train, "data": prepared, "model": spec.model})
    except ValidationError as error:
        raise ConfigError(_describe(error, TrainSpec, "train")) from error


def eval_spec(spec: ProjectSpec, root: Path, prepared: Path) -> EvalSpec:
    """`spec.eval` but the review keys, on the prepared dataset (its train split the few-shot pool);
    `calibration_data` is relative to the project folder."""
    values = {key: value for key, value in spec.eval.items() if key not in ReviewSection.model_fields}
    _refuse_project_keys("eval", values)
    try:
        evaluation = EvalSpec.model_validate({**values, "data": prepared, "train_data": prepared})
    except ValidationError as error:
        raise ConfigError(
            _describe(error, EvalSpec, "eval", also=list(ReviewSection.model_fields))
        ) from error
    if evaluation.calibration_data is None:
        return evaluation
    calibration = root / evaluation.calibration_data
    if not calibration.exists():
        raise ConfigError(f"eval.calibration_data: {evaluation.calibration_data} not found in {root}")
    return evaluation.model_copy(update={"calibration_data": calibration})


def review_section(spec: ProjectSpec) -> ReviewSection:
    """The review keys of `spec.eval`."""
    values = {key: value for key, value in spec.eval.items() if key in ReviewSection.model_fields}
    try:
        return ReviewSection.model_validate(values)
    except ValidationError as error:
        raise ConfigError(_describe(error, ReviewSection, "eval")) from error


def _refuse_project_keys(section: str, values: dict[str, Any]) -> None:
    for key, source in _PROJECT_SETS[section].items():
        if key in values:
            raise ConfigError(f"{section}.{key}: set by the project ({source}); remove it")


def _task(spec: ProjectSpec, evaluation: EvalSpec, root: Path) -> EvalTask:
    """`eval.task`, else what the raw data holds (as `tunesmith eval` detects it)."""
    if evaluation.task is not None:
        return evaluation.task
    from tunesmith.data.ingest import load_examples
    from tunesmith.eval.tasks import detect_task

    return detect_task([e for path in spec.data.files for e in load_examples(root / path, spec.data.format)])


def _check_metrics(spec: ProjectSpec, train: TrainSpec, evaluation: EvalSpec, task: EvalTask) -> None:
    from tunesmith.eval.tasks import metric_names

    if evaluation.out_of_scope_label is not None and task != EvalTask.classification:
        raise ConfigError(f"eval.out_of_scope_label: applies to classification, not to a {task} task")
    out_of_scope = evaluation.out_of_scope_label is not None  # in_scope_accuracy, out_of_scope_recall
    # Names eval.metrics when one does not apply.
    scored = metric_names(task, evaluation.metrics, out_of_scope=out_of_scope)
    if spec.gate is not None:
        unscored = [name for name in spec.gate.metrics if name not in scored]
        if unscored:
            raise ConfigError(f"gate.metrics: {unscored} are not scored; the {task} task scores {scored}")
    if train.eval_metrics:
        try:
            metric_names(task, train.eval_metrics)
        except ConfigError as error:
            raise ConfigError(str(error).replace("eval.metrics", "train.eval_metrics", 1)) from error


def _describe(
    error: ValidationError, spec_class: type[BaseModel], section: str | None = None, also: Sequence[str] = ()
) -> str:
    """One line per problem naming the dotted key (`train.lora.r`, `data.files[0]`); an unknown key
    suggests the close one (among `spec_class`'s and, at the top, the section's other keys `also`)."""
    lines = []
    for item in error.errors():
        loc = [section, *item["loc"]] if section else list(item["loc"])
        key = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc).lstrip(".")
        message = str(item["msg"]).removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            parents = [str(part) for part in item["loc"][:-1]]
            known = _fields_at(spec_class, parents) + ([] if parents else list(also))
            close = difflib.get_close_matches(str(item["loc"][-1]), known, n=1)
            message = (
                f"unknown key; did you mean {close[0]}?"
                if close
                else f"unknown key; known: {', '.join(known)}"
            )
        lines.append(f"{key}: {message}" if key else message)
    return "\n".join(lines)


def _fields_at(spec_class: type[BaseModel], parents: list[str]) -> list[str]:
    """The keys of the section `parents` names (`["eval", "judge"]` in ProjectSpec)."""
    model: type[BaseModel] | None = spec_class
    for name in parents:
        field = model.model_fields.get(name) if model is not None else None
        kinds = (get_args(field.annotation) or (field.annotation,)) if field is not None else ()
        model = next((k for k in kinds if isinstance(k, type) and issubclass(k, BaseModel)), None)
    return list(model.model_fields) if model is not None else []

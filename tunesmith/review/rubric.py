"""The rubric reviewers score outputs with: criteria, each a question answered on a 1-5 scale.

Owns: `RubricSpec` (the same criterion name -> question mapping as the project's `eval.review_rubric`
and the judge's `criteria`, plus what each score means) and reading it from a YAML file or a project.
Does not own: storing it with a task (see `store`) or scoring (reviewers do). No torch.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from tunesmith.config import ConfigError, format_validation_error

SCALE = (1, 5)  # the lowest and highest score on every criterion

DEFAULT_LEVELS = {
    1: "fails the criterion",
    2: "mostly fails it",
    3: "partly meets it",
    4: "mostly meets it",
    5: "fully meets it",
}


class RubricSpec(BaseModel):
    """A review rubric: what reviewers score each output on, 1 (fails) to 5 (fully meets it)."""

    model_config = ConfigDict(extra="forbid")

    criteria: dict[str, str] = Field(
        ...,
        min_length=1,
        description="Criterion name -> the question a reviewer answers, e.g. brand_voice: 'Does it sound "
        "like our brand: warm, plain, no jargon?'",
    )
    levels: dict[int, str] = Field(
        default_factory=lambda: dict(DEFAULT_LEVELS),
        description="What each score 1-5 means, shown beside the buttons; scores left out have no label.",
    )

    @field_validator("levels")
    @classmethod
    def _levels_on_scale(cls, levels: dict[int, str]) -> dict[int, str]:
        outside = sorted(score for score in levels if not SCALE[0] <= score <= SCALE[1])
        if outside:
            raise ValueError(f"scores {outside} are off the {SCALE[0]}-{SCALE[1]} scale")
        return levels


def load_rubric(path: Path) -> RubricSpec:
    """A rubric from a YAML file (`criteria:` and optionally `levels:`); errors name the file and key."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"{path}: cannot read rubric: {error}") from error
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping with 'criteria:', got {type(raw).__name__}")
    try:
        return RubricSpec.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(format_validation_error(error, source=str(path))) from error


def project_rubric(root: Path) -> RubricSpec:
    """The rubric of the project at `root`: its `eval.review_rubric` questions."""
    from tunesmith.project.spec import PROJECT_FILE, load_project

    if not (root / PROJECT_FILE).is_file():
        raise ConfigError(f"a rubric task needs --rubric FILE, or a project with eval.review_rubric ({root} has "
                          f"no {PROJECT_FILE})")  # fmt: skip
    questions = load_project(root).review().review_rubric
    if not questions:
        raise ConfigError(f"{root}: the project has no eval.review_rubric; give --rubric FILE")
    return RubricSpec(criteria=questions)

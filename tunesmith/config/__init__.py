"""Typed specs shared by the CLI, the library and (later) the API, plus where tunesmith keeps its files.

Owns: the pydantic models that describe each job, one module per kind (`train`, `eval`, `serve`,
`prepare`; what they share and the `TUNESMITH_HOME` layout in `base`), and here the config file, the
section each spec is read from, and merging a file's section with flags with errors that name the key
the user typed. Everything is importable from `tunesmith.config`. Does not own: anything that runs a
job; this package never imports torch, so `tunesmith --help` starts fast.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field, ValidationError

from tunesmith.config.base import (
    DEFAULT_MODEL,
    LOOPBACK_HOSTS,
    ConfigError,
    DataFormat,
    Duration,
    Precision,
    SpecT,
    Switch,
    _Spec,
    default_database_url,
    duration_seconds,
    tunesmith_home,
)
from tunesmith.config.eval import BiasAuditSpec, EvalSpec, EvalTask, GateMeasure, JudgeSpec
from tunesmith.config.federated import FederatedSpec, PartitionSpec, PrivacySpec, load_federated_spec
from tunesmith.config.prepare import PrepareSpec
from tunesmith.config.serve import (
    ClassifierGuardSpec,
    GuardAction,
    GuardrailSpec,
    MonitorJudgeSpec,
    PiiGuardSpec,
    ServeSpec,
    TermsGuardSpec,
    TopicGuardSpec,
)
from tunesmith.config.train import DistributedSpec, LoraSpec, TrainSpec

__all__ = [
    "BiasAuditSpec",
    "ClassifierGuardSpec",
    "ConfigError",
    "ConfigFile",
    "DEFAULT_MODEL",
    "DataFormat",
    "DistributedSpec",
    "Duration",
    "EvalSpec",
    "EvalTask",
    "FederatedSpec",
    "GateMeasure",
    "GuardAction",
    "GuardrailSpec",
    "JudgeSpec",
    "LOOPBACK_HOSTS",
    "LoraSpec",
    "MonitorJudgeSpec",
    "PartitionSpec",
    "PiiGuardSpec",
    "Precision",
    "PrepareSpec",
    "PrivacySpec",
    "SECTIONS",
    "ServeSpec",
    "SpecT",
    "Switch",
    "TermsGuardSpec",
    "TopicGuardSpec",
    "TrainSpec",
    "build_spec",
    "default_database_url",
    "duration_seconds",
    "format_validation_error",
    "load_config_file",
    "load_federated_spec",
    "tunesmith_home",
]


class ConfigFile(_Spec):
    """A tunesmith YAML file: one section per job kind."""

    train: dict[str, Any] | None = Field(None, description="TrainSpec fields.")
    eval: dict[str, Any] | None = Field(None, description="EvalSpec fields.")
    data: dict[str, Any] | None = Field(None, description="PrepareSpec fields (`tunesmith data prepare`).")
    serve: dict[str, Any] | None = Field(None, description="ServeSpec fields.")
    bias_audit: dict[str, Any] | None = Field(
        None, description="BiasAuditSpec fields (`tunesmith audit bias`)."
    )


def load_config_file(path: Path) -> ConfigFile:
    """Read a YAML config file, failing with the file name and offending key."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"{path}: cannot read config: {error}") from error
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping with sections like 'train:', got {type(raw).__name__}")
    try:
        return ConfigFile.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(format_validation_error(error, source=str(path))) from error


# The file section each spec is read from; config errors name their keys under it (`train.lora.r`).
SECTIONS: dict[type[BaseModel], str] = {
    TrainSpec: "train",
    EvalSpec: "eval",
    PrepareSpec: "data",
    ServeSpec: "serve",
    BiasAuditSpec: "bias_audit",
}


def build_spec(spec_class: type[SpecT], file_section: dict[str, Any] | None, flags: dict[str, Any]) -> SpecT:
    """Merge a config file's section with flags into a spec; errors name the key the user typed.

    Args:
        spec_class: TrainSpec, EvalSpec, PrepareSpec or ServeSpec.
        file_section: the file's section for that spec (`train:` ...), or None without a file.
        flags: dotted keys (`lora.r`, `judge.model`) to values; None means "not given" and leaves the file's
            value. A flag overrides the file's value, but a mapping (`adapters`, `column_map`) adds its
            keys to the file's.
    """
    merged = copy.deepcopy(file_section or {})
    for key, value in flags.items():
        if value is None:
            continue
        *parents, name = key.split(".")
        section = merged
        for parent in parents:
            section[parent] = dict(section.get(parent) or {})
            section = section[parent]
        old = section.get(name)
        section[name] = {**old, **value} if isinstance(value, dict) and isinstance(old, dict) else value
    try:
        return spec_class.model_validate(merged)
    except ValidationError as error:
        raise ConfigError(format_validation_error(error, source=SECTIONS[spec_class])) from error


def format_validation_error(error: ValidationError, source: str) -> str:
    """One line per problem, each naming the dotted key, e.g. `train.lora.r: must be > 0`."""
    lines = []
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"])
        where = f"{source}.{key}" if key else source
        lines.append(f"{where}: {item['msg']}")
    return "\n".join(lines)

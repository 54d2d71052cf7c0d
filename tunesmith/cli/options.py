"""Command-line flags made from the spec fields: their type, help and default come from the field.

Owns: which spec fields each command takes as flags (the tables at the bottom, the one place to read
them), the few flag names that are not the field's name, turning a field into a typer option whose help
is the field's `description`, and handing a command the flags it was given as `flags={dotted key:
value}` (None: not given). Does not own: merging flags with a config file and validating them
(`tunesmith.config.build_spec`), or a command's options that are not spec fields (--config, --json,
--dry-run ...), which the command declares itself. Imports no torch.
"""

from __future__ import annotations

import functools
import inspect
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import typer
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from tunesmith.cli.common import UsageError
from tunesmith.config import BiasAuditSpec, EvalSpec, PrepareSpec, ServeSpec, TrainSpec, duration_seconds
from tunesmith.data.split import parse_fractions


@dataclass(frozen=True)
class Flag:
    """One spec field on the command line.

    `key` is the field's dotted key (`lora.r`, `judge.model`); the flag is `--` and the key with dashes
    (`--lora-r`) unless `name` says otherwise, a bool field gets `--x/--no-x`. `parse` turns what the
    user typed into the field's value where that is not one plain word, e.g. `--split 80/10/10`.
    """

    key: str
    name: str | None = None
    short: str | None = None
    parse: Callable[[Flag, Any], Any] | None = None
    metavar: str | None = None
    positional: bool = False

    @property
    def long(self) -> str:
        return self.name or "--" + self.key.replace(".", "-").replace("_", "-")

    @property
    def parameter(self) -> str:
        return self.key.replace(".", "_")


def parse_pairs(flag: Flag, items: list[str]) -> dict[str, str]:
    """Repeated `--flag NAME=VALUE` → {NAME: VALUE}."""
    pairs = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise ValueError(f"{flag.long} {item!r}: expected {flag.metavar}")
        pairs[name.strip()] = value.strip()
    return pairs


def parse_split(flag: Flag, text: str) -> tuple[float, float, float]:
    """`--split 80/10/10` → fractions (the message of a bad one names --split)."""
    return parse_fractions(text)


def parse_duration(flag: Flag, text: str) -> float:
    """`--time-budget 20m` → seconds (the message of a bad one names the flag)."""
    try:
        seconds = float(duration_seconds(text))
    except ValueError as error:
        raise ValueError(f"{flag.long} {error}") from error
    return seconds


def field_info(spec_class: type[BaseModel], key: str) -> FieldInfo:
    """The field a dotted key names, e.g. `lora.r` in TrainSpec."""
    *parents, name = key.split(".")
    for parent in parents:
        (spec_class,) = _kinds(spec_class.model_fields[parent].annotation)
    return spec_class.model_fields[name]


def format_default(field: FieldInfo) -> str | None:
    """A field's default as YAML writes it; None when it has none to show (required, unset, computed)."""
    value = field.get_default(call_default_factory=True)
    if field.is_required() or value is None or isinstance(value, BaseModel):
        return None
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple | list):
        return "[" + ", ".join(str(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(value) + "}"
    return str(value)


def spec_flags(
    spec_class: type[BaseModel], flags: Sequence[Flag]
) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Add `flags` to a command after its own parameters; the command gets them as `flags={key: value}`.

    typer reads a command's parameters from `inspect.signature`, so the wrapper carries a signature
    made of the command's own parameters and one typer option (or argument) per flag.
    """

    def decorate(command: Callable[..., None]) -> Callable[..., None]:
        own = [
            parameter.replace(kind=inspect.Parameter.KEYWORD_ONLY)
            for parameter in inspect.signature(command, eval_str=True).parameters.values()
            if parameter.name != "flags"
        ]
        parameters = own + [_parameter(spec_class, flag) for flag in flags]

        @functools.wraps(command)
        def run(**kwargs: Any) -> None:
            given = {flag.key: _value(flag, kwargs.pop(flag.parameter)) for flag in flags}
            command(**kwargs, flags=given)

        run.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
        run.__annotations__ = {parameter.name: parameter.annotation for parameter in parameters}
        return run

    return decorate


def flag_names(spec_class: type[BaseModel], flag: Flag) -> list[str]:
    """What a flag answers to: `--lora-r`, a bool field's `--dedup/--no-dedup`, then its short name."""
    kind = _cli_type(field_info(spec_class, flag.key).annotation, flag)
    long = f"{flag.long}/--no-{flag.long[2:]}" if kind is bool else flag.long
    return [long, *([flag.short] if flag.short else [])]


def spec_keys(spec_class: type[BaseModel], prefix: str = "") -> list[str]:
    """Dotted keys of every field, with a nested spec's fields (lora.r ...) in place of the spec."""
    keys = []
    for name, field in spec_class.model_fields.items():
        (kind, *_) = _kinds(field.annotation)
        nested = isinstance(kind, type) and issubclass(kind, BaseModel)
        keys += spec_keys(kind, f"{prefix}{name}.") if nested else [f"{prefix}{name}"]
    return keys


def _parameter(spec_class: type[BaseModel], flag: Flag) -> inspect.Parameter:
    field = field_info(spec_class, flag.key)
    default = format_default(field) if flag.parse is None else None
    info: Any
    if flag.positional:
        info = typer.Argument(None, help=field.description, show_default=False)
    else:
        info = typer.Option(
            None, *flag_names(spec_class, flag), help=field.description, metavar=flag.metavar,
            show_default=default if default is not None else False,
        )  # fmt: skip
    kind = _cli_type(field.annotation, flag)
    return inspect.Parameter(
        flag.parameter, inspect.Parameter.KEYWORD_ONLY, default=info, annotation=kind | None
    )


def _cli_type(annotation: Any, flag: Flag) -> Any:
    """What typer parses a flag as; pydantic checks the value afterwards, naming the key on error.

    Literals and switches are read as text, so a wrong one is a config error that names the key.
    """
    if flag.parse is not None:
        return list[str] if get_origin(annotation) is dict else str
    (kind,) = _kinds(annotation)
    if get_origin(kind) is Annotated:
        kind = get_args(kind)[0]
    return str if get_origin(kind) is Literal else kind


def _kinds(annotation: Any) -> list[Any]:
    """The types of an annotation but None: `int | None` → [int]."""
    if get_origin(annotation) in (Union, types.UnionType):
        return [arg for arg in get_args(annotation) if arg is not type(None)]
    return [annotation]


def _value(flag: Flag, raw: Any) -> Any:
    if raw is None or raw == []:
        return None
    if flag.parse is None:
        return raw
    try:
        return flag.parse(flag, raw)
    except ValueError as error:
        raise UsageError(str(error)) from error


# The spec fields each command takes as flags, in --help order. A field's flag is named after it unless
# the table says otherwise; a repeatable flag is singular (--eval-metric sets eval_metrics).
TRAIN_FLAGS = (
    Flag("data"), Flag("val_data"), Flag("hold_out_val", "--val"), Flag("model", short="-m"), Flag("method"), Flag("tuning"),
    Flag("init_adapter"), Flag("beta"), Flag("label_smoothing"), Flag("desirable_weight"),
    Flag("undesirable_weight"), Flag("orpo_lambda"), Flag("epochs"), Flag("max_steps"),
    Flag("time_budget", parse=parse_duration, metavar="DURATION"), Flag("token_budget"), Flag("batch_size"),
    Flag("grad_accum"), Flag("lr"), Flag("lora.r"),
    Flag("lora.alpha"), Flag("lora.dropout"), Flag("max_seq_len"), Flag("eval_every"), Flag("save_every"),
    Flag("precision"), Flag("memory_limit_gb"), Flag("micro_batch_tokens"), Flag("gradient_checkpointing"),
    Flag("seed"), Flag("eval_metrics", "--eval-metric"), Flag("select_by"),
    Flag("distributed.strategy", "--strategy"), Flag("distributed.backend", "--backend"), Flag("name"),
    Flag("out", short="-o"),
)  # fmt: skip
COMPARE_FLAGS = (
    Flag("data"), Flag("train_data"), Flag("task"), Flag("metrics", "--metric"), Flag("shots"),
    Flag("format"), Flag("max_new_tokens"), Flag("num_beams"), Flag("length_penalty"),
    Flag("no_repeat_ngram_size"), Flag("repetition_penalty"), Flag("do_sample", "--sample"), Flag("temperature"),
    Flag("top_p"), Flag("seed"), Flag("out_of_scope_label"), Flag("calibration_data"),
    Flag("out_of_scope_objective", "--oos-objective"), Flag("batch_size"),
    Flag("limit"), Flag("judge.model"),
    Flag("judge.base_url", "--judge-url"),
)  # fmt: skip
EVAL_FLAGS = (*COMPARE_FLAGS, Flag("baselines"))
PREPARE_FLAGS = (
    Flag("inputs", positional=True), Flag("out", short="-o"),
    Flag("column_map", "--map", parse=parse_pairs, metavar="FIELD=COLUMN"), Flag("format"),
    Flag("instruction"), Flag("on_error"), Flag("model", short="-m"), Flag("min_tokens"),
    Flag("max_tokens"), Flag("pii"), Flag("split", parse=parse_split, metavar="TRAIN/VAL/TEST"),
    Flag("seed"), Flag("group_by"), Flag("near_dup_threshold"), Flag("dedup"), Flag("num_proc"), Flag("epochs"),
    Flag("calibrate"), Flag("gpu_prices"),
)  # fmt: skip
SERVE_FLAGS = (
    Flag("model", short="-m"), Flag("engine"), Flag("host"), Flag("port", short="-p"),
    Flag("adapters", "--adapter", "-a", parse=parse_pairs, metavar="NAME=PATH_OR_RUN_ID"), Flag("auth"), Flag("ui"),
    Flag("max_batch_size"), Flag("max_wait_ms"), Flag("max_loaded_adapters"), Flag("max_tokens_limit"),
    Flag("max_queued"), Flag("request_timeout_s"), Flag("tenant_max_concurrent"), Flag("tenant_tokens_per_minute"),
    Flag("threads"), Flag("require_bias_audit"), Flag("max_lora_rank"),
)  # fmt: skip
BIAS_AUDIT_FLAGS = (
    Flag("data"), Flag("attributes", "--attribute", short="-a"), Flag("threshold"), Flag("terms"),
    Flag("group_column"), Flag("train_data"), Flag("baseline"), Flag("format"), Flag("max_new_tokens"),
    Flag("batch_size"), Flag("limit"), Flag("bootstrap_samples"), Flag("seed"), Flag("judge.model"),
    Flag("judge.base_url", "--judge-url"),
)  # fmt: skip
# Command → (its spec, its flags): what the reference and the help test read.
COMMAND_FLAGS: dict[str, tuple[type[BaseModel], tuple[Flag, ...]]] = {
    "train": (TrainSpec, TRAIN_FLAGS),
    "eval": (EvalSpec, EVAL_FLAGS),
    "compare": (EvalSpec, COMPARE_FLAGS),
    "data prepare": (PrepareSpec, PREPARE_FLAGS),
    "serve": (ServeSpec, SERVE_FLAGS),
    "audit bias": (BiasAuditSpec, BIAS_AUDIT_FLAGS),
}

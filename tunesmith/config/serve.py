"""The server: `ServeSpec`, its guardrails (per deployment or adapter) and the monitor's judge."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, model_validator

from tunesmith.config.base import (
    DEFAULT_MODEL,
    LOOPBACK_HOSTS,
    Duration,
    _Spec,
    _yaml_switch,
)
from tunesmith.config.eval import JudgeModelSpec


class GuardAction(StrEnum):
    """What a guard does with text it matches."""

    off = "off"  # not checked
    flag = "flag"  # recorded and counted; the text passes unchanged
    redact = "redact"  # each match replaced by its placeholder ([EMAIL], [BLOCKED], [NAME] of a pattern)
    block = "block"  # input: the request is refused; output: the response ends, finish_reason content_filter


Action = Annotated[GuardAction, BeforeValidator(_yaml_switch)]  # a bare YAML `off` is the word
PiiKind = Literal["EMAIL", "PHONE", "CARD", "IBAN", "IP", "SSN"]  # the kinds `data.pii` detects


class PiiGuardSpec(_Spec):
    """Personal data in prompts and answers, found by the data preparation detectors (`data.pii`)."""

    input: Action = Field(GuardAction.off, description="Action on PII in the prompt.")
    output: Action = Field(GuardAction.off, description="Action on PII in the answer.")
    kinds: list[PiiKind] = Field(
        ["EMAIL", "PHONE", "CARD", "IBAN", "IP", "SSN"], min_length=1, description="Kinds of PII checked."
    )


class TermsGuardSpec(_Spec):
    """Blocked words and phrases (case-insensitive, whole words) and named regular expressions."""

    blocklist: list[str] = Field(default_factory=list, description="Words or phrases; a match is [BLOCKED].")
    patterns: dict[str, str] = Field(
        default_factory=dict,
        description="NAME: REGEX (Python syntax, checked at load); a match is [NAME] when redacted.",
    )
    input: Action = Field(GuardAction.block, description="Action on a match in the prompt.")
    output: Action = Field(GuardAction.block, description="Action on a match in the answer.")

    @model_validator(mode="after")
    def _check_patterns(self) -> TermsGuardSpec:
        for name, pattern in self.patterns.items():
            if not re.fullmatch(r"[A-Z][A-Z0-9_]*", name):
                raise ValueError(
                    f"patterns.{name}: a name is UPPER_CASE (it becomes the placeholder [{name}])"
                )
            try:
                compiled = re.compile(pattern)
            except re.error as error:
                raise ValueError(f"patterns.{name}: not a regular expression: {error}") from None
            if compiled.search(""):
                raise ValueError(f"patterns.{name}: matches the empty string, so it would match everywhere")
        if any(not term.strip() for term in self.blocklist):
            raise ValueError("blocklist: an empty term would match everywhere")
        return self


class TopicGuardSpec(_Spec):
    """A topic allow-list: a prompt is on topic when its last user message holds an allowed keyword."""

    allow: list[str] = Field(
        default_factory=list,
        description="Keywords (case-insensitive whole words, a trailing plural s ignored); empty: any topic.",
    )
    action: Action = Field(GuardAction.block, description="Action on an off-topic prompt (flag or block).")

    @model_validator(mode="after")
    def _check_action(self) -> TopicGuardSpec:
        if self.action is GuardAction.redact:
            raise ValueError("action: an off-topic prompt has nothing to redact; use off, flag or block")
        return self


class ClassifierGuardSpec(_Spec):
    """A tunesmith classification fine-tune used as a moderation model on prompts (and answers)."""

    adapter: str = Field(..., description="The classifier adapter, `name` or `name@version`, on this base.")
    labels: list[str] = Field(..., min_length=2, description="Every label it was trained on.")
    blocked_labels: list[str] = Field(..., min_length=1, description="Labels that block a text.")
    threshold: float = Field(
        0.5, gt=0, le=1, description="Block when the blocked labels' share of probability is at least this."
    )
    instruction: str | None = Field(
        None,
        description="The instruction it was trained with (default: `data prepare`'s for text/label rows).",
    )
    answers: bool = Field(
        False,
        description="Also classify each whole answer; a streamed answer is then sent only once complete.",
    )

    @model_validator(mode="after")
    def _check_labels(self) -> ClassifierGuardSpec:
        unknown = sorted(set(self.blocked_labels) - set(self.labels))
        if unknown:
            raise ValueError(f"blocked_labels: {', '.join(unknown)} not among labels")
        return self


class GuardrailSpec(_Spec):
    """Guardrails of one deployment or adapter: what a prompt and its answer are checked for."""

    pii: PiiGuardSpec = Field(default_factory=PiiGuardSpec, description="Personal data.")
    terms: TermsGuardSpec = Field(default_factory=TermsGuardSpec, description="Blocklist and patterns.")
    topics: TopicGuardSpec = Field(default_factory=TopicGuardSpec, description="Topic allow-list.")
    max_input_chars: int | None = Field(None, gt=0, description="Longest prompt text; longer is refused.")
    max_output_chars: int | None = Field(
        None, gt=0, description="Longest answer; it ends there with finish_reason length."
    )
    classifier: ClassifierGuardSpec | None = Field(None, description="A moderation adapter on prompts.")
    refusal: str | None = Field(
        None,
        description="Answer a blocked prompt with this text (finish_reason content_filter) instead of a 400.",
    )


class MonitorJudgeSpec(JudgeModelSpec):
    """The monitor's sampled LLM judge: it scores a random sample of each window's answers (and as many
    of the window before) against a rubric; production answers have no reference answer."""

    criteria: dict[str, str] = Field(
        default_factory=lambda: {
            "helpfulness": "Does the answer address what the user asked, completely and clearly?",
            "correctness": "Is the answer factually correct and free of contradictions, as far as you can tell?",
        },
        min_length=1,
        description="Rubric: criterion name -> what a 5 means; each sampled answer gets 1-5 per criterion.",
    )
    sample: int = Field(50, ge=2, description="Answers per window the judge scores (judging is slow).")


VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256)  # the `max_lora_rank` values vLLM takes


class ServeSpec(_Spec):
    """An OpenAI-compatible server: one base model, many LoRA adapters."""

    model: str = Field(
        DEFAULT_MODEL, description="Base model: catalog name, Hugging Face id or local directory."
    )
    engine: Literal["embedded", "vllm"] = Field(
        "embedded",
        description="What generates: `embedded` (this process, CPU or GPU) or `vllm` (vLLM's multi-LoRA "
        "engine on a CUDA GPU; install tunesmith's `vllm` extra); keys, tenants, A/B, feedback, the request "
        "log and guardrails stay tunesmith's either way.",
    )
    max_lora_rank: int = Field(
        64,
        gt=0,
        description="Largest adapter rank the vllm engine accepts (vLLM reserves GPU memory for it: 8, 16, 32, "
        "64, 128 or 256); the embedded engine takes any rank.",
    )
    host: str = Field("127.0.0.1", description="Interface to listen on.")
    port: int = Field(8000, ge=0, lt=65536, description="Port to listen on (0: any free port).")
    adapters: dict[str, str] = Field(
        default_factory=dict,
        description="Adapters to register and load at start: NAME=PATH_OR_RUN_ID, an adapter folder or a run's "
        "adapter (in YAML a mapping, NAME: PATH_OR_RUN_ID).",
    )
    auth: bool = Field(
        True,
        description="Require API keys. Without them anyone who can reach the port may call: local use only.",
    )
    ui: bool = Field(
        False,
        description="Also serve the web console (`tunesmith ui`) at /ui, signed in with the same API keys.",
    )
    max_batch_size: int = Field(16, gt=0, description="Most requests decoded together in one batch.")
    max_wait_ms: float = Field(
        10.0, ge=0, description="How long the first queued request waits for others to join its batch."
    )
    max_loaded_adapters: int = Field(8, gt=0, description="Adapters kept in memory (least recently used go).")
    max_tokens_limit: int = Field(1024, gt=0, description="Largest `max_tokens` a request may ask for.")
    default_max_tokens: int = Field(256, gt=0, description="`max_tokens` when a request leaves it out.")
    max_request_bytes: int = Field(1_000_000, gt=0, description="Largest request body accepted.")
    max_n: int = Field(
        8, gt=0, description="Most choices per request (`n`, times the prompts of a completion)."
    )
    max_queued: int = Field(
        256,
        gt=0,
        description="Most generations waiting for a batch row; beyond it requests get a 503 with Retry-After.",
    )
    max_queue_wait_s: float = Field(
        60.0, gt=0, description="Seconds a generation may wait for a batch row before its request gets a 503."
    )
    request_timeout_s: float = Field(
        300.0,
        gt=0,
        description="Seconds a request may take from being queued to its last token; then its rows are freed and "
        "it gets a 503 (a stream already under way ends with an error event).",
    )
    tenant_max_concurrent: int | None = Field(
        None, gt=0, description="Requests one tenant may have in flight (more get a 429); None: no limit."
    )
    tenant_tokens_per_minute: int | None = Field(
        None,
        gt=0,
        description="Prompt plus `max_tokens` tokens one tenant may reserve per minute (more get a 429 with "
        "Retry-After); None: no limit.",
    )
    auth_failures_per_minute: int = Field(
        20, gt=0, description="Failed API keys one client address may send per minute before it gets 429s."
    )
    health_stall_s: float = Field(
        60.0,
        gt=0,
        description="`/health` reports 503 once the worker has had work this long without progress.",
    )
    require_bias_audit: bool = Field(
        False,
        description="Admin promote and weight changes refuse an adapter version without a passing bias audit "
        "(409), whatever the request says; as `tunesmith deploy promote --require-bias-audit`.",
    )
    log_requests: bool = Field(True, description="Store prompts and outputs in the registry for feedback.")
    log_retention: Duration | None = Field(
        None,
        gt=0,
        description="Purge logged requests older than this (e.g. 30d) at start and hourly (default: keep).",
    )
    monitor_every: Duration | None = Field(
        None,
        gt=0,
        description="Run `tunesmith monitor check` on every deployment this often (e.g. 10m) in the "
        "background; alerts land in the registry and /metrics (default: off).",
    )
    monitor_window: int = Field(1000, ge=10, description="Requests per window for the background monitor.")
    monitor_judge: MonitorJudgeSpec | None = Field(
        None,
        description="The background monitor's sampled LLM judge (see Keeping a model good in production); "
        "unset: no judge score (default).",
    )
    guardrails: dict[str, GuardrailSpec] = Field(
        default_factory=dict,
        description="Guardrails per deployment, adapter name or `base` (in YAML a mapping, TARGET: {pii: ...}; "
        "see Guardrails); what `tunesmith guardrails set` stores for a target replaces its entry here.",
    )
    threads: int | None = Field(
        None,
        gt=0,
        description="CPU threads for torch (default: one per core). On a busy, shared CPU, 1 avoids threads "
        "waiting on each other (benchmarks/RESULTS.md).",
    )

    @model_validator(mode="after")
    def _check_lora_rank(self) -> ServeSpec:
        if self.max_lora_rank not in VLLM_LORA_RANKS:
            raise ValueError(
                f"max_lora_rank: {self.max_lora_rank} is not one of vLLM's sizes "
                f"({', '.join(map(str, VLLM_LORA_RANKS))})"
            )
        return self

    @model_validator(mode="after")
    def _check_open_only_on_loopback(self) -> ServeSpec:
        if not self.auth and self.host not in LOOPBACK_HOSTS:
            raise ValueError(
                f"auth: off (--no-auth) lets anyone who can reach the port call; only with host on this "
                f"machine ({', '.join(sorted(LOOPBACK_HOSTS))}), not host {self.host}"
            )
        return self

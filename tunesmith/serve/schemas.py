"""OpenAI-compatible request and response shapes, plus tunesmith's feedback and admin bodies. No torch.

Owns: validation of what clients send (unknown fields are refused with their name, roles are
checked, bounds are enforced) and the JSON shapes sent back. Does not own: limits that depend on the
served model (context length, `max_tokens` ceiling; see `service`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

MAX_STOP_LENGTH = 64  # characters of one stop string: every generated token is checked against them
MAX_PROMPTS = 64  # prompts in one completion request (each is tokenized, and multiplied by `n`)


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TextPart(_Body):
    type: Literal["text"]
    text: str


class ChatMessage(_Body):
    role: Literal["system", "user", "assistant"] = Field(description="Who wrote the message.")
    content: str | list[TextPart]
    name: str | None = None

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class StreamOptions(_Body):
    include_usage: bool = False


class SamplingFields(_Body):
    model: str = Field(
        min_length=1, description="`base`, an adapter (`name` or `name@version`) or a deployment."
    )
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    max_tokens: int | None = Field(None, gt=0)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=-(2**63), lt=2**63, description="A 64-bit signed integer.")
    n: int = Field(1, ge=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = Field(None, max_length=256, description="End user id; A/B assignment sticks to it.")

    def stop_list(self) -> list[str]:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        return [stop for stop in stops if stop]

    @model_validator(mode="after")
    def _check_stop(self) -> SamplingFields:
        if len(self.stop_list()) > 4:
            raise ValueError("stop: at most 4 stop sequences")
        if any(len(stop) > MAX_STOP_LENGTH for stop in self.stop_list()):
            raise ValueError(f"stop: each stop sequence at most {MAX_STOP_LENGTH} characters")
        return self


class ChatCompletionCreate(SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _check_roles(self) -> ChatCompletionCreate:
        if all(message.role != "user" for message in self.messages):
            raise ValueError("messages: at least one message must have role 'user'")
        return self


class CompletionCreate(SamplingFields):
    prompt: str | list[str] = Field(
        description=f"One prompt or a list of at most {MAX_PROMPTS} (each answered `n` times)."
    )

    def prompts(self) -> list[str]:
        prompts = [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)
        if not prompts or any(not prompt for prompt in prompts):
            raise ValueError("prompt: must be a non-empty string or list of non-empty strings")
        if len(prompts) > MAX_PROMPTS:
            raise ValueError(f"prompt: at most {MAX_PROMPTS} prompts per request, got {len(prompts)}")
        return prompts


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class FeedbackCreate(_Body):
    """Feedback on a response: a rating (1-5 or thumbs), comment, corrected text, a preference or a ranking."""

    response_id: str = Field(min_length=1, description="The `id` of the response being rated.")
    rating: int | None = Field(None, ge=1, le=5, description="1 (bad) to 5 (good).")
    thumbs: Literal["up", "down"] | None = Field(None, description="Thumbs up or down.")
    comment: str | None = Field(None, max_length=10_000)
    correction: str | None = Field(None, max_length=100_000, description="What the answer should have been.")
    preferred_over: str | None = Field(
        None, description="Another response id that this response was preferred to (a preference pair)."
    )
    ranking: list[str] | None = Field(
        None,
        min_length=2,
        max_length=16,
        description="Response ids to the same prompt, best first, this one among them: every implied pair "
        "becomes a preference pair.",
    )

    @model_validator(mode="after")
    def _check_something(self) -> FeedbackCreate:
        given = (self.rating, self.thumbs, self.comment, self.correction, self.preferred_over, self.ranking)
        if all(value is None for value in given):
            raise ValueError(
                "give at least one of rating, thumbs, comment, correction, preferred_over, ranking"
            )
        if self.ranking is not None:
            if len(set(self.ranking)) != len(self.ranking):
                raise ValueError("ranking: a response id appears twice")
            if self.response_id not in self.ranking:
                raise ValueError("ranking: it must include response_id, the response this feedback is on")
        return self


class FeedbackPublic(BaseModel):
    id: int
    response_id: str
    object: Literal["feedback"] = "feedback"


class OutcomeCreate(_Body):
    """A business outcome of a response: the user clicked, converted, or an event the client names."""

    response_id: str = Field(min_length=1, description="The `id` of the response the outcome follows.")
    name: str = Field(
        min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$",
        description="`click`, `conversion`, or the client's own event name.",
    )  # fmt: skip
    value: float | None = Field(
        None, allow_inf_nan=False, description="A number with it, e.g. the order's amount."
    )


class OutcomePublic(BaseModel):
    id: int
    response_id: str
    name: str
    object: Literal["event"] = "event"


class Variant(_Body):
    model: str = Field(min_length=1, description="An adapter version, e.g. acme@3, or `base`.")
    weight: float = Field(ge=0, description="Share of traffic (weights need not sum to 100).")


class DeploymentCreate(_Body):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9._-]+$")
    tenant: str | None = None
    variants: list[Variant] = Field(min_length=1)


_REQUIRE_BIAS_AUDIT = (
    "Refuse (409, code bias_audit_required) unless every adapter version that gets traffic has a bias audit "
    "in the registry whose gate passed (as `tunesmith deploy ... --require-bias-audit`); a server started "
    "with `require_bias_audit` requires it always."
)


class WeightsUpdate(_Body):
    variants: list[Variant] = Field(min_length=1)
    require_bias_audit: bool = Field(False, description=_REQUIRE_BIAS_AUDIT)


class PromoteBody(_Body):
    model: str = Field(min_length=1)
    require_bias_audit: bool = Field(False, description=_REQUIRE_BIAS_AUDIT)


class AdapterLoad(_Body):
    model: str = Field(min_length=1, description="Adapter `name` or `name@version` from the registry.")


class ModelPublic(BaseModel):
    """One entry of `GET /v1/models`: `base`, an adapter (with its latest `version`) or a deployment."""

    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str
    version: int | None = None  # adapters only: the latest version (`id@version` calls an older one)
    kind: Literal["adapter", "deployment"] | None = None  # None: the base model


class ModelListPublic(BaseModel):
    """`GET /v1/models`; None fields are left out of the response (the base model has no kind)."""

    object: Literal["list"] = "list"
    data: list[ModelPublic]

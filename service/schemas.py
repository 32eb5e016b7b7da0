"""Request bodies of the HTTP API (pydantic), shaped like OpenAI's where OpenAI has an equivalent.

This module owns what a valid request looks like: types, ranges, and the unsupported OpenAI
options that are refused rather than silently ignored. Limits that depend on the loaded model or
the settings (context length, the max_tokens cap, k) are checked by the routes, which name them.
Responses are plain dicts built by the routes.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MAX_SEED = 2**63 - 1
MAX_STOP_STRINGS = 4
MAX_QUERY_CHARS = 10_000
MAX_DOC_ID_CHARS = 200


class RetrievalOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    k: int | None = Field(None, ge=1, description="neighbours per chunk; default: the model's training k")


class SamplingFields(BaseModel):
    """The sampling settings shared by /v1/completions and /v1/compare."""

    max_tokens: int = Field(16, ge=1)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(0, ge=0)
    seed: int | None = Field(None, ge=0, le=MAX_SEED)
    stop: str | list[str] | None = None
    retrieval: RetrievalOptions = Field(default_factory=RetrievalOptions)

    @field_validator("stop")
    @classmethod
    def _check_stop(cls, stop):
        stops = [stop] if isinstance(stop, str) else (stop or [])
        if len(stops) > MAX_STOP_STRINGS:
            raise ValueError(f"at most {MAX_STOP_STRINGS} stop strings are allowed")
        if any(not s for s in stops):
            raise ValueError("stop strings must not be empty")
        return stop

    @property
    def stop_strings(self) -> tuple[str, ...]:
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())


class StreamOptions(BaseModel):
    include_usage: bool = False  # OpenAI: one more chunk before [DONE] with `usage` and no choices


class CompletionRequest(SamplingFields):
    model: str | None = None  # default: the RETRO model
    prompt: str | list[str]
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = 1
    # OpenAI options this server does not implement: refused when set, so no client is misled.
    logprobs: int | None = None
    echo: bool = False
    best_of: int | None = None
    suffix: str | None = None

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, prompt):
        if isinstance(prompt, list) and len(prompt) != 1:
            raise ValueError(f"send exactly one prompt per request (got a list of {len(prompt)})")
        return prompt

    @model_validator(mode="after")
    def _supported(self):
        if self.n != 1:
            raise ValueError(f"n={self.n} is not supported: this server returns one choice per request (n=1)")
        if self.logprobs is not None:
            raise ValueError("logprobs are not supported")
        if self.echo:
            raise ValueError("echo is not supported")
        if self.best_of not in (None, 1):
            raise ValueError("best_of is not supported")
        if self.suffix:
            raise ValueError("suffix is not supported")
        return self

    @property
    def prompt_text(self) -> str:
        return self.prompt[0] if isinstance(self.prompt, list) else self.prompt


class CompareRequest(SamplingFields):
    model_config = ConfigDict(extra="forbid")

    prompt: str


class RetrieveRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str = Field(min_length=1, max_length=MAX_QUERY_CHARS)
    k: int = Field(4, ge=1)


class DocumentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1)
    id: str | None = Field(None, min_length=1, max_length=MAX_DOC_ID_CHARS, pattern=r"^[^\x00-\x1f]+$")
    title: str | None = Field(None, max_length=1000)

    @field_validator("text")
    @classmethod
    def _not_blank(cls, text: str) -> str:
        if not text.strip():
            raise ValueError("text must contain more than whitespace")
        return text


class DocumentsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    documents: list[DocumentIn] = Field(min_length=1)


class RebuildRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: str = Field(
        min_length=1,
        max_length=4096,
        description="a folder or .jsonl/.txt file under the corpus root, or an allowed named source",
    )

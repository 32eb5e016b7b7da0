"""Request bodies of the HTTP API (pydantic), shaped like OpenAI's where OpenAI has an equivalent.

This module owns what a valid request looks like: types, ranges, and the unsupported OpenAI
options that are refused rather than silently ignored. Limits that depend on the loaded model or
the settings (context length, the max_tokens cap, k) are checked by the routes, which name them.
Responses are plain dicts built by the routes.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator, model_validator

MAX_SEED = 2**63 - 1
MAX_STOP_STRINGS = 4
MAX_QUERY_CHARS = 10_000
MAX_DOC_ID_CHARS = 200
MAX_FIRST_CANDIDATES = 20  # each is one row of the one extra decode step a greedy first token takes


class RetrievalOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    k: int | None = Field(None, ge=1, description="neighbours per chunk; default: the model's training k")
    first_copy_bias: float | None = Field(
        None,
        ge=0,
        allow_inf_nan=False,
        description="nats by which a RETRO model's copy head favours the neighbours' tokens for the "
        "answer's first token; 0: the model as trained; default: the model's own "
        "(inference_first_copy_bias); models without a copy head ignore it",
    )
    span_weight: float | None = Field(
        None,
        ge=0,
        allow_inf_nan=False,
        description="weight of the span reader (a fine-tuned MiniLM that points at where the answer "
        "starts in the neighbours) on the answer's first token; 0: off; default: the model's own "
        "(inference_span_weight); models without a span reader ignore it",
    )
    span_follow: float | None = Field(
        None,
        ge=0,
        allow_inf_nan=False,
        description="nats for the next token of the span reader's answer while the generation "
        "follows it (after the first token); 0: off; default: the model's own "
        "(inference_span_follow); models without a span reader ignore it",
    )


class SamplingFields(BaseModel):
    """The sampling settings shared by /v1/completions and /v1/compare."""

    max_tokens: int = Field(16, ge=1)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(0, ge=0)
    seed: int | None = Field(None, ge=0, le=MAX_SEED)
    stop: str | list[str] | None = None
    first_candidates: int | None = Field(
        None,
        ge=0,
        le=MAX_FIRST_CANDIDATES,
        description="greedy decoding (temperature 0) says as its first token the one of the N likeliest "
        "whose log-probability plus its best next token's is highest; 0 or 1: the likeliest; default: "
        "the model's own (inference_first_candidates); the Hugging Face comparison model ignores it",
    )
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


TokenId = Annotated[StrictInt, Field(ge=0)]
TokenIds = Annotated[list[TokenId], Field(min_length=1)]
MAX_CHOICES = 64  # prompts x n in one /v1/completions request
MAX_LOGPROBS = 20  # vLLM's default max_logprobs; OpenAI allows 5


class CompletionRequest(SamplingFields):
    model: str | None = None  # default: the RETRO model
    # OpenAI's four forms: a string, strings, token ids, lists of token ids; one prompt per string/list.
    prompt: (
        str
        | Annotated[list[str], Field(min_length=1)]
        | TokenIds
        | Annotated[list[TokenIds], Field(min_length=1)]
    )
    max_tokens: int = Field(16, ge=0)  # 0: nothing is generated (with echo and logprobs: score only)
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(1, ge=1, le=MAX_CHOICES)
    logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS)  # top-N per token, OpenAI's legacy shape
    echo: bool = False  # the prompt (with its tokens' logprobs) is returned before the completion
    # OpenAI options this server does not implement: refused when set, so no client is misled.
    best_of: int | None = None
    suffix: str | None = None

    @field_validator("prompt", mode="before")
    @classmethod
    def _prompts_given(cls, prompt):
        # before the union is tried: its four members' errors together would hide these two
        if isinstance(prompt, list):
            if not prompt:
                raise ValueError("send at least one prompt (got an empty list)")
            if any(isinstance(p, list) and not p for p in prompt):
                raise ValueError("a token-id prompt must hold at least one token")
        return prompt

    @model_validator(mode="after")
    def _supported(self):
        if len(self.prompts) * self.n > MAX_CHOICES:
            raise ValueError(
                f"{len(self.prompts)} prompts x n={self.n} is over this server's {MAX_CHOICES} choices "
                "per request"
            )
        if self.best_of not in (None, self.n):
            raise ValueError("best_of is not supported (it may only equal n)")
        if self.suffix:
            raise ValueError("suffix is not supported")
        return self

    @property
    def prompts(self) -> list[str | list[int]]:
        """One entry per prompt: its text, or its token ids."""
        if isinstance(self.prompt, str):
            return [self.prompt]
        if isinstance(self.prompt[0], int):
            return [list(self.prompt)]
        return list(self.prompt)


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
    replace: bool = Field(
        False,
        description="a document whose id the index holds replaces it in one commit (searches see the "
        "old text or the new, never both); default: it is skipped",
    )


class RebuildRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: str = Field(
        min_length=1,
        max_length=4096,
        description="a folder or .jsonl/.txt file under the corpus root, or an allowed named source",
    )


# --- chat, embeddings, tokenizer endpoints ------------------------------------------------------
MAX_EMBEDDING_INPUTS = 2048  # OpenAI's limit of inputs per embeddings request


class TextPart(BaseModel):
    """One part of a list content: only OpenAI's {"type": "text", "text": ...} parts are read."""

    type: str
    text: str = ""

    @field_validator("type")
    @classmethod
    def _text_only(cls, kind: str) -> str:
        if kind != "text":
            raise ValueError(f"only text content parts are supported (got a {kind!r} part)")
        return kind


class ChatMessage(BaseModel):
    role: Literal["system", "developer", "user", "assistant"]  # "developer" is OpenAI's new "system"
    content: str | list[TextPart] | None = None
    name: str | None = None  # accepted and not shown to the model (the template has no names)

    @property
    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "\n".join(part.text for part in self.content)  # as vLLM joins text parts

    @property
    def template_role(self) -> str:
        return "system" if self.role == "developer" else self.role


class ChatCompletionRequest(SamplingFields):
    model: str | None = None  # default: the RETRO model
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)  # OpenAI's newer name; wins over max_tokens
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = 1
    # OpenAI chat options this server does not implement: refused when set, so no client is misled.
    logprobs: bool = False
    top_logprobs: int | None = None
    tools: list | None = None
    tool_choice: str | dict | None = None
    response_format: dict | None = None

    @model_validator(mode="after")
    def _supported(self):
        if self.max_completion_tokens is not None:
            self.max_tokens = self.max_completion_tokens
        if self.n != 1:
            raise ValueError(f"n={self.n} is not supported: this server returns one choice per request (n=1)")
        if self.logprobs or self.top_logprobs:
            raise ValueError("logprobs are not supported on chat completions (use /v1/completions)")
        if self.tools or self.tool_choice not in (None, "none", "auto"):
            raise ValueError("tools are not supported: the models were never trained to call them")
        if self.response_format and self.response_format.get("type") != "text":
            raise ValueError("only response_format {'type': 'text'} is supported")
        return self


class EmbeddingRequest(BaseModel):
    model: str | None = None  # default: the served encoder; see routes/embeddings.py
    # Token-id forms are parsed so that the route can refuse them with a clear 400.
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1)
    user: str | None = None


class TokenizeRequest(BaseModel):
    """vLLM's /tokenize body: a `prompt` (TokenizeCompletionRequest) or chat `messages`."""

    model: str | None = None
    prompt: str | None = None
    messages: list[ChatMessage] | None = Field(None, min_length=1)
    add_special_tokens: bool = True
    add_generation_prompt: bool = True  # accepted: the template's prompt ends where the answer starts
    continue_final_message: bool = False  # accepted: a final assistant message is always continued
    return_token_strs: bool | None = False

    @model_validator(mode="after")
    def _one_input(self):
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("send either a prompt or messages")
        if self.return_token_strs:
            raise ValueError("return_token_strs is not supported")
        return self


class DetokenizeRequest(BaseModel):
    model: str | None = None
    tokens: list[Annotated[int, Field(ge=0)]]

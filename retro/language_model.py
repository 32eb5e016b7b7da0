"""One language-model interface: what the service and the evaluation may ask of any model.

`LanguageModel` is the small surface both implementations share: the RETRO model with its
tokenizer (`retro.generate.RetroLanguageModel`) and the Hugging Face comparison model
(`retro.hf_model.HFCausalLM`). It encodes a prompt and counts its tokens, names its prompt limit
(with and without retrieval), streams and generates with the same `SamplingParams`, counts its
parameters, says whether it retrieves, and gives its context length, chunk size and default k.

Streaming is written once here: encode, check the limit, seed, then turn the implementation's
lazy token ids into text pieces (`retro.sampling.text_pieces`); `generate` collects a stream
into a `GenerationResult`. An implementation supplies only its token loop (`_sampled_tokens`).

`retrieve(texts) -> int array [len(texts), k, n]` is handed in by the caller and returns what the
index gives (chunk plus continuation, n = 2m); a retrieving model fits it to its own
`retrieved_len` with `fit_neighbours`, so no caller needs to know the model's r. Callers that never
retrieve pass `retrieve=None`; a model that does not retrieve ignores it. `query_start` (a character
offset into the prompt; a chat's leading system messages end there, `retro.chat_template`) keeps
the prompt's text before it out of every retrieval query: `stream` turns it into `query_from`, the
first prompt token a query may read (`prompt_tokens_before`), for the token loop.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from retro.sampling import SamplingParams, TextPiece, seeded_generator, text_pieces

Retrieve = Callable[[list[str]], "np.ndarray | torch.Tensor"]


@dataclass
class GenerationResult:
    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int


class PromptTooLongError(ValueError):
    def __init__(self, prompt_tokens: int, limit: int):
        super().__init__(
            f"the prompt has {prompt_tokens} tokens; this model's limit is {limit} prompt tokens"
        )
        self.prompt_tokens, self.limit = prompt_tokens, limit


def fit_neighbours(tokens: np.ndarray, length: int, pad_id: int) -> np.ndarray:
    """[..., n] retrieved tokens -> [..., length]: cut, or padded with pad_id, to the model's r."""
    tokens = np.asarray(tokens, dtype=np.int64)
    if tokens.shape[-1] >= length:
        return tokens[..., :length]
    pad = [(0, 0)] * (tokens.ndim - 1) + [(0, length - tokens.shape[-1])]
    return np.pad(tokens, pad, constant_values=pad_id)


class LanguageModel(ABC):
    """A model with its tokenizer behind the one surface the service and the evaluation use."""

    kind: ClassVar[str]  # the checkpoint format, as data for listings: "retro" or "huggingface"
    tokenizer: object  # the model's own tokenizer

    # --- what the model is ---------------------------------------------------------------------

    @property
    @abstractmethod
    def uses_retrieval(self) -> bool:
        """Whether the model attends to retrieved neighbours (and so wants a `retrieve`)."""

    @property
    @abstractmethod
    def max_seq_len(self) -> int:
        """Context length: prompt and completion together."""

    @property
    def chunk_size(self) -> int | None:
        """Retrieval chunk size m (None for a model that never retrieves)."""
        return None

    @property
    def retrieved_len(self) -> int | None:
        """Neighbour length r the model attends to (None for a model that never retrieves)."""
        return None

    @property
    def default_k(self) -> int | None:
        """Neighbours per chunk the model was trained with (None for a model that never retrieves)."""
        return None

    @property
    @abstractmethod
    def device(self) -> torch.device: ...

    @property
    @abstractmethod
    def eos_id(self) -> int | None:
        """The end-of-text token: sampling it ends a generation (None: the model has none)."""

    @abstractmethod
    def parameter_counts(self) -> dict[str, int]:
        """{"total", "non_embedding"}: every parameter, and those outside the embedding tables."""

    # --- prompts -------------------------------------------------------------------------------

    @abstractmethod
    def encode_prompt(self, prompt: str) -> list[int]:
        """The prompt's token ids; an empty prompt is one end-of-text token (it starts a document)."""

    @abstractmethod
    def decode(self, ids: list[int]) -> str: ...

    def count_prompt_tokens(self, prompt: str) -> int:
        return len(self.encode_prompt(prompt))

    def prompt_limit(self, with_retrieval: bool) -> int:
        """The longest prompt that leaves room for one new token."""
        return self.max_seq_len - 1

    # --- generation ----------------------------------------------------------------------------

    def prompt_tokens_before(self, prompt: str, prompt_ids: list[int], query_start: int) -> int:
        """How many of `prompt_ids` (the prompt's tokens) lie wholly before character `query_start`:
        the tokens the prefix `prompt[:query_start]` encodes to, as far as they are the prompt's own
        (a token that straddles the offset stays readable)."""
        before = prompt[:query_start].rstrip()  # the joiner's space belongs to the next word's token
        if query_start <= 0 or not before:
            return 0
        prefix = self.encode_prompt(before)
        shared = 0
        for a, b in zip(prefix, prompt_ids, strict=False):
            if a != b:
                break
            shared += 1
        return min(shared, len(prompt_ids) - 1)  # the prompt's last token is always searched

    @abstractmethod
    def _sampled_tokens(
        self,
        prompt_ids: list[int],
        params: SamplingParams,
        generator: torch.Generator,
        retrieve: Retrieve | None,
        query_from: int = 0,
    ) -> Iterator[int]:
        """Yields sampled token ids, each computed only when asked for; ends at the context end.
        Retrieval queries read no prompt token before `query_from`."""

    @torch.inference_mode()
    def stream(
        self,
        prompt: str,
        params: SamplingParams = SamplingParams(),
        retrieve: Retrieve | None = None,
        query_start: int = 0,
    ) -> Iterator[TextPiece]:
        """Yields text pieces as they become final; the last piece carries the finish reason.
        Retrieval queries leave out the prompt's text before character `query_start`.

        A too-long prompt raises `PromptTooLongError` when the first piece is asked for.
        """
        if not self.uses_retrieval:
            retrieve = None
        prompt_ids = self.encode_prompt(prompt)
        limit = self.prompt_limit(retrieve is not None)
        if len(prompt_ids) > limit:
            raise PromptTooLongError(len(prompt_ids), limit)
        query_from = self.prompt_tokens_before(prompt, prompt_ids, query_start) if retrieve is not None else 0
        generator = seeded_generator(params.seed, self.device)
        tokens = self._sampled_tokens(prompt_ids, params, generator, retrieve, query_from)
        yield from text_pieces(tokens, self.decode, self.eos_id, params)

    def generate(
        self,
        prompt: str,
        params: SamplingParams = SamplingParams(),
        retrieve: Retrieve | None = None,
        query_start: int = 0,
    ) -> GenerationResult:
        """Generates one completion; see `stream` for the contract."""
        pieces = list(self.stream(prompt, params, retrieve, query_start))
        return GenerationResult(
            text="".join(p.text for p in pieces),
            finish_reason=pieces[-1].finish_reason or "length",
            prompt_tokens=self.count_prompt_tokens(prompt),
            completion_tokens=sum(p.n_tokens for p in pieces),
        )

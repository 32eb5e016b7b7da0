"""RETRO generation: the RETRO model with its tokenizer as a `LanguageModel`.

`RetroLanguageModel(model, tokenizer)` decodes with the model's KV cache (`prefill`, then one
`decode_step` per token) and retrieves at chunk ends. `retrieve(texts)` is passed in (the index is
not imported here): it is called once for the prompt, with one text per complete chunk of the
left-padded prompt in chunk order, and once more each time a generated token closes a chunk; what
it returns is fitted to the model's `retrieved_len` (`retro.language_model.fit_neighbours`).

The retrieval query of a chunk is its own text (RETRO's rule, and how training neighbours were
found), or with `query_tokens` > m (given here, else the config's `inference_query_tokens`) the last
`query_tokens` tokens up to the chunk's end: a prompt whose entity is named a chunk or more before
the question then still retrieves its passage. A query never reads back past `query_from`, the
first prompt token retrieval may read (a chat's system message is before it, `retro.chat_template`):
the window is cut there, except for a chunk wholly before it, which keeps its own window.

The first token a generation with retrieval says is drawn with the copy head's null slot lowered by
`first_copy_bias` nats (given here, else the config's `inference_first_copy_bias`; 0: the mixture
as trained), so an answer begins from the neighbours unless the vocabulary is far surer; every later
token is the model's own mixture. A greedy generation's first token is then chosen among the
`first_candidates` most likely (given here, else the config's `inference_first_candidates`; 0 or 1:
the argmax) by one token of lookahead (`retro.first_token`); the batched form (`retro.batch_engine`)
draws its first token with the same `first_token`. Before both, with a span reader given
(`retro.span_reader`, stored beside the checkpoint) and a weight above 0 (a request's, else the
config's `inference_span_weight`), the first token's log-probabilities get the reader's bias toward
the neighbour tokens where it says the answer starts.

A prompt shorter than a chunk must still get retrieval (docs/design.md, data flow: generation):
with retrieval on, the prompt is left-padded with `<pad>` to a chunk boundary, so its last token
closes a chunk whose neighbours the answer attends to. The same class serves the no-retrieval
baseline (`retrieve=None`, or a model with `cca_layers=()`), which is not padded.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from retro.first_token import lookahead_choice, uses_lookahead
from retro.language_model import LanguageModel, Retrieve, fit_neighbours
from retro.model import DecodeCache, Retro
from retro.sampling import SamplingParams, sample_token
from retro.span_reader import SpanFollower, SpanReader, bias_of, read


class RetroNetworkModel(LanguageModel):
    """What a language model over one `Retro` network (`self.model`) and its tokenizer
    (`self.tokenizer`) reads from its config: RETRO itself, and the retrieval-in-prompt decoder
    (`retro.in_context`)."""

    @property
    def max_seq_len(self) -> int:
        return self.model.config.max_seq_len

    @property
    def chunk_size(self) -> int:
        return self.model.config.chunk_size

    @property
    def retrieved_len(self) -> int:
        return self.model.config.retrieved_len

    @property
    def default_k(self) -> int:
        return self.model.config.neighbours_at_inference

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def eos_id(self) -> int:
        return self.tokenizer.eos_id

    def parameter_counts(self) -> dict[str, int]:
        return self.model.parameter_counts()

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids)


class RetroLanguageModel(RetroNetworkModel):
    """A `Retro` network and its `retro.tokenizer.Tokenizer` behind the language-model interface."""

    kind = "retro"

    def __init__(
        self,
        model: Retro,
        tokenizer,
        query_tokens: int | None = None,
        first_copy_bias: float | None = None,
        first_candidates: int | None = None,
        span_reader: SpanReader | None = None,
    ):
        m = model.config.chunk_size
        if query_tokens is not None and query_tokens < m:
            raise ValueError(f"query_tokens must be at least the chunk size ({m}); got {query_tokens}")
        if first_copy_bias is not None and not 0 <= first_copy_bias < float("inf"):
            raise ValueError(f"first_copy_bias must be a finite number >= 0; got {first_copy_bias}")
        if first_candidates is not None and not (isinstance(first_candidates, int) and first_candidates >= 0):
            raise ValueError(f"first_candidates must be a whole number >= 0; got {first_candidates!r}")
        self.model, self.tokenizer = model, tokenizer
        # tokens up to a chunk's end that its retrieval query holds: the caller's, else the model's own
        self.query_tokens = query_tokens or model.config.inference_query_tokens or m
        # the first generated token's copy bias (RetroConfig.inference_first_copy_bias): likewise
        bias = model.config.inference_first_copy_bias if first_copy_bias is None else first_copy_bias
        self.first_copy_bias = bias if model.copy_head is not None else 0.0
        # how many first-token candidates greedy decoding weighs (RetroConfig.inference_first_candidates)
        own = model.config.inference_first_candidates
        self.first_candidates = own if first_candidates is None else first_candidates
        # the span reader's pull on the first token (RetroConfig.inference_span_weight): None = off
        self.span_reader = span_reader if model.config.uses_retrieval else None
        self.span_weight = model.config.inference_span_weight if self.span_reader is not None else None
        self.span_follow = model.config.inference_span_follow if self.span_reader is not None else None

    @property
    def uses_retrieval(self) -> bool:
        return self.model.config.uses_retrieval

    def encode_prompt(self, prompt: str) -> list[int]:
        return self.tokenizer.encode(prompt) or [self.tokenizer.eos_id]  # empty: starts a document

    def prompt_limit(self, with_retrieval: bool) -> int:
        """The longest prompt that leaves room for one new token (after left padding, with retrieval)."""
        if with_retrieval and self.uses_retrieval:
            m = self.chunk_size
            return (self.max_seq_len - 1) // m * m
        return self.max_seq_len - 1

    def _neighbours(self, retrieved, n_texts: int) -> torch.Tensor:
        """What `retrieve` returned for n_texts chunks -> long [n_texts, k, retrieved_len] on the device."""
        if isinstance(retrieved, torch.Tensor):
            retrieved = retrieved.cpu().numpy()
        tokens = np.asarray(retrieved)
        if tokens.ndim != 3 or tokens.shape[0] != n_texts:
            raise ValueError(
                f"retrieve must return token ids of shape [{n_texts}, k, r]; got {list(tokens.shape)}"
            )
        fitted = fit_neighbours(tokens, self.retrieved_len, self.model.config.pad_id)
        return torch.from_numpy(np.ascontiguousarray(fitted)).to(self.device)

    def prefilled(
        self,
        prompt_ids: list[int],
        retrieve: Retrieve | None,
        search=None,
        cache_for=None,
        query_from: int = 0,
        first_copy_bias: float | None = None,
        span_weight: float | None = None,
    ):
        """The prompt padded, retrieved for and prefilled: (ids, next-token log-probs with <pad>
        excluded, cache, query, span). `span` is the span reader's best span in decoder tokens ([]
        without a reader at work), which `SpanFollower` lets later tokens finish. `ids` is the
        padded prompt, which decoding extends; `query(end)` is
        the retrieval text of the chunk ending (exclusive) at `end`, read from no earlier than prompt
        token `query_from` once the chunk ends past it. `search(retrieve, texts)` runs
        the prompt's search (default: `retrieve` itself) and `cache_for(n_tokens)` makes the cache
        (default: the model's full-length one): the batched decoder (`retro.batch_engine`) routes
        both through its engine. `first_copy_bias` and `span_weight` (a request's) override this
        model's own."""
        model, cfg, m = self.model, self.model.config, self.model.config.chunk_size
        model.eval()
        padding = (-len(prompt_ids)) % m if retrieve is not None else 0
        ids = [cfg.pad_id] * padding + prompt_ids
        q, floor = self.query_tokens, padding + query_from

        def query(end: int) -> str:
            start = max(floor if end > floor else 0, end - q)
            return self.tokenizer.decode(ids[start:end])

        n_chunks = len(ids) // m
        prompt_neighbours = None
        if retrieve is not None and n_chunks:
            texts = [query((u + 1) * m) for u in range(n_chunks)]
            found = search(retrieve, texts) if search is not None else retrieve(texts)
            prompt_neighbours = self._neighbours(found, n_chunks)[None]
        cache = cache_for(len(ids)) if cache_for is not None else None
        bias = self.first_copy_bias if first_copy_bias is None else first_copy_bias  # no copy head: ignored
        logprobs, cache = model.prefill(
            torch.tensor([ids], device=self.device), prompt_neighbours, cache, bias
        )
        last = logprobs[0, -1]
        weight = cfg.inference_span_weight if span_weight is None else span_weight
        span: list[int] = []
        if self.span_reader is not None and prompt_neighbours is not None and weight > 0:
            last, span = self._span_biased(last, prompt_ids[query_from:], prompt_neighbours[0, -1], weight)
        last[cfg.pad_id] = float("-inf")  # padding is never an answer
        return ids, last, cache, query, span

    def _span_biased(self, last: torch.Tensor, question_ids: list[int], neighbours, weight: float):
        """(`last` with the span reader's bias added (`retro.span_reader.bias_of`), renormalised;
        the reader's best span)."""
        pad = self.model.config.pad_id
        rows = [[int(t) for t in row if t != pad] for row in neighbours.tolist()]
        reading = read(
            self.span_reader, self.tokenizer.decode(question_ids), rows, self.tokenizer, last.shape[0]
        )
        bias = bias_of(reading.start, weight, self.model.config.inference_span_floor)
        return torch.log_softmax(last + bias.to(last), dim=-1), reading.span

    def span_follower(self, span: list[int], params: SamplingParams) -> SpanFollower:
        """What finishes the reader's span after the first token: the request's `span_follow`
        nats, else the config's `inference_span_follow` (0: off)."""
        bonus = self.model.config.inference_span_follow if params.span_follow is None else params.span_follow
        return SpanFollower(span, bonus)

    def first_token(
        self,
        last: torch.Tensor,
        cache: DecodeCache,
        params: SamplingParams,
        generator: torch.Generator,
        with_retrieval: bool,
    ) -> int:
        """The first generated token from the prefill's `last` log-probabilities and `cache` (left
        as it is): `sample_token`'s, or with more than one first candidate (the request's
        `first_candidates`, else this model's own) and greedy decoding, `lookahead_choice`'s."""
        candidates = self.first_candidates if params.first_candidates is None else params.first_candidates
        p = cache.pos
        closes_chunk = with_retrieval and (p + 1) % self.chunk_size == 0  # it would search for itself
        if p < self.max_seq_len and uses_lookahead(candidates, params, closes_chunk):
            return lookahead_choice(self.model, last, cache, candidates)
        return sample_token(last, params, generator)

    def _sampled_tokens(
        self,
        prompt_ids: list[int],
        params: SamplingParams,
        generator: torch.Generator,
        retrieve: Retrieve | None,
        query_from: int = 0,
    ) -> Iterator[int]:
        model, cfg, m = self.model, self.model.config, self.model.config.chunk_size
        ids, last, cache, query, span = self.prefilled(
            prompt_ids,
            retrieve,
            query_from=query_from,
            first_copy_bias=params.first_copy_bias,
            span_weight=params.span_weight,
        )
        device = self.device
        token = self.first_token(last, cache, params, generator, retrieve is not None)
        follower = self.span_follower(span, params)
        while True:
            follower.saw(token)
            yield token
            p = cache.pos
            if p >= cfg.max_seq_len:
                return
            ids.append(token)
            neighbours = None
            if retrieve is not None and (p + 1) % m == 0:  # this token closes a chunk: retrieve with it
                neighbours = self._neighbours(retrieve([query(p + 1)]), 1)
            last = model.decode_step(torch.tensor([token], device=device), cache, neighbours)[0]
            last[cfg.pad_id] = float("-inf")
            token = sample_token(follower.biased(last), params, generator)

"""Retrieval in the prompt: the comparator that reads its retrieved neighbours as passages.

RAG / In-Context RALM (Ram et al. 2023, "In-Context Retrieval-Augmented Language Models"): a
plain decoder (`RetroConfig(in_context=True)`: no CCA, no neighbour encoder, no copy head) gets
the same neighbours RETRO would attend to, but as text before its context. Training
(`retro.in_context_data`), generation, token scoring and the evaluation's bits per byte all
build that context here, so they build the same ids.

**The template** is built from token ids, not from a string re-tokenised whole, so that what the
model trains on is what it is served: for each passage in rank order (best first) the ids of
"Passage:", the passage's ids as the index stores them (chunk + continuation, cut to
`retrieved_len`, `<pad>` dropped) and the ids of "\\n"; then the ids of "Text:" and the text (a
training sequence, or the prompt). Decoded, a context reads

    Passage: Algeria is a country in North Africa. Its capital is Algiers ...
    Passage: ...
    Text: The capital of Algeria is

(a passage's ids usually begin with a space-led word). Without retrieval the context is "Text:"
and the text. A retrieval slot that came back empty (a neighbour excluded, or none found) is no
passage at all.

**The context budget**: k passages cost at most k * (r + |"Passage:"| + |"\\n"|) + |"Text:"|
tokens (`PassageTemplate.passages_budget`); the text gets the rest of `max_seq_len`, in whole
chunks for training (`text_budget`). The demo comparator: 2 x (64 + 5) + 4 = 142 of 416, leaving
the demo's 256-token sequences. A served prompt may be up to `max_seq_len - 1 - budget` tokens;
a request for more passages than the model was trained with gets those that fit, in rank order.

**Causality**: passages are retrieved with the m tokens just before the first predicted token
and never with a token the model predicts: in training those of the sequence's first chunk,
whose tokens are context only (`retro.in_context_data`); in generation the prompt's last m tokens
(or `query_tokens`), retrieved once before the first new token; in scoring a document, chunk u's
tokens read the passages of chunk u - 1.

This module owns the template, the context and `InContextLanguageModel`; the index is reached
only through the `retrieve` callable handed in, as for RETRO.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from retro.generate import RetroLanguageModel, RetroNetworkModel
from retro.language_model import LanguageModel, PromptTooLongError, Retrieve, fit_neighbours
from retro.model import Retro
from retro.sampling import SamplingParams
from retro.span_reader import SpanReader

PASSAGE_OPEN = "Passage:"
PASSAGE_CLOSE = "\n"
TEXT_OPEN = "Text:"


@dataclass(frozen=True)
class PassageTemplate:
    """The template's pieces as token ids of one tokenizer."""

    passage_open: tuple[int, ...]
    passage_close: tuple[int, ...]
    text_open: tuple[int, ...]

    @classmethod
    def for_tokenizer(cls, tokenizer) -> PassageTemplate:
        return cls(
            tuple(tokenizer.encode(PASSAGE_OPEN)),
            tuple(tokenizer.encode(PASSAGE_CLOSE)),
            tuple(tokenizer.encode(TEXT_OPEN)),
        )

    @property
    def passage_overhead(self) -> int:
        return len(self.passage_open) + len(self.passage_close)

    def passages_budget(self, k: int, passage_len: int) -> int:
        """Tokens before the text with k passages of at most passage_len tokens each."""
        return k * (passage_len + self.passage_overhead) + len(self.text_open)

    def header(self, passages: Sequence[Sequence[int]]) -> list[int]:
        """What comes before the text: each passage wrapped, then the text's opening."""
        ids: list[int] = []
        for passage in passages:
            ids += [*self.passage_open, *passage, *self.passage_close]
        return ids + list(self.text_open)


def passages_of(neighbours, passage_len: int, pad_id: int) -> list[list[int]]:
    """[k, n] neighbour tokens (one query's, as the index gives them) -> the k passages' ids, each
    cut to passage_len with `<pad>` dropped; empty slots are left out."""
    rows = fit_neighbours(np.asarray(neighbours), passage_len, pad_id)
    passages = [[int(t) for t in row if t != pad_id] for row in rows]
    return [p for p in passages if p]


def text_budget(config, template: PassageTemplate) -> int:
    """Tokens of text a context holds beside k = n_neighbours full passages, in whole chunks."""
    m = config.chunk_size
    room = config.max_seq_len - template.passages_budget(config.n_neighbours, config.retrieved_len)
    return room // m * m


class InContextLanguageModel(RetroNetworkModel):
    """A plain `Retro` decoder that reads the passages retrieved for its prompt in its context."""

    kind = "retro"

    def __init__(
        self,
        model: Retro,
        tokenizer,
        query_tokens: int | None = None,
        *,
        decoder: RetroLanguageModel | None = None,
        search: Callable[[Retrieve, list[str]], object] | None = None,
    ):
        cfg = model.config
        if not cfg.in_context:
            raise ValueError("InContextLanguageModel needs a model with in_context=True")
        if query_tokens is not None and query_tokens < 1:
            raise ValueError(f"query_tokens must be >= 1; got {query_tokens}")
        self.model, self.tokenizer = model, tokenizer
        self.query_tokens = query_tokens or cfg.chunk_size
        self.template = PassageTemplate.for_tokenizer(tokenizer)
        # the plain decoder's token loop (KV cache, sampling), given the whole context as its prompt
        self.decoder = decoder or RetroLanguageModel(model, tokenizer)
        self._search = search  # how a prompt's search runs (the batched form's engine); None: directly

    # --- what the model is ---------------------------------------------------------------------
    @property
    def uses_retrieval(self) -> bool:
        return True

    @property
    def first_candidates(self) -> int:
        """The first-token lookahead's candidates of its decoder (`retro.first_token`)."""
        return self.decoder.first_candidates

    def encode_prompt(self, prompt: str) -> list[int]:
        return self.decoder.encode_prompt(prompt)

    def prompt_limit(self, with_retrieval: bool) -> int:
        """The longest prompt that leaves room for one new token after the header: the model's
        k full passages with retrieval, "Text:" alone without."""
        if with_retrieval:
            header = self.template.passages_budget(self.default_k, self.retrieved_len)
        else:
            header = len(self.template.text_open)
        return max(0, self.max_seq_len - 1 - header)

    # --- the context ---------------------------------------------------------------------------
    def query(self, prompt_ids: list[int], query_from: int = 0) -> str:
        """The retrieval query of a prompt: its last `query_tokens` tokens from `query_from` on, decoded."""
        return self.tokenizer.decode(prompt_ids[max(query_from, len(prompt_ids) - self.query_tokens) :])

    def context_ids(self, prompt_ids: list[int], neighbours=None) -> list[int]:
        """The header for one query's neighbours ([k, n] tokens, None: no retrieval) + the prompt.

        Passages are taken in rank order while the context still leaves room for one new token."""
        cfg = self.model.config
        room = self.max_seq_len - 1 - len(prompt_ids) - len(self.template.text_open)
        kept: list[list[int]] = []
        if neighbours is not None:
            for passage in passages_of(neighbours, cfg.retrieved_len, cfg.pad_id):
                cost = len(passage) + self.template.passage_overhead
                if cost > room:
                    break
                kept.append(passage)
                room -= cost
        return self.template.header(kept) + list(prompt_ids)

    def retrieved(self, prompt_ids: list[int], retrieve: Retrieve | None, query_from: int = 0):
        """The prompt's one search: [k, n] neighbour tokens, or None without retrieval."""
        if retrieve is None:
            return None
        texts = [self.query(prompt_ids, query_from)]
        found = self._search(retrieve, texts) if self._search is not None else retrieve(texts)
        if isinstance(found, torch.Tensor):
            found = found.cpu().numpy()
        found = np.asarray(found)
        if found.ndim != 3 or found.shape[0] != 1:
            raise ValueError(f"retrieve must return token ids of shape [1, k, r]; got {list(found.shape)}")
        return found[0]

    # --- generation and scoring ----------------------------------------------------------------
    def _sampled_tokens(
        self,
        prompt_ids: list[int],
        params: SamplingParams,
        generator: torch.Generator,
        retrieve: Retrieve | None,
        query_from: int = 0,
    ) -> Iterator[int]:
        ids = self.context_ids(prompt_ids, self.retrieved(prompt_ids, retrieve, query_from))
        yield from self.decoder._sampled_tokens(ids, params, generator, None)

    @torch.inference_mode()
    def sequence_logprobs(self, ids: list[int], prompt_len: int, retrieve: Retrieve | None) -> torch.Tensor:
        """float (len(ids) - 1, V): row t is the distribution of ids[t + 1], with the passages
        retrieved for the prompt ids[:prompt_len] before it, as generation puts them."""
        cfg = self.model.config
        prompt = list(ids[:prompt_len])
        context = self.context_ids(prompt, self.retrieved(prompt, retrieve))  # the passages generation keeps
        header = context[: len(context) - len(prompt)]
        inputs = header + list(ids[:-1])
        if len(inputs) > cfg.max_seq_len:
            raise PromptTooLongError(len(ids), cfg.max_seq_len + 1 - len(header))
        self.model.eval()
        logprobs = self.model(torch.tensor([inputs], device=self.device))[0].float()
        logprobs[:, cfg.pad_id] = float("-inf")  # generation never samples <pad>: renormalise without it
        return logprobs.log_softmax(dim=-1)[len(header) :]

    # --- serving -------------------------------------------------------------------------------
    def batched(self, **options) -> InContextLanguageModel:
        """The same model decoded in batches (`retro.batch_engine`), its prompt searches joining
        the engine's: what `retro.batch_engine.batched_form` serves."""
        from retro.batch_engine import BatchedRetroLanguageModel

        decoder = BatchedRetroLanguageModel.of(self.decoder, **options)
        return InContextLanguageModel(
            self.model, self.tokenizer, self.query_tokens, decoder=decoder, search=decoder.engine.retrieve
        )

    @property
    def is_batched(self) -> bool:
        return self._search is not None

    def close(self) -> None:
        close = getattr(self.decoder, "close", None)
        if close is not None:
            close()


def language_model_for(
    model: Retro, tokenizer, query_tokens: int | None = None, span_reader: SpanReader | None = None
) -> LanguageModel:
    """A `Retro` network as the language model it is: retrieval in the prompt or RETRO/plain (with
    the span reader stored beside it, if any: `retro.span_reader.load_span_reader`)."""
    if model.config.in_context:
        return InContextLanguageModel(model, tokenizer, query_tokens)
    return RetroLanguageModel(model, tokenizer, query_tokens, span_reader=span_reader)


# ----------------------------------------------------------------------------------------------
# scoring documents (retro.evaluate's bits per byte)


@torch.inference_mode()
def document_token_nll(model: Retro, tokenizer, ids: list[int], neighbours_for) -> tuple[np.ndarray, list]:
    """-ln p of each of tokens 1.. of one document (entry i - 1 for ids[i]) and the neighbours
    retrieved with each chunk, in the chunks and windows `retro.evaluate` scores RETRO in: the
    document left-padded to whole chunks of the index's size, cut into windows of `text_budget`
    tokens with nothing carried over, and chunk u of a window read with the passages of chunk u - 1
    (`neighbours_for(chunks) -> [n, k, r]`, or None: no passages) before the window's text up to
    chunk u's end; a window's first chunk has no passages. The pads only align the chunks with
    RETRO's: the model never reads them."""
    cfg, m = model.config, model.config.chunk_size
    template = PassageTemplate.for_tokenizer(tokenizer)
    lead = (-len(ids)) % m
    n_chunks = (lead + len(ids)) // m
    window = text_budget(cfg, template) // m
    if window < 1:
        raise ValueError(f"max_seq_len={cfg.max_seq_len} leaves no room for text beside the passages")
    nll = np.zeros(max(0, len(ids) - 1))
    retrieved: list = [None] * n_chunks

    def span(u: int) -> tuple[int, int]:  # ids[start:end] are chunk u's tokens (padding excluded)
        return max(0, u * m - lead), (u + 1) * m - lead

    for first in range(0, n_chunks, window):
        last = min(first + window, n_chunks)  # chunks first .. last - 1
        found = None
        if neighbours_for is not None and last - first > 1:
            queries = [[cfg.pad_id] * (m - (e - s)) + ids[s:e] for s, e in map(span, range(first, last - 1))]
            found = neighbours_for(queries)
        if found is not None:
            for u in range(first, last - 1):
                retrieved[u] = found[u - first]
        text_start = span(first)[0]
        # one forward per chunk when passages change from chunk to chunk, else one for the window
        groups = [(u, u + 1) for u in range(first, last)] if found is not None else [(first, last)]
        for lo, hi in groups:
            passages = []
            if found is not None and lo > first:
                passages = passages_of(found[lo - 1 - first], cfg.retrieved_len, cfg.pad_id)
            header = template.header(passages)
            end = span(hi - 1)[1]
            targets = range(max(1, span(lo)[0]), end)  # the document's first token is never predicted
            if not len(targets):
                continue
            logp = model(torch.tensor([header + ids[text_start : end - 1]], device=model.device))[0]
            # ids[t] is predicted at the position of ids[t - 1], which follows the header
            positions = torch.tensor([len(header) + t - 1 - text_start for t in targets], device=model.device)
            wanted = torch.tensor([ids[t] for t in targets], device=model.device)
            nll[targets.start - 1 : targets.stop - 1] = (-logp[positions, wanted]).double().cpu().numpy()
    return nll, retrieved

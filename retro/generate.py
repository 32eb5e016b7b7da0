"""Text generation: KV-cached decoding, sampling, stop strings, streaming, retrieval at chunk ends.

`stream(model, tokenizer, prompt, params, retrieve)` yields `TextPiece`s; `generate(...)` collects
them into a `GenerationResult`. `retrieve(texts) -> int array [len(texts), k, r]` is passed in (the
index is not imported here): it is called once for the prompt, with one text per complete chunk of
the left-padded prompt in chunk order, and once more each time a generated token closes a chunk.

A prompt shorter than a chunk must still get retrieval (DESIGN.md point 8): with retrieval on, the
prompt is left-padded with `<pad>` to a chunk boundary, so its last token closes a chunk whose
neighbours the answer attends to. The same functions serve the no-retrieval baseline
(`retrieve=None`, or a model with `cca_layers=()`), which is not padded.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from retro.model import Retro

Retrieve = Callable[[list[str]], "np.ndarray | torch.Tensor"]
REPLACEMENT_CHAR = "\ufffd"  # what a byte-level BPE decodes a cut UTF-8 sequence to


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int = 64
    temperature: float = 1.0  # 0 = greedy
    top_p: float = 1.0  # nucleus sampling: keep the smallest set of tokens with this much mass
    top_k: int = 0  # 0 = no top-k filter
    seed: int | None = None  # same seed, same prompt, same model -> same output
    stop: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,))
        object.__setattr__(self, "stop", tuple(self.stop))
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1; got {self.max_new_tokens}")
        if not self.temperature >= 0:
            raise ValueError(f"temperature must be >= 0; got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must lie in (0, 1]; got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0; got {self.top_k}")
        if any(not isinstance(s, str) or not s for s in self.stop):
            raise ValueError("stop strings must be non-empty strings")


@dataclass
class TextPiece:
    text: str
    finish_reason: str | None = None  # set on the last piece: "stop" or "length"
    n_tokens: int = 0  # tokens sampled since the previous piece (an end-of-text token included)


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


def prompt_token_limit(model: Retro, with_retrieval: bool) -> int:
    """The longest prompt that leaves room for one new token (after left padding, with retrieval)."""
    cfg = model.config
    if with_retrieval:
        return (cfg.max_seq_len - 1) // cfg.chunk_size * cfg.chunk_size
    return cfg.max_seq_len - 1


def sample_token(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator) -> int:
    """logits (V,) (or log-probabilities) -> one token id, after temperature, top-k and top-p."""
    if params.temperature == 0:
        return int(logits.argmax())
    logits = logits.float() / params.temperature
    if params.top_k and params.top_k < logits.numel():
        kth = torch.topk(logits, params.top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if params.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        drop = probs.cumsum(dim=-1) - probs > params.top_p  # mass before this token already enough
        logits = logits.masked_fill(torch.zeros_like(drop).scatter(0, order, drop), float("-inf"))
    probs = logits.softmax(dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator))


def _neighbour_tensor(retrieved, n_texts: int, device) -> torch.Tensor:
    nb = torch.as_tensor(np.asarray(retrieved) if not isinstance(retrieved, torch.Tensor) else retrieved)
    if nb.dim() != 3 or nb.shape[0] != n_texts:
        raise ValueError(f"retrieve must return token ids of shape [{n_texts}, k, r]; got {list(nb.shape)}")
    return nb.to(device=device, dtype=torch.long)


def _token_stream(model: Retro, tokenizer, prompt: str, params: SamplingParams, retrieve: Retrieve | None):
    """Yields sampled token ids; each next token is computed only when the consumer asks for it."""
    cfg, m = model.config, model.config.chunk_size
    with_retrieval = retrieve is not None and cfg.uses_retrieval
    prompt_ids = tokenizer.encode(prompt) or [tokenizer.eos_id]  # an empty prompt starts a document
    limit = prompt_token_limit(model, with_retrieval)
    if len(prompt_ids) > limit:
        raise PromptTooLongError(len(prompt_ids), limit)
    ids = [cfg.pad_id] * ((-len(prompt_ids)) % m if with_retrieval else 0) + prompt_ids
    device = model.device

    def neighbours_for(chunks: list[list[int]]) -> torch.Tensor:
        return _neighbour_tensor(retrieve([tokenizer.decode(c) for c in chunks]), len(chunks), device)

    n_chunks = len(ids) // m
    prompt_neighbours = None
    if with_retrieval and n_chunks:
        prompt_neighbours = neighbours_for([ids[u * m : (u + 1) * m] for u in range(n_chunks)])[None]
    seed = params.seed if params.seed is not None else int.from_bytes(os.urandom(8), "little") >> 1
    generator = torch.Generator(device=device).manual_seed(seed)
    logits, cache = model.prefill(torch.tensor([ids], device=device), prompt_neighbours)
    last = logits[0, -1]
    last[cfg.pad_id] = float("-inf")  # padding is never an answer
    while True:
        token = sample_token(last, params, generator)
        yield token
        p = cache.pos
        if p >= cfg.max_seq_len:
            return
        ids.append(token)
        neighbours = None
        if with_retrieval and (p + 1) % m == 0:  # this token closes a chunk: retrieve with it
            neighbours = neighbours_for([ids[p + 1 - m : p + 1]])
        last = model.decode_step(torch.tensor([token], device=device), cache, neighbours)[0]
        last[cfg.pad_id] = float("-inf")


def _held_back(text: str, stops: tuple[str, ...]) -> int:
    """How many trailing characters may still turn into a stop string or a completed character."""
    hold = len(text) - len(text.rstrip(REPLACEMENT_CHAR))
    for s in stops:
        for n in range(min(len(s) - 1, len(text)), 0, -1):
            if text.endswith(s[:n]):
                hold = max(hold, n)
                break
    return hold


def text_pieces(
    tokens: Iterable[int], decode: Callable[[list[int]], str], eos_id: int, params: SamplingParams
) -> Iterator[TextPiece]:
    """Turns a lazy stream of sampled token ids into final text pieces (any model's tokens).

    Ends at `eos_id`, at a stop string (cut before it) or after `params.max_new_tokens`; text that
    could still become a stop string or complete a cut UTF-8 character is held back until it can't.
    The last piece carries the finish reason; no token is asked for after the end.
    """
    generated: list[int] = []
    emitted = pending = 0  # characters already yielded; tokens sampled since the last piece
    finish = "length"
    text = ""
    for token in tokens:
        pending += 1
        if token == eos_id:
            finish = "stop"
            break
        generated.append(token)
        text = decode(generated)
        cut = min(
            (i for i in (text.find(s, max(0, emitted - len(s))) for s in params.stop) if i >= 0), default=-1
        )
        if cut >= 0:
            text, finish = text[:cut], "stop"
            break
        if len(generated) >= params.max_new_tokens:
            break
        ready = len(text) - _held_back(text, params.stop)
        if ready > emitted:
            yield TextPiece(text[emitted:ready], n_tokens=pending)
            emitted, pending = ready, 0
    yield TextPiece(text[emitted:], finish_reason=finish, n_tokens=pending)


@torch.inference_mode()
def stream(
    model: Retro,
    tokenizer,
    prompt: str,
    params: SamplingParams = SamplingParams(),
    retrieve: Retrieve | None = None,
) -> Iterator[TextPiece]:
    """Yields text pieces as they become final; the last piece carries the finish reason."""
    model.eval()
    tokens = _token_stream(model, tokenizer, prompt, params, retrieve)
    yield from text_pieces(tokens, tokenizer.decode, tokenizer.eos_id, params)


def generate(
    model: Retro,
    tokenizer,
    prompt: str,
    params: SamplingParams = SamplingParams(),
    retrieve: Retrieve | None = None,
) -> GenerationResult:
    """Generates one completion; see `stream` for the contract."""
    pieces = list(stream(model, tokenizer, prompt, params, retrieve))
    return GenerationResult(
        text="".join(p.text for p in pieces),
        finish_reason=pieces[-1].finish_reason or "length",
        prompt_tokens=len(tokenizer.encode(prompt) or [tokenizer.eos_id]),
        completion_tokens=sum(p.n_tokens for p in pieces),
    )

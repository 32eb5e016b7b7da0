"""What every model's decoding shares: sampling parameters, token choice, seeding, stop strings.

`SamplingParams` is the one set of knobs (temperature, top-p, top-k, seed, stop strings, length)
that the RETRO model and the Hugging Face comparison model both take, `sample_token` the one way a
token is drawn from logits and `seeded_generator` the one way a seed becomes a random stream, so
the same numbers mean the same for both. `text_pieces` turns any model's lazy stream of sampled
token ids into final `TextPiece`s: it ends at end-of-text, a stop string or the length limit and
holds back text that could still become a stop string. Nothing here knows a model or an index.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import torch

REPLACEMENT_CHAR = "\ufffd"  # what a byte-level BPE decodes a cut UTF-8 sequence to


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int = 64
    temperature: float = 1.0  # 0 = greedy
    top_p: float = 1.0  # nucleus sampling: keep the smallest set of tokens with this much mass
    top_k: int = 0  # 0 = no top-k filter
    seed: int | None = None  # same seed, same prompt, same model -> same output
    stop: tuple[str, ...] = field(default=())
    # nats by which the copy head's null slot is lowered for the first token (a RETRO model's
    # `RetroConfig.inference_first_copy_bias`); None: the model's own; models without a copy head ignore it
    first_copy_bias: float | None = None
    # how many of the first token's most likely candidates a greedy generation weighs by one token of
    # lookahead (`RetroConfig.inference_first_candidates`, `retro.first_token`); 0 or 1: the argmax;
    # None: the model's own; the Hugging Face comparison model ignores it
    first_candidates: int | None = None
    # the span reader's weight on the first token of a generation with retrieval
    # (`RetroConfig.inference_span_weight`, `retro.span_reader`); 0: off; None: the model's own
    span_weight: float | None = None
    # nats for the reader's span's next token while a generation follows it
    # (`RetroConfig.inference_span_follow`, `retro.span_reader.SpanFollower`); 0: off; None: the model's own
    span_follow: float | None = None

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
        if self.first_copy_bias is not None and not 0 <= self.first_copy_bias < float("inf"):
            raise ValueError(f"first_copy_bias must be a finite number >= 0; got {self.first_copy_bias}")
        if self.span_weight is not None and not 0 <= self.span_weight < float("inf"):
            raise ValueError(f"span_weight must be a finite number >= 0; got {self.span_weight}")
        if self.span_follow is not None and not 0 <= self.span_follow < float("inf"):
            raise ValueError(f"span_follow must be a finite number >= 0; got {self.span_follow}")
        candidates = self.first_candidates
        whole = isinstance(candidates, int) and not isinstance(candidates, bool)
        if candidates is not None and not (whole and candidates >= 0):
            raise ValueError(f"first_candidates must be a whole number >= 0; got {candidates!r}")


@dataclass
class TextPiece:
    text: str
    finish_reason: str | None = None  # set on the last piece: "stop" or "length"
    n_tokens: int = 0  # tokens sampled since the previous piece (an end-of-text token included)


def seeded_generator(seed: int | None, device) -> torch.Generator:
    """The random stream of one generation: `seed` when given, else a fresh one from the OS."""
    if seed is None:
        seed = int.from_bytes(os.urandom(8), "little") >> 1
    return torch.Generator(device=device).manual_seed(seed)


# Below this temperature sampling is greedy: dividing by a tiny positive temperature (1e-240 is a
# valid float) overflows float32 to inf, and the softmax of inf - inf is NaN.
MIN_TEMPERATURE = 1e-3


def sample_token(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator) -> int:
    """logits (V,) (or log-probabilities) -> one token id, after temperature, top-k and top-p.

    Every valid `SamplingParams` gives a token: below `MIN_TEMPERATURE` the choice is greedy, and a
    distribution that still comes out non-finite falls back to the most likely token."""
    if params.temperature < MIN_TEMPERATURE:
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
    if not bool(torch.isfinite(probs).all()) or float(probs.sum()) <= 0:
        return int(logits.argmax())
    return _draw(probs[None], [generator])[0]


def _draw(probs: torch.Tensor, generators: list[torch.Generator]) -> list[int]:
    """probs (B, V), finite with a positive sum -> one token per row by inverse transform: a uniform
    u from the row's own generator, the first token whose cumulative probability exceeds u times
    the row's total. One draw per row from its generator (torch.multinomial drew V exponentials,
    about 0.13 ms a row for 8,192 tokens: more than a decode step's share); a token of probability
    0 is never drawn. `sample_token` and `sample_tokens` both draw here, so a row's token is the
    same alone and in a batch."""
    cumulative = probs.double().cumsum(dim=-1)
    u = torch.stack([torch.rand((), dtype=torch.float64, generator=g) for g in generators])
    found = torch.searchsorted(cumulative, (u * cumulative[:, -1])[:, None], right=True)[:, 0].tolist()
    vocab = probs.shape[-1]
    return [
        t if t < vocab else int((probs[b] > 0).nonzero()[-1])  # u * total rounded up to the total
        for b, t in enumerate(found)
    ]


def sample_tokens(
    logits: torch.Tensor, params: list[SamplingParams], generators: list[torch.Generator]
) -> list[int]:
    """logits (B, V) -> row b's token drawn as `sample_token(logits[b], params[b], generators[b])`
    draws it, with the work shared across rows where it can be: the greedy rows' argmax in one op,
    and for rows that sample with a temperature alone (no top-k, no top-p, the common request) the
    scaling, the softmax and the draw in one op each, every row's uniform from its own generator
    (`_draw`). Rows with top-k or top-p, and rows whose distribution comes out non-finite, go
    through `sample_token` one by one. A batch decoder calls this once a step."""
    tokens = [0] * len(params)
    greedy = [b for b, p in enumerate(params) if p.temperature < MIN_TEMPERATURE]
    if greedy:
        for b, token in zip(greedy, logits[greedy].argmax(dim=-1).tolist(), strict=True):
            tokens[b] = int(token)
    vocab = logits.shape[-1]
    plain = [
        b
        for b, p in enumerate(params)
        if p.temperature >= MIN_TEMPERATURE and not (p.top_k and p.top_k < vocab) and p.top_p >= 1.0
    ]
    done = set(greedy)
    if plain:
        probs = (
            logits[plain].float() / torch.tensor([params[b].temperature for b in plain])[:, None]
        ).softmax(dim=-1)
        usable = (torch.isfinite(probs).all(dim=-1) & (probs.sum(dim=-1) > 0)).tolist()
        drawn = [i for i in range(len(plain)) if usable[i]]  # the others fall back in `sample_token`
        if drawn:
            sampled = _draw(probs[drawn], [generators[plain[i]] for i in drawn])
            for i, token in zip(drawn, sampled, strict=True):
                tokens[plain[i]] = token
                done.add(plain[i])
    for b, p in enumerate(params):
        if b not in done:
            tokens[b] = sample_token(logits[b], p, generators[b])
    return tokens


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
    tokens: Iterable[int], decode: Callable[[list[int]], str], eos_id: int | None, params: SamplingParams
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

"""Scoring a given token sequence: each token's log-probability under the distribution a model samples from.

`score_tokens(lm, ids, prompt_len, top_n, retrieve)` gives, for every token of `ids` after the
first, its log-probability given the tokens before it and the `top_n` most likely alternatives
(`TokenScores`). It is what OpenAI's `logprobs` and `echo` report and what lm-evaluation-harness
sums for a log-likelihood task, so it must be the distribution generation samples from (at
temperature 1, before top-k/top-p):

- RETRO (`retro.generate.RetroLanguageModel`): one teacher-forced `Retro.forward` (the copy-head
  mixture's log-probabilities, as `prefill` and `decode_step` give them) over the sequence
  left-padded as generation pads a prompt of `prompt_len` tokens, with neighbours for every chunk
  the scored positions close, each queried with the same window generation uses
  (`RetroLanguageModel.query_tokens`); `<pad>` is renormalised away, as generation never samples it.
- The Hugging Face comparison model (`retro.hf_model.HFCausalLM.sequence_logprobs`): its softmax.
- The retrieval-in-prompt comparator (`retro.in_context.InContextLanguageModel.sequence_logprobs`):
  one forward over the passages retrieved for the prompt, in its template, then the sequence.

`stream_ids` is `LanguageModel.stream` for a prompt given as token ids (fed as they are, never
re-tokenised), recording each sampled id, so a completion can be scored after it is generated;
`RememberedRetrieval` lets that scoring reuse the neighbours generation retrieved instead of
searching again. Nothing here changes how any model generates.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from retro.generate import RetroLanguageModel
from retro.hf_model import HFCausalLM
from retro.in_context import InContextLanguageModel
from retro.language_model import LanguageModel, PromptTooLongError, Retrieve, fit_neighbours
from retro.sampling import SamplingParams, TextPiece, seeded_generator, text_pieces

# JSON has no -inf: a token the model can never produce (RETRO's <pad>) is reported with this
# log-probability, as vLLM does.
LOGPROB_FLOOR = -9999.0


@dataclass
class TokenScores:
    """Per token of a sequence: its log-probability (None for the first) and the top alternatives."""

    ids: list[int]
    logprobs: list[float | None]
    top: list[list[tuple[int, float]] | None]  # most likely first; None for the first token


class RememberedRetrieval:
    """A `retrieve` that passes every call on and remembers each query text's rows; `replay`
    answers remembered texts from memory (and searches only for ones never asked)."""

    def __init__(self, retrieve: Retrieve):
        self.retrieve = retrieve
        self.rows: dict[str, np.ndarray] = {}

    def __call__(self, texts: list[str]) -> np.ndarray:
        found = self.retrieve(texts)
        if isinstance(found, torch.Tensor):
            found = found.cpu().numpy()
        found = np.asarray(found)
        for text, row in zip(texts, found, strict=True):
            self.rows[text] = row
        return found

    def replay(self, texts: list[str]) -> np.ndarray:
        missing = list(dict.fromkeys(t for t in texts if t not in self.rows))
        if missing:
            self(missing)
        return np.stack([self.rows[t] for t in texts])


def vocab_size(lm: LanguageModel) -> int:
    """Token ids 0 .. vocab_size - 1 are ones the model embeds and its tokenizer can decode."""
    if isinstance(lm, RetroLanguageModel | InContextLanguageModel):
        return min(lm.model.config.vocab_size, lm.tokenizer.vocab_size)
    if isinstance(lm, HFCausalLM):
        return lm.vocab_size
    raise TypeError(f"no token scoring for {type(lm).__name__}")


def token_text(lm: LanguageModel, token_id: int) -> str:
    """One token as text, special tokens by name (an end-of-text token is `<eos>`, not '')."""
    if isinstance(lm, RetroLanguageModel | InContextLanguageModel):
        return lm.tokenizer.decode([token_id], skip_special=False)
    if isinstance(lm, HFCausalLM):
        return lm.token_text(token_id)
    raise TypeError(f"no token scoring for {type(lm).__name__}")


def _retro_sequence_logprobs(
    lm: RetroLanguageModel, ids: list[int], prompt_len: int, retrieve: Retrieve | None
) -> torch.Tensor:
    model, cfg, m = lm.model, lm.model.config, lm.chunk_size
    if not lm.uses_retrieval:
        retrieve = None
    n_pad = (-prompt_len) % m if retrieve is not None else 0  # generation pads the prompt, not the rest
    padded = [cfg.pad_id] * n_pad + list(ids)
    inputs = padded[:-1]  # the last token's output predicts nothing that is scored
    if len(inputs) > cfg.max_seq_len:
        raise PromptTooLongError(len(ids), cfg.max_seq_len + 1 - n_pad)
    neighbours = None
    n_chunks = len(inputs) // m
    if retrieve is not None and n_chunks:
        q = lm.query_tokens
        ends = [(u + 1) * m for u in range(n_chunks)]
        texts = [lm.tokenizer.decode(padded[max(0, end - q) : end]) for end in ends]
        found = retrieve(texts)
        if isinstance(found, torch.Tensor):
            found = found.cpu().numpy()
        found = np.asarray(found)
        if found.ndim != 3 or found.shape[0] != n_chunks:
            raise ValueError(f"retrieve must return token ids of shape [{n_chunks}, k, r]; got {found.shape}")
        fitted = fit_neighbours(found, lm.retrieved_len, cfg.pad_id)
        neighbours = torch.from_numpy(np.ascontiguousarray(fitted)).to(lm.device)[None]
    model.eval()
    logprobs = model(torch.tensor([inputs], device=lm.device), neighbours)[0].float()
    logprobs[:, cfg.pad_id] = float("-inf")  # generation never samples <pad>: renormalise without it
    return logprobs.log_softmax(dim=-1)[n_pad:]


@torch.inference_mode()
def sequence_logprobs(
    lm: LanguageModel, ids: list[int], prompt_len: int | None = None, retrieve: Retrieve | None = None
) -> torch.Tensor:
    """float (len(ids) - 1, V): row t is the distribution of ids[t + 1] given ids[: t + 1].

    `prompt_len` (default: all of `ids`) is how many leading tokens were the prompt: RETRO pads
    the prompt, not what follows it, to a chunk boundary before retrieving.
    """
    ids = [int(i) for i in ids]
    if len(ids) < 2:
        return torch.empty(0, 0)
    prompt_len = len(ids) if prompt_len is None else prompt_len
    if isinstance(lm, RetroLanguageModel):
        return _retro_sequence_logprobs(lm, ids, prompt_len, retrieve)
    if isinstance(lm, InContextLanguageModel):
        return lm.sequence_logprobs(ids, prompt_len, retrieve)
    if isinstance(lm, HFCausalLM):
        return lm.sequence_logprobs(ids)
    raise TypeError(f"no token scoring for {type(lm).__name__}")


def score_tokens(
    lm: LanguageModel,
    ids: list[int],
    prompt_len: int | None = None,
    top_n: int = 0,
    retrieve: Retrieve | None = None,
) -> TokenScores:
    """Each token's log-probability given those before it, and the `top_n` most likely tokens there."""
    ids = [int(i) for i in ids]
    rows = sequence_logprobs(lm, ids, prompt_len, retrieve)
    logprobs: list[float | None] = [None]
    top: list[list[tuple[int, float]] | None] = [None]
    if len(ids) > 1:
        rows = rows.clamp_min(LOGPROB_FLOOR)
        chosen = rows.gather(1, torch.tensor(ids[1:], device=rows.device)[:, None])[:, 0]
        logprobs += [float(x) for x in chosen.tolist()]
        if top_n > 0:
            values, indices = torch.topk(rows, min(top_n, rows.shape[1]), dim=-1)
            top += [
                list(zip(map(int, i), map(float, v), strict=True))
                for i, v in zip(indices.tolist(), values.tolist(), strict=True)
            ]
        else:
            top += [[] for _ in ids[1:]]
    return TokenScores(ids=ids, logprobs=logprobs, top=top)


@torch.inference_mode()
def stream_ids(
    lm: LanguageModel,
    prompt_ids: list[int],
    params: SamplingParams,
    retrieve: Retrieve | None = None,
    sampled: list[int] | None = None,
) -> Iterator[TextPiece]:
    """`LanguageModel.stream` for a prompt of token ids, appending every sampled id to `sampled`.

    The same checks, seeding and text pieces as `stream`; the ids go to the model as given.
    """
    if not lm.uses_retrieval:
        retrieve = None
    prompt_ids = [int(i) for i in prompt_ids] or ([lm.eos_id] if lm.eos_id is not None else [0])
    limit = lm.prompt_limit(retrieve is not None)
    if len(prompt_ids) > limit:
        raise PromptTooLongError(len(prompt_ids), limit)
    generator = seeded_generator(params.seed, lm.device)
    sink = sampled if sampled is not None else []

    def recorded() -> Iterator[int]:
        # the model's own token loop (the one `stream` runs), each id kept for scoring
        for token in lm._sampled_tokens(prompt_ids, params, generator, retrieve):
            sink.append(token)
            yield token

    yield from text_pieces(recorded(), lm.decode, lm.eos_id, params)

"""The first generated token chosen by one token of lookahead (`RetroConfig.inference_first_candidates`).

A greedy generation's first token decides what kind of answer follows, and the small reader's
most likely first token is often not the answer's: for two thirds of its dev misses at a question
whose passage it was shown, the answer's first token ranked 2nd to 5th (docs/design.md, eighteenth
round). `lookahead_choice` takes the N most likely first tokens, feeds each one step further from
the prompt's cache (the N candidates as one batch-of-N `decode_step` on a copy of the cache, which
is left as it was) and says the candidate whose own log-probability plus its best next token's is
the highest; a tie goes to the more likely candidate. An answer's first token is then preferred
when its continuation is sure (" Mar" -> "ston"), a question's echo or a stray word piece when it
is not.

Only the first token, and only greedy decoding, is chosen this way (`uses_lookahead`): a sampled
generation draws from the distribution as given. The step beyond a candidate reads the neighbours
the prompt's last chunk retrieved; a candidate that would itself close a chunk of a generation with
retrieval would need its own search, so there the first token is the plain argmax (with the
prompt padded to a chunk boundary, as `retro.generate` pads it, that happens only at chunk size 1).
"""

from __future__ import annotations

import torch

from retro.attention import LayerKV
from retro.model import DecodeCache, Retro
from retro.sampling import MIN_TEMPERATURE, SamplingParams


def uses_lookahead(candidates: int, params: SamplingParams, closes_chunk_with_retrieval: bool) -> bool:
    """Whether the first token is chosen by `lookahead_choice`: more than one candidate, greedy
    decoding (as `sample_token` judges it), and a first token that opens no search of its own."""
    return candidates > 1 and params.temperature < MIN_TEMPERATURE and not closes_chunk_with_retrieval


def branched_cache(cache: DecodeCache, n: int) -> DecodeCache:
    """`n` copies of a one-sequence cache with room for one more position: decoding them writes
    nothing into `cache`. Keys and values up to `cache.pos` are copied; the neighbours' projections,
    only read by a step that closes no chunk, are shared as views (a closing step replaces them)."""
    pos = cache.pos
    if cache.chunk_hidden.shape[0] != 1:
        raise ValueError("branched_cache takes the cache of one prefilled sequence (batch 1)")

    def copied(t: torch.Tensor) -> torch.Tensor:
        out = t.new_zeros(n, t.shape[1], pos + 1, t.shape[3])
        out[:, :, :pos] = t[:, :, :pos]
        return out

    def shared(t):
        return None if t is None else t.expand(n, *t.shape[1:])

    memory = cache.memory
    if memory is not None:
        memory = type(memory)(
            chunk=memory.chunk,
            cca={layer: type(p)(shared(p.k), shared(p.v), shared(p.mask)) for layer, p in memory.cca.items()},
            copy_keys=shared(memory.copy_keys),
            copy_ids=shared(memory.copy_ids),
            copy_valid=shared(memory.copy_valid),
            copy_context=shared(memory.copy_context),
        )
    return DecodeCache(
        layers=[LayerKV(copied(layer.k), copied(layer.v)) for layer in cache.layers],
        chunk_hidden=cache.chunk_hidden.repeat(n, 1, 1),  # a step writes its position's row
        pos=pos,
        memory=memory,
        max_len=pos + 1,
        recent=None if cache.recent is None else cache.recent.repeat(n, 1),
    )


@torch.no_grad()
def lookahead_choice(model: Retro, first: torch.Tensor, cache: DecodeCache, candidates: int) -> int:
    """The first token among `first`'s (V,) `candidates` most likely whose log-probability plus its
    best next token's is the highest. `cache` is the prompt's (batch 1, at the first token's
    position), unchanged here; the next token's distribution is `decode_step`'s, `<pad>` excluded."""
    top = first.topk(min(candidates, first.numel()))
    after = model.decode_step(top.indices, branched_cache(cache, len(top.indices)))  # (N, V)
    after[:, model.config.pad_id] = float("-inf")  # padding is never said
    score = top.values + after.max(dim=-1).values
    return int(top.indices[score.argmax()])  # argmax's first maximum: the likelier candidate

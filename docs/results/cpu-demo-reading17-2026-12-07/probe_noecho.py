"""Probe: with the first token's copy bias, the pointer at the prompt's last position may not point
at a neighbour token that the prompt itself holds (a restatement: the entity's name, " of", "?"),
before the pointer is renormalised; the vocabulary's share is untouched. MODE=all: every prompt
token; MODE=none: the shipped rule alone.

    cd /work/exp && MODE=all PYTHONPATH=/work/main python probe_noecho.py index-serve dev \
        /work/main/models/demo --query-tokens 96 --mode lexical-titled --dump r17/dev-noecho-all

(the third round's reading_check.py with the patch; `models/demo` with its own first-token copy bias,
3.5, which the patch keeps)."""

import os
import sys

from einops import rearrange

sys.path.insert(0, "/work/main/docs/results/cpu-demo-reading3-2026-12-03")
import reading_check  # noqa: E402

from retro.cca import merge_attending, to_attending_chunks  # noqa: E402
from retro.copy_head import CopyHead  # noqa: E402
from retro.model import Retro  # noqa: E402

MODE = os.environ.get("MODE", "all")
_prefill = Retro.prefill
state = {"tokens": None}


def prefill(self, tokens, neighbours=None, cache=None, last_copy_bias=0.0):
    state["tokens"] = tokens
    try:
        return _prefill(self, tokens, neighbours, cache, last_copy_bias)
    finally:
        state["tokens"] = None


def _log_probs(self, states, last_copy_bias=0.0):
    plain = states.logits.float().log_softmax(dim=-1)
    if self.copy_head is None or states.neighbours is None:
        return plain
    m = self.config.chunk_size
    pointer, ids = self.copy_head.chunked_pointer(
        states.h, states.neighbours, states.query_context, states.key_context, self.word_meanings
    )
    L = states.neighbours.memory.shape[1]
    if last_copy_bias:
        B, T = states.h.shape[:2]
        row, column = divmod(T - m, m)
        pointer = rearrange(pointer, "(b l) m s -> b l m s", b=B).clone()
        last = pointer[:, row, column]  # (B, 1+S)
        if MODE != "none" and state["tokens"] is not None:
            row_ids = rearrange(ids, "(b l) s -> b l s", b=B)[:, row]  # (B, S)
            prompt = state["tokens"]  # (B, T)
            echoed = (row_ids[:, :, None] == prompt[:, None, :]).any(-1)
            echoed &= row_ids != self.config.pad_id
            last = last.clone()
            last[:, 1:] = last[:, 1:].masked_fill(echoed, float("-inf"))
            last = last.log_softmax(-1)
        pointer[:, row, column] = CopyHead.lower_null(last, last_copy_bias)
        pointer = rearrange(pointer, "b l m s -> (b l) m s")
    vocab = rearrange(to_attending_chunks(states.logits, m, L), "b l m v -> (b l) m v")
    mixed = CopyHead.mix(vocab, pointer, ids)
    return merge_attending(plain, rearrange(mixed, "(b l) m v -> b l m v", b=states.h.shape[0]), m)


Retro.prefill = prefill
Retro._log_probs = _log_probs

if __name__ == "__main__":
    reading_check.main(reading_check.arguments().parse_args())

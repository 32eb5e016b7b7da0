"""Round 18 inference probe: the first token's copy bias given only to plausible neighbour tokens.

The seventeenth round's rule lowers the null slot by C nats at the first generated token, so every
neighbour token gains e^C against the vocabulary, word pieces that cannot start a word after the
prompt's last token included ("unt" of " aunt" after a closing "."). Here a neighbour token gains
only if the vocabulary itself gives it log-probability >= FLOOR at that position; the others are
lowered with the null slot (their weight against the vocabulary as trained). Wraps the shipped
rule's pieces (`Retro._log_probs`, `CopyHead.chunked_pointer`, `CopyHead.lower_null`)."""

import os
import sys

import torch

sys.path.insert(0, "/work/main/docs/results/cpu-demo-reading3-2026-12-03")
import reading_check  # noqa: E402

from retro.copy_head import CopyHead  # noqa: E402
from retro.model import Retro  # noqa: E402

FLOOR = float(os.environ.get("FLOOR", "-10"))
_log_probs, _chunked_pointer = Retro._log_probs, CopyHead.chunked_pointer
seen = {}


def log_probs(self, states, last_copy_bias=0.0):
    B, T = states.h.shape[:2]
    seen["vocab_last"] = states.logits[:, -1].float().log_softmax(-1)  # (B, V)
    seen["row"] = (T - self.config.chunk_size) // self.config.chunk_size
    return _log_probs(self, states, last_copy_bias)


def chunked_pointer(self, *args, **kwargs):
    pointer, ids = _chunked_pointer(self, *args, **kwargs)
    seen["ids"] = ids  # ((B L), S)
    return pointer, ids


def lower_null(pointer_logp, bias):  # pointer_logp (B, 1+S): the last prompt position's
    B = pointer_logp.shape[0]
    last_ids = seen["ids"].view(B, -1, seen["ids"].shape[-1])[:, seen["row"]]  # (B, S)
    plausible = seen["vocab_last"].gather(-1, last_ids) >= FLOOR
    lowered = pointer_logp.clone()
    lowered[..., 0] -= bias
    lowered[..., 1:] = torch.where(plausible, lowered[..., 1:], lowered[..., 1:] - bias)
    return lowered.log_softmax(dim=-1)


Retro._log_probs = log_probs
CopyHead.chunked_pointer = chunked_pointer
CopyHead.lower_null = staticmethod(lower_null)

if __name__ == "__main__":
    reading_check.main(reading_check.arguments().parse_args())

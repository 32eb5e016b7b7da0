"""Inference probe (round 16): the copy head's pointer scores plus LAMBDA times the model's own
vocabulary log-probability of each neighbour token (a product of experts: the language model's
expectation of what comes next, e.g. a town's name after "the town of", filters what the pointer
may copy). No training; LAMBDA from the environment. Runs reading_check.py's main unchanged."""

import os
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cpu-demo-reading3-2026-12-03"))
import reading_check  # noqa: E402

from retro.copy_head import CopyHead  # noqa: E402

LAMBDA = float(os.environ.get("LAMBDA", "0"))
_original_pointer = CopyHead.pointer


def pointer_with_prior(self, h, keys, valid, query_context=None, key_context=None, ids=None, meanings=None):
    logp = _original_pointer(self, h, keys, valid, query_context, key_context, ids, meanings)
    if LAMBDA == 0:
        return logp
    vocab = F.linear(h, self._wte_weight).float().log_softmax(-1)  # (N, Tq, V)
    N, Tq, _ = vocab.shape
    prior = vocab.gather(-1, ids[:, None, :].expand(N, Tq, ids.shape[-1]))  # (N, Tq, S)
    scores = torch.cat([logp[..., :1], logp[..., 1:] + LAMBDA * prior], dim=-1)
    return scores.log_softmax(-1)


CopyHead.pointer = pointer_with_prior
_load = reading_check.load_checkpoint


def load_with_weight(run):
    model, tokenizer, extra = _load(run)
    if model.copy_head is not None:
        model.copy_head._wte_weight = model.wte.weight
    return model, tokenizer, extra


reading_check.load_checkpoint = load_with_weight

if __name__ == "__main__":
    reading_check.main(reading_check.arguments().parse_args())

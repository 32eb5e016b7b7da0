"""The copy head: a pointer over the neighbour tokens a position may see, mixed into the
vocabulary distribution (pointer-generator networks, See et al. 2017; docs/design.md has the
measurements that made it part of the model).

`CopyHead.pointer` scores the neighbour tokens against a position's state, plus a learned bonus
for each previous token the two share (the n-gram match: the position's last tokens, which the
model passes as `query_context`, against `key_context`) and, with `copy_bag_window`, an order-free
bonus for the position's recent words found just before a neighbour token (the bag match, `bag`)
and, with `copy_neighbour_bag`, a bonus for every token of a neighbour that holds those words
anywhere (the neighbour match, `neighbour_bag`), and with `copy_meaning_bag` the bag match by
meaning (`meaning_bag`); with `copy_match_gate` each match's bonus is scaled by a function of the
position's state (`gates`); `CopyHead.mix` gives the mixture's log-probabilities over the vocabulary,
and `CopyHead.target_logp` only those of given targets, for the loss. `chunked_pointer` applies the
pointer to a whole sequence, chunk by chunk, as chunked cross-attention sees the neighbours.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from retro.cca import to_attending_chunks
from retro.config import RetroConfig
from retro.neighbour_encoder import EncodedNeighbours
from retro.word_meaning import WORD_WINDOW, recent_tokens

MATCH_BONUS_INIT = 3.0  # each matching previous token adds 3 logits at the start of training
# The neighbour match's saliences are stored divided by this: Adam moves a parameter by about the
# learning rate per step whatever its gradient, so unscaled a fine-tune at lr 5e-4 could not lift a
# salience from 0 to the few logits a name needs within 1,000 steps (the bag match's grew slowly).
NEIGHBOUR_SALIENCE_SCALE = 10.0


class CopyHead(nn.Module):
    """A pointer over neighbour tokens with a learned null slot, mixed into the vocabulary softmax.

    p(w) = p_null * softmax(logits)_w + sum_j p_j [neighbour token j == w], where (p_null, p_1..p_S)
    is one softmax over a null logit (a function of the position's state) and the query-key scores
    of the neighbour tokens. The gate 1 - p_null is thus high only when some neighbour token's key
    matches the position's state better than the null slot, which is what should make an irrelevant
    neighbour harmless (pointer-generator networks, See et al. 2017, with the gate tied to the match).
    """

    def __init__(self, cfg: RetroConfig):
        super().__init__()
        self.query = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.key = nn.Linear(cfg.enc_d_model, cfg.d_model, bias=False)
        self.null = nn.Linear(cfg.d_model, 1)
        self.scale = 1.0 / math.sqrt(cfg.d_model)
        self.pad_id = cfg.pad_id
        self.chunk_size = cfg.chunk_size
        self.match_tokens = cfg.copy_match_tokens
        self.context_tokens = cfg.copy_context_tokens
        self.bag_window = cfg.copy_bag_window
        self.retrieved_len = cfg.retrieved_len
        # one learned bonus per matched offset (the last token, the one before, ...); see RetroConfig
        self.match_bonus = (
            nn.Parameter(torch.full((cfg.copy_match_tokens,), MATCH_BONUS_INIT))
            if cfg.copy_match_tokens
            else None
        )
        # the bag match: a salience per vocabulary token (0: no effect until training finds one,
        # so a model without it loads into one with it unchanged) and a weight per distance
        self.bag_weight = nn.Parameter(torch.zeros(cfg.vocab_size)) if self.bag_window else None
        self.bag_distance = nn.Parameter(torch.ones(self.bag_window)) if self.bag_window else None
        # the neighbour match: a salience per vocabulary token, 0 at the start for the same reason
        self.neighbour_weight = nn.Parameter(torch.zeros(cfg.vocab_size)) if cfg.copy_neighbour_bag else None
        # the meaning match: a salience as a function of a word's meaning (0 at the start, for the
        # same reason; scaled like the neighbour match's) and a weight per distance
        self.meaning_salience = nn.Linear(cfg.word_dim, 1) if cfg.copy_meaning_bag else None
        self.meaning_distance = nn.Parameter(torch.ones(self.bag_window)) if cfg.copy_meaning_bag else None
        # the match gate: one log-scale per n-gram offset and per bag-type match, from the state
        # (zero weights and bias at the start: every scale exp(0) = 1)
        n_bags = (self.bag_window > 0) + cfg.copy_neighbour_bag + cfg.copy_meaning_bag
        self.match_gate = nn.Linear(cfg.d_model, self.match_tokens + n_bags) if cfg.copy_match_gate else None

    def reset_parameters(self, n_keys: int) -> None:
        # Start with the null slot as likely as all keys together at uniform scores: p_null ~ 0.5.
        nn.init.zeros_(self.null.weight)
        nn.init.constant_(self.null.bias, math.log(max(n_keys, 1)))
        for zero_start in (self.meaning_salience, self.match_gate):
            if zero_start is not None:
                nn.init.zeros_(zero_start.weight)
                nn.init.zeros_(zero_start.bias)

    # --- the n-gram match ----------------------------------------------------------------------
    @property
    def matches(self) -> bool:
        """Whether the pointer compares a position's recent tokens (n-gram or bag match), and so
        needs `query_context`."""
        return self.context_tokens > 0

    def _preceding(self, x, first: int, n: int):
        """x (..., T) -> (..., T, n): [..., i] is the token first + i places before each position
        along the last axis (pad before the start)."""
        T = x.shape[-1]
        return torch.stack([F.pad(x, (first + i, 0), value=self.pad_id)[..., :T] for i in range(n)], -1)

    def key_context(self, neighbours):
        """neighbours (B, L, k, r) -> (B, L, k*r, n): the tokens before each neighbour token,
        within its own neighbour (n = `copy_match_tokens`); None without the n-gram match."""
        if self.match_bonus is None:
            return None
        return rearrange(self._preceding(neighbours, 1, self.match_tokens), "b l k r n -> b l (k r) n")

    def match(self, query_context, key_context, scale=None):
        """query_context (N, Tq, n): tokens t, t-1, ..; key_context (N, S, n): tokens j-1, j-2, ..
        -> (N, Tq, S) bonus: sum of match_bonus[i] over offsets i where the two tokens are equal,
        each times scale[..., i] (N, Tq, n) when given (the match gate's)."""
        query_context = query_context[..., : self.match_tokens]
        same = query_context[:, :, None, :] == key_context[:, None, :, :]  # (N, Tq, S, n)
        same &= (query_context != self.pad_id)[:, :, None, :]  # padding matches nothing
        bonus = self.match_bonus if scale is None else (self.match_bonus * scale)[:, :, None, :]
        return (same.to(self.match_bonus.dtype) * bonus).sum(-1)

    def bag(self, query_context, ids):
        """query_context (N, Tq, >= W): tokens t, t-1, ..; ids (N, k*r) the neighbour tokens ->
        (N, Tq, k*r): sum over the position's last W tokens q_i of bag_weight[q_i] times
        sum_d bag_distance[d] [q_i == the token d + 1 places before j, within j's neighbour].

        Computed as a salience per neighbour token (how strongly it is one of the position's
        recent words), then a causal window sum along each neighbour: O(Tq W S), not O(Tq S W^2).
        """
        W, r = self.bag_window, self.retrieved_len
        q = query_context[..., :W]  # (N, Tq, W)
        weight = self.bag_weight[q] * (q != self.pad_id)  # padding is no word
        same = (q[..., None] == ids[:, None, None, :]).to(weight.dtype)  # (N, Tq, W, S)
        salience = torch.einsum("ntws,ntw->nts", same, weight)  # (N, Tq, S)
        N, Tq, S = salience.shape
        if S % r:  # callers pass whole neighbours of r tokens (any k), padded ones included
            raise ValueError(f"bag match needs whole neighbours of {r} tokens; got {S} neighbour tokens")
        k = S // r
        padded = F.pad(salience.view(N, Tq, k, r), (W, 0))  # [.., W + j] = salience of token j
        score = sum(self.bag_distance[d] * padded[..., W - 1 - d : W - 1 - d + r] for d in range(W))
        return score.reshape(N, Tq, S)

    def neighbour_bag(self, query_context, ids):
        """query_context (N, Tq, >= W): tokens t, t-1, ..; ids (N, k*r) the neighbour tokens ->
        (N, Tq, k*r): for every token of neighbour n, sum over the position's last W tokens q_i of
        NEIGHBOUR_SALIENCE_SCALE * neighbour_weight[q_i] [q_i occurs anywhere in neighbour n].

        The same score for all of a neighbour's tokens: it ranks neighbours by how much of what
        the position asks about (an entity's name) they hold, wherever the value stands in them.
        """
        W, r = self.bag_window, self.retrieved_len
        q = query_context[..., :W]  # (N, Tq, W)
        weight = NEIGHBOUR_SALIENCE_SCALE * self.neighbour_weight[q] * (q != self.pad_id)  # pad: no word
        N, S = ids.shape
        if S % r:
            raise ValueError(f"neighbour match needs whole neighbours of {r} tokens; got {S} tokens")
        k = S // r
        present = (q[..., None, None] == ids.reshape(N, 1, 1, k, r)).any(dim=-1)  # (N, Tq, W, k)
        score = torch.einsum("ntwk,ntw->ntk", present.to(weight.dtype), weight)  # (N, Tq, k)
        return score.repeat_interleave(r, dim=-1)

    def meaning_bag(self, query_context, ids, meanings):
        """query_context (N, Tq, >= W + 3): tokens t, t-1, ..; ids (N, k*r); meanings the model's
        `WordMeanings` -> (N, Tq, k*r): sum over the position's last W words q_i (each the word so
        far at t - i) of NEIGHBOUR_SALIENCE_SCALE * salience(meaning(q_i)) times sum_d
        meaning_distance[d] max(0, cos(meaning(q_i), meaning(token j-1-d))), within j's neighbour.

        The bag match by meaning: tokens and words absent from the word table have no meaning (a
        zero vector) and add nothing, so invented names are left to the bag and neighbour matches.
        """
        W, r = self.bag_window, self.retrieved_len
        n = WORD_WINDOW
        windows = torch.stack([query_context[..., i : i + n] for i in range(W)], dim=-2)  # (N, Tq, W, n)
        query = F.normalize(meanings.vectors_for(windows), dim=-1)  # (N, Tq, W, D); 0 stays 0
        weight = NEIGHBOUR_SALIENCE_SCALE * self.meaning_salience(query)[..., 0] * query.abs().sum(-1).gt(0)
        N, S = ids.shape
        if S % r:
            raise ValueError(f"meaning match needs whole neighbours of {r} tokens; got {S} tokens")
        k = S // r
        key = F.normalize(meanings.vectors_for(recent_tokens(ids.view(N, k, r), n, self.pad_id)), dim=-1)
        similar = torch.einsum("ntwd,nsd->ntws", query, key.view(N, S, -1)).clamp_min(0)  # (N, Tq, W, S)
        salience = torch.einsum("ntws,ntw->nts", similar, weight.to(similar.dtype))  # (N, Tq, S)
        Tq = salience.shape[1]
        padded = F.pad(salience.view(N, Tq, k, r), (W, 0))  # [.., W + j] = salience of token j
        score = sum(self.meaning_distance[d] * padded[..., W - 1 - d : W - 1 - d + r] for d in range(W))
        return score.reshape(N, Tq, S)

    # --- the pointer and the mixture -----------------------------------------------------------
    def gates(self, h):
        """h (N, Tq, d) -> (N, Tq, n_offsets + n_bags) scales, exp of a linear function of the state
        (clamped, so that no scale can overflow or vanish to exactly 0), or None without the gate.
        The columns: the n-gram match's offsets, then the bag, neighbour and meaning matches on."""
        if self.match_gate is None:
            return None
        return self.match_gate(h).float().clamp(-8.0, 4.0).exp()

    def pointer(self, h, keys, valid, query_context=None, key_context=None, ids=None, meanings=None):
        """h (N, Tq, d), keys (N, S, d), valid (N, S) -> log-probs (N, Tq, 1+S): null slot first.

        With the n-gram match on, query_context (N, Tq, n) and key_context (N, S, n) hold the
        tokens each position ends with and the tokens before each neighbour token (see `match`);
        the bag match also reads the neighbour tokens `ids` (N, S) (see `bag`), the meaning match
        the model's `WordMeanings` too (see `meaning_bag`).
        """
        scores = torch.einsum("ntd,nsd->nts", self.query(h), keys) * self.scale
        gates = self.gates(h)
        n = self.match_tokens
        if self.match_bonus is not None:
            offsets = None if gates is None else gates[..., :n]
            scores = scores + self.match(query_context, key_context, offsets).to(scores.dtype)
        bags = []  # the bag-type matches that are on, in the order of `gates`' columns
        if self.bag_weight is not None:
            bags.append(self.bag(query_context, ids))
        if self.neighbour_weight is not None:
            bags.append(self.neighbour_bag(query_context, ids))
        if self.meaning_salience is not None:
            bags.append(self.meaning_bag(query_context, ids, meanings))
        for column, bonus in enumerate(bags, start=n):
            if gates is not None:
                bonus = bonus * gates[..., column : column + 1]
            scores = scores + bonus.to(scores.dtype)
        scores = scores.masked_fill(~valid[:, None, :], float("-inf"))
        return torch.cat([self.null(h), scores], dim=-1).float().log_softmax(dim=-1)

    def chunked_pointer(
        self, h, neighbours: EncodedNeighbours, query_context=None, key_context=None, meanings=None
    ):
        """The pointer of a whole sequence's attending positions: h (B, T, d), neighbours of L
        chunks, contexts (B, T, n) and (B, L, S, n) -> pointer ((B L), m, 1+S), ids ((B L), S)."""
        m, L = self.chunk_size, neighbours.memory.shape[1]
        if self.matches:
            query_context = rearrange(to_attending_chunks(query_context, m, L), "b l m n -> (b l) m n")
        if key_context is not None:
            key_context = rearrange(key_context, "b l s n -> (b l) s n")
        ids = rearrange(neighbours.ids, "b l s -> (b l) s")
        pointer = self.pointer(
            rearrange(to_attending_chunks(h, m, L), "b l m d -> (b l) m d"),
            rearrange(self.key(neighbours.memory), "b l s d -> (b l) s d"),
            rearrange(neighbours.valid, "b l s -> (b l) s"),
            query_context,
            key_context,
            ids,
            meanings,
        )
        return pointer, ids

    @staticmethod
    def lower_null(pointer_logp, bias: float):
        """pointer_logp (..., 1+S) with the null slot's log-probability lowered by `bias` nats and the
        whole renormalised: the vocabulary's share of the mixture shrinks, each neighbour token's grows,
        their order unchanged (the first generated token's rule, `RetroConfig.inference_first_copy_bias`)."""
        lowered = pointer_logp.clone()
        lowered[..., 0] = lowered[..., 0] - bias
        return lowered.log_softmax(dim=-1)

    @staticmethod
    def mix(vocab_logits, pointer_logp, ids):
        """vocab_logits (N, Tq, V), pointer_logp (N, Tq, 1+S), ids (N, S) -> log p of the mixture."""
        vocab_p = vocab_logits.float().softmax(dim=-1) * pointer_logp[..., :1].exp()
        copy_p = pointer_logp[..., 1:].exp()
        index = ids[:, None, :].expand(-1, vocab_p.shape[1], -1)
        mixed = vocab_p.scatter_add(-1, index, copy_p)
        return mixed.clamp_min(1e-30).log()

    @staticmethod
    def target_logp(vocab_logp, pointer_logp, ids, targets):
        """log p(target) of the mixture without materialising the scatter: (N, Tq).

        vocab_logp (N, Tq) is the vocabulary distribution's log-probability of each target.
        """
        hit = ids[:, None, :] == targets[..., None]  # (N, Tq, S)
        # A finite floor instead of -inf: logsumexp over a row with no hit must keep a finite
        # gradient (an all -inf row gives NaN in backward, and 0 * NaN poisons the whole batch).
        floor = -1e4
        copy_logp = pointer_logp[..., 1:].clamp_min(floor).masked_fill(~hit, floor).logsumexp(dim=-1)
        return torch.logaddexp(pointer_logp[..., 0] + vocab_logp, copy_logp)

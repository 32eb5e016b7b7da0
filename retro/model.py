"""The RETRO network: a decoder-only transformer with chunked cross-attention (CCA) over neighbours.

`Retro(config).forward(tokens [B, T], neighbours [B, T // m, k, r] | None) -> log-probabilities
[B, T, V]`, always; `Retro.loss(tokens, neighbours, targets)` is the mean negative log-likelihood
of the same distribution, computed without its vocabulary-sized tensors. Neighbours of chunk u
are those retrieved with chunk u's tokens (positions u*m .. (u+1)*m - 1); they are encoded by a
small bidirectional encoder (`retro.neighbour_encoder`) conditioned on that chunk's hidden states,
and position i attends to the neighbours of chunk u only if i >= (u + 1) * m - 1 (paper section
2.4, `retro.cca`): the last token of chunk u and the first m - 1 tokens of chunk u + 1 attend to them.

Two switches that make a small RETRO actually use its neighbours (docs/design.md, measured table):
`neighbour_prev_tokens` adds the embeddings of the previous tokens to each neighbour token, and
`copy_head` mixes a pointer distribution over the neighbour tokens a position may see into the
vocabulary distribution (`retro.copy_head`). With `word_dim`, MiniLM's meaning of the word each
token ends so far is added to the decoder's and the neighbour encoder's inputs and, with
`copy_meaning_bag`, read by the copy head's meaning match (`retro.word_meaning`).

This module owns the decoder and its incremental path (`new_cache`, `prefill`, `decode_step`),
which must give the same log-probabilities as `forward`; tests hold it to that. It owns tensors
only: no tokenizer, no retrieval, no sampling. Input checks are `retro.model_inputs`'.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from retro.attention import MLP, CausalSelfAttention, LayerKV
from retro.cca import ChunkedCrossAttention, ProjectedChunk, merge_attending, to_attending_chunks
from retro.config import RetroConfig
from retro.copy_head import CopyHead
from retro.model_inputs import check_decode_step, check_sequence
from retro.neighbour_encoder import EncodedNeighbours, NeighbourEncoder
from retro.word_meaning import WORD_WINDOW, WordMeanings, recent_tokens

# What a CCA block attends to, asked for with (layer index, the states entering its CCA): the
# first CCA layer's call is where neighbours get encoded, conditioned on those states. None: nothing.
CCAInput = Callable[[int, torch.Tensor], EncodedNeighbours | ProjectedChunk | None]


class DecoderBlock(nn.Module):
    """Self-attention, then (in the layers of `cca_layers`) chunked cross-attention, then the MLP,
    each pre-normalised and added to the residual stream."""

    def __init__(self, cfg: RetroConfig, index: int):
        super().__init__()
        has_cca = index in cfg.cca_layers
        self.index = index
        self.ln_attn = nn.LayerNorm(cfg.d_model)
        self.attn = CausalSelfAttention(cfg.d_model, cfg.n_heads, cfg.dropout)
        self.ln_cca = nn.LayerNorm(cfg.d_model) if has_cca else None
        self.cca = (
            ChunkedCrossAttention(cfg.d_model, cfg.enc_d_model, cfg.n_heads, cfg.dropout, cfg.chunk_size)
            if has_cca
            else None
        )
        self.ln_mlp = nn.LayerNorm(cfg.d_model)
        self.mlp = MLP(cfg.d_model, cfg.d_ff, cfg.dropout)

    def forward(self, x, kv: LayerKV | None = None, pos: int = 0, cca_input: CCAInput | None = None):
        """x (B, T, d) at positions pos .. pos+T-1 -> (B, T, d); `kv` caches self-attention's keys
        and values, `cca_input` says what this block's CCA attends to (see `CCAInput`)."""
        x = x + self.attn(self.ln_attn(x), kv, pos)
        if self.cca is not None and cca_input is not None:
            neighbours = cca_input(self.index, x)
            if neighbours is not None:
                x = x + self.cca(self.ln_cca(x), neighbours)
        return x + self.mlp(self.ln_mlp(x))


@dataclass
class NeighbourMemory:
    """Everything the decoder needs from the neighbours of one chunk, projected once on arrival."""

    chunk: int  # u: the chunk whose neighbours these are
    cca: dict[int, ProjectedChunk]  # layer -> its keys and values, per CCA layer
    copy_keys: torch.Tensor | None  # (B, S, d)
    copy_ids: torch.Tensor | None  # (B, S)
    copy_valid: torch.Tensor | None  # (B, S)
    copy_context: torch.Tensor | None = None  # (B, S, n): tokens before each neighbour token


@dataclass
class DecodeCache:
    """State of incremental decoding: self-attention keys/values and the latest neighbours."""

    layers: list[LayerKV]
    chunk_hidden: torch.Tensor  # (B, m, d): the open chunk's states entering the first CCA layer
    pos: int = 0  # number of positions already processed
    memory: NeighbourMemory | None = None
    max_len: int = field(default=0)
    # (B, n): the last n = `Retro.recent_len` tokens, newest first (copy-head match, word meanings)
    recent: torch.Tensor | None = None


@dataclass
class _SequenceStates:
    """What one pass over a whole sequence leaves for its output head and its loss."""

    h: torch.Tensor  # (B, T, d): the final, normalised hidden states
    logits: torch.Tensor  # (B, T, V): the vocabulary's
    neighbours: EncodedNeighbours | None  # None when nothing was retrieved (or no chunk is whole)
    query_context: torch.Tensor | None  # (B, T, n): the copy head's n-gram match, when it matches
    key_context: torch.Tensor | None  # (B, L, S, n)


class Retro(nn.Module):
    def __init__(self, config: RetroConfig):
        super().__init__()
        self.config = cfg = config
        self.wte = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.wpe = nn.Embedding(cfg.max_seq_len, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(DecoderBlock(cfg, i) for i in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.encoder = NeighbourEncoder(cfg) if cfg.uses_retrieval else None
        self.copy_head = CopyHead(cfg) if cfg.uses_retrieval and cfg.copy_head else None
        self.first_cca = min(cfg.cca_layers) if cfg.uses_retrieval else -1
        self.word_meanings = (
            WordMeanings(
                cfg.vocab_size, cfg.word_rows, cfg.word_keys, cfg.word_dim, cfg.d_model, cfg.enc_d_model
            )
            if cfg.word_dim
            else None
        )
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            # GPT-2's scaled residual projections: every one is a linear layer named `proj`
            if name.endswith("proj.weight") and p.dim() == 2:
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layers))
        if self.copy_head is not None:
            self.copy_head.reset_parameters(cfg.n_neighbours * cfg.retrieved_len)
        if self.word_meanings is not None:
            self.word_meanings.reset_parameters()
        # how many of a position's last tokens its inputs read: the copy head's match, the word so far
        self.context_len = self.copy_head.context_tokens if self._matching else 0
        self.recent_len = max(self.context_len, WORD_WINDOW if self.word_meanings is not None else 0)

    @staticmethod
    def _init_weights(module):
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    # --- bookkeeping ------------------------------------------------------------------------------
    def parameter_counts(self) -> dict[str, int]:
        total = sum(p.numel() for p in self.parameters())
        embedding = self.wte.weight.numel() + self.wpe.weight.numel()
        if self.encoder is not None:
            embedding += self.encoder.wpe.weight.numel()
        return {"total": total, "non_embedding": total - embedding}

    @property
    def device(self) -> torch.device:
        return self.wte.weight.device

    @property
    def _matching(self) -> bool:
        return self.copy_head is not None and self.copy_head.matches

    def _lm_head(self, h):
        return F.linear(h, self.wte.weight)  # output layer tied to the token embedding

    # --- a whole sequence (training, evaluation, prefill) ------------------------------------------
    def forward(self, tokens, neighbours=None):
        """tokens (B, T), neighbours (B, T // m, k, r) | None -> log-probabilities (B, T, V).

        With the copy head, the mixture's; without neighbours (or for a no-retrieval model, which
        ignores them) the vocabulary's alone.
        """
        check_sequence(self.config, tokens, neighbours)
        return self._log_probs(self._run_sequence(tokens, neighbours))

    def loss(self, tokens, neighbours, targets):
        """The mean negative log-likelihood of `targets` (B, T) under `forward`'s distribution
        (ignore_index=-100), from one fused cross-entropy over the vocabulary: the copy head then
        needs only each target's log-probability, never a second vocabulary-sized tensor."""
        check_sequence(self.config, tokens, neighbours)
        states = self._run_sequence(tokens, neighbours)
        B, T = tokens.shape
        m = self.config.chunk_size
        safe = targets.clamp_min(0)
        logp = -F.cross_entropy(states.logits.flatten(0, 1).float(), safe.flatten(), reduction="none")
        logp = logp.view(B, T)
        if self.copy_head is not None and states.neighbours is not None:
            pointer, ids = self.copy_head.chunked_pointer(
                states.h, states.neighbours, states.query_context, states.key_context, self.word_meanings
            )
            L = states.neighbours.memory.shape[1]
            att_logp = rearrange(to_attending_chunks(logp[..., None], m, L), "b l m one -> (b l) (m one)")
            att_targets = rearrange(to_attending_chunks(safe[..., None], m, L), "b l m one -> (b l) (m one)")
            copied = CopyHead.target_logp(att_logp, pointer, ids, att_targets)  # ((B L), m)
            logp = merge_attending(logp[..., None], rearrange(copied, "(b l) m -> b l m", b=B)[..., None], m)
            logp = logp[..., 0]
        keep = targets != -100
        return -torch.where(keep, logp, 0.0).sum() / keep.sum().clamp_min(1)

    def prefill(self, tokens, neighbours=None, cache: DecodeCache | None = None, last_copy_bias: float = 0.0):
        """Runs the prompt through the model: (log-probabilities (B, T, V) as `forward`'s, cache),
        the cache (fresh, from `new_cache`, or made here) holding what `decode_step` needs.

        With `last_copy_bias` > 0 the last position's distribution, the one the first generated
        token is drawn from, has the copy head's null slot lowered by that many nats before the
        pointer is renormalised (`CopyHead.lower_null`); every other position is as `forward` gives it."""
        cache = self.new_cache(tokens.shape[0]) if cache is None else cache
        check_sequence(self.config, tokens, neighbours, cache.max_len)
        if cache.pos != 0:
            raise ValueError("prefill needs a fresh cache (pos 0)")
        if last_copy_bias < 0:
            raise ValueError(f"last_copy_bias must be >= 0; got {last_copy_bias}")
        states = self._run_sequence(tokens, neighbours, cache)
        return self._log_probs(states, last_copy_bias), cache

    def _run_sequence(self, tokens, neighbours, cache: DecodeCache | None = None) -> _SequenceStates:
        """The decoder over positions 0 .. T-1; with `cache`, also stores what decoding goes on from."""
        cfg, m = self.config, self.config.chunk_size
        B, T = tokens.shape
        L = T // m
        use_retrieval = neighbours is not None and cfg.uses_retrieval and L > 0
        encoded: EncodedNeighbours | None = None

        def cca_input(layer: int, x) -> EncodedNeighbours | None:
            nonlocal encoded
            if layer == self.first_cca:
                if cache is not None:  # the open chunk's states, for the neighbours it will retrieve
                    cache.chunk_hidden[:, : T - L * m] = x[:, L * m :]
                if use_retrieval:  # encoded once, conditioned on the states entering the first CCA
                    chunk_hidden = rearrange(x[:, : L * m], "b (l m) d -> b l m d", m=m)
                    encoded = self.encoder.encode_chunks(
                        neighbours, chunk_hidden, self.wte, self.word_meanings
                    )
            return encoded

        # each position's last tokens, itself first (B, T, recent_len): the copy head's match and the
        # word so far read them
        recent = recent_tokens(tokens, self.recent_len, cfg.pad_id) if self.recent_len else None
        x = self.wte(tokens) + self.wpe(torch.arange(T, device=tokens.device))  # (B, T, d)
        if self.word_meanings is not None:
            x = x + self.word_meanings.decoder_features(recent[..., :WORD_WINDOW])
        x = self.drop(x)
        for i, block in enumerate(self.blocks):
            x = block(x, None if cache is None else cache.layers[i], 0, cca_input)
        h = self.ln_f(x)

        # the copy head's n-gram match compares what positions and neighbour tokens end with
        query_context = recent[..., : self.context_len] if self._matching else None
        key_context = self.copy_head.key_context(neighbours) if self._matching and use_retrieval else None
        if cache is not None:
            cache.pos = T
            if recent is not None:
                cache.recent = recent[:, -1]  # (B, n): newest first
            if use_retrieval:
                context = key_context[:, L - 1] if key_context is not None else None
                last = EncodedNeighbours(
                    encoded.memory[:, L - 1], encoded.ids[:, L - 1], encoded.valid[:, L - 1]
                )
                cache.memory = self._memory_for_chunk(L - 1, last, context)
        return _SequenceStates(h, self._lm_head(h), encoded, query_context, key_context)

    def _log_probs(self, states: _SequenceStates, last_copy_bias: float = 0.0):
        plain = states.logits.float().log_softmax(dim=-1)
        if self.copy_head is None or states.neighbours is None:
            return plain
        m = self.config.chunk_size
        pointer, ids = self.copy_head.chunked_pointer(
            states.h, states.neighbours, states.query_context, states.key_context, self.word_meanings
        )
        L = states.neighbours.memory.shape[1]
        if last_copy_bias:
            # the last position T - 1 is row (T - m) // m, column (T - m) % m of the attending chunks
            # (`to_attending_chunks`); `_run_sequence` retrieves only when T >= m, so it has a row
            B, T = states.h.shape[:2]
            row, column = divmod(T - m, m)
            pointer = rearrange(pointer, "(b l) m s -> b l m s", b=B).clone()
            pointer[:, row, column] = CopyHead.lower_null(pointer[:, row, column], last_copy_bias)
            pointer = rearrange(pointer, "b l m s -> (b l) m s")
        vocab = rearrange(to_attending_chunks(states.logits, m, L), "b l m v -> (b l) m v")
        mixed = CopyHead.mix(vocab, pointer, ids)  # ((B L), m, V)
        return merge_attending(plain, rearrange(mixed, "(b l) m v -> b l m v", b=states.h.shape[0]), m)

    # --- incremental decoding ---------------------------------------------------------------------
    def new_cache(self, batch_size: int, max_len: int | None = None) -> DecodeCache:
        cfg = self.config
        max_len = cfg.max_seq_len if max_len is None else min(max_len, cfg.max_seq_len)
        hs = cfg.d_model // cfg.n_heads
        dtype, device = self.wte.weight.dtype, self.device
        layers = [
            LayerKV(
                torch.zeros(batch_size, cfg.n_heads, max_len, hs, dtype=dtype, device=device),
                torch.zeros(batch_size, cfg.n_heads, max_len, hs, dtype=dtype, device=device),
            )
            for _ in range(cfg.n_layers)
        ]
        chunk_hidden = torch.zeros(batch_size, cfg.chunk_size, cfg.d_model, dtype=dtype, device=device)
        recent = None
        if self.recent_len:
            recent = torch.full((batch_size, self.recent_len), cfg.pad_id, dtype=torch.long, device=device)
        return DecodeCache(layers=layers, chunk_hidden=chunk_hidden, max_len=max_len, recent=recent)

    def _memory_for_chunk(self, chunk: int, neighbours: EncodedNeighbours, context=None) -> NeighbourMemory:
        """Projects one chunk's encoded neighbours (memory (B, S, de)) for every CCA layer and the
        copy head; `context` (B, S, n) is what the copy head's n-gram match compares with."""
        memory, valid = neighbours.memory, neighbours.valid
        cca = {i: b.cca.project(memory, valid) for i, b in enumerate(self.blocks) if b.cca is not None}
        copy_keys = self.copy_head.key(memory) if self.copy_head is not None else None
        return NeighbourMemory(chunk, cca, copy_keys, neighbours.ids, valid, context)

    def decode_step(self, token, cache: DecodeCache, neighbours=None):
        """Feeds one token per sequence at position `cache.pos`; returns log-probabilities (B, V).

        If this token closes chunk u (its position is (u+1)m - 1), `neighbours` (B, k, r) are the
        neighbours retrieved with chunk u's tokens (this token included); they are encoded here and
        attended by this and the next m - 1 positions. Passing none at a chunk boundary means that
        chunk has no neighbours; passing some anywhere else is an error.
        """
        cfg, m = self.config, self.config.chunk_size
        if token.dim() == 1:
            token = token[:, None]
        p = cache.pos
        check_decode_step(cfg, token, p, cache.max_len, neighbours)
        closes_chunk = (p + 1) % m == 0
        attended = (p + 1) // m - 1  # the chunk whose neighbours this position may see

        def cca_input(layer: int, x) -> ProjectedChunk | None:
            if layer == self.first_cca:
                cache.chunk_hidden[:, p % m] = x[:, 0]
                if closes_chunk:
                    cache.memory = None
                    if neighbours is not None:
                        encoded = self.encoder.encode_chunks(
                            neighbours[:, None], cache.chunk_hidden[:, None], self.wte, self.word_meanings
                        )
                        context = self.copy_head.key_context(neighbours[:, None]) if self._matching else None
                        context = None if context is None else context[:, 0]
                        first = EncodedNeighbours(
                            encoded.memory[:, 0], encoded.ids[:, 0], encoded.valid[:, 0]
                        )
                        cache.memory = self._memory_for_chunk(attended, first, context)
            memory = cache.memory
            return memory.cca[layer] if memory is not None and memory.chunk == attended else None

        x = self.wte(token) + self.wpe(torch.tensor([p], device=token.device))  # (B, 1, d)
        if cache.recent is not None:
            cache.recent = torch.cat([token, cache.recent[:, :-1]], dim=1)  # newest first
        if self.word_meanings is not None:
            x = x + self.word_meanings.decoder_features(cache.recent[:, None, :WORD_WINDOW])
        for i, block in enumerate(self.blocks):
            x = block(x, cache.layers[i], p, cca_input)
        cache.pos = p + 1
        h = self.ln_f(x)
        logits = self._lm_head(h)  # (B, 1, V)
        memory = cache.memory
        if self.copy_head is None or memory is None or memory.chunk != attended:
            return logits[:, 0].float().log_softmax(dim=-1)
        recent = cache.recent[:, None, : self.context_len] if self._matching else None  # (B, 1, n)
        pointer = self.copy_head.pointer(
            h,
            memory.copy_keys,
            memory.copy_valid,
            recent,
            memory.copy_context,
            memory.copy_ids,
            self.word_meanings,
        )
        return CopyHead.mix(logits, pointer, memory.copy_ids)[:, 0]

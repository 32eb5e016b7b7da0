"""The RETRO network: a decoder-only transformer with chunked cross-attention (CCA) over neighbours.

`Retro(config).forward(tokens [B, T], neighbours [B, T // m, k, r] | None) -> logits [B, T, V]`.
Neighbours of chunk u are those retrieved with chunk u's tokens (positions u*m .. (u+1)*m - 1); they
are encoded by a small bidirectional `NeighbourEncoder` conditioned on that chunk's hidden states,
and position i attends to the neighbours of chunk u only if i >= (u + 1) * m - 1 (paper section
2.4): the last token of chunk u and the first m - 1 tokens of chunk u + 1 attend to them.

Two switches that make a small RETRO actually use its neighbours (DESIGN.md, measured table):
`neighbour_prev_tokens` adds the embeddings of the previous tokens to each neighbour token, and
`copy_head` mixes a pointer distribution over the neighbour tokens a position may see into the
vocabulary distribution; with it on, `forward` returns log-probabilities of the mixture.

This module owns the tensors only: no tokenizer, no retrieval, no sampling. The incremental path
(`new_cache`, `prefill`, `decode_step`) must give the same logits as `forward`; tests hold it to that.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange, repeat

from retro.config import RetroConfig

# ----------------------------------------------------------------------------------------------
# building blocks


class MLP(nn.Module):
    def __init__(self, d: int, d_ff: int, dropout: float):
        super().__init__()
        self.fc = nn.Linear(d, d_ff)
        self.proj = nn.Linear(d_ff, d)
        self.proj.is_residual_proj = True
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        return self.dropout(self.proj(F.gelu(self.fc(x))))


class CausalSelfAttention(nn.Module):
    def __init__(self, d: int, n_heads: int, dropout: float):
        super().__init__()
        self.n_heads = n_heads
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.proj = nn.Linear(d, d, bias=False)
        self.proj.is_residual_proj = True
        self.dropout = dropout

    def forward(self, x, cache: LayerKV | None = None, pos: int = 0):
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q, k, v = (rearrange(t, "b t (h d) -> b h t d", h=self.n_heads) for t in (q, k, v))  # (B, nh, T, hs)
        if cache is not None:
            cache.k[:, :, pos : pos + T] = k
            cache.v[:, :, pos : pos + T] = v
            k, v = cache.k[:, :, : pos + T], cache.v[:, :, : pos + T]  # (B, nh, pos+T, hs)
        if pos == 0:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=self._p())
        else:  # new queries sit at pos..pos+T-1 and may see every key up to their own position
            allowed = torch.ones(T, pos + T, dtype=torch.bool, device=x.device).tril(diagonal=pos)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=self._p())
        return self.proj(rearrange(y, "b h t d -> b t (h d)"))

    def _p(self) -> float:
        return self.dropout if self.training else 0.0


class CrossAttention(nn.Module):
    """Multi-head attention from queries to a memory, with a learned always-visible null slot.

    The null slot gives every query a place to put its attention when the memory is all padding
    (no neighbour found) or irrelevant; it also keeps softmax defined for fully masked memories.
    """

    def __init__(self, d_query: int, d_memory: int, n_heads: int, dropout: float):
        super().__init__()
        self.n_heads = n_heads
        self.q = nn.Linear(d_query, d_query, bias=False)
        self.kv = nn.Linear(d_memory, 2 * d_query, bias=False)
        self.proj = nn.Linear(d_query, d_query, bias=False)
        self.proj.is_residual_proj = True
        self.null_kv = nn.Parameter(torch.zeros(2, n_heads, 1, d_query // n_heads))
        self.dropout = dropout

    def project_memory(self, memory, mask):
        """memory (N, S, dm), mask (N, S) bool -> keys/values (N, nh, 1+S, hs), mask (N, 1, 1, 1+S)."""
        N = memory.shape[0]
        k, v = self.kv(memory).chunk(2, dim=-1)
        k, v = (rearrange(t, "n s (h d) -> n h s d", h=self.n_heads) for t in (k, v))
        null_k, null_v = (repeat(t, "h one d -> n h one d", n=N).to(k.dtype) for t in self.null_kv)
        k, v = torch.cat([null_k, k], dim=2), torch.cat([null_v, v], dim=2)
        mask = F.pad(mask, (1, 0), value=True)[:, None, None, :]
        return k, v, mask

    def attend(self, x, k, v, mask):
        """x (N, Tq, d) attends to projected memory (N, nh, 1+S, hs) -> (N, Tq, d)."""
        q = rearrange(self.q(x), "n t (h d) -> n h t d", h=self.n_heads)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0
        )
        return self.proj(rearrange(y, "n h t d -> n t (h d)"))

    def forward(self, x, memory, mask):
        return self.attend(x, *self.project_memory(memory, mask))


# ----------------------------------------------------------------------------------------------
# the neighbour encoder


class EncoderBlock(nn.Module):
    """Bidirectional self-attention over one neighbour, cross-attention to the retrieving chunk."""

    def __init__(self, cfg: RetroConfig):
        super().__init__()
        de, dropout = cfg.enc_d_model, cfg.dropout
        self.ln_self = nn.LayerNorm(de)
        self.qkv = nn.Linear(de, 3 * de, bias=False)
        self.proj = nn.Linear(de, de, bias=False)
        self.proj.is_residual_proj = True
        self.ln_cross = nn.LayerNorm(de)
        self.ln_context = nn.LayerNorm(cfg.d_model)
        self.cross = CrossAttention(de, cfg.d_model, cfg.enc_n_heads, dropout)
        self.ln_mlp = nn.LayerNorm(de)
        self.mlp = MLP(de, 4 * de, dropout)
        self.n_heads, self.dropout = cfg.enc_n_heads, dropout

    def forward(self, x, key_mask, context, context_mask):
        # x (N, r, de); key_mask (N, 1, 1, r); context (N, m, d): the retrieving chunk's hidden states
        q, k, v = (
            rearrange(t, "n s (h d) -> n h s d", h=self.n_heads)
            for t in self.qkv(self.ln_self(x)).chunk(3, -1)
        )
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=key_mask, dropout_p=self.dropout if self.training else 0.0
        )
        x = x + self.proj(rearrange(y, "n h s d -> n s (h d)"))
        x = x + self.cross(self.ln_cross(x), self.ln_context(context), context_mask)
        return x + self.mlp(self.ln_mlp(x))


class NeighbourEncoder(nn.Module):
    """Encodes neighbour tokens (N, r) -> (N, r, de), conditioned on the retrieving chunk (N, m, d).

    Input features per neighbour token j: its embedding, the embeddings of tokens j-1 .. j-p
    (previous-token features, so that a token can be found by the context that precedes it) and a
    learned position within the neighbour. Token embeddings are the decoder's, projected.
    """

    def __init__(self, cfg: RetroConfig):
        super().__init__()
        self.cfg = cfg
        self.token_in = nn.Linear(cfg.d_model, cfg.enc_d_model, bias=False)
        self.prev_in = nn.ModuleList(
            nn.Linear(cfg.d_model, cfg.enc_d_model, bias=False) for _ in range(cfg.neighbour_prev_tokens)
        )
        self.wpe = nn.Embedding(cfg.retrieved_len, cfg.enc_d_model)
        self.blocks = nn.ModuleList(EncoderBlock(cfg) for _ in range(cfg.enc_layers))
        self.ln_f = nn.LayerNorm(cfg.enc_d_model)

    def forward(self, tokens, valid, context, wte: nn.Embedding):
        # wte is the decoder's embedding, passed in rather than held, so it is stored once
        N, r = tokens.shape
        x = self.token_in(wte(tokens)) + self.wpe(torch.arange(r, device=tokens.device))
        for back, proj in enumerate(self.prev_in, start=1):
            prev = F.pad(tokens, (back, 0), value=self.cfg.pad_id)[:, :r]  # prev[:, j] = tokens[:, j - back]
            x = x + proj(wte(prev))
        # A neighbour that is all padding would leave softmax with no key: let it see its pads; its
        # outputs are masked out of the decoder's attention and the copy head anyway.
        key_mask = (valid | ~valid.any(dim=1, keepdim=True))[:, None, None, :]
        context_mask = torch.ones(N, context.shape[1], dtype=torch.bool, device=tokens.device)
        for block in self.blocks:
            x = block(x, key_mask, context, context_mask)
        return self.ln_f(x)


# ----------------------------------------------------------------------------------------------
# the copy head

MATCH_BONUS_INIT = 3.0  # each matching previous token adds 3 logits at the start of training


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
        # one learned bonus per matched offset (the last token, the one before, ...); see RetroConfig
        self.match_bonus = (
            nn.Parameter(torch.full((cfg.copy_match_tokens,), MATCH_BONUS_INIT))
            if cfg.copy_match_tokens
            else None
        )

    def reset_parameters(self, n_keys: int) -> None:
        # Start with the null slot as likely as all keys together at uniform scores: p_null ~ 0.5.
        nn.init.zeros_(self.null.weight)
        nn.init.constant_(self.null.bias, math.log(max(n_keys, 1)))

    def match(self, query_context, key_context):
        """query_context (N, Tq, n): tokens t, t-1, ..; key_context (N, S, n): tokens j-1, j-2, ..
        -> (N, Tq, S) bonus: sum of match_bonus[i] over offsets i where the two tokens are equal."""
        same = query_context[:, :, None, :] == key_context[:, None, :, :]  # (N, Tq, S, n)
        same &= (query_context != self.pad_id)[:, :, None, :]  # padding matches nothing
        return (same.to(self.match_bonus.dtype) * self.match_bonus).sum(-1)

    def pointer(self, h, keys, valid, query_context=None, key_context=None):
        """h (N, Tq, d), keys (N, S, d), valid (N, S) -> log-probs (N, Tq, 1+S): null slot first.

        With the n-gram match on, query_context (N, Tq, n) and key_context (N, S, n) hold the
        tokens each position ends with and the tokens before each neighbour token (see `match`).
        """
        scores = torch.einsum("ntd,nsd->nts", self.query(h), keys) * self.scale
        if self.match_bonus is not None:
            scores = scores + self.match(query_context, key_context).to(scores.dtype)
        scores = scores.masked_fill(~valid[:, None, :], float("-inf"))
        return torch.cat([self.null(h), scores], dim=-1).float().log_softmax(dim=-1)

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


# ----------------------------------------------------------------------------------------------
# the decoder


class DecoderBlock(nn.Module):
    def __init__(self, cfg: RetroConfig, has_cca: bool):
        super().__init__()
        self.ln_attn = nn.LayerNorm(cfg.d_model)
        self.attn = CausalSelfAttention(cfg.d_model, cfg.n_heads, cfg.dropout)
        self.ln_cca = nn.LayerNorm(cfg.d_model) if has_cca else None
        self.cca = CrossAttention(cfg.d_model, cfg.enc_d_model, cfg.n_heads, cfg.dropout) if has_cca else None
        self.ln_mlp = nn.LayerNorm(cfg.d_model)
        self.mlp = MLP(cfg.d_model, cfg.d_ff, cfg.dropout)


@dataclass
class LayerKV:
    k: torch.Tensor  # (B, nh, max_len, hs)
    v: torch.Tensor


@dataclass
class NeighbourMemory:
    """Everything the decoder needs from the neighbours of one chunk, projected once on arrival."""

    chunk: int  # u: the chunk whose neighbours these are
    cca: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]  # layer -> (k, v, mask) per CCA layer
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
    recent: torch.Tensor | None = None  # (B, n): the last n tokens, newest first (copy-head match)


def to_attending_chunks(x, m: int, n_chunks: int):
    """(B, T, D) -> (B, L, m, D): row u holds positions (u+1)m-1 .. (u+2)m-2, the ones that attend
    to chunk u's neighbours (paper 2.4); the tail is zero-padded so that L rows fit."""
    x = x[:, m - 1 :]
    x = F.pad(x, (0, 0, 0, n_chunks * m - x.shape[1]))
    return rearrange(x, "b (l m) d -> b l m d", m=m)


def from_attending_chunks(y, seq_len: int, m: int):
    """Inverse of `to_attending_chunks`: (B, L, m, D) -> (B, T, D), zeros where no chunk is seen."""
    y = rearrange(y, "b l m d -> b (l m) d")[:, : seq_len - (m - 1)]
    return F.pad(y, (0, 0, m - 1, 0))


def _merge(plain, attending, m: int):
    """plain (B, T, D) for every position, attending (B, L, m, D) for positions >= m - 1 -> (B, T, D)."""
    T = plain.shape[1]
    return torch.cat([plain[:, : m - 1], from_attending_chunks(attending, T, m)[:, m - 1 :]], dim=1)


class Retro(nn.Module):
    def __init__(self, config: RetroConfig):
        super().__init__()
        self.config = cfg = config
        self.wte = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.wpe = nn.Embedding(cfg.max_seq_len, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(DecoderBlock(cfg, i in cfg.cca_layers) for i in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.encoder = NeighbourEncoder(cfg) if cfg.uses_retrieval else None
        self.copy_head = CopyHead(cfg) if cfg.uses_retrieval and cfg.copy_head else None
        self.first_cca = min(cfg.cca_layers) if cfg.uses_retrieval else -1
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith("proj.weight") and p.dim() == 2:  # GPT-2's scaled residual projections
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layers))
        if self.copy_head is not None:
            self.copy_head.reset_parameters(cfg.n_neighbours * cfg.retrieved_len)

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

    # --- input checks -----------------------------------------------------------------------------
    def _check_tokens(self, tokens, max_len: int | None = None) -> None:
        cfg = self.config
        if not isinstance(tokens, torch.Tensor) or tokens.dim() != 2 or tokens.dtype != torch.long:
            got = (
                f"{tuple(tokens.shape)} {tokens.dtype}"
                if isinstance(tokens, torch.Tensor)
                else type(tokens).__name__
            )
            raise ValueError(f"tokens must be a LongTensor of shape [B, T]; got {got}")
        limit = cfg.max_seq_len if max_len is None else max_len
        if tokens.shape[1] > limit:
            raise ValueError(f"sequence of {tokens.shape[1]} tokens exceeds max_seq_len={limit}")
        if tokens.shape[1] == 0:
            raise ValueError("tokens must hold at least one position; got shape [B, 0]")
        if not tokens.is_cuda and tokens.numel() and (tokens.min() < 0 or tokens.max() >= cfg.vocab_size):
            raise ValueError(
                f"token ids must lie in [0, {cfg.vocab_size}); got {tokens.min()}..{tokens.max()}"
            )

    def _check_neighbours(self, neighbours, batch: int, n_chunks: int | None) -> None:
        cfg = self.config
        expected = (
            f"[B={batch}, {'T // chunk_size' if n_chunks is None else n_chunks}, k, r<={cfg.retrieved_len}]"
        )
        dims = 3 if n_chunks is None else 4
        if (
            not isinstance(neighbours, torch.Tensor)
            or neighbours.dtype != torch.long
            or neighbours.dim() != dims
        ):
            got = (
                f"{tuple(neighbours.shape)} {neighbours.dtype}"
                if isinstance(neighbours, torch.Tensor)
                else type(neighbours).__name__
            )
            if n_chunks is None:
                expected = f"[B={batch}, k, r<={cfg.retrieved_len}]"
            raise ValueError(f"neighbours must be a LongTensor of shape {expected}; got {got}")
        shape = tuple(neighbours.shape)
        lead = (batch,) if n_chunks is None else (batch, n_chunks)
        if shape[: len(lead)] != lead or shape[-2] < 1 or not 1 <= shape[-1] <= cfg.retrieved_len:
            if n_chunks is None:
                expected = f"[B={batch}, k, r<={cfg.retrieved_len}]"
            raise ValueError(f"neighbours must have shape {expected}; got {list(shape)}")
        if (
            not neighbours.is_cuda
            and neighbours.numel()
            and (neighbours.min() < 0 or neighbours.max() >= cfg.vocab_size)
        ):
            raise ValueError(f"neighbour token ids must lie in [0, {cfg.vocab_size})")

    # --- shared pieces ----------------------------------------------------------------------------
    def _encode_neighbours(self, neighbours, chunk_hidden):
        """neighbours (B, L, k, r), chunk_hidden (B, L, m, d) -> memory (B, L, k*r, de), ids, valid."""
        B, L, k, r = neighbours.shape
        flat = rearrange(neighbours, "b l k r -> (b l k) r")
        valid = flat != self.config.pad_id
        context = repeat(chunk_hidden, "b l m d -> (b l k) m d", k=k)
        encoded = self.encoder(flat, valid, context, self.wte)  # ((B L k), r, de)
        memory = rearrange(encoded, "(b l k) r e -> b l (k r) e", b=B, l=L)
        ids = rearrange(neighbours, "b l k r -> b l (k r)")
        return memory, ids, rearrange(valid, "(b l k) r -> b l (k r)", b=B, l=L)

    def _preceding(self, x, first: int):
        """x (..., T) -> (..., T, n): [..., i] is the token first + i places before each position
        along the last axis (pad before the start): the copy head's n-gram match compares these."""
        n, T = self.config.copy_match_tokens, x.shape[-1]
        return torch.stack(
            [F.pad(x, (first + i, 0), value=self.config.pad_id)[..., :T] for i in range(n)], -1
        )

    def _token_context(self, tokens):
        """tokens (B, T) -> (B, T, n): the tokens each position ends with, itself first."""
        return self._preceding(tokens, 0)

    def _neighbour_context(self, neighbours):
        """neighbours (B, L, k, r) -> (B, L, k*r, n): the tokens before each neighbour token,
        within its own neighbour."""
        return rearrange(self._preceding(neighbours, 1), "b l k r n -> b l (k r) n")

    @property
    def _matching(self) -> bool:
        return self.copy_head is not None and self.copy_head.match_bonus is not None

    def _lm_head(self, h):
        return F.linear(h, self.wte.weight)  # output layer tied to the token embedding

    # --- full forward (training, evaluation, prefill) ---------------------------------------------
    def forward(self, tokens, neighbours=None, cache: DecodeCache | None = None, targets=None):
        """tokens (B, T), neighbours (B, T // m, k, r) | None -> logits (B, T, V).

        With the copy head on (and neighbours given or not) the result is log-probabilities.
        A no-retrieval model (cca_layers=()) ignores `neighbours`. With `cache` (fresh, from
        `new_cache`) the call is a prefill: it also stores what `decode_step` needs. With `targets`
        (B, T) it returns the mean negative log-likelihood instead (ignore_index=-100), computed
        without the vocabulary-sized scatter of the copy head.
        """
        cfg, m = self.config, self.config.chunk_size
        self._check_tokens(tokens, None if cache is None else cache.max_len)
        B, T = tokens.shape
        L = T // m
        use_retrieval = neighbours is not None and cfg.uses_retrieval and L > 0
        if neighbours is not None and cfg.uses_retrieval:
            self._check_neighbours(neighbours, B, L)
        if cache is not None and cache.pos != 0:
            raise ValueError("forward with a cache is a prefill and needs a fresh cache (pos 0)")

        x = self.drop(self.wte(tokens) + self.wpe(torch.arange(T, device=tokens.device)))  # (B, T, d)
        memory = ids = valid = None
        for i, block in enumerate(self.blocks):
            x = x + block.attn(block.ln_attn(x), None if cache is None else cache.layers[i], 0)
            if i == self.first_cca and cache is not None:
                cache.chunk_hidden[:, : T - L * m] = x[:, L * m :]
            if block.cca is not None and use_retrieval:
                if memory is None:  # encode once, conditioned on the states entering the first CCA
                    chunk_hidden = rearrange(x[:, : L * m], "b (l m) d -> b l m d", m=m)
                    memory, ids, valid = self._encode_neighbours(neighbours, chunk_hidden)
                q = to_attending_chunks(block.ln_cca(x), m, L)  # (B, L, m, d)
                y = block.cca(
                    rearrange(q, "b l m d -> (b l) m d"),
                    rearrange(memory, "b l s e -> (b l) s e"),
                    rearrange(valid, "b l s -> (b l) s"),
                )
                x = x + from_attending_chunks(rearrange(y, "(b l) m d -> b l m d", b=B), T, m)
            x = x + block.mlp(block.ln_mlp(x))
        h = self.ln_f(x)
        logits = self._lm_head(h)  # (B, T, V)

        # the copy head's n-gram match compares what positions and neighbour tokens end with
        token_context = self._token_context(tokens) if self._matching else None
        neighbour_context = self._neighbour_context(neighbours) if self._matching and use_retrieval else None
        if cache is not None:
            cache.pos = T
            if self._matching:
                cache.recent = token_context[:, -1]  # (B, n): newest first
            if use_retrieval:
                context = neighbour_context[:, L - 1] if self._matching else None
                cache.memory = self._memory_for_chunk(
                    L - 1, memory[:, L - 1], ids[:, L - 1], valid[:, L - 1], context
                )

        copying = self.copy_head is not None and use_retrieval
        if targets is not None:
            # log p(target) from one fused cross-entropy over the vocabulary; the copy head then
            # needs only that per-position value, never a second vocabulary-sized tensor
            safe = targets.clamp_min(0)
            logp = -F.cross_entropy(logits.flatten(0, 1).float(), safe.flatten(), reduction="none").view(B, T)
            if copying:
                pointer, flat_ids = self._pointer(h, memory, ids, valid, token_context, neighbour_context)
                att_logp = rearrange(to_attending_chunks(logp[..., None], m, L), "b l m one -> (b l) (m one)")
                att_targets = rearrange(
                    to_attending_chunks(safe[..., None], m, L), "b l m one -> (b l) (m one)"
                )
                copied = CopyHead.target_logp(att_logp, pointer, flat_ids, att_targets)  # ((B L), m)
                logp = _merge(logp[..., None], rearrange(copied, "(b l) m -> b l m", b=B)[..., None], m)[
                    ..., 0
                ]
            keep = targets != -100
            return -torch.where(keep, logp, 0.0).sum() / keep.sum().clamp_min(1)

        if self.copy_head is None:
            return logits
        plain = logits.float().log_softmax(dim=-1)  # with a copy head the output is always log-probs
        if not copying:
            return plain
        pointer, flat_ids = self._pointer(h, memory, ids, valid, token_context, neighbour_context)
        vocab = rearrange(to_attending_chunks(logits, m, L), "b l m v -> (b l) m v")
        mixed = CopyHead.mix(vocab, pointer, flat_ids)  # ((B L), m, V)
        return _merge(plain, rearrange(mixed, "(b l) m v -> b l m v", b=B), m)

    def _pointer(self, h, memory, ids, valid, token_context, neighbour_context):
        """The copy head's pointer for the attending positions: ((B L), m, 1+S) and ids ((B L), S)."""
        m, L = self.config.chunk_size, memory.shape[1]
        query_context = key_context = None
        if self._matching:
            query_context = to_attending_chunks(token_context, m, L)  # (B, L, m, n)
            query_context = rearrange(query_context, "b l m n -> (b l) m n")
            key_context = rearrange(neighbour_context, "b l s n -> (b l) s n")
        pointer = self.copy_head.pointer(
            rearrange(to_attending_chunks(h, m, L), "b l m d -> (b l) m d"),
            rearrange(self.copy_head.key(memory), "b l s d -> (b l) s d"),
            rearrange(valid, "b l s -> (b l) s"),
            query_context,
            key_context,
        )
        return pointer, rearrange(ids, "b l s -> (b l) s")

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
        if self._matching:
            recent = torch.full(
                (batch_size, cfg.copy_match_tokens), cfg.pad_id, dtype=torch.long, device=device
            )
        return DecodeCache(layers=layers, chunk_hidden=chunk_hidden, max_len=max_len, recent=recent)

    def prefill(self, tokens, neighbours=None, cache: DecodeCache | None = None):
        """Runs the prompt through the model and returns (logits (B, T, V), cache)."""
        cache = self.new_cache(tokens.shape[0]) if cache is None else cache
        return self.forward(tokens, neighbours, cache=cache), cache

    def _memory_for_chunk(self, chunk: int, memory, ids, valid, context=None) -> NeighbourMemory:
        """Projects one chunk's encoded neighbours (B, S, de) for every CCA layer and the copy head;
        `context` (B, S, n) is what the copy head's n-gram match compares with."""
        cca = {i: b.cca.project_memory(memory, valid) for i, b in enumerate(self.blocks) if b.cca is not None}
        copy_keys = self.copy_head.key(memory) if self.copy_head is not None else None
        return NeighbourMemory(chunk, cca, copy_keys, ids, valid, context)

    def decode_step(self, token, cache: DecodeCache, neighbours=None):
        """Feeds one token per sequence at position `cache.pos`; returns logits (B, V).

        If this token closes chunk u (its position is (u+1)m - 1), `neighbours` (B, k, r) are the
        neighbours retrieved with chunk u's tokens (this token included); they are encoded here and
        attended by this and the next m - 1 positions. Passing none at a chunk boundary means that
        chunk has no neighbours; passing some anywhere else is an error.
        """
        cfg, m = self.config, self.config.chunk_size
        if token.dim() == 1:
            token = token[:, None]
        self._check_tokens(token)
        if token.shape[1] != 1:
            raise ValueError(
                f"decode_step takes one token per sequence, shape [B] or [B, 1]; got {list(token.shape)}"
            )
        B, p = token.shape[0], cache.pos
        if p >= cache.max_len:
            raise ValueError(f"the cache is full: position {p} reaches its max_len={cache.max_len}")
        closes_chunk = (p + 1) % m == 0
        if neighbours is not None and cfg.uses_retrieval:
            if not closes_chunk:
                raise ValueError(
                    f"neighbours arrive only with a chunk's last token; position {p} does not close a chunk"
                )
            self._check_neighbours(neighbours, B, None)

        x = self.wte(token) + self.wpe(torch.tensor([p], device=token.device))  # (B, 1, d)
        for i, block in enumerate(self.blocks):
            x = x + block.attn(block.ln_attn(x), cache.layers[i], p)
            if i == self.first_cca:
                cache.chunk_hidden[:, p % m] = x[:, 0]
                if closes_chunk:
                    cache.memory = None
                    if neighbours is not None:
                        memory, ids, valid = self._encode_neighbours(
                            neighbours[:, None], cache.chunk_hidden[:, None]
                        )
                        context = (
                            self._neighbour_context(neighbours[:, None])[:, 0] if self._matching else None
                        )
                        cache.memory = self._memory_for_chunk(
                            (p + 1) // m - 1, memory[:, 0], ids[:, 0], valid[:, 0], context
                        )
            mem = cache.memory
            if block.cca is not None and mem is not None and mem.chunk == (p + 1) // m - 1:
                x = x + block.cca.attend(block.ln_cca(x), *mem.cca[i])
            x = x + block.mlp(block.ln_mlp(x))
        cache.pos = p + 1
        if self._matching:
            cache.recent = torch.cat([token, cache.recent[:, :-1]], dim=1)  # newest first
        h = self.ln_f(x)
        logits = self._lm_head(h)  # (B, 1, V)
        mem = cache.memory
        if self.copy_head is None:
            return logits[:, 0]
        if mem is None or mem.chunk != (p + 1) // m - 1:
            return logits[:, 0].float().log_softmax(dim=-1)
        recent = cache.recent[:, None, :] if self._matching else None  # (B, 1, n)
        pointer = self.copy_head.pointer(h, mem.copy_keys, mem.copy_valid, recent, mem.copy_context)
        return CopyHead.mix(logits, pointer, mem.copy_ids)[:, 0]

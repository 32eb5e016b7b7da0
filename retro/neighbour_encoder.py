"""The neighbour encoder: a small bidirectional transformer over each retrieved neighbour,
conditioned on the hidden states of the chunk that retrieved it (RETRO paper, section 2.4).

`NeighbourEncoder.encode_chunks(neighbours [B, L, k, r], chunk_hidden [B, L, m, d], wte)` returns
`EncodedNeighbours`: what chunked cross-attention (`retro.cca`) and the copy head
(`retro.copy_head`) read. The token embedding `wte` is the decoder's, passed in rather than held,
so that it is stored once.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange, repeat

from retro.attention import MLP, CrossAttention
from retro.config import RetroConfig


@dataclass
class EncodedNeighbours:
    """A sequence's neighbours after the encoder, S = k * r tokens per chunk."""

    memory: torch.Tensor  # (B, L, S, de)
    ids: torch.Tensor  # (B, L, S): the neighbour tokens themselves (the copy head copies these)
    valid: torch.Tensor  # (B, L, S) bool: False for padding


class EncoderBlock(nn.Module):
    """Bidirectional self-attention over one neighbour, cross-attention to the retrieving chunk."""

    def __init__(self, cfg: RetroConfig):
        super().__init__()
        de, dropout = cfg.enc_d_model, cfg.dropout
        self.ln_self = nn.LayerNorm(de)
        self.qkv = nn.Linear(de, 3 * de, bias=False)
        self.proj = nn.Linear(de, de, bias=False)
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

    def forward(self, tokens, valid, context, wte: nn.Embedding, word_meanings=None):
        N, r = tokens.shape
        x = self.token_in(wte(tokens)) + self.wpe(torch.arange(r, device=tokens.device))
        if word_meanings is not None:  # retro.word_meaning.WordMeanings: each token's word so far
            x = x + word_meanings.encoder_features(tokens, self.cfg.pad_id)
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

    def encode_chunks(
        self, neighbours, chunk_hidden, wte: nn.Embedding, word_meanings=None
    ) -> EncodedNeighbours:
        """neighbours (B, L, k, r), chunk_hidden (B, L, m, d): the states of the chunks that
        retrieved them -> every neighbour encoded, flattened to S = k * r tokens per chunk."""
        B, L, k, r = neighbours.shape
        flat = rearrange(neighbours, "b l k r -> (b l k) r")
        valid = flat != self.cfg.pad_id
        context = repeat(chunk_hidden, "b l m d -> (b l k) m d", k=k)
        encoded = self(flat, valid, context, wte, word_meanings)  # ((B L k), r, de)
        return EncodedNeighbours(
            memory=rearrange(encoded, "(b l k) r e -> b l (k r) e", b=B, l=L),
            ids=rearrange(neighbours, "b l k r -> b l (k r)"),
            valid=rearrange(valid, "(b l k) r -> b l (k r)", b=B, l=L),
        )

"""The transformer's building blocks: the MLP, causal self-attention (with its KV cache) and
multi-head cross-attention to a memory with a learned null slot.

Every residual projection is a linear layer named `proj`: `Retro`'s initialisation scales the
weights whose names end in `proj.weight` (GPT-2's 1 / sqrt(2 * n_layers)), so the name is the
mark. The decoder (`retro.model`), chunked cross-attention (`retro.cca`) and the neighbour
encoder (`retro.neighbour_encoder`) are built from these.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange, repeat


class MLP(nn.Module):
    def __init__(self, d: int, d_ff: int, dropout: float):
        super().__init__()
        self.fc = nn.Linear(d, d_ff)
        self.proj = nn.Linear(d_ff, d)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        return self.dropout(self.proj(F.gelu(self.fc(x))))


@dataclass
class LayerKV:
    """One self-attention layer's cached keys and values for incremental decoding."""

    k: torch.Tensor  # (B, nh, max_len, hs)
    v: torch.Tensor


class CausalSelfAttention(nn.Module):
    def __init__(self, d: int, n_heads: int, dropout: float):
        super().__init__()
        self.n_heads = n_heads
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.proj = nn.Linear(d, d, bias=False)
        self.dropout = dropout

    def forward(self, x, cache: LayerKV | None = None, pos: int = 0):
        """x (B, T, d) at positions pos .. pos+T-1 -> (B, T, d); with `cache`, its keys and values
        are stored there and every cached position before them is attended to."""
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

"""Chunked cross-attention (CCA, RETRO paper section 2.4), as one module.

The sequence is cut into chunks of m tokens; the neighbours retrieved with chunk u are attended
by the positions (u+1)m-1 .. (u+2)m-2, the chunk's last token and the first m - 1 tokens of the
next chunk, so that no position sees neighbours retrieved with tokens after it.
`to_attending_chunks` / `from_attending_chunks` regroup a sequence into those attending rows and
back; `merge_attending` fills the positions before the first attending row from a plain result.

`ChunkedCrossAttention` (a `CrossAttention` with the chunking around it, as lucidrains/RETRO-pytorch
packages it) is used both by a full forward, over `EncodedNeighbours` of the whole sequence, and by
incremental decoding, over one chunk's neighbours projected once on arrival (`ProjectedChunk`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange

from retro.attention import CrossAttention
from retro.neighbour_encoder import EncodedNeighbours


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


def merge_attending(plain, attending, m: int):
    """plain (B, T, D) for every position, attending (B, L, m, D) for positions >= m - 1 -> (B, T, D)."""
    T = plain.shape[1]
    return torch.cat([plain[:, : m - 1], from_attending_chunks(attending, T, m)[:, m - 1 :]], dim=1)


@dataclass
class ProjectedChunk:
    """One chunk's neighbours as keys and values of one CCA layer, null slot first."""

    k: torch.Tensor  # (B, nh, 1+S, hs)
    v: torch.Tensor
    mask: torch.Tensor  # (B, 1, 1, 1+S)


class ChunkedCrossAttention(CrossAttention):
    """Cross-attention from each position to the neighbours of the last chunk it has completed."""

    def __init__(self, d: int, d_memory: int, n_heads: int, dropout: float, chunk_size: int):
        super().__init__(d, d_memory, n_heads, dropout)
        self.chunk_size = chunk_size

    def project(self, memory, valid) -> ProjectedChunk:
        """One chunk's encoded neighbours (B, S, de), valid (B, S) -> this layer's keys and values."""
        return ProjectedChunk(*self.project_memory(memory, valid))

    def forward(self, x, neighbours: EncodedNeighbours | ProjectedChunk):
        """x (B, T, d), already normalised -> (B, T, d), to be added to the residual stream.

        With `EncodedNeighbours` (B, L, S, de), x is a whole sequence from position 0 and every
        position attends to its chunk's neighbours (zeros where it has none: positions < m - 1).
        With a `ProjectedChunk`, x is the position(s) of one decoding step, all attending to it.
        """
        if isinstance(neighbours, ProjectedChunk):
            return self.attend(x, neighbours.k, neighbours.v, neighbours.mask)
        B, T, _ = x.shape
        m, L = self.chunk_size, neighbours.memory.shape[1]
        q = to_attending_chunks(x, m, L)  # (B, L, m, d)
        y = super().forward(
            rearrange(q, "b l m d -> (b l) m d"),
            rearrange(neighbours.memory, "b l s e -> (b l) s e"),
            rearrange(neighbours.valid, "b l s -> (b l) s"),
        )
        return from_attending_chunks(rearrange(y, "(b l) m d -> b l m d", b=B), T, m)

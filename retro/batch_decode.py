"""One decoding step for many RETRO sequences at once, each at its own position (continuous batching).

`BatchDecoder(model)` holds the incremental state of every running row in stacked slot tensors:
self-attention keys and values (slots, heads, max_len, head size), the open chunk's states entering
the first CCA layer, the last tokens (the copy head's match and the word meanings read them) and
each row's latest neighbours, projected once
for every CCA layer and the copy head and padded to a common number of neighbour tokens (the padding
masked out, so it changes nothing). A row joins with the `DecodeCache` that `Retro.prefill` left for
it (`add`), and leaves at any step boundary (`remove`); `step(rows, tokens, neighbours)` feeds one
token to each of the given rows at its own position and returns their log-probabilities, the same
distribution `Retro.decode_step` gives that row alone (tests/retro/test_batch_decode.py).

Per row, as `Retro.decode_step`: a token that closes chunk u comes with the neighbours retrieved
with chunk u (or None: that chunk has none); every row's neighbours arriving at one step go through
the neighbour encoder in one call. A row attends to its keys up to its own position only, and adds
chunked cross-attention and the copy head's mixture only when it holds neighbours of the chunk its
position may see. The step is built from the model's own modules (`retro.attention`, `retro.cca`,
`retro.copy_head`, `retro.neighbour_encoder`); nothing in `retro.model` is changed or called with
new meaning. This module owns tensors only: no threads, no retrieval, no sampling.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange

from retro.copy_head import CopyHead
from retro.model import DecodeCache, NeighbourMemory, Retro
from retro.model_inputs import check_tokens
from retro.neighbour_encoder import EncodedNeighbours
from retro.word_meaning import WORD_WINDOW


class DecodeRow:
    """One running sequence: its slot in the stacked tensors (moved when rows leave) and position."""

    def __init__(self, slot: int, pos: int):
        self.slot, self.pos = slot, pos
        self.active = True

    def __repr__(self) -> str:
        return f"DecodeRow(slot={self.slot}, pos={self.pos})"


class BatchDecoder:
    """The decode state of up to any number of rows (slots grow on demand), stepped together."""

    def __init__(self, model: Retro, initial_slots: int = 4):
        self.model, self.cfg = model, model.config
        cfg = self.cfg
        self.m = cfg.chunk_size
        self.n_heads, self.head_size = cfg.n_heads, cfg.d_model // cfg.n_heads
        self.dtype, self.device = model.wte.weight.dtype, model.device
        self.cca_layers = [i for i, b in enumerate(model.blocks) if b.cca is not None]
        self.matching = model.copy_head is not None and model.copy_head.matches
        self.rows: list[DecodeRow] = []  # rows[i].slot == i: active rows are slots 0 .. n-1
        self.capacity = 0
        self.n_keys = 0  # neighbour tokens per slot (S), grown to the largest row's k * r
        self._allocate(max(1, initial_slots), 0)

    # --- storage ----------------------------------------------------------------------------------
    def _zeros(self, *shape, dtype=None, fill=0):
        return torch.full(shape, fill, dtype=dtype or self.dtype, device=self.device)

    def _allocate(self, capacity: int, n_keys: int) -> None:
        """(Re)allocates every slot tensor for `capacity` rows and `n_keys` neighbour tokens,
        keeping what the first rows hold."""
        cfg, nh, hs, S = self.cfg, self.n_heads, self.head_size, n_keys
        old = getattr(self, "_tensors", None)
        new = {
            "k": [self._zeros(capacity, nh, cfg.max_seq_len, hs) for _ in range(cfg.n_layers)],
            "v": [self._zeros(capacity, nh, cfg.max_seq_len, hs) for _ in range(cfg.n_layers)],
            "chunk_hidden": self._zeros(capacity, self.m, cfg.d_model),
            "recent": self._zeros(capacity, max(self.model.recent_len, 1), dtype=torch.long, fill=cfg.pad_id),
            # the latest neighbours, projected per CCA layer (null slot first) and for the copy head
            "mem_k": {i: self._zeros(capacity, nh, 1 + S, hs) for i in self.cca_layers},
            "mem_v": {i: self._zeros(capacity, nh, 1 + S, hs) for i in self.cca_layers},
            "mem_mask": self._zeros(capacity, 1, 1, 1 + S, dtype=torch.bool),
            "copy_keys": self._zeros(capacity, S, cfg.d_model),
            "copy_ids": self._zeros(capacity, S, dtype=torch.long, fill=cfg.pad_id),
            "copy_valid": self._zeros(capacity, S, dtype=torch.bool),
            "copy_context": self._zeros(
                capacity, S, max(cfg.copy_match_tokens, 1), dtype=torch.long, fill=cfg.pad_id
            ),
        }
        new["mem_mask"][..., 0] = True  # the null slot: always visible, so softmax stays defined
        if old is not None:
            n, s = len(self.rows), self.n_keys
            for name in ("k", "v"):
                for dst, src in zip(new[name], old[name], strict=True):
                    dst[:n] = src[:n]
            for name in ("chunk_hidden", "recent"):
                new[name][:n] = old[name][:n]
            for name in ("mem_k", "mem_v"):
                for i in self.cca_layers:
                    new[name][i][:n, :, : 1 + s] = old[name][i][:n]
            new["mem_mask"][:n, ..., : 1 + s] = old["mem_mask"][:n]
            for name in ("copy_keys", "copy_ids", "copy_valid", "copy_context"):
                new[name][:n, :s] = old[name][:n]
            self.mem_chunk = self.mem_chunk + [None] * (capacity - len(self.mem_chunk))
        else:
            # the chunk whose neighbours each slot holds; None: none (never -1, the chunk a row in its
            # first chunk attends: such a row would read what the slot's previous row left)
            self.mem_chunk: list[int | None] = [None] * capacity
        self._tensors, self.capacity, self.n_keys = new, capacity, n_keys
        for name, value in new.items():
            setattr(self, name, value)

    def _move(self, src: int, dst: int) -> None:
        """Copies slot src's whole state into slot dst (a leaving row's slot is refilled)."""
        for name in ("k", "v"):
            for t in self._tensors[name]:
                t[dst] = t[src]
        for name in ("mem_k", "mem_v"):
            for t in self._tensors[name].values():
                t[dst] = t[src]
        for name in (
            "chunk_hidden",
            "recent",
            "mem_mask",
            "copy_keys",
            "copy_ids",
            "copy_valid",
            "copy_context",
        ):
            self._tensors[name][dst] = self._tensors[name][src]
        self.mem_chunk[dst] = self.mem_chunk[src]

    # --- rows joining and leaving ----------------------------------------------------------------
    def add(self, cache: DecodeCache) -> DecodeRow:
        """A row that `Retro.prefill` has run (a cache of batch 1) joins; returns its handle."""
        if cache.chunk_hidden.shape[0] != 1:
            raise ValueError("add takes the cache of one prefilled sequence (batch 1)")
        # room first: a reallocation keeps only the slots of rows already in `self.rows`
        n_keys = self.n_keys
        if cache.memory is not None:
            n_keys = max(n_keys, cache.memory.cca[self.cca_layers[0]].k.shape[2] - 1)
        if len(self.rows) == self.capacity or n_keys > self.n_keys:
            self._allocate(max(self.capacity, 2 * len(self.rows), 1), n_keys)
        slot, T = len(self.rows), cache.pos
        for i, layer in enumerate(cache.layers):
            self.k[i][slot, :, :T] = layer.k[0, :, :T]
            self.v[i][slot, :, :T] = layer.v[0, :, :T]
        self.chunk_hidden[slot] = cache.chunk_hidden[0]
        if cache.recent is not None:
            self.recent[slot] = cache.recent[0]
        self.mem_chunk[slot] = None
        if cache.memory is not None:
            self._store_memory([slot], cache.memory, [cache.memory.chunk])
        row = DecodeRow(slot, T)
        self.rows.append(row)
        return row

    def remove(self, row: DecodeRow) -> None:
        """The row leaves; the last row moves into its slot, so active rows stay slots 0 .. n-1."""
        if not row.active:
            return
        last = self.rows.pop()
        if last is not row:
            self._move(last.slot, row.slot)
            last.slot = row.slot
            self.rows[row.slot] = last
        row.active = False

    def _store_memory(self, slots: list[int], memory: NeighbourMemory, chunks: list[int]) -> None:
        """Neighbours projected for rows `slots` (tensors of batch len(slots)) into their slots;
        `chunks[b]` is the chunk that retrieved row b's (`memory.chunk` is not read)."""
        S = memory.cca[self.cca_layers[0]].k.shape[2] - 1
        if self.n_keys < S:
            self._allocate(self.capacity, S)
        index = torch.tensor(slots, device=self.device)
        for i, projected in memory.cca.items():
            self.mem_k[i][index, :, : 1 + S] = projected.k
            self.mem_v[i][index, :, : 1 + S] = projected.v
        mask = self.mem_mask[index]
        mask[..., : 1 + S] = memory.cca[self.cca_layers[0]].mask
        mask[..., 1 + S :] = False
        self.mem_mask[index] = mask
        if self.model.copy_head is not None:
            for name, value, pad in (
                ("copy_keys", memory.copy_keys, 0),
                ("copy_ids", memory.copy_ids, self.cfg.pad_id),
                ("copy_valid", memory.copy_valid, False),
            ):
                stored = self._tensors[name][index]
                stored[:, :S] = value
                stored[:, S:] = pad
                self._tensors[name][index] = stored
            if memory.copy_context is not None:
                context = self.copy_context[index]
                context[:, :S] = memory.copy_context
                context[:, S:] = self.cfg.pad_id
                self.copy_context[index] = context
        for slot, chunk in zip(slots, chunks, strict=True):
            self.mem_chunk[slot] = chunk

    def _arrive(self, slots: list[int], neighbours: list[torch.Tensor], chunks: list[int]) -> None:
        """Neighbours (k_b, r) arriving for rows `slots` whose tokens close chunk `chunks[b]`:
        every neighbour of every row through the neighbour encoder in one call, then projected."""
        model, pad = self.model, self.cfg.pad_id
        counts = [int(n.shape[0]) for n in neighbours]
        r = max(int(n.shape[1]) for n in neighbours)
        flat = torch.cat([F.pad(n, (0, r - n.shape[1]), value=pad) for n in neighbours])  # (sum k, r)
        valid = flat != pad
        context = torch.cat(
            [self.chunk_hidden[s][None].expand(k, -1, -1) for s, k in zip(slots, counts, strict=True)]
        )
        encoded = model.encoder(flat, valid, context, model.wte, model.word_meanings)  # (sum k, r, de)
        key_context = model.copy_head.key_context(flat[None, None]) if self.matching else None
        key_context = None if key_context is None else key_context[0, 0]
        S = max(counts) * r
        memory, ids, keep, ctx = [], [], [], []
        start = 0
        for k in counts:
            part = slice(start, start + k)
            start += k
            fill = S - k * r
            memory.append(F.pad(rearrange(encoded[part], "k r e -> (k r) e"), (0, 0, 0, fill)))
            ids.append(F.pad(flat[part].reshape(-1), (0, fill), value=pad))
            keep.append(F.pad(valid[part].reshape(-1), (0, fill), value=False))
            if key_context is not None:
                ctx.append(F.pad(key_context[part.start * r : part.stop * r], (0, 0, 0, fill), value=pad))
        encoded_rows = EncodedNeighbours(torch.stack(memory), torch.stack(ids), torch.stack(keep))
        # projected as `Retro.decode_step` projects one row's (its chunk number is not read here)
        projected = model._memory_for_chunk(-1, encoded_rows, torch.stack(ctx) if ctx else None)
        self._store_memory(slots, projected, chunks)

    # --- one step ---------------------------------------------------------------------------------
    @torch.inference_mode()
    def step(self, rows: list[DecodeRow], tokens: list[int], neighbours: list[torch.Tensor | None]):
        """Feeds tokens[b] to rows[b] at its own position -> log-probabilities (B, V).

        neighbours[b] (k, r) are those retrieved with the chunk rows[b]'s token closes (None there,
        or where it closes none: a chunk without neighbours). Rows must be distinct and active.
        """
        model, cfg, m = self.model, self.cfg, self.m
        if not rows:
            raise ValueError("step needs at least one row")
        if len(tokens) != len(rows) or len(neighbours) != len(rows):
            raise ValueError("step takes one token and one neighbours entry per row")
        for row, given in zip(rows, neighbours, strict=True):
            if not row.active:
                raise ValueError(f"{row} has left the batch")
            if row.pos >= cfg.max_seq_len:
                raise ValueError(
                    f"the cache is full: position {row.pos} reaches max_seq_len={cfg.max_seq_len}"
                )
            if given is not None and (row.pos + 1) % m:
                raise ValueError(
                    f"neighbours arrive only with a chunk's last token; position {row.pos} closes none"
                )
        B = len(rows)
        slots = [row.slot for row in rows]
        device = self.device
        index = torch.tensor(slots, device=device)
        # the common case (every running row steps) reads the slots as views, without a gather
        sel = slice(slots[0], slots[0] + B) if slots == list(range(slots[0], slots[0] + B)) else index
        positions = [row.pos for row in rows]
        pos = torch.tensor(positions, device=device)
        n_keys = max(positions) + 1
        key_mask = (torch.arange(n_keys, device=device)[None, :] <= pos[:, None])[:, None, None, :]
        attended = [(p + 1) // m - 1 for p in positions]  # the chunk whose neighbours each row may see
        closing = [b for b, p in enumerate(positions) if (p + 1) % m == 0]
        token = torch.tensor(tokens, device=device, dtype=torch.long)[:, None]
        check_tokens(cfg, token)

        x = model.wte(token) + model.wpe(pos)[:, None]  # (B, 1, d)
        if model.recent_len:
            self.recent[index] = torch.cat([token, self.recent[index][:, :-1]], dim=1)  # newest first
        if model.word_meanings is not None:
            x = x + model.word_meanings.decoder_features(self.recent[index][:, None, :WORD_WINDOW])
        sees: torch.Tensor | None = None  # (B,) bool: rows holding their attended chunk's neighbours
        for i, block in enumerate(model.blocks):
            x = x + self._self_attention(block.attn, block.ln_attn(x), i, index, sel, pos, n_keys, key_mask)
            if block.cca is not None:
                if i == model.first_cca:
                    self.chunk_hidden[index, pos % m] = x[:, 0]
                    for b in closing:
                        self.mem_chunk[slots[b]] = None  # a chunk without neighbours clears the old ones
                    arriving = [b for b in closing if neighbours[b] is not None]
                    if arriving:
                        self._arrive(
                            [slots[b] for b in arriving],
                            [neighbours[b].to(device) for b in arriving],
                            [attended[b] for b in arriving],
                        )
                    seen = [self.mem_chunk[s] == a for s, a in zip(slots, attended, strict=True)]
                    sees = torch.tensor(seen, device=device) if any(seen) else None
                if sees is not None:
                    y = block.cca.attend(
                        block.ln_cca(x), self.mem_k[i][sel], self.mem_v[i][sel], self.mem_mask[sel]
                    )
                    x = x + y * sees[:, None, None].to(y.dtype)  # rows without neighbours add exactly 0
            x = x + block.mlp(block.ln_mlp(x))
        for row in rows:
            row.pos += 1
        h = model.ln_f(x)
        logits = model._lm_head(h)  # (B, 1, V)
        out = logits[:, 0].float().log_softmax(dim=-1)
        if model.copy_head is None or sees is None:
            return out
        mixed = sees.nonzero()[:, 0]
        at = index[mixed]
        recent = self.recent[at][:, None, : model.context_len] if self.matching else None
        context = self.copy_context[at] if self.matching else None
        pointer = model.copy_head.pointer(
            h[mixed],
            self.copy_keys[at],
            self.copy_valid[at],
            recent,
            context,
            self.copy_ids[at],
            model.word_meanings,
        )
        out[mixed] = CopyHead.mix(logits[mixed], pointer, self.copy_ids[at])[:, 0]
        return out

    def _self_attention(self, attn, h, layer: int, index, sel, pos, n_keys: int, key_mask):
        """Causal self-attention of one new position per row, each at its own `pos`, over its cache."""
        B, _, C = h.shape
        q, k, v = attn.qkv(h).split(C, dim=2)
        q, k, v = (rearrange(t, "b t (h d) -> b h t d", h=attn.n_heads) for t in (q, k, v))
        keys, values = self.k[layer], self.v[layer]
        keys[index, :, pos] = k[:, :, 0]
        values[index, :, pos] = v[:, :, 0]
        y = F.scaled_dot_product_attention(
            q, keys[sel, :, :n_keys], values[sel, :, :n_keys], attn_mask=key_mask
        )
        return attn.proj(rearrange(y, "b h t d -> b t (h d)"))

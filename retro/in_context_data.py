"""Training examples of the retrieval-in-prompt comparator: passages, then RETRO's own sequence.

Each example is one of the sequences `retro.data.TrainingData` draws for RETRO (the same start
rows and left shifts for the same seed, recipe and sequence length: the token draws are
`TrainingData.draws`), with the passages of its first chunk before it in the template of
`retro.in_context`:

- **passages**: the precomputed neighbours of the sequence's first chunk (`index.neighbours`, the
  ones RETRO trains with: nearest chunks of other documents, removed documents skipped), with
  their continuations, cut to `retrieved_len`; a neighbour from any document that occurs in the
  sequence is dropped, as RETRO drops it (paper section 2.3). Nothing of RETRO's recipe that
  makes up neighbours applies (continuation neighbours, random distractors, `read_prefix`'s
  neighbours of the next chunk): those would let passages hold, or be found with, tokens the
  model predicts;
- **the text**: the sequence's tokens without RETRO's left padding (which aligns chunks for CCA
  and means nothing here);
- **the loss**: only on the text after its first chunk. That chunk is the query the passages were
  retrieved with, so its tokens are context, never targets: no passage was found with a token the
  model predicts (the serving side retrieves with the prompt's last m tokens, then generates).
  Passages, template and padding are never targets either.

An example is `max_seq_len` tokens, right-padded: at most k full passages and the template
(`PassageTemplate.passages_budget`), then `text_budget` tokens of text, which is the sequence
length drawn (`retro.in_context.text_budget`; the demo comparator: 256, the demo's own).
`batch(step, batch_size, rank, world_size)` is a pure function of (seed, step, rank), as
`TrainingData.batch` is, so a resumed run sees the same data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from index.neighbours import TrainingChunks
from index.version import neighbour_window
from retro.config import RetroConfig
from retro.data import IGNORE, Batch, Recipe, TrainingData
from retro.in_context import PassageTemplate, passages_of, text_budget


class InContextTrainingData:
    """Deterministic batches of (context tokens, targets) for a model with `in_context=True`."""

    def __init__(
        self,
        chunks: TrainingChunks,
        config: RetroConfig,
        tokenizer,
        recipe: Recipe = Recipe(),
        seed: int = 0,
        total_steps: int = 0,
        split: str = "train",
        validation_fraction: float = 0.0,
    ):
        if not config.in_context:
            raise ValueError("InContextTrainingData trains a model with in_context=True")
        m = config.chunk_size
        if chunks.neighbours is None:
            raise ValueError(
                "the index has no precomputed neighbours: run index.neighbours.precompute_neighbours"
            )
        if chunks.n_precomputed != chunks.n_chunks:
            raise ValueError(
                f"the index's neighbour table covers {chunks.n_precomputed} of {chunks.n_chunks} chunks "
                "(documents were added after it was computed): run `retro index neighbours` again"
            )
        self.config, self.template = config, PassageTemplate.for_tokenizer(tokenizer)
        self.seq_len = text_budget(config, self.template)  # tokens of text (RETRO's sequence length)
        if self.seq_len < 2 * m:
            budget = self.template.passages_budget(config.n_neighbours, config.retrieved_len)
            raise ValueError(
                f"max_seq_len={config.max_seq_len} leaves {max(0, self.seq_len)} tokens of text beside "
                f"{config.n_neighbours} passages ({budget} tokens with the template); a sequence needs "
                f"at least two chunks of {m} (the query chunk and one predicted)"
            )
        self.chunks, self.k, self.m = chunks, config.n_neighbours, m
        # The token draws are TrainingData's: RETRO trained with the same seed, recipe and sequence
        # length sees the same sequences (without neighbours: this data makes its own passages).
        self.sequences = TrainingData(
            chunks,
            config.replace(max_seq_len=self.seq_len),
            recipe,
            seed=seed,
            total_steps=total_steps,
            baseline=True,
            split=split,
            validation_fraction=validation_fraction,
        )
        self.pad_id = chunks.pad_id

    @classmethod
    def from_index(
        cls, index_dir: str | Path, config: RetroConfig, tokenizer, **kwargs
    ) -> InContextTrainingData:
        recipe = kwargs.get("recipe", Recipe())
        chunks = TrainingChunks(
            index_dir, config.n_neighbours, recipe.never_neighbours, recipe.neighbour_query_chunks
        )
        return cls(chunks, config, tokenizer, **kwargs)

    @property
    def n_sequences(self) -> int:
        return self.sequences.n_sequences

    def batch(self, step: int, batch_size: int, rank: int = 0, world_size: int = 1) -> Batch:
        starts, shifts = self.sequences.draws(step, batch_size, rank, world_size)
        return self.examples(starts, shifts, step=step, rng_key=(step, rank, world_size))

    def continuation_passage(self, text: np.ndarray, rng: np.random.Generator) -> list[int]:
        """A window of `retrieved_len` tokens of the example's own text after its query chunk, at a
        random offset (`<pad>` dropped): tokens the model will predict, as RETRO's continuation
        neighbours hold them."""
        r, m = self.config.retrieved_len, self.m
        offset = int(rng.integers(0, max(1, len(text) - m - r + 1)))
        return [int(t) for t in text[m + offset : m + offset + r] if t != self.pad_id]

    def passages(self, starts: np.ndarray) -> list[list[list[int]]]:
        """Per start row: the passages of the sequence's first chunk, best first, with neighbours
        from any document of the sequence left out."""
        data, L = self.sequences, self.sequences.n_seq_chunks
        retrieved = np.array(self.chunks.neighbours[data.chunk_ids[starts]])[:, : self.k]  # (B, k)
        # the documents of every chunk the text reaches (its last target lies in chunk L)
        rows = np.minimum(starts[:, None] + np.arange(L + 1)[None, :], len(data.chunk_ids) - 1)
        seq_docs = data.doc_of_chunk[rows]  # (B, L + 1)
        nb_docs = np.asarray(self.chunks.doc_index)[np.maximum(retrieved, 0)]  # (B, k)
        own = (nb_docs[..., None] == seq_docs[:, None, :]).any(-1)
        retrieved = np.where(own | (retrieved < 0), -1, retrieved)
        # (B, k, r rounded up to chunks); -1 -> all padding
        tokens = self.chunks.neighbour_tokens(retrieved, neighbour_window(self.m, self.config.retrieved_len))
        return [passages_of(row, self.config.retrieved_len, self.pad_id) for row in tokens]

    def examples(
        self, starts: np.ndarray, shifts: np.ndarray, step: int | None = None, rng_key: tuple = ()
    ) -> Batch:
        """The batch for given start rows (in this split's chunk order) and RETRO's left shifts;
        with `Recipe.continuation_passages`, `step` sets the share of continuation passages and
        `rng_key` (with the seed) their draws."""
        S, T, m = self.config.max_seq_len, self.seq_len, self.m
        data = self.sequences
        stream = data.stream
        continuing = data.recipe.continuation_passages and step is not None
        if continuing:  # its own generator: the token draws stay RETRO's
            rng = np.random.default_rng([data.seed, *rng_key, 3])
            share = data.recipe.continuation_share(step, data.total_steps)
        tokens = np.full((len(starts), S), self.pad_id, dtype=np.int64)
        targets = np.full((len(starts), S), IGNORE, dtype=np.int64)
        for b, (start, shift, passages) in enumerate(zip(starts, shifts, self.passages(starts), strict=True)):
            lo = int(start) * m
            text = stream[lo : lo + T + 1 - int(shift)]  # RETRO's sequence without its left padding
            if continuing and rng.random() < share:
                passages = [self.continuation_passage(text, rng), *passages[: self.k - 1]]
            header = self.template.header(passages)
            full = np.concatenate([np.asarray(header, dtype=np.int64), text])
            n = len(full) - 1
            tokens[b, :n] = full[:-1]
            # position len(header) - 1 + i predicts text[i]; text[:m] is the query chunk: context only
            first = len(header) - 1 + m
            targets[b, first:n] = full[first + 1 :]
        targets[targets == self.pad_id] = IGNORE
        return Batch(torch.from_numpy(tokens), torch.from_numpy(targets), None)

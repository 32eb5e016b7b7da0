"""Training sequences with neighbours: the recipe that makes a small RETRO copy from retrieval.

Sequences are windows of the chunk store's token stream (chunks in store order, so documents
follow one another, separated by the padding of their last chunks), starting at a chunk boundary.
Chunk u of a sequence gets k neighbours of `retrieved_len` tokens, built by the recipe below,
because plain RETRO training at this scale learns to ignore retrieval (docs/design.md, measured table):

1. Retrieved neighbours: the store chunk's precomputed nearest chunks from other documents
   (`index.neighbours`), with their continuations; any from a document that occurs in the same
   sequence is dropped too (paper section 2.3: no neighbour from the sequence's own documents).
2. A continuation neighbour, in a random one of the k slots, for a scheduled share of chunks: a
   window of the stream that holds the tokens chunk u's attending positions must predict, placed
   at a random offset inside the window (0 .. r - m tokens of the preceding text come first). The
   random offset is what teaches copying by content rather than by position; an aligned
   continuation gives a low training loss and no fact accuracy.
3. Distractors: the share of chunks with a continuation neighbour falls from `continuation_start`
   to `continuation_end` over the second part of training, and a share of retrieved neighbours is
   replaced by random chunks, so that the copy head learns when *not* to copy.
4. Random left padding (`left_pad_prob`): the sequence is shifted right by 0 .. m-1 `<pad>`
   tokens, so the model has seen the alignment that generation uses for short prompts.
5. Reading documents (`read_prefix`, e.g. the question-and-answer documents): the chunk before
   one of their chunks gets the neighbours retrieved for that chunk, and never a continuation
   neighbour, so the answers in it can only come from reading other documents' passages; with
   `read_share` a share of sequences starts just before one of their chunks.

`TrainingData.batch(step, batch_size, rank, world_size)` is a pure function of (seed, step, rank):
resuming at a saved step reproduces the data exactly. The token draws do not depend on the
neighbour draws, so a `baseline=True` data set gives the no-retrieval model the same tokens.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from index.neighbours import TrainingChunks
from index.version import neighbour_window
from retro.config import RetroConfig

IGNORE = -100  # target value that the loss ignores
# candidates, in retrieval order, that `Recipe.distinct_titles` chooses a chunk's neighbours among
TITLE_CANDIDATES = 8


@dataclass(frozen=True)
class Recipe:
    continuation_start: float = 1.0  # share of chunks with a continuation neighbour, early on
    continuation_end: float = 0.8  # ... and at the last step
    decay_from: float = 0.5  # fraction of training after which the share starts to fall
    random_neighbour_prob: float = 0.1  # a retrieved neighbour slot is a random chunk instead
    left_pad_prob: float = 0.5  # a sequence is shifted right by 1 .. m-1 pads
    max_offset: int | None = None  # largest offset of the continuation in its window; None = r - m
    # Reading documents: doc ids starting with one of these comma-separated prefixes (the demo:
    # "reading-qa/,facts-qa/"). A chunk whose next chunk belongs to one gets that next chunk's
    # retrieved neighbours (passages of other documents: the entity's, found by its name) and never
    # a continuation neighbour, so its answers must be read from a passage, not copied from the
    # question-and-answer text itself (docs/design.md, "Reading").
    read_prefix: str = ""
    # Share of sequences that start one chunk before a reading document's chunk (the rest start
    # anywhere): reading documents are a small part of the stream, so without it their answers are
    # ~1% of the predicted tokens. Drawn from the token stream's own random numbers: a baseline
    # trained with the same recipe still gets the same tokens.
    read_share: float = 0.0
    # Neighbours (retrieved and random) never come from reading documents: a serving index holds
    # none (the demo's leaves its Q&A documents out), so a model that learned to copy an answer
    # from another Q&A document of the same entity learned something serving never shows it. In
    # the demo's training index of 2026-12-04, 88% of reading-qa chunks had a Q&A document as their
    # first neighbour. Uses its own precomputed table (`index.neighbours`, `never_from`).
    passage_neighbours: bool = False
    # The retrieval-in-prompt comparator only (`retro.in_context_data`): with `continuation_share`'s
    # probability an example's first passage is a window of its own text after the query chunk, at
    # a random offset: the in-prompt analogue of RETRO's continuation neighbours, which is what
    # teaches a small model to copy from what it retrieved. Off, it sees only real passages of other
    # documents, and on 4.1M tokens it learned to ignore them (docs/results, 2026-12-06).
    continuation_passages: bool = False
    # Reading documents (comma-separated doc-id prefixes, e.g. "reading-qa/,reading-chat/") whose
    # chunks get their neighbours from one document per title: the best retrieved neighbour, then
    # the best of the next `TITLE_CANDIDATES` whose document is that one or has another title.
    # Why: the demo's training index holds four passages per invented entity (one per training
    # style), so 71% of reading-qa chunks had two passages of their own entity as neighbours and
    # 12% exactly one (2026-12-06), while a serving index holds one passage per entity and the
    # second neighbour is another window of it or another entity's passage: the reader was rarely
    # made to tell the asked entity's value from a look-alike's.
    distinct_titles: str = ""
    # With passage_neighbours: a reading document's chunk is queried with its own text and up to
    # n - 1 chunks before it in its document (`index.neighbours`, `query_chunks`), as the service
    # queries with a prompt's last `inference_query_tokens` (96 = three 32-token chunks for the
    # demo), not with its last chunk: a question that names its subject a chunk before it asks
    # then gets that subject's passage in training too. Measured with 3 (2026-12-06, with long
    # prompts in training): no better on dev over two seeds; the demo trains with 1.
    read_query_chunks: int = 1

    @property
    def read_prefixes(self) -> tuple[str, ...]:
        return tuple(p for p in self.read_prefix.split(",") if p)

    @property
    def distinct_title_prefixes(self) -> tuple[str, ...]:
        prefixes = tuple(p for p in self.distinct_titles.split(",") if p)
        outside = [p for p in prefixes if not p.startswith(self.read_prefixes) or not self.read_prefixes]
        if outside:
            raise ValueError(
                f"distinct_titles names {', '.join(outside)}, which read_prefix does not: only reading "
                "documents' chunks get their neighbours chosen by title"
            )
        return prefixes

    def neighbour_tables(self, k: int) -> tuple[int, ...]:
        """The k of each precomputed neighbour table the recipe reads for k neighbours per chunk."""
        return (k, TITLE_CANDIDATES) if self.distinct_title_prefixes else (k,)

    @property
    def never_neighbours(self) -> tuple[str, ...]:
        """The doc-id prefixes whose documents are never neighbours (the neighbour table's)."""
        if self.passage_neighbours and not self.read_prefixes:
            raise ValueError("passage_neighbours=True needs read_prefix: it names the documents to leave out")
        return self.read_prefixes if self.passage_neighbours else ()

    @property
    def neighbour_query_chunks(self) -> int:
        """The query width of the neighbour table the recipe reads (`index.neighbours`)."""
        if self.read_query_chunks < 1:
            raise ValueError(f"read_query_chunks must be >= 1, got {self.read_query_chunks}")
        if self.read_query_chunks > 1 and not self.passage_neighbours:
            raise ValueError(
                "read_query_chunks > 1 needs passage_neighbours=true: it widens that table's queries"
            )
        return self.read_query_chunks

    def continuation_share(self, step: int, total_steps: int) -> float:
        if total_steps <= 0:
            return self.continuation_start
        t = step / total_steps
        if t <= self.decay_from:
            return self.continuation_start
        frac = min(1.0, (t - self.decay_from) / max(1e-9, 1.0 - self.decay_from))
        return self.continuation_start + frac * (self.continuation_end - self.continuation_start)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Batch:
    tokens: torch.Tensor  # (B, T) inputs
    targets: torch.Tensor  # (B, T) next tokens, IGNORE where there is nothing to predict
    neighbours: torch.Tensor | None  # (B, T // m, k, r), or None for the baseline

    def to(self, device) -> Batch:
        nb = None if self.neighbours is None else self.neighbours.to(device, non_blocking=True)
        return Batch(
            self.tokens.to(device, non_blocking=True), self.targets.to(device, non_blocking=True), nb
        )


def in_validation_split(doc_id: str, validation_fraction: float) -> bool:
    """True for documents of the validation split: a hash of the id, stable across builds."""
    digest = int(hashlib.sha256(doc_id.encode("utf-8")).hexdigest()[:8], 16)
    return digest / 2**32 < validation_fraction


class TrainingData:
    """Deterministic batches of (tokens, targets, neighbours) from one index version."""

    def __init__(
        self,
        chunks: TrainingChunks,
        config: RetroConfig,
        recipe: Recipe = Recipe(),
        seed: int = 0,
        total_steps: int = 0,
        baseline: bool = False,
        split: str = "train",
        validation_fraction: float = 0.0,
    ):
        m = config.chunk_size
        if chunks.chunk_size != m:
            raise ValueError(f"the index has chunks of {chunks.chunk_size} tokens; the model expects {m}")
        if split not in ("train", "validation"):
            raise ValueError(f"split must be 'train' or 'validation'; got {split!r}")
        if not baseline and chunks.neighbours is None:
            raise ValueError(
                "the index has no precomputed neighbours: run index.neighbours.precompute_neighbours"
            )
        if not baseline and chunks.n_precomputed != chunks.n_chunks:
            raise ValueError(
                f"the index's neighbour table covers {chunks.n_precomputed} of {chunks.n_chunks} chunks "
                "(documents were added after it was computed): run `retro index neighbours` again"
            )
        self.config, self.recipe, self.seed = config, recipe, seed
        self.total_steps, self.baseline = total_steps, baseline
        self.k, self.r, self.m = config.n_neighbours, config.retrieved_len, m
        self.seq_len = config.max_seq_len - config.max_seq_len % m  # whole chunks
        self.pad_id = chunks.pad_id
        in_validation = np.array(
            [in_validation_split(d, validation_fraction) for d in chunks.doc_ids], dtype=bool
        )
        keep_doc = (in_validation if split == "validation" else ~in_validation) & ~chunks.removed_docs
        self.chunk_ids = np.nonzero(keep_doc[np.asarray(chunks.doc_index)])[0]  # store ids, in order
        self.n_seq_chunks = self.seq_len // m
        if len(self.chunk_ids) < self.n_seq_chunks + 1:
            raise ValueError(
                f"the {split} split has {len(self.chunk_ids)} chunks; "
                f"a sequence needs {self.n_seq_chunks + 1}"
            )
        self.stream = np.asarray(chunks.tokens)[self.chunk_ids].reshape(-1).astype(np.int64)  # (n*m,)
        self.doc_of_chunk = np.asarray(chunks.doc_index)[self.chunk_ids]
        self.chunks = chunks
        # store chunk id -> row in self.chunk_ids (-1 if that chunk is not in this split)
        self.row_of_store = np.full(chunks.n_chunks, -1, dtype=np.int64)
        self.row_of_store[self.chunk_ids] = np.arange(len(self.chunk_ids))
        prefixes = recipe.read_prefixes
        reading = np.array([bool(prefixes) and d.startswith(prefixes) for d in chunks.doc_ids], dtype=bool)
        # random distractors: any live chunk, or with passage_neighbours a live passage chunk
        eligible_doc = ~chunks.removed_docs & ~reading if recipe.passage_neighbours else ~chunks.removed_docs
        self.live_chunks = np.nonzero(eligible_doc[np.asarray(chunks.doc_index)])[0]
        if not baseline and chunks.never_from != recipe.never_neighbours:
            raise ValueError(
                f"the recipe's neighbours leave out {recipe.never_neighbours or 'nothing'}, the table opened "
                f"leaves out {chunks.never_from or 'nothing'}: open TrainingChunks with never_from="
                f"{recipe.never_neighbours}"
            )
        if not baseline and chunks.query_chunks != recipe.neighbour_query_chunks:
            raise ValueError(
                f"the recipe queries reading chunks with {recipe.neighbour_query_chunks} chunks, the table "
                f"opened with {chunks.query_chunks}: open TrainingChunks with query_chunks="
                f"{recipe.neighbour_query_chunks}"
            )
        self.is_reading_row = reading[self.doc_of_chunk]  # (rows,): the chunk is a reading document's
        self.is_title_row = np.zeros(len(self.chunk_ids), dtype=bool)  # (rows,): neighbours one per title
        title_prefixes = recipe.distinct_title_prefixes
        if title_prefixes and not baseline:
            # the candidates to choose among: a wider table of the same search (the k-table serves
            # every other chunk, so they get exactly the neighbours they get without the knob)
            self.title_candidates = chunks.neighbour_table(TITLE_CANDIDATES)
            by_title = np.array([d.startswith(title_prefixes) for d in chunks.doc_ids], dtype=bool)
            self.is_title_row = by_title[self.doc_of_chunk]
            _, title_of_doc = np.unique(np.array(chunks.titles, dtype=str), return_inverse=True)
            self.doc_of_store_chunk = np.asarray(chunks.doc_index)
            self.title_of_store_chunk = title_of_doc[self.doc_of_store_chunk]
        # sequence starts whose second chunk is a reading document's (its first chunk's neighbours serve it)
        n_starts = len(self.chunk_ids) - self.seq_len // m
        self.reading_starts = np.nonzero(self.is_reading_row[1 : n_starts + 1])[0]
        if recipe.read_share > 0 and len(self.reading_starts) == 0:
            raise ValueError(
                f"read_share={recipe.read_share} but no document matches read_prefix={prefixes!r}"
            )

    @classmethod
    def from_index(cls, index_dir: str | Path, config: RetroConfig, **kwargs) -> TrainingData:
        baseline = kwargs.get("baseline", False)
        recipe = kwargs.get("recipe", Recipe())
        k = None if baseline else config.n_neighbours
        chunks = TrainingChunks(index_dir, k, recipe.never_neighbours, recipe.neighbour_query_chunks)
        return cls(chunks, config, **kwargs)

    @property
    def n_sequences(self) -> int:
        return len(self.chunk_ids) - self.n_seq_chunks

    # --- one batch ----------------------------------------------------------------------------
    def batch(self, step: int, batch_size: int, rank: int = 0, world_size: int = 1) -> Batch:
        starts, shifts = self.draws(step, batch_size, rank, world_size)
        return self.sequences(starts, shifts, step=step, rng_key=(step, rank, world_size))

    def draws(self, step: int, batch_size: int, rank: int = 0, world_size: int = 1):
        """The batch's sequence start rows and left shifts: the token draws alone, which the
        retrieval-in-prompt comparator's data (`retro.in_context_data`) shares."""
        token_rng = np.random.default_rng([self.seed, step, rank, world_size, 0])
        starts = token_rng.integers(0, self.n_sequences, size=batch_size)
        if self.recipe.read_share > 0:
            reading = token_rng.random(batch_size) < self.recipe.read_share
            picks = self.reading_starts[token_rng.integers(0, len(self.reading_starts), size=batch_size)]
            starts = np.where(reading, picks, starts)
        shifts = np.where(
            token_rng.random(batch_size) < self.recipe.left_pad_prob,
            token_rng.integers(1, self.m, size=batch_size) if self.m > 1 else 0,
            0,
        )
        return starts, shifts

    def sequences(self, starts: np.ndarray, shifts: np.ndarray, step: int = 0, rng_key=(0, 0, 1)) -> Batch:
        """The batch for given start rows (in this split's chunk order) and left shifts."""
        T, m = self.seq_len, self.m
        B = len(starts)
        tokens = np.full((B, T + 1), self.pad_id, dtype=np.int64)
        for b, (start, shift) in enumerate(zip(starts, shifts, strict=True)):
            lo = start * m
            tokens[b, shift:] = self.stream[lo : lo + T + 1 - shift]
        inputs, targets = tokens[:, :T], tokens[:, 1:].copy()
        targets[targets == self.pad_id] = IGNORE
        neighbours = None
        if not self.baseline and self.config.uses_retrieval:
            nb_rng = np.random.default_rng([self.seed, *rng_key, 1])
            neighbours = self._neighbours(starts, shifts, nb_rng, step)
        return Batch(
            torch.from_numpy(inputs.copy()),
            torch.from_numpy(targets),
            None if neighbours is None else torch.from_numpy(neighbours),
        )

    def _one_per_title(self, candidates: np.ndarray, k: int) -> np.ndarray:
        """k of a chunk's ranked neighbour candidates (-1 = none): in rank order, each whose document
        is one already chosen or has a title none of the chosen documents has (`distinct_titles`)."""
        chosen, docs, titles = [], set(), set()
        for c in candidates.tolist():
            if c < 0:
                continue
            doc, title = int(self.doc_of_store_chunk[c]), int(self.title_of_store_chunk[c])
            if doc in docs or title not in titles:
                chosen.append(c)
                docs.add(doc)
                titles.add(title)
                if len(chosen) == k:
                    break
        return np.array(chosen + [-1] * (k - len(chosen)), dtype=np.int64)

    def _neighbours(self, starts, shifts, rng, step) -> np.ndarray:
        B, L, k, r, m = len(starts), self.n_seq_chunks, self.k, self.r, self.m
        rows = starts[:, None] + np.arange(L)[None, :]  # (B, L) rows of this split
        store_ids = self.chunk_ids[rows]
        retrieved = np.array(self.chunks.neighbours[store_ids.reshape(-1)]).reshape(B, L, -1)[..., :k]
        # a chunk before a reading document's chunk gets the neighbours retrieved for that chunk
        next_rows = np.minimum(rows + 1, len(self.chunk_ids) - 1)
        reads_next = self.is_reading_row[next_rows]  # (B, L)
        if reads_next.any():
            next_ids = self.chunk_ids[next_rows].reshape(-1)
            retrieved_next = np.array(self.chunks.neighbours[next_ids]).reshape(B, L, -1)[..., :k]
            for b, u in zip(*np.nonzero(reads_next & self.is_title_row[next_rows]), strict=True):
                candidates = np.asarray(self.title_candidates[self.chunk_ids[next_rows[b, u]]])
                retrieved_next[b, u] = self._one_per_title(candidates, k)
            retrieved = np.where(reads_next[..., None], retrieved_next, retrieved)
        # drop neighbours from any document that occurs in the sequence (paper 2.3)
        seq_docs = self.doc_of_chunk[
            np.minimum(rows[:, :1] + np.arange(L + 1)[None, :], len(self.chunk_ids) - 1)
        ]
        nb_docs = np.asarray(self.chunks.doc_index)[np.maximum(retrieved, 0)]
        own = (nb_docs[..., None] == seq_docs[:, None, None, :]).any(-1)
        retrieved = np.where(own, -1, retrieved)
        # distractors: some retrieved slots become random chunks of the whole store (removed
        # documents' chunks excluded)
        randomise = rng.random((B, L, k)) < self.recipe.random_neighbour_prob
        random_ids = self.live_chunks[rng.integers(0, len(self.live_chunks), size=(B, L, k))]
        retrieved = np.where(randomise, random_ids, retrieved)
        # each neighbour shows its chunk and as many of the chunks after it as r holds
        out = self.chunks.neighbour_tokens(retrieved, neighbour_window(m, r))[..., :r]  # (B, L, k, r)
        if out.shape[-1] < r:
            out = np.pad(out, ((0, 0), (0, 0), (0, 0), (0, r - out.shape[-1])), constant_values=self.pad_id)
        # continuation neighbours at random offsets
        share = self.recipe.continuation_share(step, self.total_steps)
        has_cont = (rng.random((B, L)) < share) & ~reads_next
        slot = rng.integers(0, k, size=(B, L))
        max_offset = self.recipe.max_offset if self.recipe.max_offset is not None else max(0, r - m)
        offsets = rng.integers(0, max_offset + 1, size=(B, L))
        # attending positions of chunk u predict stream tokens from (start + u + 1) * m - shift on
        first_target = (starts[:, None] + np.arange(1, L + 1)[None, :]) * m - shifts[:, None]  # (B, L)
        window_start = np.clip(first_target - offsets, 0, max(0, len(self.stream) - r))
        windows = self.stream[window_start[..., None] + np.arange(r)]  # (B, L, r)
        b_idx, u_idx = np.nonzero(has_cont)
        out[b_idx, u_idx, slot[b_idx, u_idx]] = windows[b_idx, u_idx]
        return out.astype(np.int64)

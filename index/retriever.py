"""The retriever: query texts (or LM chunk tokens) -> k neighbours of [chunk + continuation] tokens.

This module owns the shape the model consumes (`Neighbours.tokens` [k, window * chunk_size],
pad_id padded: the chunk and the next window - 1 chunks of its document; RETRO's chunk +
continuation is window 2, a model whose `retrieved_len` is longer gets a wider window), the
optional exclusion of given doc ids (training excludes the sequence's own document, RETRO section
2.3), and the choice between dense retrieval (MiniLM vectors only), hybrid retrieval (the dense
and the BM25 (`index.lexical`) rankings of `candidates` chunks each, merged by reciprocal rank
fusion, so that a query naming a rare or invented word finds the chunks that hold it) and lexical
retrieval (BM25 alone). The BM25 index is built from the store's chunk texts on the first search
that needs it and follows
live additions and removals (a removed document's chunks are found by neither ranking).
Searching, locking and the on-disk arrays belong to `IndexStore`; encoding to the store's encoder.
It never imports `retro`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from index.lexical import LexicalIndex, reciprocal_rank_fusion
from index.store import IndexStore


@dataclass
class Neighbours:
    """The neighbours of one query, best first.

    When the store holds fewer than k eligible chunks, the missing rows are padding: tokens all
    pad_id, score -inf, chunk id -1, doc id "" and text "".
    """

    tokens: np.ndarray  # [k, window * chunk_size] int64: the chunk, then its continuation (pad if none)
    scores: np.ndarray  # [k] float32 cosine similarity (dense), fused rank score (hybrid), BM25 (lexical)
    doc_ids: list[str]
    chunk_ids: np.ndarray  # [k] int64
    texts: list[str]  # decoded chunk text (without the continuation)


# "hybrid-titled" is "hybrid" with BM25 over each chunk's document title + its text (lexical_titles);
# "hybrid-titled-doc" is "hybrid-titled" whose first two neighbours are windows of the best document
# (`top_document_first`), the rest other documents' best windows
# "lexical-titled" is BM25 over each chunk's title + text alone, no MiniLM: a query naming a rare
# word (an invented or uncommon name) gets the chunks of the documents that hold it, where the
# fusion lets chunks ranked middling in both lists (other entities' passages in the same wording)
# outrank the named one (docs/results/cpu-demo-reading12-2026-12-06)
RETRIEVAL_MODES = ("dense", "hybrid", "hybrid-titled", "hybrid-titled-doc", "lexical-titled")
# "hybrid-titled-doc" chooses its k among this many fused candidates
TOP_DOCUMENT_POOL = 16


class Retriever:
    """Batched k-nearest-chunk search over an `IndexStore` (thread-safe like the store)."""

    def __init__(
        self,
        store: IndexStore,
        encoder=None,
        mode: str = "dense",
        candidates: int = 32,
        lexical_titles: bool = False,
        window: int = 2,
    ):
        if mode not in RETRIEVAL_MODES:
            raise ValueError(f"unknown retrieval mode {mode!r}; modes: {', '.join(RETRIEVAL_MODES)}")
        if window < 1:
            raise ValueError(f"a neighbour window holds at least its own chunk, got window={window}")
        self.store = store
        self.window = window  # chunks a neighbour shows: its own and window - 1 continuations
        self._encoder = encoder
        self.mode, self.candidates = mode, candidates
        # BM25 sees each chunk under its document's title: a passage's later chunks name their
        # subject by a pronoun or a surname, and the title lets a question naming it find them too
        self.lexical_titles = lexical_titles or "-titled" in mode
        self._lexical: LexicalIndex | None = None
        self._lexical_lock = threading.Lock()

    def lexical_index(self) -> LexicalIndex:
        """The BM25 index of the store's chunks, extended with chunks added since the last call and
        without the chunks of documents removed since."""
        with self._lexical_lock:
            if self._lexical is None:
                self._lexical = LexicalIndex()
            done, total = len(self._lexical), self.store.n_chunks
            pad_id = self.store.pad_id
            for start in range(done, total, 4096):
                ids = np.arange(start, min(total, start + 4096))
                rows = self.store.chunk_tokens(ids)
                texts = self.store.tokenizer.decode_batch([r[r != pad_id].tolist() for r in rows])
                if self.lexical_titles:
                    texts = [f"{t}\n{x}" for t, x in zip(self.store.chunk_titles(ids), texts, strict=True)]
                self._lexical.add(texts)
            removed = self.store.removed_chunk_ids()
            if len(removed) != self._lexical.n_removed:
                self._lexical.remove(removed)
            return self._lexical

    @property
    def encoder(self):
        return self._encoder if self._encoder is not None else self.store.encoder

    def search(
        self, texts: list[str], k: int, exclude_doc_ids: list[set[str]] | None = None
    ) -> list[Neighbours]:
        """One `Neighbours` per text; `exclude_doc_ids[i]` lists doc ids query i must not get."""
        if isinstance(texts, str):
            raise ValueError("search takes a list of texts, not one string")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if not texts:
            return []
        if self.mode == "lexical-titled":
            return self._hybrid(list(texts), None, k, exclude_doc_ids)
        vectors = self.encoder.encode(list(texts))
        if self.mode == "hybrid-titled-doc":
            pool = self._hybrid(list(texts), vectors, max(k, TOP_DOCUMENT_POOL), exclude_doc_ids)
            return [top_document_first(found, k, window=self.window) for found in pool]
        if self.mode != "dense":  # hybrid or hybrid-titled
            return self._hybrid(list(texts), vectors, k, exclude_doc_ids)
        found = self.store.nearest_chunks(vectors, k, exclude_doc_ids, self.window)
        m = self.store.chunk_size
        chunk_texts = self.store.tokenizer.decode_batch(
            [
                row[row != self.store.pad_id].tolist()
                for row in found.tokens.reshape(-1, self.window * m)[:, :m]
            ]
        )
        return [
            Neighbours(
                tokens=found.tokens[i],
                scores=found.scores[i],
                doc_ids=found.doc_ids[i],
                chunk_ids=found.chunk_ids[i],
                texts=[
                    t if c >= 0 else ""
                    for t, c in zip(chunk_texts[i * k : (i + 1) * k], found.chunk_ids[i], strict=True)
                ],
            )
            for i in range(len(texts))
        ]

    def search_tokens(
        self, chunk_tokens: np.ndarray, k: int, exclude_doc_ids: list[set[str]] | None = None
    ) -> list[Neighbours]:
        """Like `search` for LM token chunks [n, chunk_size] (pad_id ignored): decoded, then searched."""
        chunk_tokens = np.asarray(chunk_tokens)
        if chunk_tokens.ndim != 2:
            raise ValueError(f"chunk_tokens must be [n, chunk_size], got shape {chunk_tokens.shape}")
        pad_id = self.store.pad_id
        texts = self.store.tokenizer.decode_batch([row[row != pad_id].tolist() for row in chunk_tokens])
        return self.search(list(texts), k, exclude_doc_ids)

    def _hybrid(self, texts: list[str], vectors, k: int, exclude_doc_ids) -> list[Neighbours]:
        """The dense and BM25 rankings fused; BM25's alone when `vectors` is None, filled up to k
        from the dense ranking when fewer than k chunks share a word with the query (a k asked for
        is a k returned whenever the store holds k eligible chunks)."""
        n = max(self.candidates, k)
        dense = self.store.nearest_chunks(vectors, n, exclude_doc_ids) if vectors is not None else None
        lexical = self.lexical_index()
        chosen = np.full((len(texts), k), -1, dtype=np.int64)
        fused_scores = np.full((len(texts), k), -np.inf, dtype=np.float32)
        for i, text in enumerate(texts):
            banned = exclude_doc_ids[i] if exclude_doc_ids else None
            allowed = None
            if banned:

                def allowed(ids, banned=banned):
                    return np.array([d not in banned for d in self.store.chunk_doc_ids(ids)], dtype=bool)

            sparse, sparse_scores = lexical.search(text, n, allowed)
            if dense is None:
                best = list(zip(sparse[:k].tolist(), sparse_scores[:k].tolist(), strict=True))
                if len(best) < k:  # too few chunks share a word: the rest by meaning, scored 0
                    nearest = self.store.nearest_chunks(
                        self.encoder.encode([text]), k, [banned] if banned else None
                    ).chunk_ids[0]
                    taken = {c for c, _ in best}
                    best += [(int(c), 0.0) for c in nearest if c >= 0 and int(c) not in taken][
                        : k - len(best)
                    ]
            else:
                best = reciprocal_rank_fusion([dense.chunk_ids[i].tolist(), sparse.tolist()], k)
            chosen[i, : len(best)] = [c for c, _ in best]
            fused_scores[i, : len(best)] = [score for _, score in best]
        tokens = self.store.chunks_with_continuations(chosen, window=self.window)
        m = self.store.chunk_size
        chunk_texts = self.store.tokenizer.decode_batch(
            [row[row != self.store.pad_id].tolist() for row in tokens.reshape(-1, self.window * m)[:, :m]]
        )
        result = []
        for i in range(len(texts)):
            doc_ids = self.store.chunk_doc_ids(chosen[i])
            row_texts = [
                t if c >= 0 else "" for t, c in zip(chunk_texts[i * k : (i + 1) * k], chosen[i], strict=True)
            ]
            result.append(Neighbours(tokens[i], fused_scores[i], doc_ids, chosen[i], row_texts))
        return result


def top_document_first(
    found: Neighbours, k: int, groups: list[str] | None = None, window: int = 2
) -> Neighbours:
    """k of `found`'s ranked candidates: the best one, then the best of its own document's other
    candidates whose window (the chunk and its next window - 1 chunks) shares no chunk with it,
    then the best candidate of each other document in rank order; the ranked order fills whatever
    is left. With `groups` (a key per candidate, e.g. its document's title), "its own
    document" is any candidate of the best one's group (tried as a retrieval rule on the reading
    set, not adopted: docs/results/cpu-demo-reading10-2026-12-06).

    Why: a neighbour shows one window of 2 chunks, and a question names its entity in one chunk of
    a long passage (a dialogue, a letter) while the answer sits in another; with k=2 the second
    neighbour was mostly another document (a look-alike, an unrelated one) or the window right
    after the first, overlapping it. On the dev reading set (2026-12-06) the answer was shown for
    716 of 924 questions, reworded prompts, look-alikes and updates with this choice, 663 with the
    ranked top 2 (docs/results/cpu-demo-reading9-2026-12-06).
    """
    ranked = [j for j in range(len(found.chunk_ids)) if found.chunk_ids[j] >= 0]
    groups = found.doc_ids if groups is None else groups
    chosen: list[int] = ranked[:1]
    if ranked:
        top = ranked[0]
        covered = set(range(int(found.chunk_ids[top]), int(found.chunk_ids[top]) + window))
        for j in ranked[1:]:
            shows = set(range(int(found.chunk_ids[j]), int(found.chunk_ids[j]) + window))
            if groups[j] == groups[top] and not shows & covered:
                chosen.append(j)
                break
        documents = {found.doc_ids[j] for j in chosen}
        for j in ranked[1:]:
            if len(chosen) >= k:
                break
            if j not in chosen and found.doc_ids[j] not in documents:
                chosen.append(j)
                documents.add(found.doc_ids[j])
    chosen = chosen[:k]
    chosen += [j for j in range(len(found.chunk_ids)) if j not in chosen][: k - len(chosen)]
    return Neighbours(
        tokens=found.tokens[chosen],
        scores=found.scores[chosen],
        doc_ids=[found.doc_ids[j] for j in chosen],
        chunk_ids=found.chunk_ids[chosen],
        texts=[found.texts[j] for j in chosen],
    )

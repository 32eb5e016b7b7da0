"""Lexical search over chunk texts (BM25), the sparse half of hybrid retrieval.

A dense sentence encoder confuses invented or rare names that share subwords ("Stoqueirirk" and
"Stoquerik" embed close together), and a user's documents are full of such names: measured on the
reading set's dev prompts against the demo index (2026-12-01), MiniLM put the passage that states
the answer among the top 2 chunks for only 40% of questions. BM25 matches the exact word. This
module owns an in-memory BM25 index (Robertson's weighting, k1 = 1.2, b = 0.75) over chunk texts,
words being lower-cased `\\w+` runs, grown by `add` as chunks are appended and shrunk by
`remove` as documents are removed (a removed chunk is never returned, and the statistics,
document frequencies and the average length, leave it out as if it had never been added), and
`reciprocal_rank_fusion`, which merges a dense and a lexical ranking (Cormack et al. 2009, k = 60).
It is built from the store's chunk texts when first needed (`index.retriever`), never written to
disk, and knows nothing of tokens, embeddings or the model.
"""

from __future__ import annotations

import math
import re
import threading
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence

import numpy as np

_WORD = re.compile(r"\w+")
K1, B = 1.2, 0.75
RRF_K = 60  # the fusion constant of Cormack et al.; larger values flatten the rank differences
COMMON_SHARE = 0.5  # a word in more than half of all chunks says nothing (its BM25 weight is ~0)


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


class LexicalIndex:
    """BM25 over a growing list of texts; text i is chunk id i. Thread-safe."""

    def __init__(self, texts: Iterable[str] = ()):
        self._postings: dict[str, list[int]] = defaultdict(list)
        self._counts: dict[str, list[int]] = defaultdict(list)
        self._lengths: list[int] = []
        self._total_length = 0
        self._removed: set[int] = set()
        self._removed_array = np.zeros(0, dtype=np.int64)
        self._removed_length = 0
        # numpy views built on first use and dropped on `add` and `remove` (postings without the
        # removed chunks): a search then costs the query's postings, not a conversion of every
        # chunk length and posting list
        self._length_array: np.ndarray | None = None
        self._arrays: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._lock = threading.Lock()
        self.add(texts)

    def __len__(self) -> int:
        """Texts added, removed ones included (the next text added gets this id)."""
        return len(self._lengths)

    @property
    def n_removed(self) -> int:
        return len(self._removed)

    def remove(self, chunk_ids: Iterable[int]) -> None:
        """Removes chunks: never found again, left out of the statistics. Ids removed already,
        or never added, are ignored."""
        with self._lock:
            new = {int(c) for c in chunk_ids if 0 <= int(c) < len(self._lengths)} - self._removed
            if not new:
                return
            self._removed |= new
            self._removed_array = np.asarray(sorted(self._removed), dtype=np.int64)
            self._removed_length += sum(self._lengths[c] for c in new)
            self._arrays.clear()

    def add(self, texts: Iterable[str]) -> None:
        with self._lock:
            self._length_array = None
            self._arrays.clear()
            for text in texts:
                counts = Counter(words(text))
                chunk_id = len(self._lengths)
                self._lengths.append(sum(counts.values()))
                self._total_length += self._lengths[-1]
                for word, n in counts.items():
                    self._postings[word].append(chunk_id)
                    self._counts[word].append(n)

    def search(self, query: str, n: int, allowed=None) -> tuple[np.ndarray, np.ndarray]:
        """The `n` best chunk ids for `query` with their BM25 scores, best first (only chunks with a
        score above 0). `allowed(chunk_ids) -> bool mask`, when given, filters candidates first."""
        with self._lock:
            total = len(self._lengths) - len(self._removed)  # the chunks that count
            if total == 0 or n < 1:
                return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
            if self._length_array is None:
                self._length_array = np.asarray(self._lengths, dtype=np.float32)
            lengths = self._length_array
            average = (self._total_length - self._removed_length) / total
            scores = np.zeros(len(self._lengths), dtype=np.float32)
            for word in set(words(query)):
                if word not in self._postings:
                    continue
                if word not in self._arrays:
                    self._arrays[word] = self._posting_arrays(word)
                ids_a, tf = self._arrays[word]
                if not len(ids_a) or len(ids_a) > COMMON_SHARE * total:
                    continue
                idf = math.log(1 + (total - len(ids_a) + 0.5) / (len(ids_a) + 0.5))
                norm = tf + K1 * (1 - B + B * lengths[ids_a] / average)
                np.add.at(scores, ids_a, idf * tf * (K1 + 1) / norm)
        candidates = np.nonzero(scores > 0)[0]
        if allowed is not None and len(candidates):
            candidates = candidates[allowed(candidates)]
        if len(candidates) > n:
            candidates = candidates[np.argpartition(-scores[candidates], n - 1)[:n]]
        order = np.argsort(-scores[candidates], kind="stable")
        return candidates[order], scores[candidates[order]]

    def _posting_arrays(self, word: str) -> tuple[np.ndarray, np.ndarray]:
        """(chunk ids, term counts) of a word's postings without removed chunks (under the lock)."""
        ids = np.asarray(self._postings[word], dtype=np.int64)
        tf = np.asarray(self._counts[word], dtype=np.float32)
        if self._removed:
            live = ~np.isin(ids, self._removed_array)
            ids, tf = ids[live], tf[live]
        return ids, tf


def reciprocal_rank_fusion(
    rankings: Sequence[Sequence[int]], k: int, rrf_k: int = RRF_K
) -> list[tuple[int, float]]:
    """The `k` (id, fused score) pairs with the highest sum of 1 / (rrf_k + rank) over the rankings
    (rank 1 = best; ids < 0 are padding and skipped); ties keep the first ranking's order."""
    fused: dict[int, float] = {}
    first_seen: dict[int, int] = {}
    for ranking in rankings:
        for rank, item in enumerate(ranking, start=1):
            if item < 0:
                continue
            fused[item] = fused.get(item, 0.0) + 1.0 / (rrf_k + rank)
            first_seen.setdefault(item, len(first_seen))
    best = sorted(fused, key=lambda item: (-fused[item], first_seen[item]))[:k]
    return [(item, fused[item]) for item in best]

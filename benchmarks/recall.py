"""Recall@k of one search's result ids against a reference search's, shared by the benchmarks."""

from __future__ import annotations

import numpy as np


def recall_at_k(found: np.ndarray, reference: np.ndarray) -> float:
    """The mean share of each query's reference ids (rows of [n, k]) that `found` also returned."""
    k = reference.shape[1]
    return float(np.mean([len(set(f) & set(r)) / k for f, r in zip(found, reference, strict=True)]))

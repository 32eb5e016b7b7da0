"""Slices of one build: a corpus embedded by N workers, a share of the documents each, into one version.

This module owns the bookkeeping of a sliced build (docs/scale.md): how the documents are split
(`slice_bounds`: N contiguous ranges of about equal text length, the same on every worker given the
same documents), where a slice keeps its work, how a finished slice is recorded, and the checks
that every worker is building the same thing. The embedding itself and the assembly of the
version are `index.build`'s (`embed_slice`, `build_index`); this module never encodes or indexes.

A slice's work lives beside a one-worker build's, in the build's work folder, keyed by the same
settings (corpus fingerprint, tokenizer, chunk size, encoder, shard size):

    OUT/work/<key>/settings.json            the settings the key hashes, written by every worker
    OUT/work/<key>/slice-<I>-of-<N>/        slice I's embedding shards (embeddings-00000.npy, ...)
        chunks.npz                          its chunk arrays: tokens, doc_index (of the whole corpus),
                                            position; written when every shard is on disk
        done.json                           written last: its document range, counts and timings

A slice is done when its done.json and all the shards it counts are on disk. Workers of different
settings get different keys, so they cannot mix their shards; `check_slice_conflicts` turns the
silent case (a worker that was given another chunk size, tokenizer or corpus) into an error that
names the difference, and refuses a second slice count for the same build.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from index.layout import WORK_DIR, atomic_writer, read_json, write_atomic

SETTINGS_FILE = "settings.json"
SLICE_CHUNKS = "chunks.npz"
SLICE_DONE = "done.json"
_SPEC = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")
_FOLDER = re.compile(r"^slice-(\d+)-of-(\d+)$")


@dataclass(frozen=True)
class Slice:
    """Slice `index` (0-based) of `count`."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ValueError(f"a build has at least 1 slice, got {self.count}")
        if not 0 <= self.index < self.count:
            raise ValueError(f"slice {self.index}/{self.count}: I must be in 0..{self.count - 1}")

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    @property
    def folder_name(self) -> str:
        return f"slice-{self.index}-of-{self.count}"


def parse_slice(spec: str) -> Slice:
    """ "I/N" -> Slice(I, N), 0 <= I < N; ValueError saying what is wrong otherwise."""
    match = _SPEC.match(spec)
    if not match:
        raise ValueError(f"--slice {spec!r}: expected I/N, e.g. 0/4 for the first of 4 slices")
    return Slice(int(match.group(1)), int(match.group(2)))


def slice_bounds(text_lengths: Sequence[int], count: int) -> list[int]:
    """count+1 document indices b, slice i = documents b[i]:b[i+1]: contiguous ranges of about
    equal text length (the encoder's cost follows the chunk count, which follows the text), in
    corpus order, so the slices' chunks one after another are the one-worker build's chunks.
    Slice i starts at the first document whose text begins at or after i/count of the total."""
    if count < 1:
        raise ValueError(f"a build has at least 1 slice, got {count}")
    lengths = np.asarray(text_lengths, dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]) if len(lengths) else lengths
    total = int(lengths.sum())
    # Integer arithmetic (start * count >= i * total), so every machine cuts at the same documents.
    bounds = [int(np.searchsorted(starts * count, i * total, side="left")) for i in range(count)]
    return [*bounds, len(lengths)]


def slice_dir(work: Path, part: Slice) -> Path:
    return work / part.folder_name


def slices_on_disk(work: Path) -> list[Slice]:
    """The slice folders a work folder holds, in (count, index) order."""
    found = []
    if work.is_dir():
        for path in work.iterdir():
            if path.is_dir() and (match := _FOLDER.match(path.name)):
                index, count = int(match.group(1)), int(match.group(2))
                if 0 <= index < count:
                    found.append(Slice(index, count))
    return sorted(found, key=lambda s: (s.count, s.index))


def slice_count(work: Path) -> int | None:
    """The number of slices the build in `work` was cut into; None when it holds no slice;
    ValueError when it holds slices of two counts (workers given different N)."""
    counts = sorted({s.count for s in slices_on_disk(work)})
    if len(counts) > 1:
        raise ValueError(
            f"{work} holds slices of {' and of '.join(map(str, counts))}: every worker must be given "
            f"the same N in --slice I/N (delete the folders of the count not wanted)"
        )
    return counts[0] if counts else None


def write_settings(work: Path, settings: dict, n_documents: int) -> None:
    write_atomic(work / SETTINGS_FILE, json.dumps({**settings, "n_documents": n_documents}, indent=1))


def _differences(ours: dict, theirs: dict) -> str:
    names = {"corpus": "corpus fingerprint", "tokenizer": "tokenizer fingerprint"}
    parts = []
    for key in sorted(set(ours) | set(theirs)):
        a, b = ours.get(key), theirs.get(key)
        if a != b and key != "n_documents":
            short = [str(v)[:12] if key in names else str(v) for v in (b, a)]
            parts.append(f"{names.get(key, key)} {short[0]} there, {short[1]} here")
    if ours.get("n_documents") != theirs.get("n_documents"):
        parts.append(f"{theirs.get('n_documents')} documents there, {ours.get('n_documents')} here")
    return "; ".join(parts)


def other_sliced_builds(out_dir: Path, key: str, settings: dict, n_documents: int) -> list[str]:
    """One line per other work folder of out_dir that holds slices: its settings against these."""
    ours = {**settings, "n_documents": n_documents}
    lines = []
    for work in sorted((Path(out_dir) / WORK_DIR).glob("*")):
        if work.name == key or not slices_on_disk(work):
            continue
        try:
            theirs = read_json(work / SETTINGS_FILE)
        except (OSError, ValueError):
            theirs = {}
        lines.append(f"{work} holds slices of a build with other settings ({_differences(ours, theirs)})")
    return lines


def check_slice_conflicts(out_dir: Path, key: str, settings: dict, n_documents: int, part: Slice) -> None:
    """ValueError when this build's work folder holds slices of another count, or another work
    folder holds slices of a build with other settings (a worker given other sources, tokenizer,
    chunk size, shard size or encoder); the message names the difference."""
    work = Path(out_dir) / WORK_DIR / key
    counts = sorted({s.count for s in slices_on_disk(work)} - {part.count})
    if counts:
        raise ValueError(
            f"{work} holds slices of a build cut into {counts[0]}, not {part.count}: every worker must "
            f"be given the same N in --slice I/N (delete {work}/slice-*-of-{counts[0]} to start over)"
        )
    others = other_sliced_builds(out_dir, key, settings, n_documents)
    if others:
        raise ValueError(
            f"{others[0]}: every worker must be given the same sources, tokenizer, --chunk-size, "
            f"--shard-size and encoder (delete that folder if its build is abandoned)"
        )


# --- a finished slice -----------------------------------------------------------------------------
def save_slice_chunks(folder: Path, tokens: np.ndarray, doc_index: np.ndarray, position: np.ndarray) -> None:
    with atomic_writer(folder / SLICE_CHUNKS, binary=True) as f:
        np.savez(f, tokens=tokens, doc_index=doc_index, position=position)


def load_slice_chunks(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    with np.load(folder / SLICE_CHUNKS) as arrays:
        return arrays["tokens"], arrays["doc_index"], arrays["position"]


def write_slice_done(folder: Path, record: dict) -> None:
    write_atomic(folder / SLICE_DONE, json.dumps(record, indent=1))


def read_slice_done(folder: Path, first_document: int, end_document: int, shard_file) -> dict | None:
    """The slice's done.json when the slice is complete: the record, its chunk arrays and every
    shard it counts on disk, and its document range the one expected; None otherwise (the slice
    still has work to do: a rerun encodes only its missing shards)."""
    try:
        record = read_json(folder / SLICE_DONE)
    except (OSError, ValueError):
        return None
    if (record.get("first_document"), record.get("end_document")) != (first_document, end_document):
        return None
    shards = [shard_file(folder, shard) for shard in range(record.get("shards", 0))]
    if not (folder / SLICE_CHUNKS).is_file() or not all(p.is_file() for p in shards):
        return None
    return record


@dataclass
class SliceReport:
    """What one worker did: its slice, documents first_document:end_document, and its work."""

    slice: str  # "I/N"
    work_dir: str
    first_document: int
    end_document: int
    n_chunks: int
    shards: int
    shards_reused: int  # found on disk from an interrupted earlier run of this slice
    embed_seconds: float
    seconds: float
    already_done: bool  # the slice was complete before this run: nothing was tokenized or encoded

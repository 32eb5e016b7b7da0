"""The named sources `wordnet`, `gcide`, `foldoc`, `jargon`: Debian's dictd dictionaries.

This module owns reading a dictd dictionary (`apt-get install dict-wn dict-gcide dict-foldoc
dict-jargon`; `RETRO_DICTD_DIR` overrides `/usr/share/dictd`) into one document per entry, and
their rows of the named-source table (`SOURCES`, collected by `index.sources`).
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Iterator
from pathlib import Path

from index.corpus import Document, NamedSource, SkippedInput, decode_text

# Named dictd dictionaries: our source name -> (file stem in /usr/share/dictd, Debian package).
DICTD_SOURCES = {
    "wordnet": ("wn", "dict-wn"),
    "gcide": ("gcide", "dict-gcide"),
    "foldoc": ("foldoc", "dict-foldoc"),
    "jargon": ("jargon", "dict-jargon"),
}
DEFAULT_DICTD_DIR = "/usr/share/dictd"
_DICTD_B64 = {c: i for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")}


def _dictd_number(field: str) -> int:
    """dictd's .index offsets are base-64 numbers, most significant digit first."""
    value = 0
    for char in field:
        value = value * 64 + _DICTD_B64[char]
    return value


def dictd_paths(source: str) -> tuple[Path, Path]:
    stem, package = DICTD_SOURCES[source]
    folder = Path(os.environ.get("RETRO_DICTD_DIR", DEFAULT_DICTD_DIR))
    index_path, dict_path = folder / f"{stem}.index", folder / f"{stem}.dict.dz"
    if not index_path.is_file() or not dict_path.is_file():
        raise ValueError(
            f"source {source!r} needs {index_path} and {dict_path}: install the Debian package "
            f"(apt-get install {package})"
        )
    return index_path, dict_path


def read_dictd(source: str, skipped: list[SkippedInput]) -> Iterator[Document]:
    """One document per dictionary entry; doc_id = "<source>/<headword>" (+ "#n" for repeats).

    The .dict.dz file is dictzip, which is gzip-compatible, so it is read whole with `gzip`.
    Several headwords may point to one entry (aliases): each entry is yielded once.
    """
    index_path, dict_path = dictd_paths(source)
    try:
        data = gzip.decompress(dict_path.read_bytes())
    except (OSError, EOFError) as e:
        raise ValueError(f"{dict_path} is not a readable dictzip file: {e}") from e
    seen_offsets: set[int] = set()
    seen_ids: dict[str, int] = {}
    with open(index_path, encoding="utf-8", errors="replace") as f:
        for line in f:
            fields = line.rstrip("\n").split("\t")
            if len(fields) < 3 or fields[0].startswith("00-database") or fields[0].startswith("00database"):
                continue
            headword = fields[0]
            try:
                offset, length = _dictd_number(fields[1]), _dictd_number(fields[2])
            except KeyError:
                skipped.append(SkippedInput(f"{source}/{headword}", "bad offset in .index"))
                continue
            if offset in seen_offsets:
                continue
            seen_offsets.add(offset)
            text, reason = decode_text(data[offset : offset + length])
            if text is None:
                skipped.append(SkippedInput(f"{source}/{headword}", reason))
                continue
            count = seen_ids.get(headword, 0) + 1
            seen_ids[headword] = count
            doc_id = f"{source}/{headword}" + (f"#{count}" if count > 1 else "")
            yield Document(doc_id=doc_id, text=text.strip(), source=source, title=headword)


def _source(name: str) -> NamedSource:
    return NamedSource(read=lambda skipped: read_dictd(name, skipped), check=lambda: dictd_paths(name))


SOURCES = {name: _source(name) for name in DICTD_SOURCES}

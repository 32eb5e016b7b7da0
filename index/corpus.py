"""Documents, and the readers of raw text files: a folder, a .jsonl file, one text file.

This module owns `Document` (what every source yields and the index stores), `SkippedInput` (a bad
input and why) and `NamedSource` (one row of the named-source table, `index.sources`). Bad inputs
(binary, invalid UTF-8, empty, broken JSON lines) are skipped and recorded as `SkippedInput`s with
a reason, never raised: a build must not die on one odd file. It does not tokenize, chunk or
encode, and imports nothing of the project.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

TEXT_SUFFIXES = (".txt", ".md")
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


def _installed() -> None:
    """The check of a named source whose data ships with the project's own dependencies."""


@dataclass(frozen=True)
class NamedSource:
    """How to read one named source (e.g. `wordnet`, `facts:train`).

    read(skipped) yields its documents and appends bad inputs to skipped; check() raises the
    ValueError that read would raise when the source's data is not installed (saying what to
    install), without reading a document."""

    read: Callable[[list[SkippedInput]], Iterable[Document]]
    check: Callable[[], object] = _installed


# --- text files -----------------------------------------------------------------------------------
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


def read_text_file(path: Path, doc_id: str, skipped: list[SkippedInput]) -> Document | None:
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
            document = read_text_file(path, doc_id, skipped)
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

"""Source specs -> documents: a path (folder, .jsonl, text file) or a name in the named-source table.

This module owns `NAMED_SOURCES`, the table of every named source, in the order the CLI and the
service list them: `wiki-vital` (Wikipedia vital-article leads, `index.wiki_vital`),
`wiki-vital:train` (without the held-out entities' own leads, `index.leakage`) and those leads,
`wiki-vital:heldout`, `wiki-vital:dev`, `wiki-vital:test` (general text for `retro eval`), `facts`,
`facts:train`, `facts:heldout`, `facts:dev`, `facts:test` and their question-and-answer documents
`facts-qa`, `facts-qa:train`, `facts-qa:heldout` (`index.facts`), their paraphrases for training
`facts-qa-para:train` (`index.facts_paraphrase`), the reading set `reading:train`,
`reading:dev`, `reading:test` (`index.reading`), the long prompts `reading-qa-long:train`
(`index.reading_long`), the training-only `reading-more:train` and
`reading-more-qa:train` (`index.reading_more`), the question paraphrases `reading-qa-para:train`
(`index.reading_paraphrase`), the reworded statements `reading-rew:train`
(`index.reading_reworded`), the update notices `reading-upd:train` and their questions
`reading-upd-qa:train` (`index.reading_updates`), more training style families
`reading-styles:train` (`index.reading_styles`), questions over the training leads of wiki-vital
`wiki-qa:train` (`index.wiki_qa`), and the Debian dictd dictionaries `wordnet`,
`gcide`, `foldoc`, `jargon` (`index.dictd`). Each source module declares its own rows
as `SOURCES: dict[str, index.corpus.NamedSource]`; a new one joins the table with one import
and one `**module.SOURCES` row below. Paths are read by `index.corpus`'s readers. It never
imports `retro`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from index import (
    dictd,
    facts,
    facts_paraphrase,
    leakage,
    reading,
    reading_long,
    reading_more,
    reading_paraphrase,
    reading_reworded,
    reading_styles,
    reading_updates,
    wiki_qa,
    wiki_vital,
)
from index.corpus import Document, NamedSource, SkippedInput, read_folder, read_jsonl, read_text_file

NAMED_SOURCES: dict[str, NamedSource] = {
    **wiki_vital.SOURCES,
    **leakage.SOURCES,
    **facts.SOURCES,
    **facts_paraphrase.SOURCES,
    **reading.SOURCES,
    **reading_long.SOURCES,
    **reading_more.SOURCES,
    **reading_paraphrase.SOURCES,
    **reading_reworded.SOURCES,
    **reading_styles.SOURCES,
    **reading_updates.SOURCES,
    **wiki_qa.SOURCES,
    **dictd.SOURCES,
}


def read_sources(sources: list[str], skipped: list[SkippedInput]) -> Iterator[Document]:
    """Yields the documents of every source in order; appends bad inputs to `skipped`.

    Raises ValueError for a source that is neither an existing path nor a named source, and for a
    named source whose data is not installed (the message says what to install).
    """
    for source in sources:
        yield from read_source(source, skipped)


def read_source(source: str, skipped: list[SkippedInput]) -> Iterator[Document]:
    if source in NAMED_SOURCES:
        yield from NAMED_SOURCES[source].read(skipped)
        return
    path = Path(source)
    if path.is_dir():
        yield from read_folder(path, skipped)
    elif path.is_file() and path.suffix == ".jsonl":
        yield from read_jsonl(path, skipped)
    elif path.is_file():
        document = read_text_file(path, f"{path.parent.name}/{path.name}", skipped)
        if document is not None:
            yield document
    else:
        raise _unknown(source)


def check_sources(sources: list[str]) -> None:
    """Raises the ValueError `read_source` would raise, without reading any document."""
    for source in sources:
        if source in NAMED_SOURCES:
            NAMED_SOURCES[source].check()
        elif not Path(source).exists():
            raise _unknown(source)


def _unknown(source: str) -> ValueError:
    return ValueError(
        f"unknown source {source!r}: not an existing folder or file, and not one of the named "
        f"sources {', '.join(NAMED_SOURCES)}"
    )

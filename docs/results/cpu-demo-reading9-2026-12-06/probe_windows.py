"""Retrieval only, no model: for the reading set's questions, reworded prompts, look-alikes and
updates, is the answer in the neighbours the prompt's last chunk gets, under the ranked top 2 of
`hybrid-titled` and under other choices among the same 16 fused candidates?

    PYTHONPATH=. python probe_windows.py SERVE_INDEX MODEL [dev|test]

Rules: `top2` (the service's), `top4`, `no-overlap` (skip a window sharing a chunk with one
chosen), `doc-best-window` (the two best documents, each shown by its candidate window holding
most of the query's words), `top-document-first` (`index.retriever.top_document_first`: the best
window, then its own document's best non-overlapping one).
"""

import re
import sys
import tempfile
from collections import Counter, defaultdict

from index.facts import fact_documents
from index.fictional import fictional_documents
from index.reading import evaluation_set
from index.retriever import Retriever, top_document_first
from index.store import IndexStore, copy_serving_version
from retro.checkpoint import load_checkpoint
from retro.scoring import answer_contained

STOP = set(
    [
        "the",
        "and",
        "was",
        "what",
        "which",
        "who",
        "whom",
        "whose",
        "where",
        "when",
        "how",
        "did",
        "does",
        "for",
        "with",
        "that",
        "this",
        "from",
        "into",
        "its",
        "his",
        "her",
        "their",
        "are",
        "has",
        "have",
        "had",
        "year",
        "name",
        "of",
        "in",
        "on",
        "at",
        "by",
        "to",
        "is",
    ]
)
KINDS = ("question", "question_trained_form", "reworded", "lookalike", "update")
POOL = 16


def main(index: str, model: str, split: str) -> None:
    ev = evaluation_set(split)
    items = [i for i in ev.items if i.kind in KINDS]
    _, tokenizer, _ = load_checkpoint(model)
    with tempfile.TemporaryDirectory() as scratch:
        store = IndexStore.open(copy_serving_version(index, scratch), tokenizer, None)
        store.add_documents(list(fact_documents("heldout")) + fictional_documents() + ev.documents)
        retriever = Retriever(store, mode="hybrid-titled")
        m, pad = store.chunk_size, store.pad_id
        queries = [tokenizer.decode(tokenizer.encode(item.prompt)[-m:]) for item in items]
        stats: dict[str, Counter] = defaultdict(Counter)
        for item, query, found in zip(items, queries, retriever.search(queries, POOL), strict=True):
            texts = [tokenizer.decode([t for t in row.tolist() if t != pad]) for row in found.tokens]
            ranked = [j for j in range(POOL) if found.chunk_ids[j] >= 0]

            def window(j, found=found):
                return {int(found.chunk_ids[j]), int(found.chunk_ids[j]) + 1}

            asked = {w for w in re.findall(r"[a-z]+", query.lower()) if len(w) > 2 and w not in STOP}
            asked -= set(re.findall(r"[a-z]+", item.entity.split("/")[-1].replace("-", " ")))

            def overlap(j, asked=asked, texts=texts):
                return len(asked & set(re.findall(r"[a-z]+", texts[j].lower())))

            rules = {"top2": ranked[:2], "top4": ranked[:4]}
            chosen, covered = [], set()
            for j in ranked:
                if not window(j) & covered:
                    chosen.append(j)
                    covered |= window(j)
                if len(chosen) == 2:
                    break
            rules["no-overlap"] = chosen
            documents = list(dict.fromkeys(found.doc_ids[j] for j in ranked))[:2]
            rules["doc-best-window"] = [
                max((j for j in ranked if found.doc_ids[j] == d), key=lambda j: (overlap(j), -j))
                for d in documents
            ]
            picked = top_document_first(found, 2)
            row = stats[f"{item.kind}/{item.family}"]
            row["n"] += 1
            row["passage retrieved (top2)"] += any(d in item.evidence for d in found.doc_ids[:2])
            for name, js in rules.items():
                row[name] += any(answer_contained(item.answer, texts[j]) for j in js)
            shown = [tokenizer.decode([t for t in r.tolist() if t != pad]) for r in picked.tokens]
            row["top-document-first"] += any(answer_contained(item.answer, t) for t in shown)
        total: Counter = Counter()
        for name in sorted(stats):
            total.update(stats[name])
            print(name, dict(stats[name]))
        print("all", dict(total))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else "dev")

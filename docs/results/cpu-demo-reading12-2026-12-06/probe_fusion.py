"""Retrieval only, no model: for the reading set's prefixes, questions, reworded prompts,
look-alikes and updates, is the answer's passage among the top 2, and the answer in their
128-token windows, when the 96-token query is ranked by MiniLM alone (dense), BM25 over title and
text alone (bm25: `lexical-titled`), the two fused by reciprocal rank (rrf: `hybrid-titled`; rrf10:
rank constant 10 instead of 60; rrf-sparse2x: BM25's ranking counted twice), or BM25's best chunk
first and the fused ranking's best other second (bm25-first)?

    PYTHONPATH=. python probe_fusion.py SERVE_INDEX MODEL [dev|test]
"""

import sys
from collections import Counter, defaultdict

from probe_len import reading_store  # this folder's: the script's folder is on sys.path

from index.lexical import reciprocal_rank_fusion
from index.retriever import Retriever
from retro.scoring import answer_contained

KINDS = ("prefix", "question", "question_trained_form", "reworded", "lookalike", "update")
RULES = ("rrf", "rrf10", "rrf-sparse2x", "bm25", "bm25-first", "dense")


def main(index: str, model: str, split: str) -> None:
    with reading_store(index, model, split, KINDS) as (items, tokenizer, store):
        retriever = Retriever(store, mode="hybrid-titled", window=4)
        lexical = retriever.lexical_index()
        queries = [tokenizer.decode(tokenizer.encode(item.prompt)[-96:]) for item in items]
        dense = store.nearest_chunks(retriever.encoder.encode(queries), 32)
        stats: dict[str, Counter] = defaultdict(Counter)
        for n, (item, query) in enumerate(zip(items, queries, strict=True)):
            sparse = lexical.search(query, 32)[0].tolist()
            ranked = dense.chunk_ids[n].tolist()
            rules = {
                "rrf": [c for c, _ in reciprocal_rank_fusion([ranked, sparse], 2)],
                "rrf10": [c for c, _ in reciprocal_rank_fusion([ranked, sparse], 2, rrf_k=10)],
                "rrf-sparse2x": [c for c, _ in reciprocal_rank_fusion([ranked, sparse, sparse], 2)],
                "bm25": sparse[:2],
                "bm25-first": (
                    sparse[:1]
                    + [c for c, _ in reciprocal_rank_fusion([ranked, sparse], 3) if c not in sparse[:1]]
                )[:2],
                "dense": ranked[:2],
            }
            row = stats[item.kind]
            row["n"] += 1
            for name in RULES:
                chunks = [c for c in rules[name] if c >= 0]
                row[f"{name}:retrieved"] += any(d in item.evidence for d in store.chunk_doc_ids(chunks))
                windows = store.chunks_with_continuations(chunks, window=4) if chunks else []
                texts = [tokenizer.decode([t for t in w.tolist() if t != store.pad_id]) for w in windows]
                row[f"{name}:shown"] += any(answer_contained(item.answer, t) for t in texts)
        for kind in KINDS:
            print(kind, dict(stats[kind]))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else "dev")

"""Could MiniLM tell the relation a question asks for? A retrieval-only probe (2026-12-06), no decoding.

For each item whose answer is shown among the k neighbours of the prompt's last 32 LM tokens (as
generation retrieves, hybrid-titled): split the neighbours' texts into segments (sentences, lines,
record fields), embed the segments and the query with MiniLM, and count how often the segment most
similar to the query holds the answer. With --strip-names the entity's name words are removed from
both first (MiniLM's similarity is then the relation's words alone).

    PYTHONPATH=REPO python probe_segments.py SERVE_INDEX dev MODEL_FOR_TOKENIZER K [--strip-names]
"""

import collections
import re
import sys

import numpy as np
import torch
from probe_windows import evaluation_store  # this folder's: the same set-up

from index.retriever import Retriever

torch.set_num_threads(1)
KINDS = ("question", "question_trained_form", "reworded", "prefix", "lookalike", "update")
SPLIT = re.compile(r"(?<=[.?!])\s+|\n|\s\|\s")


def without_names(text: str, entity: str) -> str:
    for word in entity.rsplit("/", 1)[1].split("-"):
        text = re.sub(rf"\b{word}\b", "", text, flags=re.IGNORECASE)
    return text


def main(index, split, model, k, strip_names):
    with evaluation_store(index, split, model, KINDS) as (items, store, tok, queries):
        hits = Retriever(store, mode="hybrid-titled").search(queries, k)
        enc = store.encoder
        qv = enc.encode(queries)
        n, shown, top1 = (collections.Counter() for _ in range(3))
        by_family = collections.Counter()
        n_family = collections.Counter()
        examples = []
        for item, hit, q in zip(items, hits, qv, strict=True):
            texts = tok.decode_batch([r[r != store.pad_id].tolist() for r in hit.tokens])
            n[item.kind] += 1
            if not any(item.answer in t for t in texts):
                continue
            shown[item.kind] += 1
            segs = [s.strip() for t in texts for s in SPLIT.split(t) if len(s.strip()) > 3]
            if strip_names:
                q = enc.encode([without_names(item.prompt, item.entity)])[0]
                segs_encoded = [without_names(s, item.entity) for s in segs]
            else:
                segs_encoded = segs
            sims = enc.encode(segs_encoded) @ q
            best = segs[int(np.argmax(sims))]
            ok = item.answer in best
            top1[item.kind] += ok
            if item.kind == "question":
                n_family[item.family] += 1
                by_family[item.family] += ok
                if not ok and len(examples) < 12:
                    examples.append((item.prompt, item.answer, best))
        for kind in KINDS:
            if n[kind]:
                print(
                    f"k={k} {kind}: n={n[kind]} shown={shown[kind]} top-segment holds answer given shown="
                    f"{100 * top1[kind] / max(shown[kind], 1):.1f}%",
                    flush=True,
                )
        print({f: round(100 * by_family[f] / n_family[f], 1) for f in n_family})
        for e in examples:
            print(e)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), "--strip-names" in sys.argv)

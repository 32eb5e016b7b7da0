"""How often a reading document's chunk has a passage of its own entity among its training
neighbours, per neighbour table of one index version (no model involved).

    python neighbour_owners.py INDEX/versions/v0001 neighbours-k2-not-3c8067de.npy \
        neighbours-k2-not-3c8067de-q3.npy

"Own" = a neighbour chunk whose document has the reading document's title (the entity's name).
"""

import json
import sys

import numpy as np

GROUPS = ("reading-qa/long/", "reading-qa/upd/", "reading-qa/", "reading-chat/", "facts-qa/")


def main(version: str, tables: list[str]) -> None:
    with open(f"{version}/documents.jsonl") as f:
        documents = [json.loads(line) for line in f]
    doc_ids = [d["doc_id"] for d in documents]
    titles = np.array([d.get("title") or "" for d in documents])
    chunk_doc = np.fromfile(f"{version}/chunk_doc.i64", dtype=np.int64)
    print("| table | documents | chunks | own passage first | own passage among the k |")
    print("|---|---|---|---|---|")
    for table in tables:
        neighbours = np.load(f"{version}/{table}", mmap_mode="r")
        for group in GROUPS:
            in_group = np.array([d.startswith(group) for d in doc_ids])
            rows = np.nonzero(in_group[chunk_doc])[0]
            if not len(rows):
                continue
            own_title = titles[chunk_doc[rows]]
            found = neighbours[rows]
            owner = np.where(found >= 0, titles[chunk_doc[np.maximum(found, 0)]], "")
            first = (owner[:, 0] == own_title).mean()
            among = (owner == own_title[:, None]).any(1).mean()
            print(f"| {table} | {group} | {len(rows)} | {100 * first:.1f}% | {100 * among:.1f}% |")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])

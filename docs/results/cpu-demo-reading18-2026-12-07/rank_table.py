"""Round 18: where the answer's first token ranks in the first token's distribution (the shipped
rule), for the dev items the model missed with the answer shown; from probe_rank.py's RANKS file and
the same run's dump.

    PYTHONPATH=/work/main python rank_table.py r18/ranks-dev.jsonl r18/dev-rank-work_main_models_demo.json
"""

import collections
import json
import sys

from retro.checkpoint import load_checkpoint

BUCKETS = ("1", "2", "3-5", "6-20", ">20")


def bucket(rank: int | None) -> str:
    if rank is None:
        return ">20"
    return "1" if rank == 1 else "2" if rank == 2 else "3-5" if rank <= 5 else "6-20"


def main(ranks_path: str, dump_path: str) -> None:
    _, tokenizer, _ = load_checkpoint("/work/main/models/demo")
    with open(ranks_path) as f:
        top_by_prompt = {r["prompt"]: r["ids"] for r in map(json.loads, f)}
    with open(dump_path) as f:
        dump = json.load(f)
    table = collections.defaultdict(collections.Counter)
    for r in dump:
        item = r["item"]
        if r["first"] or not r["shown"]:
            continue
        top = top_by_prompt[item["prompt"]]
        firsts = {tokenizer.encode(" " + item["answer"])[0], tokenizer.encode(item["answer"])[0]}
        rank = min((top.index(i) + 1 for i in firsts if i in top), default=None)
        table[item["kind"]][bucket(rank)] += 1
    for kind, counts in sorted(table.items()):
        cells = "  ".join(f"rank {b}: {counts[b]}" for b in BUCKETS)
        print(f"{kind:22s} misses shown {sum(counts.values()):4d}  {cells}")


if __name__ == "__main__":
    main(*sys.argv[1:3])

"""Paired comparison of two `retro eval` reports on the same reading items (retrieval on).

    python paired.py A/report.json.gz B/report.json.gz [--model demo] [--model-b NAME]
    python paired.py dev-A.json dev-B.json    # two dumps of reading_check.py (--dump)
    python paired.py dev-A.json dev-B.json --by-item   # pair by item, not prompt text (2026-12-07)

Prints, per item kind and over all, how many items A answers first and B does not ("won") and
the reverse ("lost"), with the exact two-sided McNemar p-value (a binomial test on the discordant
items). With --by-item an item is named by its kind, entity, relation, family, form and answer
instead of its prompt, so that chats rendered with another template (the sixteenth round's answer
cue) still pair up.
"""

import argparse
import gzip
import json
from collections import Counter
from math import comb


def first_span_answers(path: str, model: str, by_item: bool = False) -> dict[tuple, bool]:
    """(kind, entity, relation, form, prompt) -> whether the answer was said first, retrieval on;
    with by_item the prompt's place is taken by the item's family and answer."""
    if path.endswith(".json.gz"):
        with gzip.open(path) as f:
            rows = json.load(f)["models"][model]["reading"]["answers"]
    else:  # reading_check.py's dump: the same rows as a list
        with open(path) as f:
            rows = json.load(f)
    out = {}
    for row in rows:
        if row["setting"] == "on":
            item = row["item"]
            named = (item["family"], item["answer"]) if by_item else (item["prompt"],)
            out[(item["kind"], item["entity"], item["relation"], item["form"], *named)] = row["first"]
    return out


def mcnemar_p(won: int, lost: int) -> float:
    n = won + lost
    if n == 0:
        return 1.0
    return min(1.0, 2 * sum(comb(n, i) for i in range(min(won, lost) + 1)) / 2**n)


def main(args) -> None:
    a = first_span_answers(args.a, args.model, args.by_item)
    b = first_span_answers(args.b, args.model_b or args.model, args.by_item)
    if a.keys() != b.keys():
        raise SystemExit("the two reports hold different reading items")
    won, lost = Counter(), Counter()
    for key, a_first in a.items():
        if a_first != b[key]:
            tally = won if a_first else lost
            tally[key[0]] += 1
            tally["all"] += 1
    for kind in sorted(set(won) | set(lost)):
        print(f"{kind}: {won[kind]} won / {lost[kind]} lost, p = {mcnemar_p(won[kind], lost[kind]):.2g}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("a")
    parser.add_argument("b")
    parser.add_argument("--model", default="demo", help="the model's name in the reports (A's)")
    parser.add_argument("--model-b", default=None, help="B's model name, when it differs from A's")
    parser.add_argument("--by-item", action="store_true", help="pair by item, not by prompt text")
    main(parser.parse_args())

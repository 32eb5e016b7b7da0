"""Paired comparison of two reading_check dumps by item (kind, entity, relation, family, form),
not by prompt text, so that chats rendered with another template pair up. Prints per kind and in
all: items the first answers first and the second not ("won"), the reverse ("lost"), and the exact
two-sided McNemar p-value."""

import json
import sys
from collections import defaultdict
from math import comb


def key(r):
    i = r["item"]
    return (i["kind"], i["entity"], i["relation"], i["family"], i["form"], i.get("answer"))


def mcnemar(won, lost):
    n = won + lost
    if n == 0:
        return 1.0
    tail = sum(comb(n, i) for i in range(min(won, lost) + 1)) / 2**n
    return min(1.0, 2 * tail)


def firsts(path):
    with open(path) as f:
        return {key(r): r["first"] for r in json.load(f)}


a, b = firsts(sys.argv[1]), firsts(sys.argv[2])
if a.keys() != b.keys():
    sys.exit("the two dumps hold different items")
counts = defaultdict(lambda: [0, 0])
for k in a:
    if a[k] != b[k]:
        counts[k[0]][0 if a[k] else 1] += 1
        counts["all"][0 if a[k] else 1] += 1
for kind, (won, lost) in sorted(counts.items()):
    print(f"{kind:24s} {won:4d} won / {lost:4d} lost  p = {mcnemar(won, lost):.2g}")

"""Exact two-sided McNemar between two `retro eval` reports' reading answers (setting 'on')."""
import gzip, json, sys
from collections import Counter
from math import comb

def answers(path, model="demo"):
    rows = json.load(gzip.open(path))["models"][model]["reading"]["answers"]
    out = {}
    for r in rows:
        if r["setting"] != "on":
            continue
        i = r["item"]
        out[(i["kind"], i["entity"], i["relation"], i["form"], i["prompt"])] = r["first"]
    return out

def p_value(w, l):
    n, k = w + l, min(w, l)
    return min(1.0, 2 * sum(comb(n, i) for i in range(k + 1)) / 2**n) if n else 1.0

a, b = answers(sys.argv[1]), answers(sys.argv[2])
assert a.keys() == b.keys(), "the reports hold different items"
won, lost = Counter(), Counter()
for key, first in a.items():
    if first and not b[key]:
        won[key[0]] += 1; won["all"] += 1
    if b[key] and not first:
        lost[key[0]] += 1; lost["all"] += 1
for kind in sorted(set(won) | set(lost)):
    print(f"{kind}: {won[kind]} won / {lost[kind]} lost, p = {p_value(won[kind], lost[kind]):.2g}")

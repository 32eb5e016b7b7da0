"""What the wrong answers look like (2026-12-06): for one kind of a dev dump (check_dump.py), each
wrong first answer is sorted by shape: a number, a phrase from the reading world's value pools, a
capitalised name, or other text; each split by whether the answer was shown to the model. Answer-
shaped errors are values read from the wrong place, "text" errors are not answers at all.

    PYTHONPATH=REPO python answer_shapes.py DUMP.json question
"""

import collections
import json
import re
import sys

from index.reading_world import PHRASES


def shape(generated: str, pool: set[str]) -> str:
    text = generated.strip()
    if re.match(r"^\d[\d,]*\b", text):
        return "number"
    if any(text.startswith(p) for p in pool):
        return "phrase from the value pools"
    if re.match(r"^[A-Z][a-z]+( [A-Z][a-z]+)?[.,\s|]", text):
        return "capitalised name"
    return "other text"


def main(dump: str, kind: str) -> None:
    with open(dump) as f:
        rows = json.load(f)
    pool = {p for values in PHRASES.values() for p in values}
    counts = collections.Counter()
    for row in rows:
        if row["item"]["kind"] == kind and not row["first"]:
            counts[shape(row["generated"], pool), "shown" if row["shown"] else "not shown"] += 1
    for (name, shown), n in sorted(counts.items()):
        print(f"{name}, {shown}: {n}")
    print(f"wrong: {sum(counts.values())}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])

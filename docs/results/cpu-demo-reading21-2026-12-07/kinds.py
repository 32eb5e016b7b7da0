"""Per-kind first-span accuracy (retrieval on) of `reading_check.py --dump` files, side by side.

python3 kinds.py r19/dev-demo-fc5.json r21/dev-s5-ctrl.json ...
"""

import collections
import json
import sys


def per_kind(path: str) -> dict[str, list[int]]:
    """kind -> [answered first, items] over the dump's retrieval-on rows."""
    counts = collections.defaultdict(lambda: [0, 0])
    with open(path) as f:
        for row in json.load(f):
            if row["setting"] == "on":
                counts[row["item"]["kind"]][0] += row["first"]
                counts[row["item"]["kind"]][1] += 1
    return counts


def cell(right: int, total: int) -> str:
    return f"{100 * right / total:.1f} ({right}/{total})" if total else "-"


def main(paths: list[str]) -> None:
    tables = {path: per_kind(path) for path in paths}
    kinds = sorted(set().union(*tables.values()))
    print("kind".ljust(24) + "".join(path.split("/")[-1][:18].rjust(20) for path in paths))
    for kind in kinds:
        print(kind.ljust(24) + "".join(cell(*tables[path].get(kind, [0, 0])).rjust(20) for path in paths))


if __name__ == "__main__":
    main(sys.argv[1:])

"""First-span counts per reading kind, and answers shown, from reading_check.py dumps (--dump).

python table.py dev-A.json dev-B.json ...
"""

import json
import sys

KINDS = ("question", "question_chat", "question_trained_form", "reworded", "prefix", "long", "lookalike")


def main(paths: list[str]) -> None:
    print("| run | " + " | ".join(KINDS) + " |")
    for path in paths:
        with open(path) as f:
            rows = json.load(f)
        cells = []
        for kind in KINDS:
            of_kind = [row for row in rows if row["item"]["kind"] == kind]
            first = sum(row["first"] for row in of_kind)
            shown = sum(bool(row["shown"]) for row in of_kind)
            cells.append(f"{100 * first / len(of_kind):.1f}% ({first}/{len(of_kind)}; shown {shown})")
        print(f"| {path} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])

"""Where the round-22 reader's answers went wrong (dev, served W 1): for each retrieval-on item, was
the reader's top start id the answer's first piece, and did the served answer start right?

    python3 anatomy.py dev-r16-w1-spy.json.gz spy-r16-w1.json.gz

The spy file is `probe_conf.py`'s record of every first token (the decoder's top 5, the reader's
top 5, the biased top 5), matched to its item by the question's last 60 characters (an item whose
question recurs takes the first record: approximate for repeated real-fact prompts).
"""

import collections
import gzip
import json
import sys


def main(dump: str, spy: str) -> None:
    with gzip.open(dump) as f:
        rows = json.load(f)
    by_question = {}
    with gzip.open(spy) as f:
        for s in json.load(f):
            by_question.setdefault(s["q"].strip()[-60:], s)
    counts = collections.Counter()
    for r in rows:
        if r["setting"] != "on":
            continue
        item = r["item"]
        s = by_question.get(item["prompt"].strip()[-60:])
        if s is None:
            continue
        top = s["rdr"][0][0].strip().lower()
        reader_right = bool(top) and item["answer"].lower().startswith(top)
        said = "answered" if r["first"] else "missed"
        counts[(item["kind"], "reader right" if reader_right else "reader wrong", said)] += 1
    for key, n in sorted(counts.items()):
        print(" / ".join(key).ljust(52), n)


if __name__ == "__main__":
    main(*sys.argv[1:])

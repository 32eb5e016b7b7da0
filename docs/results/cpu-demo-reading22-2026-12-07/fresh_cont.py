"""Round 22 probe harness: the hand-written dev passages (benchmarks/data/fresh_passages_dev.jsonl)
through RetroLanguageModel's single-request loop (as reading_check), with whatever a probe module
patched: `python fresh_cont.py MODULE` imports MODULE (dev_span or probe_span_cont) first."""

import importlib
import json
import sys
import tempfile

sys.path.insert(0, "/work/exp/r22")
probe = importlib.import_module(sys.argv[1])
sys.argv = sys.argv[:1]

from index.corpus import Document  # noqa: E402
from index.retriever import Retriever  # noqa: E402
from index.store import IndexStore, copy_serving_version  # noqa: E402
from index.version import neighbour_window  # noqa: E402
from retro.checkpoint import load_checkpoint  # noqa: E402
from retro.reading_eval import RecordingRetrieve  # noqa: E402
from retro.sampling import SamplingParams  # noqa: E402
from retro.scoring import answer_first  # noqa: E402

with open("/work/main/benchmarks/data/fresh_passages_dev.jsonl") as f:
    passages = [json.loads(line) for line in f]
with tempfile.TemporaryDirectory() as scratch:
    work = copy_serving_version("/work/exp/index-serve", scratch)
    model, tokenizer, _ = load_checkpoint("/work/main/models/demo")
    store = IndexStore.open(work, tokenizer, None)
    store.add_documents([Document(p["id"], p["text"], source="fresh", title=p["title"]) for p in passages])
    retriever = Retriever(store, mode="lexical-titled")
    retriever.window = neighbour_window(store.chunk_size, model.config.retrieved_len)
    lm = probe.make(model, tokenizer)
    params = SamplingParams(max_new_tokens=12, temperature=0.0, seed=0)
    right = 0
    for p in passages:
        for q in p["questions"]:
            text = lm.generate(q["prompt"], params, RecordingRetrieve(retriever, 2, "on", set())).text
            ok = answer_first(q["answer"], text)
            right += ok
            print("OK " if ok else "-- ", q["prompt"][:50], "|", q["answer"], "=>", repr(text[:40]))
    print(sys.argv, probe.__name__, right, "/ 60")

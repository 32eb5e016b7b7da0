"""The evaluation protocol: which documents are scored, which fact sets are asked, in which settings.

Not the metrics (`retro.evaluate`) nor the report files (`retro.report`), and no terminal: progress
goes through a `log` callable (the `retro eval` command passes its console). The held-out fact
entities (`index.facts`, split "heldout") and the made-up entities (`index.fictional`) have their
documents added with `IndexStore.add_documents` when they are missing (so the knowledge is in the
index but was never in training) to a scratch copy of the index's serving version, which is
deleted afterwards (`in_place`: to the index itself), then:

- bits per byte on the held-out fact documents: retrieval on / leakage-free / random / off; and,
  when a run was trained with `--validation-fraction`, on the index's validation-split documents
  (retrieval on / random / off; neighbours exclude the document itself);
- fact accuracy for both fact sets, as completion prompts and as questions, retrieval on and off,
  scored by what the model says first (`retro.scoring`), containment as a second column;
- the reading set (`index.reading`, `retro.reading_eval`): made-up entities in held-out style
  families and question forms, retrieval on / off / random, with whether the answer's passage was
  retrieved;
- parameters, training tokens (checkpoint meta), decode tokens/s and seconds per answer.

`split` chooses the half of the held-out real facts and the reading set's entities: "dev" to
choose recipes on, "test" (frozen) for the figures a report or README quotes.

`run_evaluation` returns the results dict that `retro.report.write_report` writes. Models, torch
and faiss are imported inside the functions: the command line imports this module at start-up and
`retro --help` should not wait for them.
"""

from __future__ import annotations

import os
import platform
import tempfile
import time
from pathlib import Path

DEFAULT_MAX_DOCS = 120
SPLITS = ("dev", "test")
READING_MAX_NEW_TOKENS = 12


def spread(items: list, limit: int | None) -> list:
    """At most `limit` items, evenly spread over the list (deterministic; all when limit is None)."""
    if limit is None or limit >= len(items):
        return list(items)
    if limit < 1:
        return []
    step = len(items) / limit
    return [items[int(i * step)] for i in range(limit)]


def validation_documents(store, fraction: float, limit: int | None) -> list:
    """The index's documents of the training validation split (`retro.data`: a hash of the doc id),
    their text decoded back from the stored chunks; at most `limit`, evenly spread."""
    from index.corpus import Document
    from retro.data import in_validation_split

    picked = [
        i for i in range(store.n_documents) if in_validation_split(store.document(i)["doc_id"], fraction)
    ]
    documents = []
    for i in spread(picked, limit):
        record = store.document(i)
        rows = store.chunk_tokens(range(record["first_chunk"], record["first_chunk"] + record["n_chunks"]))
        tokens = [int(t) for t in rows.reshape(-1) if t != store.pad_id]
        documents.append(Document(record["doc_id"], store.tokenizer.decode(tokens)))
    return documents


def machine_description(device: str) -> str:
    """The GPU, or the CPU with its thread and core counts, and the host: where the numbers were measured."""
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        return f"{torch.cuda.get_device_name()} ({platform.node()})"
    cpu = platform.processor() or platform.machine()
    return f"CPU ({cpu}), {torch.get_num_threads()} torch threads, {os.cpu_count()} cores ({platform.node()})"


def evaluate_model(
    model,
    tokenizer,
    retriever,
    fact_sets: dict,
    bpb_documents: list,
    log=print,
    validation: list | None = None,
    reading_items: list | None = None,
    query_tokens: int | None = None,
) -> dict:
    """All numbers for one model: bpb per mode, fact accuracy per (set, prompt style, retrieval),
    and the reading set's summary and answers when `reading_items` are given.

    `validation` documents (the training run's validation split), when given, get their own bpb
    per mode under "bpb_validation".
    """
    from retro.evaluate import bits_per_byte, evaluate_facts, parameter_counts
    from retro.model import Retro

    retrieving = isinstance(model, Retro) and model.config.uses_retrieval
    result = {"parameters": parameter_counts(model), "bpb": {}, "facts": {}, "decode": {}}
    for mode in ("retrieval", "leakage_free", "random", "off") if retrieving else ("off",):
        started = time.perf_counter()
        bpb = bits_per_byte(model, tokenizer, retriever, bpb_documents, mode=mode)
        result["bpb"][mode] = bpb.to_dict()
        seconds = time.perf_counter() - started
        log(f"  bpb {mode}: {bpb.bpb:.3f} ({bpb.n_documents} documents, {seconds:.0f} s)")
    if validation:
        result["bpb_validation"] = {}
        for mode in ("retrieval", "random", "off") if retrieving else ("off",):
            bpb = bits_per_byte(model, tokenizer, retriever, validation, mode=mode)
            result["bpb_validation"][mode] = bpb.to_dict()
            log(f"  bpb validation {mode}: {bpb.bpb:.3f} ({bpb.n_documents} documents)")
    main_setting = "completion, retrieval on" if retrieving else "completion, retrieval off"
    for set_name, pairs in fact_sets.items():
        settings = result["facts"].setdefault(set_name, {})
        for style in ("completion", "question"):
            for use_retrieval in (True, False) if retrieving else (False,):
                setting = f"{style}, retrieval {'on' if use_retrieval else 'off'}"
                acc = evaluate_facts(
                    model, tokenizer, retriever, pairs, style=style, use_retrieval=use_retrieval,
                    query_tokens=query_tokens,
                )  # fmt: skip
                settings[setting] = acc.to_dict(with_answers=True)
                said = f"{acc.accuracy:.1%} of {acc.n} first, {acc.contained} contain it"
                log(f"  facts {set_name}, {setting}: {said}")
                if setting == main_setting:
                    decode = result["decode"]
                    decode["completion_tokens"] = decode.get("completion_tokens", 0) + acc.completion_tokens
                    decode["seconds"] = decode.get("seconds", 0.0) + acc.seconds
                    answered = sum(a.error is None for a in acc.answers)
                    decode["answers"] = decode.get("answers", 0) + answered
    decode = result["decode"]
    if decode.get("seconds"):
        decode["tokens_per_second"] = decode["completion_tokens"] / decode["seconds"]
        decode["seconds_per_answer"] = decode["seconds"] / decode["answers"]
        decode["setting"] = main_setting
    if reading_items:
        result["reading"] = evaluate_reading(model, tokenizer, retriever, reading_items, log, query_tokens)
    return result


def evaluate_reading(
    model, tokenizer, retriever, items: list, log=print, query_tokens: int | None = None
) -> dict:
    """The reading set's items, greedy, in every retrieval setting: {"summary", "answers"}."""
    from retro.generate import RetroLanguageModel
    from retro.model import Retro
    from retro.reading_eval import RecordingRetrieve, run_items, summarise
    from retro.sampling import SamplingParams

    is_retro = isinstance(model, Retro)
    language_model = RetroLanguageModel(model, tokenizer, query_tokens) if is_retro else model
    params = SamplingParams(max_new_tokens=READING_MAX_NEW_TOKENS, temperature=0.0, seed=0)

    def answer(prompt: str, retrieve) -> str:
        return language_model.generate(prompt, params, retrieve).text

    make = None
    if language_model.uses_retrieval and retriever is not None:
        k = language_model.default_k

        def make(mode: str, exclude: set[str]) -> RecordingRetrieve:
            return RecordingRetrieve(retriever, k, mode, exclude)

    results = run_items(items, answer, make, log=log)
    summary = summarise(results)
    for setting, kinds in summary.items():
        for kind, row in kinds.items():
            first = row["first"]
            log(f"  reading {kind}, retrieval {setting}: {first['value']:.1%} of {first['n']} first")
    return {"summary": summary, "answers": [r.to_dict() for r in results]}


def run_evaluation(
    runs: list[Path],
    index_dir: Path,
    compare_model: Path | None = None,
    max_facts: int | None = None,
    max_docs: int | None = DEFAULT_MAX_DOCS,
    device: str = "cpu",
    encoder=None,
    fact_sets: dict | None = None,
    extra_documents: list | None = None,
    bpb_documents: list | None = None,
    log=print,
    in_place: bool = False,
    command: str | None = None,
    split: str = "dev",
    reading_items: list | None = None,
    retrieval: str = "dense",
    query_tokens: int | None = None,
) -> dict:
    """Loads every run, extends the index with the evaluation documents, and returns the results.

    `fact_sets` ({name: [FactPair]}), `extra_documents` (added to the index) and `bpb_documents`
    default to the held-out real facts and the made-up entities; tests pass small ones instead.
    The documents go into a scratch copy of the index's serving version, deleted afterwards, unless
    `in_place` adds them to the index itself (saving the copy of a large index; a later `retro
    train` on it would then see the evaluation documents and must recompute its neighbour table).
    `command` is the command line recorded in the results (None when not run from one).
    `split` ("dev" or "test") picks the held-out facts' half and the reading set's entities;
    `reading_items` defaults to that split's reading items (pass [] to skip the reading set).
    `retrieval` is the retriever's mode, "dense" or "hybrid" (`index.retriever`); `query_tokens`
    widens each chunk's retrieval query back over earlier chunks (`retro.generate`; None: the chunk).
    """
    if split not in SPLITS:
        raise ValueError(f"unknown evaluation split {split!r}; splits: {', '.join(SPLITS)}")
    if in_place:
        return _evaluate(runs, index_dir, index_dir, compare_model, max_facts, max_docs, device, encoder,
                         fact_sets, extra_documents, bpb_documents, log, command, split,
                         reading_items, retrieval, query_tokens)  # fmt: skip
    from index.store import copy_serving_version

    with tempfile.TemporaryDirectory(prefix="retro-eval-") as scratch:
        work_index = copy_serving_version(index_dir, scratch)
        return _evaluate(runs, index_dir, work_index, compare_model, max_facts, max_docs, device, encoder,
                         fact_sets, extra_documents, bpb_documents, log, command, split,
                         reading_items, retrieval, query_tokens)  # fmt: skip


def _evaluate(
    runs: list[Path],
    index_dir: Path,
    work_index: Path,
    compare_model: Path | None,
    max_facts: int | None,
    max_docs: int | None,
    device: str,
    encoder,
    fact_sets: dict | None,
    extra_documents: list | None,
    bpb_documents: list | None,
    log,
    command: str | None,
    split: str,
    reading_items: list | None,
    retrieval: str,
    query_tokens: int | None,
) -> dict:
    from index.retriever import Retriever
    from index.store import IndexStore
    from retro.checkpoint import load_checkpoint
    from retro.evaluate import training_tokens

    if not runs:
        raise ValueError("give at least one run folder (a retro checkpoint)")
    loaded = []
    for run in runs:
        model, tokenizer, meta = load_checkpoint(run, device=device)
        loaded.append((Path(run), model, tokenizer, meta))
    tokenizer = loaded[0][2]
    for run, _, other, _ in loaded[1:]:
        if other.fingerprint != tokenizer.fingerprint:
            raise ValueError(
                f"{run} has another tokenizer than {loaded[0][0]}; the runs evaluated together must "
                "share the index's tokenizer"
            )
    store = IndexStore.open(
        work_index, tokenizer, encoder, device="cuda" if device.startswith("cuda") else "cpu"
    )
    retriever = Retriever(store, mode=retrieval)

    if fact_sets is None or extra_documents is None or bpb_documents is None:
        from index.facts import fact_documents, fact_pairs
        from index.fictional import fictional_documents, fictional_pairs

        heldout_docs = list(fact_documents("heldout"))
        if fact_sets is None:
            fact_sets = {
                f"held-out real facts ({split})": spread(list(fact_pairs(split)), max_facts),
                "fictional facts": spread(fictional_pairs(), max_facts),
            }
        if extra_documents is None:
            extra_documents = heldout_docs + fictional_documents()
            if reading_items is None:
                from index.reading import evaluation_set

                reading = evaluation_set(split)
                extra_documents += reading.documents
                reading_items = reading.items
        if bpb_documents is None:
            bpb_documents = spread(list(fact_documents(split)), max_docs)
    reading_items = reading_items or []
    added = store.add_documents(extra_documents)
    fraction = max(float(meta.get("validation_fraction") or 0.0) for *_, meta in loaded)
    validation = validation_documents(store, fraction, max_docs) if fraction > 0 else []
    where = f"index {index_dir}" + (
        "" if work_index == index_dir else " (a scratch copy of its serving version)"
    )
    log(f"{where}: added {added.n_documents} evaluation documents ({added.n_chunks} chunks)")

    results: dict = {
        "created": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": command,
        "machine": machine_description(device),
        "index": {
            "path": str(index_dir),
            "version": store.version,
            "chunks": store.n_chunks,
            "documents": store.n_documents,
            "documents added for evaluation": added.n_documents,
            "evaluated on": "the index itself" if work_index == index_dir else "a scratch copy",
        },
        "protocol": {
            "bpb_documents": len(bpb_documents),
            "validation_documents": len(validation),
            "validation_fraction": fraction,
            "fact_sets": {name: len(pairs) for name, pairs in fact_sets.items()},
            "max_new_tokens": 16,
            "decoding": "greedy",
            "split": split,
            "retrieval": retrieval,
            "query_tokens": query_tokens,
            "scoring": "first span (retro.scoring): the answer is what the model says first; "
            "'contained' counts it anywhere, on word boundaries; Wilson 95% intervals",
            "reading_items": len(reading_items),
            "reading_max_new_tokens": READING_MAX_NEW_TOKENS,
        },
        "notes": [],
        "models": {},
    }
    names_seen: set[str] = set()
    for run, model, _, meta in loaded:
        name = run.name if run.name not in names_seen else str(run)
        names_seen.add(name)
        kind = "RETRO" if model.config.uses_retrieval else "no-retrieval baseline"
        log(f"{name} ({kind})")
        entry = {"kind": kind, "path": str(run), "training_tokens": training_tokens(meta)}
        entry.update(
            evaluate_model(
                model, tokenizer, retriever, fact_sets, bpb_documents, log, validation, reading_items
            )
        )
        results["models"][name] = entry
    if compare_model is not None:
        from retro.hf_model import load_hf_model

        hf = load_hf_model(compare_model, device=device)
        log(f"{hf.name} (Hugging Face)")
        entry = {"kind": "Hugging Face causal LM", "path": str(compare_model), "training_tokens": None}
        entry.update(
            evaluate_model(hf, None, retriever, fact_sets, bpb_documents, log, validation, reading_items)
        )
        results["models"][hf.name] = entry
        results["notes"].append(
            f"{hf.name} uses its own tokenizer; its bits per byte count the same documents' bytes "
            "(each document's first token is context, not predicted, for every model)."
        )
    return results

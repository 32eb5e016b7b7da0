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
- bits per byte on held-out general text (default: the split's Wikipedia leads of the held-out
  entities, `wiki-vital:dev` / `wiki-vital:test`, which `wiki-vital:train` drops: in neither the
  training data nor the index, and checked so), per chunk bucketed by its 8-gram overlap with the
  neighbours the first RETRO model attended for it (`retro.overlap`, paper section 2.6), for every
  model on the same chunks: RETRO (and the retrieval-in-prompt comparator) with retrieval on and
  off, baselines;
- parameters, training tokens (checkpoint meta), decode tokens/s and seconds per answer.

`split` chooses the half of the held-out real facts and the reading set's entities: "dev" to
choose recipes on, "test" (frozen) for the figures a report or README quotes.

A run with `in_context=True` (`retro.in_context`: the retrieval-in-prompt comparator) is scored
in every setting RETRO is, with the same neighbours read as passages in its prompt.

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
DEFAULT_MAX_GENERAL_DOCS = 40
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


def index_holds(store, documents: list) -> dict:
    """Which of `documents` an index holds: by doc id, and by text (a chunk of the document with at
    least 8 tokens, cut with the index's tokenizer and chunk size, equal to a stored chunk)."""
    import numpy as np

    from index.chunker import chunk_token_lists, tokenize_texts

    stored = {row.tobytes() for row in store.chunk_tokens(np.arange(store.n_chunks))}
    by_text = []
    texts = [d.text for d in documents]
    for document, ids in zip(documents, tokenize_texts(store.tokenizer, texts), strict=True):
        rows = chunk_token_lists([ids], store.chunk_size, store.pad_id).tokens
        if any((row != store.pad_id).sum() >= 8 and row.tobytes() in stored for row in rows):
            by_text.append(document.doc_id)
    return {
        "checked": len(documents),
        "doc_ids_found": [d.doc_id for d in documents if store.has_document(d.doc_id)],
        "texts_found": by_text,
    }


def training_index_holds(meta: dict, tokenizer, documents: list) -> dict:
    """`index_holds` on the index a run was trained on (its checkpoint meta's "index"), when that
    folder is here and opens with the run's tokenizer; else {"index", "why"}: why it was not checked."""
    from index.store import IndexStore

    path = meta.get("index")
    if not path:
        return {"index": None, "why": "the checkpoint does not name its training index"}
    if not Path(path).is_dir():
        return {"index": path, "why": "the training index is not on this machine"}
    try:
        store = IndexStore.open(path, tokenizer)
    except (ValueError, OSError) as e:
        return {"index": path, "why": str(e)}
    return {"index": path, **index_holds(store, documents)}


def evaluate_general_text(
    models: list, tokenizer, retriever, documents: list, log=print, label: str = "general text"
) -> dict:
    """Bits per byte of held-out general text by neighbour overlap (`retro.evaluate.
    bits_per_byte_by_overlap`) for `models` [(name, model, meta)] on the index's tokenizer: the
    first RETRO model's neighbours define the buckets; every RETRO model is scored with retrieval
    on and off, every other model off. With whether the index and each run's training index hold
    the documents. `label` names the documents in the log (the same table serves the held-out
    fact documents, whose other phrasings the index holds: copying, not modelling)."""
    from retro.evaluate import bits_per_byte_by_overlap
    from retro.model import Retro

    retrieving = [(n, m) for n, m, _ in models if isinstance(m, Retro) and m.config.reads_neighbours]
    cca = [n for n, m in retrieving if m.config.uses_retrieval]
    if not cca:
        return {"skipped": "no RETRO model: a RETRO model's neighbours define the overlap buckets"}
    settings: dict = {}
    for name, model in retrieving:
        settings[f"{name}, retrieval on"] = (model, "retrieval")
        settings[f"{name}, retrieval off"] = (model, "off")
    for name, model, _ in models:
        if name not in {n for n, _ in retrieving}:
            settings[name] = (model, "off")
    reference = f"{cca[0]}, retrieval on"
    started = time.perf_counter()
    table = bits_per_byte_by_overlap(settings, reference, tokenizer, retriever, documents)
    table["in evaluation index"] = index_holds(retriever.store, documents)
    table["in training index"] = {
        name: training_index_holds(meta, tokenizer, documents) for name, _, meta in models
    }
    for row in [*table["buckets"], table["total"]]:
        cells = ", ".join(f"{s} {'-' if v is None else f'{v:.3f}'}" for s, v in row["bpb"].items())
        log(f"  {label}, overlap {row['bucket']}: {row['chunks']} chunks; bpb {cells}")
    log(f"  {label}: {table['documents']} documents, {time.perf_counter() - started:.0f} s")
    return table


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
    span_reader=None,
) -> dict:
    """All numbers for one model: bpb per mode, fact accuracy per (set, prompt style, retrieval),
    and the reading set's summary and answers when `reading_items` are given.

    `validation` documents (the training run's validation split), when given, get their own bpb
    per mode under "bpb_validation".
    """
    from retro.evaluate import bits_per_byte, evaluate_facts, parameter_counts
    from retro.model import Retro

    retrieving = isinstance(model, Retro) and model.config.reads_neighbours
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
                    query_tokens=query_tokens, span_reader=span_reader,
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
        result["reading"] = evaluate_reading(
            model, tokenizer, retriever, reading_items, log, query_tokens, span_reader
        )
    return result


def evaluate_reading(
    model,
    tokenizer,
    retriever,
    items: list,
    log=print,
    query_tokens: int | None = None,
    span_reader=None,
) -> dict:
    """The reading set's items, greedy, in every retrieval setting: {"summary", "answers"}."""
    from retro.in_context import language_model_for
    from retro.model import Retro
    from retro.reading_eval import RecordingRetrieve, run_items, summarise
    from retro.sampling import SamplingParams

    is_retro = isinstance(model, Retro)
    language_model = language_model_for(model, tokenizer, query_tokens, span_reader) if is_retro else model
    params = SamplingParams(max_new_tokens=READING_MAX_NEW_TOKENS, temperature=0.0, seed=0)

    def answer(prompt: str, retrieve, query_start: int = 0) -> str:
        return language_model.generate(prompt, params, retrieve, query_start).text

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
    general_documents: list | None = None,
    max_general_docs: int | None = DEFAULT_MAX_GENERAL_DOCS,
    general_source: str | None = None,
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
    `retrieval` is the retriever's mode (`index.retriever.RETRIEVAL_MODES`);
    `query_tokens` widens each chunk's retrieval query back over earlier chunks (`retro.generate`;
    None: each model's `inference_query_tokens`, else the chunk) in generation; bits per byte query
    with the chunk alone, as training did.
    `general_documents` (held-out general text for bits per byte by neighbour overlap) default to
    the named source `general_source` (default `wiki-vital:<split>`), at most `max_general_docs`
    of them evenly spread; `max_general_docs=0` skips that table.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown evaluation split {split!r}; splits: {', '.join(SPLITS)}")
    if max_general_docs is not None and max_general_docs < 0:
        raise ValueError(f"max_general_docs must be >= 0; got {max_general_docs}")
    general = None
    if max_general_docs != 0:
        general = _general_documents(general_documents, general_source, split, max_general_docs, log)

    def evaluate(work_index: Path) -> dict:
        return _evaluate(runs, index_dir, work_index, compare_model, max_facts, max_docs, device, encoder,
                         fact_sets, extra_documents, bpb_documents, log, command, split,
                         reading_items, retrieval, query_tokens, general)  # fmt: skip

    if in_place:
        return evaluate(index_dir)
    from index.store import copy_serving_version

    with tempfile.TemporaryDirectory(prefix="retro-eval-") as scratch:
        return evaluate(copy_serving_version(index_dir, scratch))


def _general_documents(
    documents: list | None, source: str | None, split: str, limit: int | None, log
) -> tuple[str, list, str | None]:
    """(where they come from, documents, why there are none) for the general-text table: when the
    default source is not installed, the rest of the evaluation runs and the report says why."""
    from index.sources import read_source

    if documents is not None:
        return source or "given documents", spread(list(documents), limit), None
    name = source or f"wiki-vital:{split}"
    try:
        return name, spread(list(read_source(name, [])), limit), None
    except ValueError as e:
        if source is not None:
            raise
        log(f"general text skipped: {e}")
        return name, [], str(e)


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
    general: tuple[str, list, str | None] | None = None,
) -> dict:
    from index.retriever import Retriever
    from index.store import IndexStore
    from index.version import neighbour_window
    from retro.checkpoint import load_checkpoint
    from retro.evaluate import training_tokens
    from retro.in_context import language_model_for
    from retro.span_reader import load_span_reader

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
    # a neighbour shows as many chunks as the longest-reading model takes (fitted per model)
    window = neighbour_window(store.chunk_size, *(model.config.retrieved_len for _, model, _, _ in loaded))
    retriever = Retriever(store, mode=retrieval, window=window)

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
                from retro.reading_eval import chat_items

                reading_items = reading.items + chat_items(reading.items)  # the questions as chats too
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
            "general_source": general[0] if general else None,
            "general_documents": len(general[1]) if general else 0,
        },
        "notes": [],
        "models": {},
    }
    names_seen: set[str] = set()
    named = []
    for run, model, _, meta in loaded:
        name = run.name if run.name not in names_seen else str(run)
        names_seen.add(name)
        named.append((name, model, meta))
        kind = "RETRO" if model.config.uses_retrieval else "no-retrieval baseline"
        if model.config.in_context:
            kind = "retrieval in prompt"
        log(f"{name} ({kind})")
        entry = {"kind": kind, "path": str(run), "training_tokens": training_tokens(meta)}
        if model.config.reads_neighbours:  # what each chunk's retrieval query held
            entry["query_tokens"] = language_model_for(model, tokenizer, query_tokens).query_tokens
        if model.config.inference_first_copy_bias:  # the first generated token's rule (retro.generate)
            entry["first_copy_bias"] = model.config.inference_first_copy_bias
        # the greedy first token's lookahead (retro.first_token)
        if model.config.inference_first_candidates > 1:
            entry["first_candidates"] = model.config.inference_first_candidates
        span_reader = load_span_reader(run) if model.config.uses_retrieval else None
        if span_reader is not None and model.config.inference_span_weight:  # retro.span_reader
            trained = sum(p.numel() for p in span_reader.trained_state().values())
            entry["span_reader"] = {
                "weight": model.config.inference_span_weight,
                "floor": model.config.inference_span_floor,
                "follow": model.config.inference_span_follow,
                "parameters_trained": trained,  # the adapters and the head
                "parameters_frozen": sum(p.numel() for p in span_reader.parameters()) - trained,  # MiniLM
            }
        entry.update(
            evaluate_model(
                model, tokenizer, retriever, fact_sets, bpb_documents, log, validation, reading_items,
                query_tokens, span_reader,
            )
        )  # fmt: skip
        results["models"][name] = entry
    if general is not None:
        source, documents, skipped = general
        results["general_text"] = {"source": source}
        if skipped:
            results["general_text"]["skipped"] = skipped
        else:
            log(f"held-out general text: {len(documents)} documents of {source}")
            table = evaluate_general_text(named, tokenizer, retriever, documents, log)
            results["general_text"].update(table)
        if bpb_documents:
            # The same table over the held-out fact documents: their other phrasings are in the
            # evaluation index (each document's own chunks are not its neighbours), so their chunks
            # fill the high-overlap buckets the general text leaves empty: copying, beside modelling.
            log(f"held-out fact documents: {len(bpb_documents)}, by neighbour overlap")
            table = evaluate_general_text(named, tokenizer, retriever, bpb_documents, log, "fact documents")
            results["fact_text"] = {"source": "the bits-per-byte fact documents", **table}
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
        for key in ("general_text", "fact_text"):
            if "buckets" in results.get(key, {}):
                results[key]["not scored"] = {hf.name: "its own tokenizer cuts other chunks"}
    return results

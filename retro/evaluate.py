"""Evaluation metrics: bits per byte under four retrieval settings, fact accuracy, speed, size.

This module owns the numbers an evaluation report holds and how each is computed:

- `bits_per_byte(model, tokenizer, retriever, documents, mode)`: total NLL in bits of every token
  after a document's first, over the UTF-8 bytes those tokens decode to. Modes: "retrieval"
  (neighbours searched with each chunk's text, the document itself excluded), "leakage_free" (every
  document of the same entity excluded too, e.g. the other phrasings `.../p1..p3`: paper section
  4.4), "random" (random chunks of the index) and "off" (no neighbours).
- `bits_per_byte_by_overlap(settings, reference, ...)`: the same bits and bytes per chunk, bucketed
  by the chunk's 8-gram overlap with the neighbours the reference RETRO model attended for it
  (`retro.overlap`, paper section 2.6), for several models and modes on the same chunks: copying
  told from modelling.
- `evaluate_facts(model, tokenizer, retriever, pairs, ...)`: greedy answers to completion or
  question prompts; correct when the answer is what the model says first (`retro.scoring`, with a
  Wilson 95% interval), and containment anywhere in `max_new_tokens` tokens as a second column.
  Also decode tokens/s and seconds per answer.

Models are `retro.model.Retro` or, for comparison, `retro.hf_model.HFCausalLM` (never retrieves).
A `Retro` with `in_context=True` (the retrieval-in-prompt comparator) gets the same neighbours in
every mode, read as passages before its text (`retro.in_context.document_token_nll`).
It reads an index through `index.retriever.Retriever` and never modifies it; adding documents and
writing files belong to `retro.evaluation` and `retro.report`.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from index.corpus import Document
from index.facts import FactPair
from retro.data import IGNORE
from retro.in_context import document_token_nll, language_model_for
from retro.language_model import PromptTooLongError, fit_neighbours
from retro.model import Retro
from retro.overlap import BUCKETS, NGRAM, NO_NEIGHBOURS, attended_neighbours, bucket_of, overlap_share
from retro.sampling import SamplingParams
from retro.scoring import answer_contained, answer_first, answer_in_prompt, wilson_interval

BPB_MODES = ("retrieval", "leakage_free", "random", "off")
PROMPT_STYLES = ("completion", "question")
_PHRASING = re.compile(r"^(?P<entity>.+)/p\d+$")


# ----------------------------------------------------------------------------------------------
# neighbours


def make_retrieve(retriever, k: int) -> Callable[[list[str]], np.ndarray]:
    """A language model's `retrieve`: texts -> int64 [len(texts), k, 2m] as the index stores them.

    The model fits the neighbours to its own `retrieved_len` (`retro.language_model.fit_neighbours`).
    """

    def retrieve(texts: list[str]) -> np.ndarray:
        found = retriever.search(list(texts), k)
        return np.stack([np.asarray(n.tokens, dtype=np.int64) for n in found])

    return retrieve


def entity_of(doc_id: str) -> str | None:
    """`facts/country/france/p2` -> `facts/country/france`; None for a document of no entity."""
    match = _PHRASING.match(doc_id)
    return match.group("entity") if match else None


def same_entity_doc_ids(doc_id: str, all_doc_ids: Sequence[str]) -> set[str]:
    """The document itself and every document of the same entity (all its phrasings)."""
    entity = entity_of(doc_id)
    if entity is None:
        return {doc_id}
    return {doc_id} | {d for d in all_doc_ids if entity_of(d) == entity}


def store_doc_ids(retriever) -> list[str]:
    store = retriever.store
    return [store.document(i)["doc_id"] for i in range(store.n_documents)]


# ----------------------------------------------------------------------------------------------
# bits per byte


@dataclass
class BitsPerByte:
    mode: str
    bits: float  # total negative log-likelihood in bits
    n_bytes: int  # UTF-8 bytes of the predicted text
    n_tokens: int  # predicted tokens
    n_documents: int

    @property
    def bpb(self) -> float:
        return self.bits / self.n_bytes if self.n_bytes else float("nan")

    def to_dict(self) -> dict:
        return {**asdict(self), "bpb": self.bpb}


def _check_mode(model, mode: str, retriever) -> None:
    if mode not in BPB_MODES:
        raise ValueError(f"unknown bits-per-byte mode {mode!r}; modes: {', '.join(BPB_MODES)}")
    if mode != "off":
        if not isinstance(model, Retro) or not model.config.reads_neighbours:
            raise ValueError(
                f"mode {mode!r} needs a model that reads neighbours (CCA or in_context); use mode='off'"
            )
        if retriever is None:
            raise ValueError(f"mode {mode!r} needs a retriever")


def _predicted_bytes(decode, ids: list[int]) -> int:
    """Bytes of the text that tokens 1.. decode to (the first token is context, never predicted)."""
    return len(decode(ids).encode("utf-8")) - len(decode(ids[:1]).encode("utf-8"))


def _windows(model: Retro, ids: list[int], neighbours_for):
    """What the model sees of one document: (lo, inputs [1, w], targets [1, w], neighbours
    [L, k, r] | None) per window of whole chunks (no carried context), `lo` its first position.

    The document is left-padded to a chunk boundary, as generation pads prompts, so that every
    chunk is whole and has neighbours; padding is never a target.
    """
    cfg, m = model.config, model.config.chunk_size
    lead = (-len(ids)) % m
    seq = [cfg.pad_id] * lead + list(ids)
    # targets[j] = seq[j + 1]; the document's first token (seq[lead]) is context, never a target
    inputs, targets = seq[:-1], [IGNORE] * lead + seq[lead + 1 :]
    window = cfg.max_seq_len - cfg.max_seq_len % m
    for lo in range(0, len(inputs), window):
        x = torch.tensor([inputs[lo : lo + window]], device=model.device)
        y = torch.tensor([targets[lo : lo + window]], device=model.device)
        if not bool((y != IGNORE).any()):
            continue
        chunks = [inputs[lo + u * m : lo + (u + 1) * m] for u in range(x.shape[1] // m)]
        yield lo, x, y, (neighbours_for(chunks) if chunks else None)


def _on_device(model: Retro, neighbours: np.ndarray | None) -> torch.Tensor | None:
    return None if neighbours is None else torch.from_numpy(neighbours)[None].to(model.device)


@torch.inference_mode()
def _retro_document_nll(model: Retro, ids: list[int], neighbours_for) -> tuple[float, int]:
    """Sum of -ln p over tokens 1.. of one document, in windows of whole chunks (`_windows`)."""
    total, count = 0.0, 0
    for _, x, y, neighbours in _windows(model, ids, neighbours_for):
        n = int((y != IGNORE).sum())
        mean_nll = model.loss(x, _on_device(model, neighbours), y)
        total += float(mean_nll) * n
        count += n
    return total, count


@torch.inference_mode()
def _retro_token_nll(model: Retro, ids: list[int], neighbours_for) -> tuple[np.ndarray, list]:
    """-ln p of each of tokens 1.. of one document (entry i - 1 for ids[i]), scored as
    `_retro_document_nll` scores them, and the neighbours retrieved with each chunk of the
    left-padded document (None for a chunk none were retrieved with)."""
    m = model.config.chunk_size
    lead = (-len(ids)) % m
    nll = np.zeros(len(ids) - 1)
    retrieved: list = [None] * ((lead + len(ids)) // m)
    for lo, x, y, neighbours in _windows(model, ids, neighbours_for):
        logp = model(x, _on_device(model, neighbours))[0]
        positions = torch.nonzero(y[0] != IGNORE)[:, 0]
        values = -logp[positions, y[0, positions]].double()
        # position j predicts seq[lo + j + 1] = ids[lo + j + 1 - lead]: entry lo + j - lead
        nll[(positions + lo - lead).cpu().numpy()] = values.cpu().numpy()
        for u in range(0 if neighbours is None else len(neighbours)):
            retrieved[lo // m + u] = neighbours[u]
    return nll, retrieved


@torch.inference_mode()
def _hf_document_nll(model, ids: list[int]) -> tuple[float, int]:
    window = model.max_seq_len
    total, count = 0.0, 0
    for lo in range(0, len(ids) - 1, window - 1):  # windows overlap by one token: each is context
        piece = torch.tensor([ids[lo : lo + window]], device=model.device)
        if piece.shape[1] < 2:
            break
        logp = model.model(input_ids=piece).logits[0, :-1].float().log_softmax(-1)
        total += float(-logp.gather(-1, piece[0, 1:, None]).sum())
        count += piece.shape[1] - 1
    return total, count


def _neighbour_source(model: Retro, tokenizer, retriever, mode: str, exclude: set[str], rng):
    """chunks (lists of m token ids) -> neighbours [n, k, r] for `mode`, or None for mode "off"."""
    cfg = model.config

    def neighbours_for(chunks: list[list[int]]) -> np.ndarray | None:
        if mode == "off":
            return None
        k = cfg.neighbours_at_inference
        if mode == "random":
            chunk_ids = rng.integers(0, retriever.store.n_chunks, size=(len(chunks), k))
            found = retriever.store.chunks_with_continuations(chunk_ids, window=retriever.window)
        else:
            texts = tokenizer.decode_batch([[t for t in c if t != cfg.pad_id] for c in chunks])
            hits = retriever.search(list(texts), k, [exclude] * len(chunks))
            found = np.stack([h.tokens for h in hits])
        return fit_neighbours(found, cfg.retrieved_len, cfg.pad_id)

    return neighbours_for


def bits_per_byte(
    model,
    tokenizer,
    retriever,
    documents: Sequence[Document],
    mode: str = "retrieval",
    seed: int = 0,
) -> BitsPerByte:
    """Bits per UTF-8 byte of `documents` under one retrieval `mode` (see the module docstring).

    k is the model's `neighbours_at_inference`; neighbours are cut to its `retrieved_len`. For an
    `HFCausalLM` only mode "off" exists and its own tokenizer is used (`tokenizer` is ignored).
    """
    _check_mode(model, mode, retriever)
    hf = not isinstance(model, Retro)
    decode = model.tokenizer.decode if hf else tokenizer.decode
    rng = np.random.default_rng(seed)
    all_ids = store_doc_ids(retriever) if mode == "leakage_free" else []
    bits, n_bytes, n_tokens, n_docs = 0.0, 0, 0, 0
    for document in documents:
        if hf:
            ids = model.tokenizer.encode(document.text, add_special_tokens=False)
        else:
            ids = tokenizer.encode(document.text)
        if len(ids) < 2:
            continue
        if hf:
            nll, count = _hf_document_nll(model, ids)
        else:
            if mode == "leakage_free":
                exclude = same_entity_doc_ids(document.doc_id, all_ids)
            else:
                exclude = {document.doc_id}
            source = _neighbour_source(model, tokenizer, retriever, mode, exclude, rng)
            if model.config.in_context:
                losses, _ = document_token_nll(model, tokenizer, ids, None if mode == "off" else source)
                nll, count = float(losses.sum()), len(losses)
            else:
                nll, count = _retro_document_nll(model, ids, source)
        bits += nll / math.log(2)
        n_tokens += count
        n_bytes += _predicted_bytes(decode, ids)
        n_docs += 1
    return BitsPerByte(mode=mode, bits=bits, n_bytes=n_bytes, n_tokens=n_tokens, n_documents=n_docs)


# ----------------------------------------------------------------------------------------------
# bits per byte by neighbour overlap (RETRO paper section 2.6)


def _bucket_row(name: str, settings) -> dict:
    return {"bucket": name, "chunks": 0, "tokens": 0, "bytes": 0, "bits": dict.fromkeys(settings, 0.0)}


def bits_per_byte_by_overlap(
    settings: dict[str, tuple[object, str]],
    reference: str,
    tokenizer,
    retriever,
    documents: Sequence[Document],
    n: int = NGRAM,
) -> dict:
    """Bits per byte of `documents` per neighbour-overlap bucket (`retro.overlap`), for every
    setting {name: (RETRO model, mode "retrieval" or "off")} on the same chunks.

    The chunks are those of the `reference` setting's model (a RETRO model, mode "retrieval"): its
    chunks of the left-padded document, each bucketed by the share of its token n-grams found in
    the neighbours that model attended while predicting it (retrieved with the previous chunk;
    none for a window's first chunk: `NO_NEIGHBOURS`). Each setting's per-token losses are summed
    over the same tokens, so every row compares the settings on the same text; the rows' bytes add
    up to `bits_per_byte`'s. Returns {"reference", "ngram", "chunk_size", "documents", "settings",
    "buckets": [{"bucket", "chunks", "tokens", "bytes", "bits": {setting}, "bpb": {setting}}],
    "total": the same over every chunk}.
    """
    ref_model, ref_mode = settings[reference]
    if ref_mode != "retrieval":
        raise ValueError(f"the reference setting {reference!r} must retrieve (mode 'retrieval')")
    for name, (model, mode) in settings.items():
        if not isinstance(model, Retro):
            raise ValueError(f"setting {name!r}: overlap buckets need models on the index's tokenizer")
        if mode not in ("retrieval", "off"):
            raise ValueError(f"setting {name!r}: mode {mode!r}; bucketed modes: retrieval, off")
        _check_mode(model, mode, retriever)
    m = ref_model.config.chunk_size
    if m < n:
        raise ValueError(f"chunks of {m} tokens hold no {n}-gram")
    window_chunks = ref_model.config.max_seq_len // m
    rows = {name: _bucket_row(name, settings) for name in (*BUCKETS, NO_NEIGHBOURS)}
    rng = np.random.default_rng(0)
    n_docs = 0
    for document in documents:
        ids = tokenizer.encode(document.text)
        if len(ids) < 2:
            continue
        n_docs += 1
        losses, retrieved = {}, None
        for name, (model, mode) in settings.items():
            source = _neighbour_source(model, tokenizer, retriever, mode, {document.doc_id}, rng)
            if model.config.in_context:
                read = None if mode == "off" else source
                losses[name], got = document_token_nll(model, tokenizer, ids, read)
            else:
                losses[name], got = _retro_token_nll(model, ids, source)
            if name == reference:
                retrieved = got
        attended = attended_neighbours(retrieved, window_chunks)
        lead = (-len(ids)) % m
        seq = [ref_model.config.pad_id] * lead + ids
        # bytes of the text ids[:i] decodes to, at chunk boundaries: the chunks' bytes telescope
        boundaries = {1, *range(m - lead, len(ids) + 1, m)}
        prefix_bytes = {i: len(tokenizer.decode(ids[:i]).encode("utf-8")) for i in boundaries}
        for u in range(len(seq) // m):
            start, end = max(1, u * m - lead), (u + 1) * m - lead  # ids[start:end] are its targets
            if start >= end:
                continue
            share = overlap_share(seq[u * m : (u + 1) * m], attended[u], n, ref_model.config.pad_id)
            row = rows[bucket_of(share)]
            row["chunks"] += 1
            row["tokens"] += end - start
            row["bytes"] += prefix_bytes[end] - prefix_bytes[start]
            for name, nll in losses.items():
                row["bits"][name] += float(nll[start - 1 : end - 1].sum()) / math.log(2)
    total = _bucket_row("all chunks", settings)
    for row in rows.values():
        for key in ("chunks", "tokens", "bytes"):
            total[key] += row[key]
        for name in settings:
            total["bits"][name] += row["bits"][name]
    for row in [*rows.values(), total]:
        row["bpb"] = {s: (b / row["bytes"] if row["bytes"] else None) for s, b in row["bits"].items()}
    return {
        "reference": reference,
        "ngram": n,
        "chunk_size": m,
        "documents": n_docs,
        "settings": list(settings),
        "buckets": list(rows.values()),
        "total": total,
    }


# ----------------------------------------------------------------------------------------------
# fact accuracy


@dataclass
class FactAnswer:
    entity: str
    prompt: str
    answer: str
    generated: str
    correct: bool  # the answer is what the model says first (`retro.scoring.answer_first`)
    contained: bool = False  # the answer occurs anywhere in the generation, on word boundaries
    error: str | None = None  # e.g. a prompt longer than the model takes: counted as wrong


@dataclass
class FactAccuracy:
    style: str  # "completion" | "question"
    retrieval: bool
    n: int
    correct: int  # first span: the answer is what the model says first
    completion_tokens: int
    seconds: float
    answers: list[FactAnswer] = field(default_factory=list)
    contained: int = 0  # the answer occurs anywhere (the old, lenient rule: a second column only)

    @property
    def accuracy(self) -> float:
        return self.correct / self.n if self.n else float("nan")

    @property
    def interval(self) -> tuple[float, float]:
        return wilson_interval(self.correct, self.n)

    @property
    def tokens_per_second(self) -> float:
        return self.completion_tokens / self.seconds if self.seconds else float("nan")

    @property
    def seconds_per_answer(self) -> float:
        answered = sum(a.error is None for a in self.answers)
        return self.seconds / answered if answered else float("nan")

    def to_dict(self, with_answers: bool = False) -> dict:
        d = {
            "style": self.style,
            "retrieval": self.retrieval,
            "n": self.n,
            "correct": self.correct,
            "accuracy": self.accuracy,
            "interval": list(self.interval),
            "scoring": "first span",
            "contained": self.contained,
            "contained_accuracy": self.contained / self.n if self.n else float("nan"),
            "completion_tokens": self.completion_tokens,
            "seconds": self.seconds,
            "tokens_per_second": self.tokens_per_second,
            "seconds_per_answer": self.seconds_per_answer,
        }
        if with_answers:
            d["answers"] = [asdict(a) for a in self.answers]
        return d


def evaluate_facts(
    model,
    tokenizer,
    retriever,
    pairs: Sequence[FactPair],
    style: str = "completion",
    use_retrieval: bool = True,
    max_new_tokens: int = 16,
    query_tokens: int | None = None,
    span_reader=None,
) -> FactAccuracy:
    """Greedy answers (temperature 0) to each pair's completion or question prompt, scored by what
    the model says first (`retro.scoring`: no credit for an answer the prompt already holds).

    With `use_retrieval` a RETRO model retrieves k = `neighbours_at_inference` neighbours at every chunk
    boundary (the prompt is left-padded so its last token closes a chunk); otherwise, and for a
    baseline or an `HFCausalLM`, it answers from its weights alone.
    """
    if style not in PROMPT_STYLES:
        raise ValueError(f"unknown prompt style {style!r}; styles: {', '.join(PROMPT_STYLES)}")
    is_retro = isinstance(model, Retro)
    retrieving = use_retrieval and is_retro and model.config.reads_neighbours
    if retrieving and retriever is None:
        raise ValueError("use_retrieval=True needs a retriever")
    retrieve = make_retrieve(retriever, model.config.neighbours_at_inference) if retrieving else None
    language_model = language_model_for(model, tokenizer, query_tokens, span_reader) if is_retro else model
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0, seed=0)
    result = FactAccuracy(style, retrieving, n=0, correct=0, completion_tokens=0, seconds=0.0)
    for pair in pairs:
        prompt = pair.completion if style == "completion" else pair.question
        started = time.perf_counter()
        try:
            out = language_model.generate(prompt, params, retrieve)
        except PromptTooLongError as e:
            result.n += 1
            result.answers.append(FactAnswer(pair.entity, prompt, pair.answer, "", False, error=str(e)))
            continue
        result.seconds += time.perf_counter() - started
        leaked = answer_in_prompt(pair.answer, prompt)
        correct = answer_first(pair.answer, out.text) and not leaked
        contained = answer_contained(pair.answer, out.text) and not leaked
        result.n += 1
        result.correct += correct
        result.contained += contained
        result.completion_tokens += out.completion_tokens
        result.answers.append(FactAnswer(pair.entity, prompt, pair.answer, out.text, correct, contained))
    return result


# ----------------------------------------------------------------------------------------------
# size


def parameter_counts(model) -> dict[str, int]:
    """{"total", "non_embedding"} for a Retro model or an HFCausalLM."""
    return dict(model.parameter_counts())


def training_tokens(meta: dict) -> int | None:
    """Tokens seen in training, from a checkpoint's meta when the trainer recorded them; a
    fine-tune adds those behind the weights it started from (`init_from.tokens_before`). For a
    retrieval-in-prompt comparator the trainer counts whole contexts (passages, template, text and
    padding); this counts the text alone, the sequences RETRO trains on (`meta["in_context"]`), so
    models trained on the same batches report the same tokens."""
    found = _tokens_of_run(meta)
    shape = meta.get("in_context")
    if found is not None and isinstance(shape, dict) and shape.get("context_len"):
        found = found * int(shape["text_len"]) // int(shape["context_len"])
    before = (meta.get("init_from") or {}).get("tokens_before")
    if found is not None and isinstance(before, int | float):
        return found + int(before)
    return found


def _tokens_of_run(meta: dict) -> int | None:
    for key in ("tokens_seen", "train_tokens", "tokens"):
        value = meta.get(key)
        if isinstance(value, int | float):
            return int(value)
    for nested in ("train", "result", "training"):
        if isinstance(meta.get(nested), dict):
            found = _tokens_of_run(meta[nested])
            if found is not None:
                return found
    return None

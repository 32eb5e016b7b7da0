"""Evaluation reports: report.json, a side-by-side report.md and PNG plots from one results dict.

This module owns the on-disk shape of a report and nothing else: it computes no metric (that is
`retro.evaluate`) and loads no model (that is `retro.evaluation`). The results dict it takes:

    {"created": "...", "command": "...", "machine": "...", "index": {...}, "notes": [...],
     "models": {name: {"kind": ..., "parameters": {"total", "non_embedding"}, "training_tokens": ...,
                       "query_tokens": ..., "first_copy_bias": ..., "first_candidates": ...
                       (generation settings, where set),
                       "bpb": {mode: {"bpb", "bits", "n_bytes", ...}}, "bpb_validation": {...},
                       "facts": {fact_set: {setting: {"accuracy", "n", "correct", ...}}},
                       "decode": {"tokens_per_second", "seconds_per_answer"}}},
     "general_text": {"source", "reference", "settings", "buckets": [{"bucket", "chunks", "bytes",
                      "bpb": {setting}}], "total", "in evaluation index", "in training index"},
     "fact_text": the same table over the bits-per-byte fact documents}

Plots use matplotlib's Agg backend (no display); missing values are simply not drawn.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from index.reading import ITEM_KINDS
from retro.reading_eval import CHAT_KIND, markdown_table

REPORT_MD, REPORT_JSON = "report.md", "report.json"
BPB_PLOT, FACTS_PLOT = "bpb.png", "facts.png"
BPB_LABELS = {
    "retrieval": "bpb, retrieval on (knowledge in index)",
    "leakage_free": "bpb, retrieval on, same entity removed (leakage-free)",
    "random": "bpb, random neighbours",
    "off": "bpb, retrieval off",
}


def _fmt(value, kind: str = "float") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if kind == "pct":
        return f"{100 * value:.1f}%"
    if kind == "int":
        return f"{int(value):,}"
    if kind == "ms":
        return f"{1000 * value:.0f} ms"
    return f"{value:.3f}"


def fact_settings(results: dict) -> list[tuple[str, str]]:
    """(fact set, setting) pairs present in any model, in a stable order."""
    seen: list[tuple[str, str]] = []
    for model in results["models"].values():
        for fact_set, settings in model.get("facts", {}).items():
            for setting in settings:
                if (fact_set, setting) not in seen:
                    seen.append((fact_set, setting))
    return seen


def _fact_cell(r: dict | None) -> str:
    """First-span accuracy (k/n; Wilson 95%), then the lenient containment count."""
    if not r:
        return "-"
    cell = f"{_fmt(r['accuracy'], 'pct')} ({r['correct']}/{r['n']}"
    if r.get("interval"):
        low, high = r["interval"]
        cell += f"; {_fmt(low, 'pct')}-{_fmt(high, 'pct')}"
    cell += ")"
    if "contained" in r:
        cell += f", contains {r['contained']}"
    return cell


def _reading_sections(results: dict) -> list[str]:
    split = results.get("protocol", {}).get("split", "?")
    lines = []
    for name, model in results["models"].items():
        reading = model.get("reading")
        if not reading:
            continue
        lines += [
            "",
            f"## Reading set ({split} split): {name}",
            "",
            markdown_table(reading["summary"], (*ITEM_KINDS, CHAT_KIND)),
        ]
    if lines:
        lines += [
            "",
            "First span: the answer is what the model says first (k/n, Wilson 95% interval). "
            "Passage retrieved: a document stating the answer was among the neighbours of the prompt's "
            "last chunk. Other value taken: look-alikes, the twin's value; updates, the old value.",
        ]
    return lines


def _holds(found: dict) -> str:
    n = found["checked"]
    return f"{len(found['doc_ids_found'])} of {n} by doc id, {len(found['texts_found'])} of {n} by text"


# The overlap tables: results key -> (heading, what the documents are, ahead of where they are found)
OVERLAP_SECTIONS = {
    "general_text": (
        "Bits per byte on held-out general text by neighbour overlap",
        "{documents} documents of `{source}`.",
    ),
    "fact_text": (
        "Bits per byte on held-out fact documents by neighbour overlap (copying)",
        "The {documents} fact documents of the bits-per-byte rows above: each one's other phrasings "
        "are in the evaluation index, its own chunks are never its neighbours; their high-overlap "
        "chunks measure copying from neighbours, the general text above measures modelling.",
    ),
}


def _overlap_section(results: dict, key: str) -> list[str]:
    """A table of bits per byte by neighbour overlap (`general_text`, `fact_text`), and its provenance."""
    general = results.get(key)
    if not general:
        return []
    heading, describe = OVERLAP_SECTIONS[key]
    lines = ["", f"## {heading}", ""]
    if "buckets" not in general:
        return lines + [f"Not measured: {general.get('skipped', '?')}."]
    lines.append(
        describe.format(documents=general["documents"], source=general.get("source"))
        + " Found in the evaluation index (the one the models retrieve from: the serving index and "
        f"the documents added for evaluation): {_holds(general['in evaluation index'])}."
    )
    training = []
    for name, found in general.get("in training index", {}).items():
        if "why" in found:
            training.append(f"{name}: not checked, {found['why']} (`{found['index']}`)")
        else:
            training.append(f"{name}: {_holds(found)} (`{found['index']}`)")
    if training:
        lines.append("Found in the training index: " + "; ".join(training) + ".")
    settings = general["settings"]
    lines += [
        "",
        "| neighbour overlap | chunks | bytes | " + " | ".join(f"bpb, {s}" for s in settings) + " |",
        "|---|---|---|" + "---|" * len(settings),
    ]
    for row in [*general["buckets"], general["total"]]:
        cells = [str(row["chunks"]), _fmt(row["bytes"], "int")] + [_fmt(row["bpb"][s]) for s in settings]
        lines.append(f"| {row['bucket']} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Chunks of {general['chunk_size']} tokens. A chunk's overlap is the share of its token "
        f"{general['ngram']}-grams (LM tokenizer ids, padding excluded) found in the neighbours that "
        f"`{general['reference']}` attended while predicting it, those retrieved with the previous "
        "chunk (RETRO paper section 2.6); a document's first chunk, and the first of each window of "
        "a long document, attend none. Every column is scored on the same chunks.",
    ]
    for name, why in general.get("not scored", {}).items():
        lines.append(f"Not in this table: {name} ({why}).")
    return lines


def markdown(results: dict) -> str:
    names = list(results["models"])
    models = [results["models"][n] for n in names]
    rows: list[tuple[str, list[str]]] = [
        ("kind", [m.get("kind", "-") for m in models]),
        ("parameters (total)", [_fmt(m.get("parameters", {}).get("total"), "int") for m in models]),
        (
            "parameters (non-embedding)",
            [_fmt(m.get("parameters", {}).get("non_embedding"), "int") for m in models],
        ),
        ("training tokens", [_fmt(m.get("training_tokens"), "int") for m in models]),
    ]
    # the settings each model generated with, where a model has one (retro.generate)
    if any("query_tokens" in m for m in models):
        rows.append(("retrieval query (tokens)", [_fmt(m.get("query_tokens"), "int") for m in models]))
    if any("first_copy_bias" in m for m in models):
        biases = [m.get("first_copy_bias", 0.0 if m.get("kind") == "RETRO" else None) for m in models]
        rows.append(("first token's copy bias (nats)", [_fmt(b) for b in biases]))
    if any("first_candidates" in m for m in models):  # models of retro's own decoder: 1, the argmax
        own = ("RETRO", "no-retrieval baseline", "retrieval in prompt")
        counts = [m.get("first_candidates", 1 if m.get("kind") in own else None) for m in models]
        rows.append(("first token: candidates weighed by lookahead", [_fmt(c, "int") for c in counts]))
    if any("span_reader" in m for m in models):  # retro.span_reader: MiniLM's pull on the first token
        readers = [m.get("span_reader") for m in models]
        cells = [
            "-"
            if r is None
            else f"weight {r['weight']:g}, floor {r['floor']:g}, follow {r.get('follow', 0.0):g}; "
            f"{r['parameters_trained']:,} trained "
            f"+ {r['parameters_frozen']:,} frozen (MiniLM) parameters"
            for r in readers
        ]
        rows.append(("first token: span reader", cells))
    for mode, label in BPB_LABELS.items():
        if any(mode in m.get("bpb", {}) for m in models):
            rows.append((label, [_fmt(m.get("bpb", {}).get(mode, {}).get("bpb")) for m in models]))
    for mode in BPB_LABELS:
        if any(mode in m.get("bpb_validation", {}) for m in models):
            cells = [_fmt(m.get("bpb_validation", {}).get(mode, {}).get("bpb")) for m in models]
            rows.append((BPB_LABELS[mode].replace("bpb,", "bpb (validation documents),"), cells))
    for fact_set, setting in fact_settings(results):
        label = f"facts: {fact_set}, {setting}"
        cells = []
        for m in models:
            r = m.get("facts", {}).get(fact_set, {}).get(setting)
            cells.append(_fact_cell(r))
        rows.append((label, cells))
    rows.append(
        ("decode tokens/s (batch 1)", [_fmt(m.get("decode", {}).get("tokens_per_second")) for m in models])
    )
    rows.append(
        ("latency per answer", [_fmt(m.get("decode", {}).get("seconds_per_answer"), "ms") for m in models])
    )

    lines = ["# Evaluation report", ""]
    for key in ("created", "command", "machine"):
        if results.get(key):
            lines.append(f"- {key}: `{results[key]}`" if key == "command" else f"- {key}: {results[key]}")
    if results.get("index"):
        lines.append("- index: " + ", ".join(f"{k} {v}" for k, v in results["index"].items()))
    lines += ["", "| | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    lines += [f"| {label} | " + " | ".join(cells) + " |" for label, cells in rows]
    if results.get("notes"):
        lines += ["", "Notes:", ""] + [f"- {note}" for note in results["notes"]]
    lines += _overlap_section(results, "general_text")
    lines += _overlap_section(results, "fact_text")
    lines += _reading_sections(results)
    lines += ["", f"![bits per byte]({BPB_PLOT})", "", f"![fact accuracy]({FACTS_PLOT})", ""]
    return "\n".join(lines)


def _grouped_bars(ax, groups: list[str], series: dict[str, list[float | None]], ylabel: str) -> None:
    width = 0.8 / max(1, len(series))
    for i, (name, values) in enumerate(series.items()):
        xs = [g + i * width for g in range(len(groups)) if values[g] is not None]
        ys = [v for v in values if v is not None]
        ax.bar(xs, ys, width=width, label=name)
    ax.set_xticks([g + 0.4 - width / 2 for g in range(len(groups))])
    ax.set_xticklabels(groups, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)


def plot(results: dict, out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results["models"])
    models = [results["models"][n] for n in names]
    written = []
    modes = [mode for mode in BPB_LABELS if any(mode in m.get("bpb", {}) for m in models)]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    series = {mode: [m.get("bpb", {}).get(mode, {}).get("bpb") for m in models] for mode in modes}
    _grouped_bars(ax, names, series, "bits per byte (lower is better)")
    ax.set_title("Bits per byte on held-out documents")
    fig.tight_layout()
    fig.savefig(out_dir / BPB_PLOT, dpi=100)
    plt.close(fig)
    written.append(out_dir / BPB_PLOT)

    settings = fact_settings(results)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    series = {}
    for fact_set, setting in settings:
        values = []
        for m in models:
            r = m.get("facts", {}).get(fact_set, {}).get(setting)
            values.append(100 * r["accuracy"] if r else None)
        series[f"{fact_set}, {setting}"] = values
    _grouped_bars(ax, names, series, "fact accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title("Fact accuracy (answer said first, greedy)")
    fig.tight_layout()
    fig.savefig(out_dir / FACTS_PLOT, dpi=100)
    plt.close(fig)
    written.append(out_dir / FACTS_PLOT)
    return written


def write_report(results: dict, out_dir: str | Path) -> list[Path]:
    """Writes report.json, report.md and the plots into `out_dir`; returns their paths."""
    if not isinstance(results, dict) or not isinstance(results.get("models"), dict) or not results["models"]:
        raise ValueError("results must be a dict with a non-empty 'models' mapping")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / REPORT_JSON).write_text(json.dumps(results, indent=2, sort_keys=False, default=str))
    (out_dir / REPORT_MD).write_text(markdown(results))
    return [out_dir / REPORT_JSON, out_dir / REPORT_MD, *plot(results, out_dir)]

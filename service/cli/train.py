"""`retro train`: train a preset on an index's chunks into a run folder (resumes when rerun).

This module owns argument handling only: it checks the preset against the index (vocabulary from
the index's tokenizer, equal chunk sizes), precomputes the index's training neighbours when they are
missing, builds `retro.data.TrainingData` (for a retrieval-in-prompt preset such as `demo-rag`,
`retro.in_context_data.InContextTrainingData`: the same sequences, passages before them) and
hands over to `retro.train.train`. Rerunning the same
command continues from the run folder's last checkpoint. Multi-GPU: `torchrun --nproc_per_node=N
--no-python retro train ...` (rank 0 precomputes and writes; the others wait and read). Bad input
exits with code 2 and one line (`service.cli.console.fail`).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import typer

from service.cli.console import console, fail, output

NEIGHBOUR_WAIT_S = 2 * 3600  # how long ranks > 0 wait for rank 0 to precompute neighbours


def _training_config(preset: str, baseline: bool, chunk_size: int, pad_id: int, vocab_size: int):
    from retro.config import PRESETS

    if preset not in PRESETS:
        fail(f"unknown preset {preset!r}; presets: {', '.join(PRESETS)}")
    name = preset
    if baseline and PRESETS[preset].uses_retrieval:
        name = f"{preset}-baseline"
        if name not in PRESETS:
            fail(f"preset {preset!r} has no no-retrieval baseline ({name!r} is not a preset)")
    config = PRESETS[name].replace(vocab_size=vocab_size)
    if config.chunk_size != chunk_size:
        fail(
            f"preset {name!r} has chunk_size={config.chunk_size} but the index was cut into chunks of "
            f"{chunk_size} tokens: rebuild the index with --chunk-size {config.chunk_size} or pick a preset "
            f"with chunk_size={chunk_size}"
        )
    if config.pad_id != pad_id:
        fail(f"the index pads with token {pad_id} but preset {name!r} expects pad_id={config.pad_id}")
    return name, config


def _recipe(overrides: list[str]):
    """`--recipe name=value` pairs -> retro.data.Recipe (the data recipe's knobs, docs/design.md)."""
    import dataclasses

    from retro.data import Recipe

    fields = {f.name: f for f in dataclasses.fields(Recipe)}
    values = {}
    for item in overrides:
        name, sep, text = item.partition("=")
        if not sep or name not in fields:
            fail(f"--recipe takes name=value with a name among {', '.join(fields)}; got {item!r}")
        kind = str(fields[name].type)  # "float", "int | None", ...
        try:
            if text.lower() == "none" and "None" in kind:
                values[name] = None
            elif kind == "str":
                values[name] = text
            elif kind == "bool":
                if text.lower() not in ("true", "false", "1", "0"):
                    raise ValueError
                values[name] = text.lower() in ("true", "1")
            else:
                values[name] = int(text) if kind.startswith("int") else float(text)
        except ValueError:
            fail(f"--recipe {name}: {text!r} is not {'true or false' if kind == 'bool' else 'a number'}")
    return Recipe(**values)


def _config_overrides(config, overrides: list[str]):
    """`--config name=value` pairs over the preset's RetroConfig (integers, booleans, and lists of
    integers written 1,3,5 as for cca_layers). Every field may be set, the optional ones that
    `to_dict` leaves out while unset (inference_neighbours, inference_query_tokens) included."""
    fields = {field.name: getattr(config, field.name) for field in dataclasses.fields(config)}
    changes = {}
    for item in overrides:
        name, sep, text = item.partition("=")
        if not sep or name not in fields:
            fail(f"--config takes name=value with a name among {', '.join(sorted(fields))}; got {item!r}")
        kind = int if fields[name] is None else type(fields[name])  # None: an optional integer
        try:
            if kind in (list, tuple):
                changes[name] = tuple(int(part) for part in text.split(",") if part.strip())
            elif kind is bool:
                if text.lower() not in ("true", "false", "1", "0"):
                    raise ValueError
                changes[name] = text.lower() in ("true", "1")
            else:
                changes[name] = kind(text)
        except ValueError:
            what = "a comma-separated list of integers" if kind in (list, tuple) else f"a {kind.__name__}"
            fail(f"--config {name}: {text!r} is not {what}")
    try:
        return config.replace(**changes)
    except ValueError as e:
        fail(str(e))


def _covers_all_chunks(version_dir: Path, path: Path) -> bool:
    """False when documents were added live after the table was computed (it lacks their rows)."""
    import json

    import numpy as np

    n_chunks = json.loads((version_dir / "manifest.json").read_text())["n_chunks"]
    return len(np.load(path, mmap_mode="r")) == n_chunks


def _ensure_neighbours(
    version_dir: Path, k: int, rank: int, never_from: tuple[str, ...] = (), query_chunks: int = 1
) -> None:
    """Training needs every chunk's k nearest chunks of other documents (none from a document
    whose id starts with one of `never_from`; those documents' chunks queried with `query_chunks`
    chunks of text); compute them once."""
    from index.layout import neighbours_file
    from index.neighbours import precompute_neighbours

    path = version_dir / neighbours_file(k, never_from, query_chunks)
    if path.is_file() and _covers_all_chunks(version_dir, path):
        return
    if rank != 0:
        deadline = time.monotonic() + NEIGHBOUR_WAIT_S
        while not (path.is_file() and _covers_all_chunks(version_dir, path)):
            if time.monotonic() > deadline:
                fail(f"rank {rank} waited {NEIGHBOUR_WAIT_S}s for rank 0 to write {path}")
            time.sleep(2)
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn(f"precomputing {k} neighbours per chunk"), BarColumn(), MofNCompleteColumn(),
               TimeRemainingColumn())  # fmt: skip
    with Progress(*columns, console=console) as bar:
        task = bar.add_task("neighbours", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        precompute_neighbours(
            version_dir, k=k, progress=progress, never_from=never_from, query_chunks=query_chunks
        )


def _word_table(tokenizer, dim: int):
    """The word-meaning table for `tokenizer` (`retro.word_meaning.build_word_table`): MiniLM's
    whole vocabulary words, encoded by the packaged MiniLM (a minute or two on a CPU)."""
    from index.encoder import load_sentence_transformer
    from retro.word_meaning import build_word_table, minilm_words

    minilm = load_sentence_transformer("cpu")
    words = minilm_words(list(minilm.tokenizer.vocab))
    pieces = [tokenizer.decode([i]) for i in range(tokenizer.vocab_size)]
    with console.status(f"encoding {len(words):,} words with MiniLM for the word-meaning table"):
        return build_word_table(
            pieces, tokenizer.encode, words,
            lambda ws: minilm.encode(ws, batch_size=512, normalize_embeddings=True), dim,
        )  # fmt: skip


def train_command(
    preset: str = typer.Option(..., help="a preset from retro.config.PRESETS (e.g. demo, small)"),
    index: Path = typer.Option(..., help="an index folder built by `retro index build`"),
    out: Path = typer.Option(..., help="the run folder: checkpoint, train_state/, log.jsonl"),
    steps: int = typer.Option(1000, help="optimizer steps"),
    batch_size: int = typer.Option(32, help="sequences per optimizer step (over all GPUs)"),
    lr: float = typer.Option(1e-3, help="peak learning rate (2e-3 diverged in the prototype)"),
    warmup: int | None = typer.Option(None, help="linear warmup steps; default min(200, steps // 10)"),
    min_lr_ratio: float = typer.Option(0.1, help="the cosine ends at lr x this"),
    weight_decay: float = typer.Option(0.1, help="AdamW weight decay of the weight matrices"),
    grad_accum: int = typer.Option(1, help="micro-batches per step (same gradient, less memory)"),
    grad_clip: float = typer.Option(1.0, help="gradient norm clip; 0 disables"),
    baseline: bool = typer.Option(
        False, "--baseline", help="train the preset's no-retrieval baseline on the same tokens"
    ),
    seed: int = typer.Option(0, help="seeds the model's initialisation and the data"),
    device: str = typer.Option("auto", help="auto, cpu or cuda"),
    ckpt_every: int = typer.Option(500, help="checkpoint every N steps (and at the end)"),
    log_every: int = typer.Option(10, help="log.jsonl line every N steps"),
    validation_fraction: float = typer.Option(
        0.0, help="share of documents (by a hash of their id) held out of training for evaluation"
    ),
    recipe_overrides: list[str] = typer.Option(
        [], "--recipe", help="data recipe knob as name=value, repeatable (fields of retro.data.Recipe)"
    ),
    config_overrides: list[str] = typer.Option(
        [], "--config", help="model config field as name=value over the preset, repeatable (RetroConfig)"
    ),
    init_from: Path | None = typer.Option(
        None, help="start from this model's weights (a run or exported model folder): fine-tuning"
    ),
    word_meanings: int = typer.Option(
        0,
        help="feed MiniLM's whole-word meanings, PCA to this many dimensions, to decoder and "
        "neighbour encoder (retro.word_meaning; 0 = off)",
    ),
) -> None:
    """Trains a model on an index; rerun the same command to resume after an interruption."""
    from index.layout import MANIFEST, read_json, resolve_version_dir
    from retro.devices import distributed_from_env, resolve_device
    from retro.tokenizer import Tokenizer

    try:
        resolve_device(device)
        version_dir = resolve_version_dir(index)
        manifest = read_json(version_dir / MANIFEST)
        tokenizer = Tokenizer.load(version_dir)
    except (ValueError, FileNotFoundError) as e:
        fail(str(e))
    if not 0.0 <= validation_fraction < 1.0:
        fail(f"--validation-fraction must lie in [0, 1); got {validation_fraction}")
    name, config = _training_config(
        preset, baseline, manifest["chunk_size"], manifest["pad_id"], tokenizer.vocab_size
    )
    word_table = None
    if word_meanings < 0:
        fail(f"--word-meanings takes a dimension >= 0; got {word_meanings}")
    if word_meanings:  # before the overrides: a --config switch may need the table (copy_meaning_bag)
        word_table = _word_table(tokenizer, word_meanings)
        config = config.replace(
            word_dim=word_meanings, word_rows=len(word_table["vectors"]), word_keys=len(word_table["keys"])
        )
    config = _config_overrides(config, config_overrides)
    no_retrieval = not config.uses_retrieval and not config.in_context
    rank = distributed_from_env().rank

    from retro.data import TrainingData
    from retro.in_context_data import InContextTrainingData
    from retro.train import train

    recipe = _recipe(recipe_overrides)
    if config.in_context and recipe.distinct_titles:
        fail("--recipe distinct_titles chooses RETRO's neighbours; the comparator (in_context) reads none")
    try:
        if not no_retrieval:
            for table_k in recipe.neighbour_tables(config.n_neighbours):
                _ensure_neighbours(
                    version_dir, table_k, rank, recipe.never_neighbours, recipe.neighbour_query_chunks
                )
        if config.in_context:  # the retrieval-in-prompt comparator: passages before RETRO's sequences
            data = InContextTrainingData.from_index(
                version_dir, config, tokenizer, recipe=recipe, seed=seed, total_steps=steps,
                validation_fraction=validation_fraction,
            )  # fmt: skip
        else:
            data = TrainingData.from_index(
                version_dir, config, recipe=recipe, seed=seed, total_steps=steps, baseline=no_retrieval,
                validation_fraction=validation_fraction,
            )  # fmt: skip
    except ValueError as e:
        fail(str(e))
    meta = {
        "preset": name,
        "baseline": no_retrieval,
        "index": str(Path(index).resolve()),
        "index_version": version_dir.name,
        "recipe": recipe.to_dict(),
        "data_seed": seed,
        "validation_fraction": validation_fraction,
    }
    if config.in_context:  # tokens_seen counts whole contexts, each of text_len tokens of RETRO's text
        meta["in_context"] = {"text_len": data.seq_len, "context_len": config.max_seq_len}
    if rank == 0:
        reads = "passages in its prompt" if config.in_context else "neighbours"
        console.print(
            f"training {name} ({'no retrieval' if no_retrieval else f'k={config.n_neighbours} {reads}'}) "
            f"on {version_dir} ({data.n_sequences:,} sequence starts of {data.seq_len} tokens) -> {out}",
            highlight=False,
        )
    try:
        result = train(
            out, config, data, tokenizer, steps=steps, batch_size=batch_size, lr=lr, warmup=warmup,
            min_lr_ratio=min_lr_ratio, weight_decay=weight_decay, grad_accum=grad_accum,
            grad_clip=grad_clip, ckpt_every=ckpt_every, log_every=log_every, seed=seed, device=device,
            meta=meta, init_from=init_from, word_table=word_table,
        )  # fmt: skip
    except ValueError as e:
        fail(str(e))
    except FloatingPointError as e:
        console.print(f"[bold red]error:[/] {e}", highlight=False)
        raise typer.Exit(code=1) from e
    if rank == 0:
        loss = "no step left to take" if result.loss is None else f"loss {result.loss:.4f}"
        output.print(
            f"trained {result.step}/{steps} steps, {loss}, {result.tokens_seen:,} tokens in "
            f"{result.elapsed_s:.0f}s; checkpoint: {out}",
            highlight=False,
        )

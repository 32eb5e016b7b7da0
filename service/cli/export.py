"""`retro export`: a run's checkpoint without its training state, in smaller shards or a smaller type,
optionally with inference defaults set in its config: the k its generations retrieve (`--neighbours`),
the tokens a chunk's query holds (`--query-tokens`), the first token's copy bias (`--first-copy-bias`)
how many first-token candidates greedy decoding weighs by one token of lookahead
(`--first-candidates`), and the span reader stored beside it with its weight on the first token
(`--span-reader`, `--span-weight`, `--span-floor`, `--span-follow`; a folder that holds a reader
passes it on).

The files are written by `retro.checkpoint.save_checkpoint` (the same format a run folder holds),
so an exported folder loads wherever a checkpoint does; weights are cast back to float32 on load.
"""

from __future__ import annotations

from pathlib import Path

import typer

from service.cli.console import console, fail

EXPORT_DTYPES = {"float32": "float32", "float16": "float16", "bfloat16": "bfloat16"}


def export_command(
    run: Path = typer.Argument(..., help="a checkpoint folder (a run folder of `retro train`)"),
    out: Path = typer.Option(..., "--out", help="the folder to write: weights, config.json, tokenizer.json"),
    dtype: str = typer.Option("float32", help="weight type on disk: float32, float16 or bfloat16"),
    max_shard_mb: int = typer.Option(16, help="largest safetensors shard, in MiB"),
    neighbours: int | None = typer.Option(
        None,
        "--neighbours",
        help="k retrieved per chunk at inference when a request names none (the config's "
        "inference_neighbours; default: as in the run, else the k it was trained with)",
    ),
    query_tokens: int | None = typer.Option(
        None,
        "--query-tokens",
        help="retrieve each chunk with its last N tokens at inference, N >= the chunk size (the config's "
        "inference_query_tokens; default: as in the run, else the chunk alone)",
    ),
    first_copy_bias: float | None = typer.Option(
        None,
        "--first-copy-bias",
        help="nats by which the copy head's null slot is lowered for a generation's first token, so an "
        "answer begins from the neighbours (the config's inference_first_copy_bias; 0: off; default: as "
        "in the run)",
    ),
    first_candidates: int | None = typer.Option(
        None,
        "--first-candidates",
        help="greedy decoding says as its first token the one of the N likeliest whose log-probability "
        "plus its best next token's is highest (the config's inference_first_candidates; 0 or 1: the "
        "argmax; default: as in the run)",
    ),
    span_reader: Path | None = typer.Option(
        None,
        "--span-reader",
        help="a `retro reader train` folder (or its span_reader.safetensors) to store beside the "
        "checkpoint (default: the one the run folder holds, if any)",
    ),
    span_weight: float | None = typer.Option(
        None,
        "--span-weight",
        help="the span reader's weight on a generation's first token (the config's "
        "inference_span_weight; 0: off; default: as in the run)",
    ),
    span_floor: float | None = typer.Option(
        None,
        "--span-floor",
        help="the lowest log-probability the span reader's bias counts, <= 0 (the config's "
        "inference_span_floor; default: as in the run)",
    ),
    span_follow: float | None = typer.Option(
        None,
        "--span-follow",
        help="nats for the next token of the span reader's answer while a generation follows it "
        "(the config's inference_span_follow; 0: off; default: as in the run)",
    ),
) -> None:
    """Writes a run's checkpoint without its training state, in smaller shards or a smaller type."""
    import torch

    from retro.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

    if dtype not in EXPORT_DTYPES:
        fail(f"--dtype must be one of {', '.join(EXPORT_DTYPES)}; got {dtype!r}")
    if max_shard_mb < 1:
        fail(f"--max-shard-mb must be >= 1; got {max_shard_mb}")
    if neighbours is not None and neighbours < 1:
        fail(f"--neighbours must be >= 1; got {neighbours}")
    if out.resolve() == run.resolve():
        fail("--out must differ from the run folder")
    try:
        model, tokenizer, meta = load_checkpoint(run)
    except CheckpointError as e:
        fail(str(e))
    if neighbours is not None:
        if not model.config.uses_retrieval:
            fail("--neighbours is for a RETRO model; this checkpoint reads no neighbours through CCA")
        model.config = model.config.replace(inference_neighbours=neighbours)  # shapes no parameter
    if query_tokens is not None:
        if not model.config.uses_retrieval:
            fail("--query-tokens is for a RETRO model; this checkpoint reads no neighbours through CCA")
        if query_tokens < model.config.chunk_size:
            m = model.config.chunk_size
            fail(f"--query-tokens must be at least the chunk size ({m}); got {query_tokens}")
        model.config = model.config.replace(inference_query_tokens=query_tokens)  # shapes no parameter
    if first_copy_bias is not None:
        if not (model.config.uses_retrieval and model.config.copy_head):
            fail("--first-copy-bias is for a RETRO model with a copy head; this checkpoint has none")
        if not 0 <= first_copy_bias < float("inf"):
            fail(f"--first-copy-bias must be a finite number >= 0; got {first_copy_bias}")
        model.config = model.config.replace(inference_first_copy_bias=first_copy_bias)  # decoding only
    if first_candidates is not None:
        if first_candidates < 0:
            fail(f"--first-candidates must be >= 0; got {first_candidates}")
        model.config = model.config.replace(inference_first_candidates=first_candidates)  # decoding only
    reader_file = _span_reader_file(run, span_reader)
    if span_weight is not None or span_floor is not None or span_follow is not None:
        if reader_file is None:
            fail(
                "--span-weight, --span-floor and --span-follow need a span reader: give --span-reader FOLDER"
            )
        if span_weight is not None and not 0 <= span_weight < float("inf"):
            fail(f"--span-weight must be a finite number >= 0; got {span_weight}")
        if span_floor is not None and not -float("inf") < span_floor <= 0:
            fail(f"--span-floor must be a finite number <= 0; got {span_floor}")
        if span_follow is not None and not 0 <= span_follow < float("inf"):
            fail(f"--span-follow must be a finite number >= 0; got {span_follow}")
        changes = {
            "inference_span_weight": span_weight,
            "inference_span_floor": span_floor,
            "inference_span_follow": span_follow,
        }
        model.config = model.config.replace(**{k: v for k, v in changes.items() if v is not None})
    if reader_file is not None and not model.config.uses_retrieval:
        fail("--span-reader is for a RETRO model; this checkpoint reads no neighbours through CCA")
    meta = {**meta, "exported": {"from": str(run), "dtype": dtype}}
    save_checkpoint(
        out,
        model,
        tokenizer,
        meta,
        max_shard_bytes=max_shard_mb * 1024 * 1024,
        dtype=getattr(torch, dtype),
        extra_files=[reader_file] if reader_file is not None else [],
    )
    size = sum(p.stat().st_size for p in out.iterdir())
    console.print(f"exported {run} -> {out} ({size / 2**20:.1f} MiB, {dtype})", highlight=False)


def _span_reader_file(run: Path, given: Path | None) -> Path | None:
    """The span reader's weights to store: `given` (a folder holding the file, or the file), else
    the run folder's own; checked to load as a span reader before anything is written."""
    from retro.span_reader import FILE, describe

    if given is None:
        own = run / FILE
        return own if own.is_file() else None
    path = given / FILE if given.is_dir() else given
    if not path.is_file():
        fail(f"--span-reader: no {FILE} in {given}")
    if path.name != FILE:
        fail(f"--span-reader: {path} is not a span reader's {FILE}")
    try:
        meta = describe(path.parent)
    except (OSError, ValueError) as e:
        fail(f"--span-reader: {path} is not readable as safetensors: {e}")
    if "rank" not in meta:
        fail(f"--span-reader: {path} is not a span reader's {FILE}")
    return path

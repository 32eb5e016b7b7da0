"""`retro index ...`: build, extend, remove from, search, inspect and prune an index from the command line.

This module owns only argument handling and printing; the work is done by the `index` package.
When no tokenizer is given, `build` trains a byte-level BPE on the corpus and the index keeps it
(the model is later trained with the index's tokenizer). Bad input exits with code 2 and a
one-line message (`service.cli.console.fail`).
"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from service.cli.console import INDEX_STAGE_LABELS, console, fail, output, progress_bar, stage_progress

index_app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="Build, extend, remove from, search and inspect an index.",
)


def _read_documents(sources: list[str]):
    from index.sources import check_sources, read_sources

    try:
        check_sources(sources)
        skipped: list = []
        with console.status("reading documents"):
            documents = list(read_sources(sources, skipped))
    except ValueError as e:
        fail(str(e))
    return documents, skipped


def _load_tokenizer(path: Path):
    from retro.tokenizer import Tokenizer

    try:
        return Tokenizer.load(path)
    except (FileNotFoundError, ValueError) as e:
        fail(str(e))


def _open_store(
    index_dir: Path,
    tokenizer_path: Path | None,
    device: str = "auto",
    encoder_backend: str | None = None,
    adding: bool = False,
):
    """The CURRENT version; with `encoder_backend`, its chunk encoder is loaded now, and when
    `adding`, on a backend that does not mix int8 and fp32 vectors in it (`_backend_for_index`;
    a search may query an fp32 version with int8 vectors)."""
    from index.layout import MANIFEST, read_json, resolve_version_dir
    from index.store import IndexStore

    try:
        version_dir = resolve_version_dir(index_dir)
        tokenizer = _load_tokenizer(tokenizer_path or version_dir)
        encoder = None
        if encoder_backend is not None:
            if adding:
                built = read_json(version_dir / MANIFEST).get("encoder_backend")
                encoder_backend = _backend_for_index(version_dir.name, built, encoder_backend)
            encoder = _encoder(device, encoder_backend)
        return IndexStore.open(version_dir, tokenizer, encoder=encoder, device=device)
    except ValueError as e:
        fail(str(e))


def _encoder_backend_option():
    return typer.Option(
        "auto",
        "--encoder-backend",
        envvar="RETRO_ENCODER_BACKEND",
        help="MiniLM backend: auto (ONNX Runtime fp32 on the CPU when installed, else torch), torch, "
        "onnx, onnx-int8 (faster, vectors differ slightly; the manifest records it)",
    )


def _encoder(device: str, backend: str = "auto"):
    from index.encoder import ChunkEncoder

    try:
        with console.status("loading the chunk encoder"):
            # "auto" is ChunkEncoder's own default; the one-argument call is also what the tests'
            # stand-ins for it take.
            return ChunkEncoder(device) if backend == "auto" else ChunkEncoder(device, backend=backend)
    except ValueError as e:
        fail(str(e))


def _backend_for_index(version: str, built: str | None, backend: str) -> str:
    """The backend that adds to a version built with `built` without mixing int8 and fp32 vectors
    in it: "auto" follows an int8 version; an explicit backend of the other precision is refused."""
    from index.encoder import embedding_precision

    if backend == "auto":
        return "onnx-int8" if embedding_precision(built) == "int8" else "auto"
    if embedding_precision(backend) != embedding_precision(built):
        fail(
            f"{version} holds {embedding_precision(built)} vectors (encoder backend {built or 'torch'}); "
            f"adding with {backend} would mix int8 and fp32 vectors in it"
        )
    return backend


def format_bytes(n: float) -> str:
    """1234567 -> '1.2 MB' (decimal units, like `df -H`)."""
    unit = "B"
    for larger in ("kB", "MB", "GB", "TB"):
        if n < 1000:
            break
        n, unit = n / 1000, larger
    return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"


def _print_skipped(skipped: list, limit: int = 10) -> None:
    if skipped:
        console.print(f"[yellow]skipped {len(skipped)} inputs[/]")
        for s in skipped[:limit]:
            console.print(f"  {s.where}: {s.reason}", highlight=False)
        if len(skipped) > limit:
            console.print(f"  ... and {len(skipped) - limit} more (listed in manifest.json)")


@index_app.command("build")
def build(
    sources: list[str] = typer.Argument(
        ..., help="folders, .jsonl files or named sources (wiki-vital, facts, ...)"
    ),
    out: Path = typer.Option(
        ..., "--out", help="index folder; each build adds a version and switches CURRENT"
    ),
    tokenizer: Path | None = typer.Option(
        None, help="tokenizer.json (or a folder holding one); default: train one"
    ),
    vocab_size: int = typer.Option(8192, help="vocabulary of the BPE trained when no --tokenizer is given"),
    chunk_size: int = typer.Option(64, help="tokens per chunk"),
    factory: str | None = typer.Option(
        None,
        help="faiss factory string; default: by size (Flat, IVF, IVF-PQ); with Milvus its index type "
        "(FLAT, the default, IVF_FLAT, HNSW, AUTOINDEX)",
    ),
    vector_store: str | None = typer.Option(
        None,
        "--vector-store",
        help="faiss, or milvus:URI with URI a server (http://HOST:19530) or a Milvus Lite file (PATH.db); "
        "default: the store of the index's current version, faiss for a new index",
    ),
    device: str = typer.Option("auto", help="encoder device: auto, cpu or cuda"),
    encoder_backend: str = _encoder_backend_option(),
    shard_size: int = typer.Option(4096, help="chunks per embedding shard (the unit a rerun resumes from)"),
    keep_versions: int = typer.Option(
        3,
        "--keep-versions",
        help="then delete older versions beyond the newest N (CURRENT stays); 0 keeps all",
    ),
    reuse_embeddings: Path | None = typer.Option(
        None,
        help="an index (same tokenizer and encoder) whose embeddings are reused for chunks it holds; "
        "only the other chunks are encoded",
    ),
    slice_spec: str | None = typer.Option(
        None,
        "--slice",
        metavar="I/N",
        help="one of N workers sharing OUT: embed only slice I (0-based) of the documents into OUT/work "
        "and make no version; the store options then apply to the --assemble step (docs/scale.md)",
    ),
    assemble: bool = typer.Option(
        False,
        "--assemble",
        help="make the version from the slices the workers embedded, encoding nothing; fails naming "
        "the slices not finished (a build without it encodes what they miss)",
    ),
) -> None:
    """Builds a new index version from SOURCES (resuming an interrupted identical build), or with
    --slice I/N embeds one worker's share of it; --assemble then makes the version from the slices."""
    from index.build import build_index

    if keep_versions < 0:
        fail(f"--keep-versions must be >= 0 (0 keeps all versions), got {keep_versions}")
    part = None
    if slice_spec is not None:
        from index.slices import parse_slice

        if assemble:
            fail("--slice and --assemble are two steps: --slice I/N on each worker, then --assemble once")
        try:
            part = parse_slice(slice_spec)
        except ValueError as e:
            fail(str(e))
    if vector_store is not None and part is None:
        from index.vector_store import check_vector_store

        try:  # before the long stages: a wrong URI or an unreachable server fails at once
            with console.status(f"connecting to {vector_store}"):
                vector_store = check_vector_store(vector_store)
        except ValueError as e:
            fail(f"--vector-store: {e}")
    documents, skipped = _read_documents(sources)
    if not documents:
        fail(f"no readable documents in {', '.join(sources)} ({len(skipped)} inputs skipped)")
    if tokenizer is not None:
        lm_tokenizer = _load_tokenizer(tokenizer)
    else:
        from retro.tokenizer import Tokenizer

        with console.status(f"training a {vocab_size}-token BPE on {len(documents)} documents"):
            try:
                lm_tokenizer = Tokenizer.train((d.text for d in documents), vocab_size=vocab_size)
            except ValueError as e:
                fail(str(e))
    encoder = _encoder(device, encoder_backend)
    if reuse_embeddings is not None:
        from index.embedding_reuse import ReusingEncoder

        try:
            with console.status(f"reading the chunk texts of {reuse_embeddings}"):
                encoder = ReusingEncoder(encoder, reuse_embeddings, lm_tokenizer)
        except (ValueError, FileNotFoundError) as e:
            fail(str(e))
    if part is not None:
        _embed_slice(documents, out, lm_tokenizer, encoder, part, chunk_size, shard_size, skipped, sources)
        return
    with progress_bar() as bars:
        progress = stage_progress(bars, INDEX_STAGE_LABELS)
        try:
            report = build_index(
                documents,
                out,
                lm_tokenizer,
                encoder,
                chunk_size=chunk_size,
                factory=factory,
                shard_size=shard_size,
                skipped=skipped,
                sources=sources,
                progress=progress,
                keep_versions=keep_versions or None,
                vector_store=vector_store,
                assemble=assemble,
            )
        except ValueError as e:
            fail(str(e))
    _print_skipped(report.skipped)
    reused = f", {report.shards_reused} of {report.shards} shards reused" if report.shards_reused else ""
    if report.slices:
        reused += f", assembled from {report.slices} slices"
    if reuse_embeddings is not None:
        reused += f", {encoder.reused:,} embeddings reused and {encoder.encoded:,} encoded"
    output.print(
        f"built {report.version}: {report.n_documents:,} documents, {report.n_chunks:,} chunks, "
        f"{report.vector_store} {report.faiss_factory}, {report.build_seconds:.1f}s{reused} -> "
        f"{report.version_dir}",
        highlight=False,
    )
    if report.pruned:
        output.print(
            f"deleted old versions {', '.join(report.pruned)} (keeping {keep_versions})", highlight=False
        )


def _embed_slice(documents, out, tokenizer, encoder, part, chunk_size, shard_size, skipped, sources) -> None:
    """A worker's share of a sliced build (`index.build.embed_slice`), and what to run next."""
    from index.build import embed_slice

    with progress_bar() as bars:
        progress = stage_progress(bars, INDEX_STAGE_LABELS)
        try:
            report = embed_slice(
                documents, out, tokenizer, encoder, part, chunk_size=chunk_size, shard_size=shard_size,
                skipped=skipped, progress=progress,
            )  # fmt: skip
        except ValueError as e:
            fail(str(e))
    if report.already_done:
        done = "was already done"
    else:
        reused = f" ({report.shards_reused} reused)" if report.shards_reused else ""
        done = f"done in {report.seconds:.1f}s, {report.shards} shards{reused}"
    output.print(
        f"slice {report.slice}: documents {report.first_document:,}:{report.end_document:,}, "
        f"{report.n_chunks:,} chunks, {done} -> {report.work_dir}",
        highlight=False,
    )
    output.print(
        f"when all {part.count} slices are done: retro index build {' '.join(sources)} --out {out} "
        f"--assemble (with this worker's --tokenizer, --chunk-size and --shard-size)",
        highlight=False,
        markup=False,
    )


@index_app.command("add")
def add(
    index_dir: Path = typer.Argument(..., help="an index folder"),
    sources: list[str] = typer.Argument(..., help="folders, .jsonl files or named sources"),
    tokenizer: Path | None = typer.Option(
        None, help="check against this tokenizer; default: the index's own"
    ),
    device: str = typer.Option("auto", help="encoder device: auto, cpu or cuda"),
    encoder_backend: str = _encoder_backend_option(),
    replace: bool = typer.Option(
        False, "--replace", help="a document whose id the index holds replaces it (default: skipped)"
    ),
) -> None:
    """Adds documents to the current version without a rebuild."""
    store = _open_store(index_dir, tokenizer, device, encoder_backend, adding=True)
    documents, skipped = _read_documents(sources)
    with console.status(f"adding {len(documents)} documents"):
        report = store.add_documents(documents, skipped, replace=replace)
    _print_skipped(report.skipped)
    replaced = f", {len(report.replaced):,} of them in place of one with their id" if report.replaced else ""
    output.print(
        f"added {report.n_documents:,} documents ({report.n_chunks:,} chunks{replaced}) to {store.version} "
        f"in {report.seconds:.1f}s; it now holds {store.n_live_documents:,} documents",
        highlight=False,
    )


@index_app.command("remove")
def remove(
    index_dir: Path = typer.Argument(..., help="an index folder"),
    doc_ids: list[str] = typer.Argument(..., help="the doc ids to remove"),
) -> None:
    """Removes documents from the current version: never retrieved again, no rebuild. Prints each
    id's outcome; exits 1 when an id was not in the index (the others are removed)."""
    from index.store import DOC_ALREADY_REMOVED, DOC_NOT_FOUND, DOC_REMOVED

    store = _open_store(index_dir, None)
    try:
        report = store.remove_documents(doc_ids)
    except (ValueError, OSError) as e:
        fail(str(e))
    labels = {DOC_REMOVED: "removed", DOC_NOT_FOUND: "not found", DOC_ALREADY_REMOVED: "already removed"}
    for doc_id, outcome in zip(report.doc_ids, report.outcomes, strict=True):
        output.print(f"{labels[outcome]}: {doc_id}", highlight=False, markup=False)
    output.print(
        f"removed {report.n_documents:,} documents ({report.n_chunks:,} chunks) from {store.version}; "
        f"it now holds {store.n_live_documents:,} documents ({store.n_live_chunks:,} chunks)",
        highlight=False,
    )
    if DOC_NOT_FOUND in report.outcomes:
        raise typer.Exit(code=1)


@index_app.command("search")
def search(
    index_dir: Path = typer.Argument(..., help="an index folder"),
    text: str = typer.Argument(..., help="the query text"),
    k: int = typer.Option(5, "-k", "--k", help="neighbours to return"),
    as_json: bool = typer.Option(False, "--json", help="print JSON instead of a table"),
    tokenizer: Path | None = typer.Option(
        None, help="check against this tokenizer; default: the index's own"
    ),
    device: str = typer.Option("auto", help="encoder device: auto, cpu or cuda"),
    encoder_backend: str = _encoder_backend_option(),
) -> None:
    """Prints the k chunks nearest to TEXT."""
    from index.retriever import Retriever

    if k < 1:
        fail(f"-k must be >= 1, got {k}")
    store = _open_store(index_dir, tokenizer, device, encoder_backend)
    (found,) = Retriever(store).search([text], k)
    rows = [
        {"rank": i + 1, "score": float(s), "doc_id": d, "chunk_id": int(c), "text": t}
        for i, (s, d, c, t) in enumerate(
            zip(found.scores, found.doc_ids, found.chunk_ids, found.texts, strict=True)
        )
        if c >= 0
    ]
    if as_json:
        output.print_json(json.dumps({"query": text, "version": store.version, "neighbours": rows}))
        return
    table = Table(title=f"{len(rows)} neighbours from {store.version}")
    for column in ("rank", "score", "doc_id", "text"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(str(row["rank"]), f"{row['score']:.3f}", row["doc_id"], row["text"])
    output.print(table)


@index_app.command("neighbours")
def neighbours(
    index_dir: Path = typer.Argument(..., help="an index folder or a version folder"),
    k: int = typer.Option(2, "-k", "--k", help="neighbours per chunk"),
    never_from: list[str] = typer.Option(
        [],
        "--never-from",
        help="doc-id prefix whose documents are never neighbours (repeatable): "
        "training material no serving index holds; the table `--recipe passage_neighbours=true` reads",
    ),
    query_chunks: int = typer.Option(
        1,
        "--query-chunks",
        help="with --never-from: query those documents' chunks with their text and that of up to N-1 "
        "chunks before it (the table `--recipe read_query_chunks=N` reads)",
    ),
) -> None:
    """Precomputes each chunk's k nearest chunks of other documents, for training (RETRO 2.3)."""
    from index.neighbours import precompute_neighbours

    if k < 1:
        fail(f"-k must be >= 1, got {k}")
    with progress_bar() as bars:
        task = bars.add_task("finding neighbours", total=None)
        try:
            path = precompute_neighbours(
                index_dir,
                k,
                progress=lambda done, total: bars.update(task, completed=done, total=total),
                never_from=tuple(never_from),
                query_chunks=query_chunks,
            )
        except ValueError as e:
            fail(str(e))
    output.print(f"wrote {path}", highlight=False)


@index_app.command("info")
def info(
    index_dir: Path = typer.Argument(..., help="an index folder or a version folder"),
    as_json: bool = typer.Option(False, "--json", help="print the whole manifest as JSON"),
) -> None:
    """Prints the current version's manifest: counts, tokenizer, encoder, factory, skipped inputs,
    and the index's version folders with their sizes."""
    from index.layout import MANIFEST, VERSIONS_DIR, read_json, resolve_version_dir
    from index.prune import folder_bytes, version_names

    try:
        version_dir = resolve_version_dir(index_dir)
    except ValueError as e:
        fail(str(e))
    manifest = read_json(version_dir / MANIFEST)
    if as_json:
        output.print_json(json.dumps(manifest))
        return
    root = version_dir.parent.parent if version_dir.parent.name == VERSIONS_DIR else None
    versions = version_names(root) if root is not None else []
    table = Table(title=f"index {index_dir} (serving {manifest['version']})", show_header=False)
    for key in (
        "n_documents", "n_chunks", "n_tokens", "chunk_size", "vocab_size", "encoder",
        "faiss_factory", "build_seconds", "created", "sources",
    ):  # fmt: skip
        table.add_row(key, str(manifest.get(key)))
    table.add_row("vector_store", manifest.get("vector_store", "faiss"))
    table.add_row("encoder_backend", manifest.get("encoder_backend", "torch (not recorded)"))
    table.add_row("tokenizer", manifest["tokenizer_fingerprint"][:16])
    table.add_row("corpus", manifest["corpus_fingerprint"][:16])
    table.add_row("skipped inputs", str(len(manifest.get("skipped", []))))
    table.add_row("live additions", str(len(manifest.get("additions", []))))
    table.add_row("removed documents", str(manifest.get("n_removed", 0)))
    if versions:
        current = resolve_version_dir(root).name
        sizes = {name: folder_bytes(root / VERSIONS_DIR / name) for name in versions}
        lines = [
            f"{name}  {format_bytes(size):>9}" + ("  CURRENT" if name == current else "")
            for name, size in sizes.items()
        ]
        table.add_row(f"versions ({format_bytes(sum(sizes.values()))})", "\n".join(lines))
    output.print(table)


@index_app.command("prune")
def prune(
    index_dir: Path = typer.Argument(..., help="an index folder"),
    keep: int = typer.Option(3, "--keep", help="versions to keep: the newest N (CURRENT always stays)"),
) -> None:
    """Deletes the oldest versions so that at most KEEP remain; never CURRENT, never one being added to."""
    from index.layout import VERSIONS_DIR, resolve_version_dir
    from index.prune import folder_bytes, prune_versions, version_names

    if keep < 1:
        fail(f"--keep must be >= 1 (the CURRENT version always stays), got {keep}")
    sizes = {name: folder_bytes(index_dir / VERSIONS_DIR / name) for name in version_names(index_dir)}
    try:
        deleted = prune_versions(index_dir, keep)
    except (ValueError, OSError) as e:
        fail(str(e))
    for name in deleted:
        output.print(f"deleted {name} ({format_bytes(sizes.get(name, 0))})", highlight=False)
    remaining = version_names(index_dir)
    current = resolve_version_dir(index_dir).name
    freed = f"freed {format_bytes(sum(sizes.get(n, 0) for n in deleted))}" if deleted else "nothing to delete"
    output.print(
        f"{freed}; {len(remaining)} versions remain: {', '.join(remaining)} (CURRENT {current})",
        highlight=False,
    )
    if len(remaining) > keep:
        console.print(
            f"[yellow]more than {keep} remain: a version being added to, or newer than CURRENT while a "
            "build runs, is kept; prune again later[/]"
        )

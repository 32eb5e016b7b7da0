"""The demo's stages and the recipe of its models: what `retro demo` (`service.cli.demo`) runs, cached.

Stages, each with a Rich progress bar and an ETA where its length is known:

1. models: the repository's demo checkpoints (`models/demo`, `models/demo-baseline`,
   `models/demo-rag`, trained on a CPU by the recipe below), or, with `--train`, the same recipe
   run here into `DATA/runs/` (minutes on a GPU, about five hours on a 2-core CPU: five RETRO
   stages, the span reader, the 10x baseline and the retrieval-in-prompt comparator; the demo
   then serves `DATA/runs/demo-served`, stage 5 exported with the reader beside it);
2. index: the knowledge the model was trained with, without its question-and-answer training
   documents (`wiki-vital:train facts:train reading:train`: encyclopedia leads, the training facts
   and the reading set's training passages) cut and embedded with the RETRO model's own tokenizer
   into `DATA/index`, reused when one with the same sources, tokenizer and chunk size is there;
3. held-out facts: the entities the model never saw (`facts:heldout`, declarative phrasings only:
   never their question-and-answer documents), the made-up ones (`index.fictional`) and the reading
   set's development passages (`reading:dev`: styles the model was never trained on) added live to
   that index, as a user would add new knowledge after training;
4. serve: the API and the comparison page on http://HOST:PORT, with three example `curl` calls.

This module owns the demo's recipe and its caching; the work is done by the same functions the
`retro index` and `retro train` commands call, so the demo is the documented pipeline, not a copy.
The recipe's commands run as `python -m service.cli ...` with this interpreter.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from service.cli.console import INDEX_STAGE_LABELS, console, progress_bar, stage_progress

REPO_ROOT = Path(__file__).resolve().parents[2]
# The demo checkpoints: the repository's models/ (the Docker image copies them and sets the variable)
SHIPPED_MODELS = Path(os.environ.get("RETRO_DEMO_MODELS") or REPO_ROOT / "models")
# What the demo serves: the training knowledge without the question-and-answer training documents,
# which would outrank the passages a question is about by sharing the question's words.
INDEX_SOURCES = ["wiki-vital:train", "facts:train", "reading:train"]
RETRO_RUN, BASELINE_RUN, RAG_RUN = "demo", "demo-baseline", "demo-rag"

# The recipe of models/demo and models/demo-baseline; `{index}` and `{runs}` are filled in. Their model
# cards quote what was run and where it differed: the shipped models share the tokenizer of an
# earlier index (wiki-vital facts:train), the baseline was trained on that earlier index, and the
# shipped demo's first stage on the index without reading-qa-forms:train and reading-chat:train,
# its first three without reading-qa-para:train, its first four without facts-qa-para:train.
# That difference is measured: these commands on one index gave a stage 5 that read 11 points
# fewer dev questions in held-out wordings than the shipped one (one seed, docs/results,
# twenty-first reading round).
# `demo` is trained in five stages, each a fine-tune of the one before (`--init-from`): the
# copying recipe (3,000 steps), then reading (the Q&A documents' share of sequences raised, the
# copy head's bag match switched on) for 1,000, 1,500 and 3,000 steps, then 1,000 with neighbours
# drawn only from passages (`passage_neighbours`: a serving index holds no Q&A document), the
# copy head's neighbour match switched on (`copy_neighbour_bag`), and neighbours of 128 tokens
# (`retrieved_len=128`: a chunk and three continuation chunks, so that an answer a chunk or two
# past the chunk that matched is shown) retrieved with a query of the last 96 tokens
# (`inference_query_tokens=96`, inference only: a long prompt's subject named before its last chunk),
# and each answer's first token drawn with the copy head's null slot lowered by 3.5 nats
# (`inference_first_copy_bias=3.5`, decoding only: docs/design.md, seventeenth round) and, decoding
# greedily, chosen among the five likeliest by one token of lookahead (`inference_first_candidates=5`,
# decoding only: nineteenth round).
TRAIN_INDEX_COMMAND = (
    "retro index build wiki-vital:train facts:train facts-qa:train facts-qa-para:train reading:train "
    "reading-qa:train reading-qa-forms:train reading-chat:train reading-qa-para:train --out {index} "
    "--chunk-size 32 --vocab-size 8192"
)
_READING_STAGE = (
    "--config copy_bag_window=16 --batch-size 16 --lr 1e-3 --warmup 50 --ckpt-every 100 "
    "--recipe continuation_start=0.5 --recipe continuation_end=0.5 "
    "--recipe read_prefix=reading-qa/,facts-qa/,reading-chat/"
)
TRAIN_RETRO_COMMANDS = (
    "retro train --preset demo --index {index} --out {runs}/demo-stage1 --steps 3000 --batch-size 16 "
    "--lr 1.5e-3 --ckpt-every 100 --recipe continuation_end=0.5 --recipe decay_from=0.2 "
    "--recipe read_prefix=reading-qa/,facts-qa/",
    "retro train --preset demo --index {index} --out {runs}/demo-stage2 --init-from {runs}/demo-stage1 "
    f"--steps 1000 {_READING_STAGE} --recipe read_share=0.25",
    "retro train --preset demo --index {index} --out {runs}/demo-stage3 --init-from {runs}/demo-stage2 "
    f"--steps 1500 {_READING_STAGE} --recipe read_share=0.5",
    "retro train --preset demo --index {index} --out {runs}/demo-stage4 --init-from {runs}/demo-stage3 "
    f"--steps 3000 {_READING_STAGE} --recipe read_share=0.5",
    "retro train --preset demo --index {index} --out {runs}/demo --init-from {runs}/demo-stage4 "
    f"--steps 1000 {_READING_STAGE} --recipe read_share=0.5 --recipe passage_neighbours=true "
    "--config copy_neighbour_bag=true --config retrieved_len=128 --config inference_query_tokens=96 "
    "--config inference_first_copy_bias=3.5 --config inference_first_candidates=5",
)
# The span reader (`retro.span_reader`, docs/design.md, twenty-second and twenty-third rounds):
# MiniLM with rank-16 adapters trained as an extractive reader on the reading set's training
# questions and completions, update notices and wiki-qa (about 45 minutes on a 2-core CPU), stored
# beside stage 5 by `retro export` with its weight on the first token and its follow bonus on the
# rest of its span; the demo serves that export.
SPAN_WEIGHT = 3.0
SPAN_FOLLOW = 6.0
TRAIN_READER_COMMAND = "retro reader train --out {runs}/span-reader --steps 1300 --rank 16 --lr 1e-3"
EXPORT_RETRO_COMMAND = (
    "retro export {runs}/demo --out {runs}/demo-served --span-reader {runs}/span-reader "
    f"--span-weight {SPAN_WEIGHT} --span-follow {SPAN_FOLLOW}"
)
SERVED_RETRO_RUN = "demo-served"
# The side-by-side comparison (docs/design.md "RETRO against a 10x model and against passages in
# the prompt"): the 10x baseline and the retrieval-in-prompt comparator are trained from scratch on
# exactly the same batches (the data is a function of seed, step and recipe) as a RETRO twin of the
# demo's first stage, `retro train --preset demo --index {index} --out {runs}/demo-same-tokens
# --lr 1.5e-3 {SAME_TOKENS}` (not shipped: the shipped `demo` is that recipe and four more stages).
SAME_TOKENS = (
    "--steps 1000 --batch-size 16 --ckpt-every 100 --seed 0 --recipe continuation_end=0.5 "
    "--recipe decay_from=0.2 --recipe read_prefix=reading-qa/,facts-qa/"
)
TRAIN_BASELINE_COMMAND = (
    "retro train --preset demo --baseline --index {index} --out {runs}/demo-baseline --lr 1e-3 " + SAME_TOKENS
)
TRAIN_RAG_COMMAND = (
    "retro train --preset demo-rag --index {index} --out {runs}/demo-rag --lr 1.5e-3 " + SAME_TOKENS
)


@dataclass(frozen=True)
class DemoModels:
    """The demo's checkpoint folders: RETRO, the 10x no-retrieval baseline, and the
    retrieval-in-prompt comparator (None where a models folder has none: served without it)."""

    retro: Path
    baseline: Path
    rag: Path | None


@dataclass(frozen=True)
class DemoPaths:
    data: Path  # everything the demo writes lives here (RETRO_DATA_DIR)

    @property
    def index(self) -> Path:
        return self.data / "index"

    @property
    def train_index(self) -> Path:
        return self.data / "train-index"

    @property
    def runs(self) -> Path:
        return self.data / "runs"


# --- stage 1: models ------------------------------------------------------------------------------
def _run_recipe_command(template: str, paths: DemoPaths) -> None:
    """Runs one recipe command with this interpreter's `retro`, its own bars on the terminal."""
    command = template.format(index=paths.train_index, runs=paths.runs)
    console.print(f"[bold]$ {command}[/]", highlight=False)
    argv = shlex.split(command)
    argv[0:1] = [sys.executable, "-m", "service.cli"]
    if subprocess.run(argv, cwd=REPO_ROOT).returncode != 0:
        raise RuntimeError(f"the demo recipe failed at: {command}")


def train_models(paths: DemoPaths) -> DemoModels:
    """Runs the recipe into DATA/runs (a rerun resumes each command where it stopped)."""
    paths.runs.mkdir(parents=True, exist_ok=True)
    if (paths.train_index / "CURRENT").is_file():
        console.print(f"training index: reusing {paths.train_index}", highlight=False)
    else:
        _run_recipe_command(TRAIN_INDEX_COMMAND, paths)
    recipe = (*TRAIN_RETRO_COMMANDS, TRAIN_READER_COMMAND, EXPORT_RETRO_COMMAND, TRAIN_BASELINE_COMMAND)
    for template in (*recipe, TRAIN_RAG_COMMAND):
        _run_recipe_command(template, paths)  # a rerun resumes each run (the export is redone)
    return DemoModels(paths.runs / SERVED_RETRO_RUN, paths.runs / BASELINE_RUN, paths.runs / RAG_RUN)


def shipped_models(models_dir: Path | None = None) -> DemoModels:
    """The repository's demo checkpoints; a CheckpointError names a missing or damaged one. The
    retrieval-in-prompt comparator is optional: a models folder without one serves two models."""
    from retro.checkpoint import read_config

    models_dir = SHIPPED_MODELS if models_dir is None else models_dir
    rag = models_dir / RAG_RUN
    models = DemoModels(models_dir / RETRO_RUN, models_dir / BASELINE_RUN, rag if rag.exists() else None)
    for folder in (models.retro, models.baseline, models.rag):
        if folder is not None:
            read_config(folder)  # a clear CheckpointError if the folder is missing or damaged
    return models


# --- stage 2: index -------------------------------------------------------------------------------
def reusable_index(index_dir: Path, tokenizer, chunk_size: int, sources: list[str]) -> str | None:
    """The CURRENT version if it was built from `sources` with this tokenizer and chunk size."""
    from index.layout import MANIFEST, read_json, resolve_version_dir

    try:
        version_dir = resolve_version_dir(index_dir)
        manifest = read_json(version_dir / MANIFEST)
    except (OSError, ValueError):  # no index yet, or a damaged one: build a new version
        return None
    matches = (
        manifest.get("sources") == sources
        and manifest.get("tokenizer_fingerprint") == tokenizer.fingerprint
        and manifest.get("chunk_size") == chunk_size
    )
    return version_dir.name if matches else None


def ensure_index(index_dir: Path, model_dir: Path, sources: list[str], device: str, encoder=None) -> str:
    """Builds (or reuses) the serving index with the model's tokenizer; returns its version."""
    from index.build import build_index
    from index.sources import read_sources
    from retro.checkpoint import read_config
    from retro.tokenizer import Tokenizer

    config, _ = read_config(model_dir)
    tokenizer = Tokenizer.load(model_dir)
    version = reusable_index(index_dir, tokenizer, config.chunk_size, sources)
    if version is not None:
        console.print(f"index: reusing {index_dir} ({version})", highlight=False)
        return version
    if encoder is None:
        from index.encoder import ChunkEncoder

        with console.status("loading the chunk encoder (all-MiniLM-L6-v2)"):
            encoder = ChunkEncoder(device)
    skipped: list = []
    with console.status(f"reading {', '.join(sources)}"):
        documents = list(read_sources(sources, skipped))
    labels = {stage: f"index: {label}" for stage, label in INDEX_STAGE_LABELS.items()}
    with progress_bar() as bars:
        progress = stage_progress(bars, labels)
        report = build_index(
            documents,
            index_dir,
            tokenizer,
            encoder,
            chunk_size=config.chunk_size,
            skipped=skipped,
            sources=sources,
            progress=progress,
            keep_versions=1,  # the demo owns DATA/index: a version it no longer serves is only disk
        )
    console.print(
        f"index: built {report.version}, {report.n_documents:,} documents, {report.n_chunks:,} chunks "
        f"in {report.build_seconds:.0f}s",
        highlight=False,
    )
    return report.version


# --- stage 3: knowledge added after training ------------------------------------------------------
def heldout_documents() -> list:
    from index.facts import fact_documents
    from index.fictional import fictional_documents
    from index.reading import reading_documents

    return [*fact_documents("heldout"), *fictional_documents(), *reading_documents("dev")]


def add_heldout_facts(index_dir: Path, model_dir: Path, device: str, encoder=None, documents=None) -> int:
    """Adds the held-out and made-up fact documents (already present ones are skipped)."""
    from index.store import IndexStore
    from retro.tokenizer import Tokenizer

    documents = heldout_documents() if documents is None else documents
    store = IndexStore.open(index_dir, Tokenizer.load(model_dir), encoder=encoder, device=device)
    missing = [d for d in documents if not store.has_document(d.doc_id)]
    if not missing:
        console.print(f"held-out facts: all {len(documents)} documents already in the index")
        return 0
    with progress_bar() as bars:
        task = bars.add_task("held-out facts: adding", total=len(missing))
        added = 0
        for start in range(0, len(missing), 64):
            report = store.add_documents(missing[start : start + 64])
            added += report.n_documents
            bars.update(task, completed=start + len(missing[start : start + 64]))
    console.print(f"held-out facts: added {added} documents the model never saw", highlight=False)
    return added


# --- stage 4: serve -------------------------------------------------------------------------------
def example_calls(base_url: str) -> list[str]:
    return [
        f"curl -s {base_url}/v1/completions -H 'content-type: application/json' "
        '-d \'{"prompt": "The capital of Algeria is", "max_tokens": 8, "temperature": 0}\'',
        f"curl -s {base_url}/v1/compare -H 'content-type: application/json' "
        '-d \'{"prompt": "Hydrogen was discovered by", "max_tokens": 8, "temperature": 0}\'',
        f"curl -s {base_url}/v1/retrieve -H 'content-type: application/json' "
        '-d \'{"query": "capital of Algeria", "k": 2}\'',
    ]


def print_ready(base_url: str) -> None:
    console.print(f"\n[bold green]retro demo ready[/]: open {base_url}/ in a browser\n", highlight=False)
    console.print("Try the API:", highlight=False)
    for call in example_calls(base_url):
        console.print(f"  {call}", highlight=False, soft_wrap=True)
    console.print("")


def port_is_free(host: str, port: int) -> bool:
    import socket

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        # as uvicorn does: connections of a server that just stopped (TIME_WAIT) do not block it
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host.strip("[]"), port))
        except OSError:
            return False
    return True


def announce_when_ready(base_url: str, timeout_s: float = 600.0) -> bool:
    """Polls /health until the models have loaded, then prints what to open (run in a thread)."""
    import time
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{base_url}/health", timeout=2) as response:
                if response.status == 200:
                    print_ready(base_url)
                    return True
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    console.print(f"[red]the service at {base_url} did not become ready in {timeout_s:.0f}s[/]")
    return False

"""Load test of the HTTP service: N concurrent clients on loopback against a real uvicorn.

Prints requests/s, completion tokens/s, p50/p99 latency and errors (which must be 0: the service
runs with its default queue and batch limits) for a steady phase and for a phase during which an
index rebuild runs (the old version serves until the new one swaps in). By default
it builds its own test-sized setup in a temp folder (a BPE tokenizer and the `tiny` RETRO preset with
random weights, an index of fact documents, a held-out corpus to rebuild from); `--model/--index`
measure a real run instead (with `--compare-model` and `--endpoint compare`, side-by-side requests;
`--target NAME` sends the completions to a served comparison model, e.g. `--rag-model`'s).
`--torch-threads` sets the service's RETRO_TORCH_THREADS (0: torch's default, one per core);
`--max-batch 1` serves one request at a time (the decoding before continuous batching), for comparison.
The server is `retro serve` in a process of its own (as deployed; its settings as RETRO_* variables),
so the clients' threads do not share its interpreter lock; `--in-process` runs uvicorn in a thread of
this process instead (how figures before 2026-12-06 were measured).
Figures and the command go into docs/service_load.md.

    PYTHONPATH=. python benchmarks/service_load.py --clients 1,4,16,32 --seconds 15 --no-rebuild
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx


def build_tiny_setup(folder: Path, n_index_docs: int, n_rebuild_docs: int) -> dict:
    """Tokenizer + tiny random RETRO checkpoint + index of fact documents + a corpus to rebuild from."""
    import torch

    from index.build import build_index
    from index.facts import fact_documents, fact_pairs
    from retro.checkpoint import save_checkpoint
    from retro.config import RetroConfig
    from retro.model import Retro
    from retro.tokenizer import Tokenizer
    from service.retrieval import shared_encoder

    train_docs = list(fact_documents("train"))[:n_index_docs]
    heldout_docs = list(fact_documents("heldout"))[:n_rebuild_docs]
    tokenizer = Tokenizer.train([d.text for d in train_docs + heldout_docs], vocab_size=2048)
    torch.manual_seed(0)
    model = Retro(RetroConfig.from_preset("tiny", vocab_size=tokenizer.vocab_size))
    checkpoint = save_checkpoint(folder / "tiny-retro", model, tokenizer)
    started = time.perf_counter()
    report = build_index(train_docs, folder / "index", tokenizer, shared_encoder("cpu"), chunk_size=16)
    seconds = time.perf_counter() - started
    print(f"built index: {report.n_documents} documents, {report.n_chunks} chunks in {seconds:.1f}s")
    corpus_root = folder / "corpora"
    corpus_root.mkdir()
    with open(corpus_root / "rebuild.jsonl", "w", encoding="utf-8") as f:
        for d in train_docs + heldout_docs:
            f.write(json.dumps({"id": d.doc_id, "text": d.text, "title": d.title}) + "\n")
    prompts = [p.completion for p in fact_pairs("train")][:200]
    return {"model": checkpoint, "index": folder / "index", "corpus_root": corpus_root, "prompts": prompts,
            "rebuild_source": "rebuild.jsonl"}  # fmt: skip


REPO_ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_ready(base: str, alive=lambda: True) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and alive():
        try:
            if httpx.get(f"{base}/health").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise SystemExit("the server did not become ready")


class InProcessServer:
    """uvicorn in a thread of this process (its clients' threads share the interpreter lock)."""

    def __init__(self, settings):
        import uvicorn

        from service.app import create_app

        port = free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
        )
        threading.Thread(target=self.server.run, daemon=True).start()
        self.base, self.pid = f"http://127.0.0.1:{port}", os.getpid()
        wait_until_ready(self.base)

    def stop(self) -> None:
        self.server.should_exit = True


class ServerProcess:
    """`retro serve` in its own process, configured as a deployment is: RETRO_* variables."""

    def __init__(self, settings):
        port = free_port()
        env = {**os.environ, "RETRO_HOST": "127.0.0.1", "RETRO_PORT": str(port)}
        for name, value in settings.model_dump(exclude_none=True).items():
            if name in ("host", "port") or name.endswith("api_key"):
                continue
            env[f"RETRO_{name.upper()}"] = json.dumps(value) if isinstance(value, list) else str(value)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "serve", "--log-level", "warning"], cwd=REPO_ROOT, env=env
        )
        self.base, self.pid = f"http://127.0.0.1:{port}", self.process.pid
        try:
            wait_until_ready(self.base, alive=lambda: self.process.poll() is None)
        except SystemExit:
            self.stop()
            code = self.process.poll()
            raise SystemExit(f"`retro serve` did not become ready (exit code {code})") from None

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()


def completion_tokens(response, stream: bool) -> int:
    """Completion tokens of one answered request (for /v1/compare: both models' together)."""
    if stream:  # no usage in a plain stream: text events, about one per token (held-back text joins some)
        return sum(1 for line in response.text.splitlines() if line.startswith("data: {"))
    body = response.json()
    if "usage" in body:
        return int(body["usage"]["completion_tokens"])
    return sum(int(side.get("usage", {}).get("completion_tokens", 0)) for side in body.values()
               if isinstance(side, dict))  # fmt: skip


def run_clients(
    base: str,
    prompts: list[str],
    clients: int,
    until,
    max_tokens: int,
    stream: bool,
    endpoint: str = "completions",
    target: str | None = None,
) -> dict:
    """Each client sends completions (or comparisons) back to back until `until()` is true; `target`
    names the served model the completions ask for (None: the service's RETRO model)."""
    latencies: list[float] = []
    errors: list[str] = []
    tokens = [0]
    lock = threading.Lock()

    def client(seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(base_url=base, timeout=120) as http:
            while not until():
                body = {"prompt": rng.choice(prompts), "max_tokens": max_tokens, "temperature": 0.7,
                        "seed": rng.randrange(1 << 30)}  # fmt: skip
                if endpoint == "completions":
                    body["stream"] = stream
                    if target is not None:
                        body["model"] = target
                started = time.perf_counter()
                try:
                    response = http.post(f"/v1/{endpoint}", json=body)
                    ok = response.status_code == 200 and (
                        not stream or response.text.rstrip().endswith("[DONE]")
                    )
                    problem = None if ok else f"{response.status_code}: {response.text[:200]}"
                    n_tokens = completion_tokens(response, stream) if ok else 0
                except httpx.HTTPError as e:
                    problem = f"{type(e).__name__}: {e}"
                elapsed = time.perf_counter() - started
                with lock:
                    (errors.append(problem) if problem else latencies.append(elapsed))
                    tokens[0] += 0 if problem else n_tokens

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    ordered = sorted(latencies)

    def pct(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else float("nan")

    return {
        "requests": len(latencies) + len(errors),
        "seconds": round(wall, 2),
        "requests_per_s": round(len(latencies) / wall, 2),
        "tokens_per_s": round(tokens[0] / wall, 1),
        "p50_ms": round(pct(0.50), 1),
        "p99_ms": round(pct(0.99), 1),
        "mean_ms": round(statistics.fmean(latencies) * 1000, 1) if latencies else float("nan"),
        "errors": len(errors),
        "first_errors": errors[:3],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--clients",
        default="8",
        help="concurrent clients; a comma list (1,4,16,32) runs one steady phase each",
    )
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the steady phase")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--stream", action="store_true", help="use SSE streaming requests")
    parser.add_argument("--model", type=Path, help="a real checkpoint (default: build a tiny random one)")
    parser.add_argument("--index", type=Path, help="the real index for --model")
    parser.add_argument("--compare-model", type=Path, help="a comparison model for --model")
    parser.add_argument("--rag-model", type=Path, help="a retrieval-in-prompt model served beside --model")
    parser.add_argument(
        "--target",
        help="the served model's id the completions ask for (e.g. the --compare-model or --rag-model "
        "folder's name; default: the RETRO model)",
    )
    parser.add_argument("--endpoint", choices=("completions", "compare"), default="completions")
    parser.add_argument(
        "--torch-threads", type=int, default=1, help="the service's torch threads per op (0: torch's default)"
    )
    parser.add_argument(
        "--max-batch", type=int, default=None, help="the service's RETRO_MAX_BATCH (default: the service's)"
    )
    parser.add_argument("--index-docs", type=int, default=300, help="tiny setup: documents in the index")
    parser.add_argument(
        "--rebuild-docs", type=int, default=300, help="tiny setup: extra documents in the rebuild"
    )
    parser.add_argument("--no-rebuild", action="store_true")
    parser.add_argument(
        "--in-process", action="store_true", help="uvicorn in a thread of this process (the clients' own)"
    )
    args = parser.parse_args()
    client_counts = [int(n) for n in str(args.clients).split(",")]

    from service.settings import Settings

    with tempfile.TemporaryDirectory() as tmp:
        if args.model:
            prompts = ["The capital of France is", "Gold has the chemical symbol", "Water boils at"]
            setup = {"model": args.model, "index": args.index, "corpus_root": None, "rebuild_source": None,
                     "prompts": prompts}  # fmt: skip
        else:
            setup = build_tiny_setup(Path(tmp), args.index_docs, args.rebuild_docs)
        settings = Settings(
            model=setup["model"], index=setup["index"], corpus_root=setup["corpus_root"], index_device="cpu",
            max_tokens_cap=256, compare_model=args.compare_model, rag_model=args.rag_model,
            torch_threads=args.torch_threads or None,
            **({} if args.max_batch is None else {"max_batch": args.max_batch}),
        )  # fmt: skip
        server = InProcessServer(settings) if args.in_process else ServerProcess(settings)
        base = server.base
        info = httpx.get(f"{base}/info").json()
        served = {m["id"]: m for m in info["models"]}
        if args.target and args.target not in served:
            server.stop()
            raise SystemExit(f"--target {args.target!r} is not served; served: {', '.join(served)}")
        target = served[args.target] if args.target else info["models"][0]
        print(f"model {target['id']} {target['parameters']}, index {info['index']}")
        print(f"machine: {platform.processor() or platform.machine()}, {__import__('os').cpu_count()} CPUs")
        print(f"torch threads per op in the service: {args.torch_threads or 'torch default'}")
        print(f"max_batch {settings.max_batch}, max_queue {settings.max_queue} (waiting beyond the batch)")
        where = "in this process" if args.in_process else "in its own process"
        print(f"server: {where} (pid {server.pid})", flush=True)
        # connect once
        run_clients(
            base, setup["prompts"], 2, lambda: True, args.max_tokens, args.stream, args.endpoint, args.target
        )
        results = {}
        for n in client_counts:
            deadline = time.monotonic() + args.seconds
            results[f"steady, {n} clients"] = run_clients(
                base,
                setup["prompts"],
                n,
                lambda deadline=deadline: time.monotonic() > deadline,
                args.max_tokens,
                args.stream,
                args.endpoint,
                args.target,
            )
            results[f"steady, {n} clients"]["clients"] = n
        if not args.no_rebuild and setup["rebuild_source"]:
            job = httpx.post(f"{base}/v1/index/rebuild", json={"source": setup["rebuild_source"]}).json()
            finished = threading.Event()

            def watch() -> None:
                nonlocal job
                while job["status"] not in ("succeeded", "failed"):
                    time.sleep(0.2)
                    job = httpx.get(f"{base}/v1/index/jobs/{job['id']}").json()
                finished.set()

            threading.Thread(target=watch, daemon=True).start()
            results["during_rebuild"] = run_clients(
                base,
                setup["prompts"],
                client_counts[-1],
                finished.is_set,
                args.max_tokens,
                args.stream,
                args.endpoint,
                args.target,
            )
            results["during_rebuild"]["clients"] = client_counts[-1]
            results["during_rebuild"]["rebuild"] = {
                k: job.get(k) for k in ("status", "version", "report", "error")
            }
        metrics = httpx.get(f"{base}/metrics").text
        server.stop()
    print()
    print("| phase | clients | requests | req/s | tokens/s | p50 ms | p99 ms | errors |")
    print("|---|---|---|---|---|---|---|---|")
    for phase, r in results.items():
        cells = [
            phase,
            r["clients"],
            r["requests"],
            r["requests_per_s"],
            r["tokens_per_s"],
            r["p50_ms"],
            r["p99_ms"],
            r["errors"],
        ]
        print("| " + " | ".join(str(c) for c in cells) + " |")
    print()
    print(json.dumps(results, indent=1))
    retrieval = [line for line in metrics.splitlines() if line.startswith("retro_retrieval_latency_seconds_")
                 and not line.startswith("retro_retrieval_latency_seconds_bucket")]  # fmt: skip
    sums = ("retro_batch_size_sum", "retro_batch_size_count", "retro_queue_wait_seconds_sum",
            "retro_queue_wait_seconds_count")  # fmt: skip
    batching = [line for line in metrics.splitlines() if line.startswith(sums)]
    print("\n".join(retrieval + batching))
    if any(r["errors"] for r in results.values()):
        raise SystemExit("errors occurred")


if __name__ == "__main__":
    main()

"""Benchmark of the network: training and decoding tokens/s of RETRO presets and their baselines.

Prints one table row per (preset, device). Training = forward + backward + AdamW step of
`Retro.loss(tokens, neighbours, targets)` on random tokens and random neighbours at
`max_seq_len` (the copy head's loss path included), tokens/s counted over decoder tokens. Decoding =
`new_cache` / `prefill` of one chunk / `decode_step` with fresh neighbours at every chunk boundary,
at batch 1 and batch 16, tokens/s = batch x new tokens / seconds; retrieval itself (MiniLM + faiss)
is not in it (see benchmarks/index_build.py). CPU runs fp32; CUDA runs bf16 autocast, and a model
FLOPs utilisation (MFU) is estimated from `training_flops_per_token` against the GPU's dense bf16
peak. This script only measures; it changes nothing.

    python -m benchmarks.model_throughput --presets demo demo-baseline small small-baseline
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import time
from datetime import UTC, datetime

import torch

from retro.config import PRESETS, RetroConfig
from retro.model import Retro
from retro.schedule import make_optimizer

# Dense bf16 tensor-core peaks (no sparsity), FLOP/s; pass --peak-tflops for another GPU.
GPU_PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12}


def _count(module) -> int:
    return 0 if module is None else sum(p.numel() for p in module.parameters())


def training_flops_per_token(model: Retro, seq_len: int) -> float:
    """Training FLOPs per decoder token: 6 x the matmul parameters each token passes (PaLM's estimate).

    Decoder blocks and the tied output layer work once per decoder token; the neighbour encoder
    works on k x r neighbour tokens per chunk of m decoder tokens; attention adds nanoGPT's
    12 x layers x d x T per token (the causal half is counted in full, as nanoGPT does). Embedding
    lookups cost nothing. An estimate: the copy head's pointer and CCA's short attention are left out.
    """
    cfg = model.config
    decoder = _count(model.blocks) + _count(model.ln_f) + cfg.vocab_size * cfg.d_model  # + output layer
    encoder = _count(model.encoder) - (model.encoder.wpe.weight.numel() if model.encoder else 0)
    neighbour_tokens_per_token = cfg.n_neighbours * cfg.retrieved_len / cfg.chunk_size
    copy = _count(model.copy_head)
    attention = 12 * cfg.n_layers * cfg.d_model * seq_len
    per_token = 6 * (decoder + copy) + attention
    if cfg.uses_retrieval:
        per_token += 6 * encoder * neighbour_tokens_per_token
    return float(per_token)


def random_inputs(cfg: RetroConfig, batch: int, seq_len: int, device, generator):
    tokens = torch.randint(2, cfg.vocab_size, (batch, seq_len + 1), generator=generator)
    shape = (batch, seq_len // cfg.chunk_size, cfg.n_neighbours, cfg.retrieved_len)
    neighbours = torch.randint(2, cfg.vocab_size, shape, generator=generator) if cfg.uses_retrieval else None
    return (
        tokens[:, :-1].to(device),
        tokens[:, 1:].to(device),
        None if neighbours is None else neighbours.to(device),
    )


def _autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_training(model: Retro, device, batch: int, steps: int, warmup: int) -> float:
    """Decoder tokens per second of full training steps (forward, backward, clip, AdamW)."""
    cfg, seq_len = model.config, model.config.max_seq_len
    g = torch.Generator().manual_seed(0)
    tokens, targets, neighbours = random_inputs(cfg, batch, seq_len, device, g)
    optimizer = make_optimizer(model, 1e-4, 0.1, device)
    model.train()
    for i in range(warmup + steps):
        if i == warmup:
            _sync(device)
            start = time.perf_counter()
        with _autocast(device):
            loss = model.loss(tokens, neighbours, targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    _sync(device)
    return batch * seq_len * steps / (time.perf_counter() - start)


@torch.inference_mode()
def measure_decoding(model: Retro, device, batch: int, new_tokens: int) -> float:
    """Generated tokens per second (all sequences) after a one-chunk prompt; neighbours at every
    chunk boundary, as generation with retrieval feeds them."""
    cfg, m = model.config, model.config.chunk_size
    model.eval()
    g = torch.Generator().manual_seed(1)
    new_tokens = min(new_tokens, cfg.max_seq_len - m)
    prompt, _, prompt_nb = random_inputs(cfg, batch, m, device, g)
    step_tokens = torch.randint(2, cfg.vocab_size, (new_tokens, batch), generator=g).to(device)
    step_nb = (
        torch.randint(2, cfg.vocab_size, (batch, cfg.n_neighbours, cfg.retrieved_len), generator=g).to(device)
        if cfg.uses_retrieval
        else None
    )
    with _autocast(device):
        cache = model.new_cache(batch, m + new_tokens)
        model.prefill(prompt, prompt_nb, cache)
        _sync(device)
        start = time.perf_counter()
        for i in range(new_tokens):
            closes_chunk = (cache.pos + 1) % m == 0
            model.decode_step(step_tokens[i], cache, step_nb if closes_chunk else None)
        _sync(device)
    return batch * new_tokens / (time.perf_counter() - start)


def gpu_peak(device: torch.device, override_tflops: float | None) -> float | None:
    if override_tflops:
        return override_tflops * 1e12
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in GPU_PEAK_BF16.items() if key in name), None)


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads, torch {torch.__version__}"  # noqa: E501


def run(args) -> list[dict]:
    rows = []
    for device_name in args.devices:
        device = torch.device(device_name)
        if device.type == "cuda" and not torch.cuda.is_available():
            print(f"skipping {device_name}: torch sees no CUDA GPU")
            continue
        on_gpu = device.type == "cuda"
        print(f"[{machine(device)}]", flush=True)
        for name in args.presets:
            config = PRESETS[name]
            torch.manual_seed(0)
            model = Retro(config).to(device)
            train_batch = args.train_batch or (32 if on_gpu else 4)
            row = {
                "preset": name,
                "device": machine(device),
                "precision": "bf16 autocast" if on_gpu else "fp32",
                "non_embedding_params": model.parameter_counts()["non_embedding"],
                "seq_len": config.max_seq_len,
                "train_batch": train_batch,
            }
            row["train_tokens_per_s"] = measure_training(
                model, device, train_batch, args.train_steps, args.warmup_steps
            )
            flops = training_flops_per_token(model, config.max_seq_len)
            row["train_tflops"] = flops * row["train_tokens_per_s"] / 1e12
            peak = gpu_peak(device, args.peak_tflops) if on_gpu else None
            row["mfu"] = None if peak is None else flops * row["train_tokens_per_s"] / peak
            for batch in (1, 16):
                row[f"decode_b{batch}_tokens_per_s"] = measure_decoding(
                    model, device, batch, args.decode_tokens
                )
            rows.append(row)
            print_row(row)
            del model
            if on_gpu:
                torch.cuda.empty_cache()
    return rows


HEADER = (
    f"{'preset':<16}{'params (non-emb)':>17}{'precision':>15}{'train tok/s':>13}{'TFLOP/s':>9}"
    f"{'MFU':>7}{'decode b1 tok/s':>17}{'decode b16 tok/s':>18}"
)


def print_row(row: dict) -> None:
    mfu = "-" if row["mfu"] is None else f"{100 * row['mfu']:.1f}%"
    print(
        f"{row['preset']:<16}{row['non_embedding_params'] / 1e6:>16.1f}M{row['precision']:>15}"
        f"{row['train_tokens_per_s']:>13,.0f}{row['train_tflops']:>9.3f}{mfu:>7}"
        f"{row['decode_b1_tokens_per_s']:>17,.1f}{row['decode_b16_tokens_per_s']:>18,.1f}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=["small", "small-baseline"], choices=list(PRESETS))
    parser.add_argument(
        "--devices", nargs="+", default=["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    )
    parser.add_argument("--train-batch", type=int, default=None, help="default: 32 on GPU, 4 on CPU")
    parser.add_argument("--train-steps", type=int, default=3, help="timed training steps")
    parser.add_argument("--warmup-steps", type=int, default=1, help="untimed steps first")
    parser.add_argument("--decode-tokens", type=int, default=64, help="tokens decoded per sequence")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--peak-tflops", type=float, default=None, help="GPU dense bf16 peak for the MFU")
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, load average {os.getloadavg()[0]:.1f}")
    print(HEADER)
    rows = run(args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()

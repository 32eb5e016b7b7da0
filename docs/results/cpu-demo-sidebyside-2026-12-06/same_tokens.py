"""Checks that three runs trained side by side saw the same tokens: RETRO's and the baseline's
batches equal, and each of the comparator's contexts holding RETRO's sequence (without its left
padding) after its passages, at a few steps, with the recipe and seed the runs recorded.

    PYTHONPATH=. python same_tokens.py INDEX_VERSION_DIR RETRO_RUN BASELINE_RUN RAG_RUN [STEPS]
"""

import sys
from pathlib import Path

import numpy as np
import torch

from retro.checkpoint import load_checkpoint
from retro.data import Recipe, TrainingData
from retro.evaluate import training_tokens
from retro.in_context_data import InContextTrainingData
from retro.tokenizer import Tokenizer


def main(version_dir: Path, retro_run: str, baseline_run: str, rag_run: str, steps: int) -> None:
    tokenizer = Tokenizer.load(version_dir)
    runs = {
        name: load_checkpoint(run)
        for name, run in (("retro", retro_run), ("baseline", baseline_run), ("rag", rag_run))
    }
    recipes = {name: Recipe(**meta["recipe"]) for name, (_, _, meta) in runs.items()}
    seeds = {name: meta["data_seed"] for name, (_, _, meta) in runs.items()}
    assert len(set(recipes.values())) == 1 and len(set(seeds.values())) == 1, (recipes, seeds)
    recipe, seed = recipes["retro"], seeds["retro"]
    config = {name: model.config for name, (model, _, _) in runs.items()}
    retro = TrainingData.from_index(version_dir, config["retro"], recipe=recipe, seed=seed, total_steps=steps)
    baseline = TrainingData.from_index(
        version_dir, config["baseline"], recipe=recipe, seed=seed, total_steps=steps, baseline=True
    )
    rag = InContextTrainingData.from_index(
        version_dir, config["rag"], tokenizer, recipe=recipe, seed=seed, total_steps=steps
    )
    for step in (0, 1, steps // 2, steps - 1):
        ours, theirs = retro.batch(step, 16), baseline.batch(step, 16)
        assert torch.equal(ours.tokens, theirs.tokens) and torch.equal(ours.targets, theirs.targets), step
        starts, shifts = retro.draws(step, 16)
        rag_starts, rag_shifts = rag.sequences.draws(step, 16)
        assert np.array_equal(starts, rag_starts) and np.array_equal(shifts, rag_shifts), step
        contexts = rag.batch(step, 16).tokens
        for row, context in zip(ours.tokens.tolist(), contexts.tolist(), strict=True):
            text = row[next(i for i, t in enumerate(row) if t != 0) :]  # without the left padding
            assert any(context[i : i + len(text)] == text for i in range(len(context) - len(text) + 1)), step
        print(
            f"step {step}: RETRO's batch == the baseline's; the comparator's contexts hold RETRO's sequences"
        )
    print("training tokens:", {name: training_tokens(meta) for name, (_, _, meta) in runs.items()})


if __name__ == "__main__":
    main(
        Path(sys.argv[1]),
        sys.argv[2],
        sys.argv[3],
        sys.argv[4],
        int(sys.argv[5]) if len(sys.argv) > 5 else 1000,
    )

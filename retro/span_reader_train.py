"""Training the span reader (`retro.span_reader`): its adapters and head on `index.span_examples`.

SQuAD 2.0's objective: cross-entropy of the answer's first and last word piece among the context's
positions and [CLS] (the target of both for an example with no answer, or whose answer the
truncation cut off). Since the twenty-third round (2026-12-07) an example may carry distractor
contexts read with the same question; its positions and theirs share one softmax, with the
contexts' [CLS] logits averaged as the no-answer slot: the joint softmax generation uses over a
prompt's neighbours (`joint_logits`). AdamW on the adapters and the head only (MiniLM stays
frozen), the learning rate warmed up over `WARMUP` steps (a tenth of a shorter run), then
decayed linearly to zero.

A run folder holds `state.pt` (step, the trained weights, the optimiser, the settings and the
random state, which MiniLM's dropout draws on), written atomically every `ckpt_every` steps: a
killed run started again with the same settings goes on from its last state, and since batch i is
examples[i * B : (i + 1) * B] (cyclically) of one fixed order, the resumed run sees the batches
the uninterrupted one would have. The finished run writes `span_reader.safetensors`
(`retro.span_reader.FILE`), the file `retro export --span-reader` copies beside a checkpoint.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from index.span_examples import SpanExample
from retro.span_reader import FILE, Encoded, SpanReader

STATE = "state.pt"
WARMUP = 100


@dataclass(frozen=True)
class ReaderTrainSettings:
    steps: int = 1000
    batch_size: int = 16
    lr: float = 1e-3
    rank: int = 16
    seed: int = 0
    ckpt_every: int = 100

    def check(self) -> None:
        for name in ("steps", "batch_size", "rank", "ckpt_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1; got {getattr(self, name)}")
        if not 0 < self.lr < float("inf"):
            raise ValueError(f"lr must be a finite number > 0; got {self.lr}")


def targets(encoded: Encoded, batch: Sequence[SpanExample]) -> tuple[torch.Tensor, torch.Tensor]:
    """(start, end) word-piece positions of each example's answer; 0 ([CLS]) for no answer, or for an
    answer the truncation cut off."""
    starts, ends = [], []
    for row, example in enumerate(batch):
        s = e = 0
        if example.answer is not None and example.start is not None:
            a0, a1 = example.start, example.start + len(example.answer)
            context = encoded.context[row]
            for pos, (o0, o1) in enumerate(encoded.offsets[row]):
                if pos == 0 or not context[pos]:
                    continue
                if s == 0 and o0 <= a0 < o1:
                    s = pos
                if o0 < a1 <= o1:
                    e = pos
            if s == 0 or e < s:
                s = e = 0
        starts.append(s)
        ends.append(e)
    return torch.tensor(starts), torch.tensor(ends)


def joint_logits(logits: torch.Tensor, encoded: Encoded, rows: Sequence[int]) -> torch.Tensor:
    """One example's logits over its contexts `rows` as generation scores them
    (`retro.span_reader.start_probabilities`): the contexts' [CLS] logits averaged (no answer in
    any of them), then every context position of each row in turn ([CLS] left out)."""
    parts = [logits[list(rows), 0].mean().reshape(1)]
    for row in rows:
        parts.append(logits[row, torch.nonzero(encoded.context[row]).flatten()[1:]])
    return torch.cat(parts)


def loss_of(reader: SpanReader, batch: Sequence[SpanExample]) -> torch.Tensor:
    """Mean over `batch` of the start and end cross-entropies, each over one softmax across the
    example's context and its distractors (the answer is in the context, or nowhere: slot 0)."""
    questions, contexts, owners = [], [], []
    for example in batch:
        rows = list(range(len(contexts), len(contexts) + 1 + len(example.distractors)))
        owners.append(rows)
        for context in (example.context, *example.distractors):
            questions.append(example.question)
            contexts.append(context)
    encoded = reader.encode(questions, contexts)
    start, end = reader(encoded)
    gold = [rows[0] for rows in owners]
    start_t, end_t = targets(_rows(encoded, gold), batch)
    cross_entropy = torch.nn.functional.cross_entropy
    total = start.new_zeros(())
    for rows, s, e in zip(owners, start_t.tolist(), end_t.tolist(), strict=True):
        # the gold context is the first of `rows`: its position p is slot p of the joint vector
        # (slot 0 the averaged [CLS], then the context positions from 1 on)
        s_slot = _slot(encoded, rows[0], s)
        e_slot = _slot(encoded, rows[0], e)
        total = total + cross_entropy(joint_logits(start, encoded, rows), torch.tensor(s_slot))
        total = total + cross_entropy(joint_logits(end, encoded, rows), torch.tensor(e_slot))
    return total / (2 * len(batch))


def _slot(encoded: Encoded, row: int, pos: int) -> int:
    """The joint-vector slot of word piece `pos` of the first context `row` (0: no answer)."""
    if pos == 0:
        return 0
    return 1 + int(encoded.context[row, 1:pos].sum())


def _rows(encoded: Encoded, rows: list[int]) -> Encoded:
    return Encoded(
        {k: v[rows] for k, v in encoded.inputs.items()},
        encoded.context[rows],
        [encoded.offsets[r] for r in rows],
    )


def _schedule(steps: int) -> Callable[[int], float]:
    warmup = min(WARMUP, max(1, steps // 10))  # a short run (a test's) warms up for a tenth
    return lambda t: min(1.0, (t + 1) / warmup) * max(0.0, 1.0 - t / steps)


def train_span_reader(
    out: Path,
    examples: Sequence[SpanExample],
    settings: ReaderTrainSettings = ReaderTrainSettings(),
    log: Callable[[str], None] = print,
    on_step: Callable[[int, float], None] | None = None,
) -> Path:
    """Trains (or resumes) a span reader into `out`; returns the path of its weights file."""
    settings.check()
    if not examples:
        raise ValueError("no training examples")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(settings.seed)
    reader = SpanReader(rank=settings.rank)
    reader.train()
    trained = [p for p in reader.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(trained, lr=settings.lr, weight_decay=0.01)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, _schedule(settings.steps))
    step = 0
    state_path = out / STATE
    if state_path.is_file():
        state = torch.load(state_path, weights_only=False)
        if state["settings"] != asdict(settings) or state["examples"] != len(examples):
            raise ValueError(
                f"{out} holds a run with other settings ({state['settings']}, {state['examples']} "
                "examples); give another --out or the same settings"
            )
        reader.load_state_dict(state["weights"], strict=False)
        optimiser.load_state_dict(state["optimiser"])
        scheduler.load_state_dict(state["scheduler"])
        step = state["step"]
        torch.set_rng_state(state["rng"])  # MiniLM's dropout draws on as it would have
        log(f"resuming {out} at step {step}")
    n, b = len(examples), settings.batch_size
    while step < settings.steps:
        batch = [examples[(step * b + j) % n] for j in range(b)]
        loss = loss_of(reader, batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trained, 1.0)
        optimiser.step()
        scheduler.step()
        optimiser.zero_grad()
        step += 1
        if on_step is not None:
            on_step(step, loss.item())
        if step % settings.ckpt_every == 0 or step == settings.steps:
            _save_state(state_path, step, reader, optimiser, scheduler, settings, n)
    reader.eval()
    weights = out / FILE
    reader.save(weights)
    with open(out / "reader.json", "w") as f:
        json.dump({"settings": asdict(settings), "examples": n, "steps_done": step}, f, indent=1)
    return weights


def _save_state(path: Path, step, reader, optimiser, scheduler, settings, n_examples) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(
        {
            "step": step,
            "weights": reader.trained_state(),
            "optimiser": optimiser.state_dict(),
            "scheduler": scheduler.state_dict(),
            "settings": asdict(settings),
            "examples": n_examples,
            "rng": torch.get_rng_state(),
        },
        tmp,
    )
    os.replace(tmp, path)

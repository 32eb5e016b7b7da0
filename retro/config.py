"""The one way to shape a model: `RetroConfig` and its named presets.

A config is saved inside every checkpoint (as JSON) so that a checkpoint loads without guessing.
The same class describes the no-retrieval baseline: `cca_layers=()` gives a plain decoder, and the
retrieval-in-prompt comparator: a plain decoder with `in_context=True` reads its retrieved
neighbours as passages in its prompt (`retro.in_context`). This module owns only shapes and
switches; it builds no tensors.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field


def default_cca_layers(n_layers: int) -> tuple[int, ...]:
    """Every 3rd layer from the middle (0-based), as in RETRO's P = {6, 9, 12, ...} for 12+ layers."""
    return tuple(range(n_layers // 2, n_layers, 3))


@dataclass(frozen=True)
class RetroConfig:
    vocab_size: int = 8192  # set from the tokenizer; embeddings are tied with the output layer
    d_model: int = 256  # decoder width
    n_layers: int = 6  # decoder blocks
    n_heads: int = 4  # attention heads (decoder self-attention and chunked cross-attention)
    d_ff: int = 1024  # MLP hidden width
    max_seq_len: int = 512  # learned positional embeddings cover this many positions
    chunk_size: int = 64  # m: tokens per retrieval chunk (paper section 2.3)
    n_neighbours: int = 2  # k used in training; inference may use any k >= 1
    retrieved_len: int = 128  # r: neighbour chunk + its continuation
    cca_layers: tuple[int, ...] = field(default=(3,))  # 0-based decoder blocks with CCA; () = baseline
    enc_layers: int = 2  # bidirectional neighbour-encoder blocks
    enc_d_model: int = 256  # neighbour-encoder width
    enc_n_heads: int = 4  # neighbour-encoder heads
    dropout: float = 0.0
    pad_id: int = 0  # padding token: masked out of neighbours, used for left padding of prompts
    # Previous-token features: neighbour token j also embeds tokens j-1 .. j-n, so that a decoder
    # position holding token x can find "the token after x" in a neighbour by content (docs/design.md).
    neighbour_prev_tokens: int = 2
    # Copy head: a gated pointer distribution over the neighbour tokens a position may see, mixed
    # into the vocabulary distribution; forward then returns log-probabilities of the mixture.
    copy_head: bool = True
    # Copy-head n-gram match: the pointer score of neighbour token j also gets a learned bonus for
    # each of the position's last n tokens that equals the token the same distance before j, so a
    # position ending in "of Algeria is" points at the token after "of Algeria is" in a neighbour
    # from the first step, instead of learning that lookup through the decoder (0 = off).
    copy_match_tokens: int = 0
    # Copy-head bag match: neighbour token j also gets sum_i w[q_i] * sum_d u[d] [q_i == token j-1-d]
    # over the position's last n tokens q_i and the n tokens before j (d = 0 .. n-1), with a learned
    # weight w per vocabulary token (0 at the start) and u per distance: order-free, so a question
    # ("In which year was X founded?") points near where its salient words ("X", "founded") sit in a
    # passage, which the aligned n-gram match cannot do (0 = off).
    copy_bag_window: int = 0
    # Copy-head neighbour match: every token of a neighbour also gets sum_i v[q_i] [q_i occurs
    # anywhere in that neighbour] over the position's last `copy_bag_window` tokens q_i, with a
    # learned weight v per vocabulary token (0 at the start; scaled, see retro.copy_head): it tells
    # which neighbour is about what the question names (its entity), which the bag match's reach of
    # copy_bag_window tokens cannot when the value stands far from the name, as in a record's later
    # fields (docs/design.md, seventh round).
    copy_neighbour_bag: bool = False
    # Retrieval in the prompt (RAG / In-Context RALM, Ram et al. 2023): a plain decoder (no CCA, no
    # copy head) whose context holds its n_neighbours retrieved neighbours of up to retrieved_len
    # tokens as passages before the text (`retro.in_context`: the template and the context budget).
    in_context: bool = False
    # k neighbours retrieved per chunk at inference (generation, the service, `retro eval`) when a
    # request names none; None: n_neighbours, the k of training. Shapes no parameter: a reader
    # trained at k=2 may be served at another k (the demo's at k=4 was not better on the frozen
    # test split: docs/design.md, eighth round). Set by `retro export --neighbours K`.
    inference_neighbours: int | None = None
    # Tokens up to a chunk's end that its retrieval query holds at inference (generation, the
    # service, `retro eval`); None: the chunk itself, RETRO's rule and how training neighbours were
    # found. Wider, a prompt whose subject is named chunks before its question still retrieves its
    # passage. Shapes no parameter. Set by `retro export --query-tokens N`.
    inference_query_tokens: int | None = None
    # Nats by which the copy head's null slot is lowered (the pointer then renormalised) for the first
    # token a generation with retrieval says: an answer then begins with a neighbour's token unless
    # the vocabulary is far surer than the pointer. A reader that knows the value often says first
    # what its training documents say after a question (the next question, a dialogue's next line:
    # docs/design.md, sixteenth and seventeenth rounds). 0: the mixture as trained. Decoding only:
    # scoring (`forward`, a prompt's log-probabilities) is unchanged; shapes no parameter. Set by
    # `retro export --first-copy-bias NATS`.
    inference_first_copy_bias: float = 0.0
    # How many of the first token's most likely candidates a greedy generation weighs by one token of
    # lookahead: it says the candidate whose log-probability plus its best next token's is highest
    # (`retro.first_token`), so an answer whose first piece is the reader's second or third guess but
    # whose continuation is sure wins over a stray piece (docs/design.md, eighteenth and nineteenth
    # rounds). 0 (or 1): the argmax. Greedy decoding's first token only; shapes no parameter. Set by
    # `retro export --first-candidates N`.
    inference_first_candidates: int = 0
    # The span reader (`retro.span_reader`, its weights a file beside the checkpoint): the first token
    # of a generation with retrieval gets weight * max(log p, floor) added for the reader's
    # probability p that the answer starts at a neighbour token of that id (docs/design.md,
    # twenty-second round). 0: off (also when the folder has no reader). Shapes no parameter.
    inference_span_weight: float = 0.0
    inference_span_floor: float = -5.0
    # After the first token, while the generation has said the reader's best span so far, the span's
    # next token gets this many nats (`retro.span_reader.SpanFollower`; docs/design.md,
    # twenty-third round): a value the reader started is finished as its neighbour writes it.
    # 0: off. Needs the reader at work (inference_span_weight > 0). Shapes no parameter.
    inference_span_follow: float = 0.0
    # Whole-word meanings (`retro.word_meaning`): every decoder and neighbour token also gets a
    # learned projection of MiniLM's vector (PCA to word_dim) of the word it ends so far, from a
    # frozen table of word_rows words under word_keys token spellings stored in the checkpoint; so a
    # question's "childhood" can meet a passage's "grew up" though the tokenizer splits both (0 = off).
    word_dim: int = 0
    word_rows: int = 0
    word_keys: int = 0
    # Copy-head meaning match: the bag match by meaning instead of identity. Neighbour token j also
    # gets sum_i s(q_i) sum_d u[d] max(0, cos(meaning(q_i), meaning(token j-1-d))) over the position's
    # last copy_bag_window words q_i, with a learned salience s of a word's meaning (0 at the start),
    # so a question's "childhood" points after a passage's "grew up" (needs word_dim, copy_bag_window).
    copy_meaning_bag: bool = False
    # Copy-head match gate: the n-gram match's bonus at each offset, the bag match's and the
    # neighbour match's are each scaled by exp(g(h)), g a linear function of the position's state
    # (0 at the start: every scale 1, so a model without it loads into one with it unchanged). The
    # matches' bonuses are otherwise the same after a question as inside a passage, where what
    # follows the n-gram match is the continuation; gated, the model may lower the n-gram match
    # where it is asked something and lean on the bag and neighbour matches (docs/design.md,
    # fifteenth round). Needs a match (copy_match_tokens or copy_bag_window > 0).
    copy_match_gate: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "cca_layers", tuple(int(i) for i in self.cca_layers))
        problems = []
        if self.d_model % self.n_heads:
            problems.append(f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}")
        if self.enc_d_model % self.enc_n_heads:
            problems.append(
                f"enc_d_model={self.enc_d_model} is not divisible by enc_n_heads={self.enc_n_heads}"
            )
        bad = [i for i in self.cca_layers if not 0 <= i < self.n_layers]
        if bad:
            problems.append(f"cca_layers {bad} lie outside 0..{self.n_layers - 1}")
        if len(set(self.cca_layers)) != len(self.cca_layers):
            problems.append(f"cca_layers {self.cca_layers} repeat a layer")
        if self.retrieved_len < 1 or self.chunk_size < 1 or self.n_neighbours < 1:
            problems.append("chunk_size, n_neighbours and retrieved_len must be >= 1")
        if self.max_seq_len < self.chunk_size:
            problems.append(f"max_seq_len={self.max_seq_len} is shorter than one chunk ({self.chunk_size})")
        if not 0 <= self.pad_id < self.vocab_size:
            problems.append(f"pad_id={self.pad_id} is outside the vocabulary of {self.vocab_size}")
        if self.neighbour_prev_tokens < 0:
            problems.append("neighbour_prev_tokens must be >= 0")
        if self.copy_match_tokens < 0:
            problems.append("copy_match_tokens must be >= 0")
        if self.copy_bag_window < 0:
            problems.append("copy_bag_window must be >= 0")
        if self.copy_bag_window > self.retrieved_len:
            problems.append(
                f"copy_bag_window={self.copy_bag_window} exceeds retrieved_len={self.retrieved_len}"
            )
        if self.copy_neighbour_bag and not (self.copy_head and self.copy_bag_window):
            problems.append("copy_neighbour_bag reads the bag match's window: it needs copy_bag_window > 0")
        if self.inference_neighbours is not None and self.inference_neighbours < 1:
            problems.append(f"inference_neighbours must be >= 1 (or None); got {self.inference_neighbours}")
        if self.inference_query_tokens is not None and self.inference_query_tokens < self.chunk_size:
            problems.append(
                f"inference_query_tokens must be at least chunk_size={self.chunk_size} (or None); "
                f"got {self.inference_query_tokens}"
            )
        bias = self.inference_first_copy_bias
        if not 0 <= bias < float("inf"):
            problems.append(f"inference_first_copy_bias must be a finite number >= 0; got {bias}")
        if self.inference_first_copy_bias and not (self.copy_head and self.cca_layers):
            problems.append(
                "inference_first_copy_bias lowers the copy head's null slot: it needs a RETRO copy head"
            )
        candidates = self.inference_first_candidates
        if isinstance(candidates, bool) or not isinstance(candidates, int) or candidates < 0:
            problems.append(f"inference_first_candidates must be a whole number >= 0; got {candidates!r}")
        weight, floor = self.inference_span_weight, self.inference_span_floor
        if not 0 <= weight < float("inf"):
            problems.append(f"inference_span_weight must be a finite number >= 0; got {weight}")
        if not -float("inf") < floor <= 0:
            problems.append(f"inference_span_floor must be a finite number <= 0; got {floor}")
        if not 0 <= self.inference_span_follow < float("inf"):
            problems.append(
                f"inference_span_follow must be a finite number >= 0; got {self.inference_span_follow}"
            )
        if self.in_context and self.inference_query_tokens is not None:
            problems.append("inference_query_tokens is for RETRO's chunk queries, not an in_context model")
        if self.in_context and self.inference_neighbours is not None:
            problems.append(
                "inference_neighbours is for RETRO: an in_context model's prompt budget holds n_neighbours"
            )
        if self.in_context and (self.cca_layers or self.copy_head):
            problems.append("in_context=True is a plain decoder: it needs cca_layers=() and copy_head=False")
        if self.copy_meaning_bag and not (self.copy_head and self.copy_bag_window and self.word_dim):
            problems.append("copy_meaning_bag needs copy_head, copy_bag_window > 0 and word_dim > 0")
        if self.copy_match_gate and not (self.copy_head and (self.copy_match_tokens or self.copy_bag_window)):
            problems.append(
                "copy_match_gate scales the copy head's matches: it needs copy_match_tokens or "
                "copy_bag_window > 0"
            )
        word_table = (self.word_dim, self.word_rows, self.word_keys)
        if min(word_table) < 0 or (any(word_table) and not all(word_table)):
            problems.append(f"word_dim, word_rows and word_keys are all 0 (off) or all > 0; got {word_table}")
        if problems:
            raise ValueError("invalid RetroConfig: " + "; ".join(problems))

    @property
    def uses_retrieval(self) -> bool:
        return len(self.cca_layers) > 0

    @property
    def reads_neighbours(self) -> bool:
        """Whether the model reads retrieved neighbours: through CCA, or as passages in its prompt."""
        return self.uses_retrieval or self.in_context

    @property
    def neighbours_at_inference(self) -> int:
        """k retrieved per chunk when generating or evaluating, unless a request names its own."""
        return self.inference_neighbours or self.n_neighbours

    @property
    def copy_context_tokens(self) -> int:
        """How many of a position's last tokens the copy head compares (n-gram and bag match)."""
        if not self.copy_head:
            return 0
        # the meaning match reads the word so far at each of the last copy_bag_window positions:
        # WORD_WINDOW - 1 (3) tokens more (retro.word_meaning)
        return max(self.copy_match_tokens, self.copy_bag_window + (3 if self.copy_meaning_bag else 0))

    def replace(self, **changes) -> RetroConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["cca_layers"] = list(self.cca_layers)
        for flag in ("in_context", "copy_match_gate"):
            if not d[flag]:
                # Written only when on: every checkpoint and training state saved before the field
                # existed reads as the same config (a resume compares them key by key).
                del d[flag]
        for optional in ("inference_neighbours", "inference_query_tokens"):
            if d[optional] is None:
                del d[optional]  # likewise: written only when set
        if not d["inference_first_copy_bias"]:
            del d["inference_first_copy_bias"]  # likewise: written only when on
        if not d["inference_first_candidates"]:
            del d["inference_first_candidates"]  # likewise
        if not d["inference_span_weight"]:
            del d["inference_span_weight"], d["inference_span_floor"]  # likewise
        if not d["inference_span_follow"]:
            del d["inference_span_follow"]  # likewise
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> RetroConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown RetroConfig fields {unknown}; known fields: {sorted(known)}")
        return cls(**d)

    @classmethod
    def from_preset(cls, name: str, **overrides) -> RetroConfig:
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; presets: {', '.join(PRESETS)}")
        return PRESETS[name].replace(**overrides)


def _retro(n_layers: int, d_model: int, n_heads: int, **kw) -> RetroConfig:
    kw.setdefault("d_ff", 4 * d_model)
    kw.setdefault("enc_d_model", d_model)
    kw.setdefault("enc_n_heads", n_heads)
    kw.setdefault("cca_layers", default_cca_layers(n_layers))
    return RetroConfig(n_layers=n_layers, d_model=d_model, n_heads=n_heads, **kw)


def _baseline(n_layers: int, d_model: int, n_heads: int, **kw) -> RetroConfig:
    """A plain decoder: no CCA, no neighbour encoder, no copy head."""
    return _retro(n_layers, d_model, n_heads, cca_layers=(), copy_head=False, neighbour_prev_tokens=0, **kw)


# Non-embedding parameter counts are printed by `retro info --preset NAME`; a `*-baseline` is the
# no-retrieval model of at least 10x the non-embedding parameters of its RETRO preset.
PRESETS: dict[str, RetroConfig] = {
    # Unit tests: milliseconds on a CPU.
    "tiny": _retro(
        2,
        32,
        2,
        d_ff=64,
        max_seq_len=128,
        chunk_size=16,
        retrieved_len=32,
        enc_layers=1,
        cca_layers=(1,),
        vocab_size=512,
    ),
    "tiny-baseline": _baseline(4, 96, 4, max_seq_len=128, chunk_size=16, retrieved_len=32, vocab_size=512),
    "tiny-rag": _baseline(
        2, 48, 2, d_ff=96, max_seq_len=256, chunk_size=16, retrieved_len=32, vocab_size=512, in_context=True
    ),
    # The demo model: trains on a 2-core CPU (docs/design.md: d=128, 4 layers copies facts).
    # Two CCA layers, as in the prototype (2 of 6); one CCA layer copied 1% of held-out facts after
    # 1.6M tokens on the CPU, where a 4-layer model with CCA in layers 1 and 3 copied 28%.
    # Chunks of 32 tokens (r = 64): with 64-token chunks the same model copied 3% of held-out facts
    # after 3.3M CPU tokens, with 32-token chunks 28% after 1.6M (docs/results); a short prompt is
    # then mostly text rather than padding, and the pointer searches 128 neighbour tokens, not 256.
    "demo": _retro(
        4,
        128,
        4,
        max_seq_len=256,
        chunk_size=32,
        retrieved_len=64,
        enc_layers=1,
        enc_d_model=128,
        vocab_size=8192,
        cca_layers=(1, 3),
        copy_match_tokens=8,
    ),
    # 10 layers of d=352: 13,998,464 non-embedding parameters, 10.9x the demo's 1,286,169 (with its
    # bag and neighbour matches; 11.0x the preset's 1,269,769). The 8 x 320 of 2026-11-25 was 7.8x.
    "demo-baseline": _baseline(10, 352, 8, max_seq_len=256, chunk_size=32, retrieved_len=64, vocab_size=8192),
    # The demo's retrieval-in-prompt comparator: a plain decoder of about the demo's *total*
    # parameters (2.29M against 2.36M: two more layers of the same width in place of the neighbour
    # encoder and CCA), reading the demo's k=2 neighbours of r=64 tokens as passages. Its context of
    # 416 holds them and the template (2 x (64 + 5) + 4 = 142 tokens with the demo's tokenizer) and
    # the demo's 256-token training sequences: the same sequences RETRO trains on (retro.in_context).
    "demo-rag": _baseline(
        6, 128, 4, max_seq_len=416, chunk_size=32, retrieved_len=64, vocab_size=8192, in_context=True
    ),
    # The measured prototype's size class, and the issue's `small` (~25M non-embedding parameters).
    "small": _retro(
        8, 512, 8, max_seq_len=512, enc_layers=2, enc_d_model=256, enc_n_heads=4, vocab_size=8192
    ),
    "small-baseline": _baseline(24, 1024, 16, max_seq_len=512, vocab_size=8192),
    "medium": _retro(
        12, 768, 12, max_seq_len=1024, enc_layers=2, enc_d_model=512, enc_n_heads=8, vocab_size=32768
    ),
    "medium-baseline": _baseline(32, 1792, 14, max_seq_len=1024, vocab_size=32768),
}

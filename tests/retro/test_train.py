"""The training loop: it learns, logs, checkpoints, resumes exactly after a kill, and refuses bad input.

The data is a test double of `retro.data.TrainingData`'s protocol: sequences that count upwards
(learnable in a few dozen steps) with random neighbours, a pure function of (seed, step, rank).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from retro.checkpoint import CONFIG_FILE, load_checkpoint
from retro.config import RetroConfig
from retro.model import Retro
from retro.run_folder import LOG_FILE, STATE_DIR, read_train_state
from retro.schedule import learning_rate, parameter_groups
from retro.train import train

from .conftest import tiny_config

REPO = Path(__file__).resolve().parents[2]
SEQ_LEN = 32


@dataclass
class Batch:
    tokens: torch.Tensor
    targets: torch.Tensor
    neighbours: torch.Tensor | None


class CountingData:
    """Sequences t, t+1, t+2, ... over ids 2..2+period-1 from a random start, random neighbours.

    The global batch of a step is drawn first and then sliced by rank, so that a run over two ranks
    sees exactly the sequences of a one-rank run with the same total batch size.
    """

    def __init__(self, config, seed: int = 0, period: int = 12, with_neighbours: bool = True):
        self.config, self.seed, self.period, self.with_neighbours = config, seed, period, with_neighbours

    def batch(self, step: int, batch_size: int, rank: int = 0, world_size: int = 1) -> Batch:
        cfg, total = self.config, batch_size * world_size
        g = torch.Generator().manual_seed(self.seed * 100_003 + step)
        start = torch.randint(0, self.period, (total, 1), generator=g)
        seq = (start + torch.arange(SEQ_LEN + 1)) % self.period + 2  # (total, T+1), never pad
        shape = (total, SEQ_LEN // cfg.chunk_size, cfg.n_neighbours, cfg.retrieved_len)
        neighbours = torch.randint(2, cfg.vocab_size, shape, generator=g)
        rows = slice(rank * batch_size, (rank + 1) * batch_size)
        nb = neighbours[rows] if self.with_neighbours else None
        return Batch(seq[rows, :-1].contiguous(), seq[rows, 1:].contiguous(), nb)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models train ~50x faster on one thread than on two when the cores are shared (the suite
    runs beside other work); the resume test's subprocess uses one thread too, to be bit-identical."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def config_for(tokenizer, **overrides):
    return tiny_config(vocab_size=tokenizer.vocab_size, **overrides)


def read_log(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / LOG_FILE).read_text().splitlines()]


# ----------------------------------------------------------------------------------------------
# schedule and optimizer groups


def test_lr_warms_up_linearly_then_follows_a_cosine_down_to_the_minimum():
    kw = dict(steps=100, lr=1e-3, warmup=10, min_lr_ratio=0.1)
    lrs = [learning_rate(s, **kw) for s in range(100)]
    assert lrs[:10] == pytest.approx([1e-3 * (s + 1) / 10 for s in range(10)])
    assert max(lrs) == pytest.approx(1e-3) and lrs[9] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:], strict=False))  # never rises after warmup
    assert lrs[-1] == pytest.approx(1e-4)
    middle = 10 + (100 - 1 - 10) // 2  # half way through the decay: halfway between max and min
    assert lrs[middle] == pytest.approx(1e-4 + 0.5 * 9e-4 * (1 + math.cos(math.pi * 44 / 89)))
    assert learning_rate(0, steps=1, lr=1e-3, warmup=0, min_lr_ratio=0.1) == pytest.approx(1e-3)


def test_matrices_decay_and_biases_norms_and_null_slots_do_not(tokenizer):
    from retro.model import Retro

    model = Retro(config_for(tokenizer))
    decay, no_decay = parameter_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    kept = {names[id(p)] for p in no_decay["params"]}
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert decayed | kept == set(names.values()) and not decayed & kept
    assert "wte.weight" in decayed and "blocks.0.attn.qkv.weight" in decayed
    assert "ln_f.weight" in kept and "blocks.0.mlp.fc.bias" in kept
    assert any("null_kv" in n for n in kept) and not any("null_kv" in n for n in decayed)


# ----------------------------------------------------------------------------------------------
# learning, logging, checkpoints


def test_loss_falls_on_a_learnable_task_and_the_run_folder_is_complete(tokenizer, tmp_path):
    config = config_for(tokenizer)
    records = []
    result = train(
        tmp_path / "run", config, CountingData(config), tokenizer, steps=40, batch_size=8, lr=1e-2,
        warmup=4, log_every=5, ckpt_every=20, progress=False, on_step=records.append,
        meta={"data": "counting"},
    )  # fmt: skip
    losses = [r["loss"] for r in records]
    assert len(losses) == 40 and result.step == 40 and result.loss == losses[-1]
    assert sum(losses[-5:]) / 5 < 0.5 * losses[0], losses
    log = read_log(tmp_path / "run")
    assert [r["step"] for r in log] == list(range(5, 41, 5))
    assert set(log[0]) == {"step", "loss", "lr", "tokens_per_s", "elapsed_s", "grad_norm"}
    assert log[-1]["loss"] == losses[-1] and all(r["tokens_per_s"] > 0 for r in log)
    assert result.tokens_seen == 40 * 8 * SEQ_LEN
    model, tok, meta = load_checkpoint(tmp_path / "run")  # the run folder is a servable checkpoint
    assert model.config == config and tok.fingerprint == tokenizer.fingerprint
    assert meta["data"] == "counting" and meta["training"]["step"] == 40
    assert read_train_state(tmp_path / "run")["step"] == 40
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "run").iterdir() if p.is_file()}
    assert len(set(modes.values())) == 1, modes  # weights as readable as config.json and the log


def test_checkpoints_are_written_every_n_steps(tokenizer, tmp_path):
    config = config_for(tokenizer)
    saved_before = {}

    def record(rec):  # called after step `rec["step"]` and before that step's checkpoint
        state = read_train_state(tmp_path / "run")
        saved_before[rec["step"]] = None if state is None else state["step"]

    train(tmp_path / "run", config, CountingData(config), tokenizer, steps=7, batch_size=4,
          ckpt_every=3, log_every=1, progress=False, on_step=record)  # fmt: skip
    assert saved_before == {1: None, 2: None, 3: None, 4: 3, 5: 3, 6: 3, 7: 6}
    assert read_train_state(tmp_path / "run")["step"] == 7  # and the last step is always saved


def test_gradient_accumulation_gives_the_same_step_as_one_big_batch(tokenizer, tmp_path):
    config = config_for(tokenizer)
    results = {}
    for accum in (1, 4):
        out, records = tmp_path / f"accum{accum}", []
        train(out, config, CountingData(config), tokenizer, steps=3, batch_size=8, grad_accum=accum,
              lr=1e-2, warmup=0, progress=False, on_step=records.append)  # fmt: skip
        results[accum] = (records, load_checkpoint(out)[0].state_dict())
    (one, weights_one), (four, weights_four) = results[1], results[4]
    assert [r["loss"] for r in one] == pytest.approx([r["loss"] for r in four], abs=1e-6)
    # the grad norm is sensitive to the scale of the accumulated gradient (Adam itself is not)
    assert [r["grad_norm"] for r in one] == pytest.approx([r["grad_norm"] for r in four], rel=1e-5)
    for name, value in weights_one.items():
        torch.testing.assert_close(weights_four[name], value, atol=1e-5, rtol=1e-4)


def test_a_baseline_trains_without_neighbours(tokenizer, tmp_path):
    config = config_for(tokenizer, cca_layers=(), copy_head=False, neighbour_prev_tokens=0)
    data = CountingData(config, with_neighbours=False)
    result = train(tmp_path / "base", config, data, tokenizer, steps=3, batch_size=4, progress=False)
    assert result.step == 3 and math.isfinite(result.loss)


# ----------------------------------------------------------------------------------------------
# resume


RESUME_SCRIPT = """
import os, signal, sys
from pathlib import Path
import torch
sys.path.insert(0, {repo!r})
from retro.tokenizer import Tokenizer
from retro.train import train
from tests.retro.conftest import SENTENCES, tiny_config
from tests.retro.test_train import CountingData

kill_at = int(sys.argv[2])
torch.set_num_threads(1)
tokenizer = Tokenizer.train(SENTENCES, vocab_size=300)
config = tiny_config(vocab_size=tokenizer.vocab_size, dropout=0.1)

def on_step(record):
    if record["step"] == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)  # a crash: no cleanup, no final checkpoint

train(Path(sys.argv[1]), config, CountingData(config), tokenizer, steps=8, batch_size=4, lr=1e-2,
      warmup=2, ckpt_every=3, log_every=1, seed=5, progress=False, on_step=on_step)
"""


def test_a_killed_run_resumes_exactly_where_an_uninterrupted_run_would_be(tokenizer, tmp_path):
    # dropout on: the resumed run must also reproduce the random masks of the steps after the kill
    config = config_for(tokenizer, dropout=0.1)
    train(tmp_path / "straight", config, CountingData(config), tokenizer, steps=8, batch_size=4, lr=1e-2,
          warmup=2, ckpt_every=3, log_every=1, seed=5, progress=False)  # fmt: skip
    expected = {r["step"]: r["loss"] for r in read_log(tmp_path / "straight")}

    script = tmp_path / "run_training.py"
    script.write_text(RESUME_SCRIPT.format(repo=str(REPO)))
    run = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    killed = subprocess.run([sys.executable, str(script), str(run), "5"], env=env, capture_output=True)
    assert killed.returncode == -9, killed.stderr.decode()[-2000:]
    assert read_train_state(run)["step"] == 3  # the kill came after step 5, the last save was at 3
    assert [r["step"] for r in read_log(run)] == [1, 2, 3, 4, 5]  # logged, then killed

    resumed = subprocess.run([sys.executable, str(script), str(run), "0"], env=env, capture_output=True)
    assert resumed.returncode == 0, resumed.stderr.decode()[-2000:]
    log = read_log(run)
    assert [r["step"] for r in log] == list(range(1, 9))  # lines past the checkpoint were replaced
    for record in log:
        assert record["loss"] == pytest.approx(expected[record["step"]], abs=1e-6), record["step"]


def test_a_state_swap_cut_short_resumes_from_the_old_copy(tokenizer, tmp_path):
    config = config_for(tokenizer)
    kw = dict(steps=6, batch_size=4, lr=1e-2, warmup=1, ckpt_every=100, log_every=1, progress=False)
    straight = []
    train(
        tmp_path / "a",
        config,
        CountingData(config),
        tokenizer,
        on_step=lambda r: straight.append(r["loss"]),
        **kw,
    )
    stopped = train(
        tmp_path / "b", config, CountingData(config), tokenizer, on_step=lambda r: r["step"] == 3, **kw
    )
    assert stopped.step == 3 and read_train_state(tmp_path / "b")["step"] == 3
    # a kill between the two renames of the state swap leaves only the hidden old copy
    (tmp_path / "b" / STATE_DIR).rename(tmp_path / "b" / f".{STATE_DIR}.old")
    resumed = []
    train(
        tmp_path / "b",
        config,
        CountingData(config),
        tokenizer,
        on_step=lambda r: resumed.append(r["loss"]),
        **kw,
    )
    assert resumed == pytest.approx(straight[3:], abs=1e-6)


def test_resume_with_other_settings_is_refused(tokenizer, tmp_path):
    config = config_for(tokenizer)
    train(tmp_path / "run", config, CountingData(config), tokenizer, steps=2, batch_size=4, progress=False)
    with pytest.raises(ValueError, match="lr: 0.001 saved, 0.002 now"):
        train(tmp_path / "run", config, CountingData(config), tokenizer, steps=2, batch_size=4, lr=2e-3,
              progress=False)  # fmt: skip
    done = train(
        tmp_path / "run", config, CountingData(config), tokenizer, steps=2, batch_size=4, progress=False
    )
    assert done.step == 2 and done.loss is None  # nothing left to do


DDP_SCRIPT = """
import sys
from pathlib import Path
import torch
sys.path.insert(0, {repo!r})
from retro.tokenizer import Tokenizer
from retro.train import train
from tests.retro.conftest import SENTENCES, tiny_config
from tests.retro.test_train import CountingData

torch.set_num_threads(1)
tokenizer = Tokenizer.train(SENTENCES, vocab_size=300)
config = tiny_config(vocab_size=tokenizer.vocab_size)
train(Path(sys.argv[1]), config, CountingData(config), tokenizer, steps=4, batch_size=8, lr=1e-2,
      warmup=1, log_every=1, ckpt_every=2, progress=False, grad_accum=2)
"""


def test_two_ranks_under_torchrun_take_the_steps_of_one_process(tokenizer, tmp_path):
    """DDP over gloo on the CPU: 2 ranks x 2 micro-batches of 2 make the same steps as one batch of 8."""
    script = tmp_path / "ddp_training.py"
    script.write_text(DDP_SCRIPT.format(repo=str(REPO)))
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    config = config_for(tokenizer)
    train(tmp_path / "one", config, CountingData(config), tokenizer, steps=4, batch_size=8, lr=1e-2,
          warmup=1, log_every=1, ckpt_every=2, progress=False)  # fmt: skip
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    two = subprocess.run([*launcher, str(script), str(tmp_path / "two")], env=env, capture_output=True)
    assert two.returncode == 0, two.stderr.decode()[-3000:]
    log_one, log_two = read_log(tmp_path / "one"), read_log(tmp_path / "two")
    assert [r["step"] for r in log_two] == [1, 2, 3, 4]  # one writer: rank 0
    assert [r["loss"] for r in log_two] == pytest.approx([r["loss"] for r in log_one], abs=1e-5)
    assert [r["grad_norm"] for r in log_two] == pytest.approx([r["grad_norm"] for r in log_one], rel=1e-4)
    assert log_two[0]["tokens_per_s"] > 0 and read_train_state(tmp_path / "two")["args"]["world_size"] == 2
    load_checkpoint(tmp_path / "two")


def test_divergence_stops_the_run_before_it_overwrites_the_last_checkpoint(tokenizer, tmp_path):
    config = config_for(tokenizer)
    with pytest.raises(FloatingPointError, match="diverged at step 2"):  # lr 1e6: NaN by step 2
        train(tmp_path / "run", config, CountingData(config), tokenizer, steps=20, batch_size=4, lr=1e6,
              warmup=0, ckpt_every=1, log_every=20, progress=False)  # fmt: skip
    assert read_train_state(tmp_path / "run")["step"] == 1
    model, _, _ = load_checkpoint(tmp_path / "run")
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (dict(batch_size=6, grad_accum=4), "multiple of world_size x grad_accum"),
        (dict(steps=0), "steps must be >= 1"),
        (dict(lr=0.0), "lr must be > 0"),
        (dict(ckpt_every=0), "ckpt_every"),
        (dict(device="tpu"), "device must be"),
    ],
)
def test_bad_arguments_are_clear_errors(tokenizer, tmp_path, overrides, message):
    config = config_for(tokenizer)
    kw = dict(steps=2, batch_size=4, progress=False) | overrides
    with pytest.raises(ValueError, match=message):
        train(tmp_path / "run", config, CountingData(config), tokenizer, **kw)


def test_a_checkpoint_folder_without_training_state_is_not_overwritten(tokenizer, tmp_path):
    from retro.checkpoint import save_checkpoint
    from retro.model import Retro

    config = config_for(tokenizer)
    save_checkpoint(tmp_path / "ckpt", Retro(config), tokenizer)
    with pytest.raises(ValueError, match="no training state"):
        train(
            tmp_path / "ckpt", config, CountingData(config), tokenizer, steps=2, batch_size=4, progress=False
        )


@pytest.mark.gpu
def test_bf16_training_on_the_gpu_learns(tokenizer, tmp_path):
    config = config_for(tokenizer)
    records = []
    train(tmp_path / "run", config, CountingData(config), tokenizer, steps=40, batch_size=8, lr=1e-2,
          warmup=4, device="cuda", progress=False, on_step=records.append)  # fmt: skip
    assert sum(r["loss"] for r in records[-5:]) / 5 < 0.5 * records[0]["loss"]


# ----------------------------------------------------------------------------------------------
# `retro train`


def build_tiny_index(folder: Path, tokenizer, chunk_size: int) -> Path:
    from index.build import build_index
    from tests.index.conftest import TOPIC_DOCUMENTS
    from tests.index.hashing_encoder import HashingEncoder

    build_index(TOPIC_DOCUMENTS, folder, tokenizer, HashingEncoder(), chunk_size=chunk_size)
    return folder


def run_cli(*args: str):
    from typer.testing import CliRunner

    from service.cli import app

    result = CliRunner().invoke(app, ["train", *args])
    return result, " ".join(result.output.split())


def test_retro_train_trains_a_preset_and_its_baseline_on_an_index(tokenizer, tmp_path):
    index_dir = build_tiny_index(tmp_path / "ix", tokenizer, chunk_size=16)  # preset tiny: m=16
    common = ["--index", str(index_dir), "--steps", "3", "--batch-size", "2", "--device", "cpu"]
    result, text = run_cli("--preset", "tiny", "--out", str(tmp_path / "run"), *common)
    assert result.exit_code == 0, text
    assert "trained 3/3 steps" in text
    model, tok, meta = load_checkpoint(tmp_path / "run")
    assert model.config.vocab_size == tokenizer.vocab_size and model.config.uses_retrieval
    assert tok.fingerprint == tokenizer.fingerprint
    assert meta["preset"] == "tiny" and not meta["baseline"] and meta["training"]["step"] == 3
    assert len(read_log(tmp_path / "run")) == 1  # log_every 10: only the last step

    again, text = run_cli("--preset", "tiny", "--out", str(tmp_path / "run"), *common)  # resumes: done
    assert again.exit_code == 0 and "no step left" in text, text

    knobs = ["--recipe", "continuation_end=0.5", "--recipe", "max_offset=4"]
    tuned, text = run_cli("--preset", "tiny", "--out", str(tmp_path / "tuned"), *knobs, *common)
    assert tuned.exit_code == 0, text
    recipe = load_checkpoint(tmp_path / "tuned")[2]["recipe"]
    assert recipe["continuation_end"] == 0.5 and recipe["max_offset"] == 4
    # a table without the reading documents' chunks is computed for passage_neighbours
    knobs = ["--recipe", "read_prefix=animals/", "--recipe", "passage_neighbours=true"]
    passages, text = run_cli("--preset", "tiny", "--out", str(tmp_path / "passages"), *knobs, *common)
    assert passages.exit_code == 0, text
    assert load_checkpoint(tmp_path / "passages")[2]["recipe"]["passage_neighbours"] is True
    assert list((index_dir / "versions" / "v0001").glob("neighbours-k2-not-*.npy"))

    # word meanings: the table is built from the packaged MiniLM's words under this tokenizer
    words, text = run_cli(
        "--preset", "tiny", "--out", str(tmp_path / "words"), "--word-meanings", "8", *common
    )
    assert words.exit_code == 0, text
    model, _, meta = load_checkpoint(tmp_path / "words")
    assert model.config.word_dim == 8 and model.config.word_rows > 1000 and meta["word_table"]
    assert (model.word_meanings.keys >= 0).all()

    base, text = run_cli("--preset", "tiny", "--baseline", "--out", str(tmp_path / "base"), *common)
    assert base.exit_code == 0, text
    model, _, meta = load_checkpoint(tmp_path / "base")
    assert meta["preset"] == "tiny-baseline" and meta["baseline"] and not model.config.uses_retrieval


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing index", "is not an index"),
        ("unknown preset", "unknown preset 'huge'"),
        ("chunk size", "preset 'tiny' has chunk_size=16 but the index was cut into chunks of 8 tokens"),
        ("other settings", "holds a run with other settings"),
        ("bad batch", "multiple of world_size x grad_accum"),
        ("bad recipe", "--recipe takes name=value with a name among continuation_start"),
        ("bad flag", "--recipe passage_neighbours: 'maybe' is not true or false"),
        ("flag without prefix", "passage_neighbours=True needs read_prefix"),
        ("bad list", "--config cca_layers: '1,x' is not a comma-separated list of integers"),
        ("bad config name", "--config takes name=value with a name among"),
        ("bad word dimension", "--word-meanings takes a dimension >= 0; got -1"),
    ],
)
def test_retro_train_bad_input_exits_2_with_one_line(tokenizer, tmp_path, case, message):
    index_dir = tmp_path / "nothing-here"
    preset, extra = "tiny", []
    if case != "missing index":
        index_dir = build_tiny_index(tmp_path / "ix", tokenizer, chunk_size=8 if case == "chunk size" else 16)
    if case == "unknown preset":
        preset = "huge"
    if case == "other settings":
        base = [
            "--index",
            str(index_dir),
            "--out",
            str(tmp_path / "run"),
            "--steps",
            "1",
            "--batch-size",
            "2",
        ]
        assert run_cli("--preset", preset, *base)[0].exit_code == 0
        extra = ["--lr", "0.002"]
    if case == "bad recipe":
        extra = ["--batch-size", "2", "--recipe", "copy_everything=1"]
    if case == "bad flag":
        extra = ["--batch-size", "2", "--recipe", "passage_neighbours=maybe"]
    if case == "flag without prefix":
        extra = ["--batch-size", "2", "--recipe", "passage_neighbours=true"]
    if case == "bad batch":
        extra = ["--batch-size", "3", "--grad-accum", "2"]
    if case == "bad list":
        extra = ["--batch-size", "2", "--config", "cca_layers=1,x"]
    if case == "bad config name":
        extra = ["--batch-size", "2", "--config", "depth=3"]
    if case == "bad word dimension":
        extra = ["--batch-size", "2", "--word-meanings", "-1"]
    args = ["--preset", preset, "--index", str(index_dir), "--out", str(tmp_path / "run"), "--steps", "1"]
    result, text = run_cli(*args, *(extra or ["--batch-size", "2"]))
    assert result.exit_code == 2, text
    assert message in text and "Traceback" not in text


FINE_TUNE_KW = dict(batch_size=8, lr=1e-2, warmup=2, progress=False)


@dataclass
class TrainedBase:
    """A model trained 20 steps to fine-tune from, and its loss on the data's first batch."""

    folder: Path
    config: RetroConfig
    data: CountingData
    model: Retro
    first: object  # the data's first batch (8 sequences)
    loss: float


def trained_base(folder: Path, tokenizer) -> TrainedBase:
    config = config_for(tokenizer)
    data = CountingData(config)
    train(folder, config, data, tokenizer, steps=20, **FINE_TUNE_KW)
    model, _, _ = load_checkpoint(folder)
    first = data.batch(0, 8)
    with torch.no_grad():
        loss = model.loss(first.tokens, first.neighbours, first.targets).item()
    return TrainedBase(folder, config, data, model, first, loss)


def first_step_loss(folder: Path, config: RetroConfig, base: TrainedBase, tokenizer, **train_kw) -> float:
    """Fine-tunes `config` from `base` into `folder` and stops after the first step (as if killed
    after its checkpoint); returns that step's loss."""
    records = []

    def stop_after_one(record):
        records.append(record)
        return True

    train(folder, config, base.data, tokenizer, steps=train_kw.pop("steps", 3), init_from=base.folder,
          on_step=stop_after_one, **FINE_TUNE_KW, **train_kw)  # fmt: skip
    return records[0]["loss"]


def test_fine_tuning_starts_from_a_checkpoint_and_a_new_bag_match_changes_nothing_at_first(
    tokenizer, tmp_path
):
    """`init_from`: the first step's loss is the source model's (its weights, not a fresh start),
    also with the bag match switched on (zero salience); a resume continues the fine-tune; another
    shape or tokenizer is refused."""
    base = trained_base(tmp_path / "base", tokenizer)
    config, data, base_loss, kw = base.config, base.data, base.loss, FINE_TUNE_KW
    bag = config.replace(copy_bag_window=4)
    both = bag.replace(copy_neighbour_bag=True)
    for name, cfg in (("same", config), ("bag", bag), ("bag+neighbour", both)):
        loss = first_step_loss(tmp_path / name, cfg, base, tokenizer)
        assert loss == pytest.approx(base_loss, rel=1e-5), name
    fresh = []
    train(tmp_path / "fresh", bag, data, tokenizer, steps=1, on_step=fresh.append, **kw)
    assert fresh[0]["loss"] > 2 * base_loss  # a random start is far from the trained model
    resumed = train(tmp_path / "bag", bag, data, tokenizer, steps=3, init_from=tmp_path / "base", **kw)
    fine_meta = load_checkpoint(tmp_path / "bag")[2]
    assert resumed.step == 3 and fine_meta["init_from"]["save_id"]
    from retro.evaluate import training_tokens

    # the tokens behind the weights: the base run's 20 steps, then this run's 3
    assert fine_meta["init_from"]["tokens_before"] == 20 * 8 * SEQ_LEN
    assert training_tokens(fine_meta) == 23 * 8 * SEQ_LEN
    with pytest.raises(ValueError, match="config differs"):
        train(tmp_path / "wide", config.replace(d_ff=128), data, tokenizer, steps=1,
              init_from=tmp_path / "base", **kw)  # fmt: skip
    more = config.replace(n_neighbours=config.n_neighbours + 2)  # k shapes no parameter
    records = []
    train(tmp_path / "k", more, CountingData(more), tokenizer, steps=1, init_from=tmp_path / "base",
          on_step=records.append, **kw)  # fmt: skip
    assert records[0]["loss"] < 0.5 * fresh[0]["loss"]  # the trained weights, read at another k
    assert load_checkpoint(tmp_path / "k")[0].config.n_neighbours == config.n_neighbours + 2
    from retro.tokenizer import Tokenizer

    other = Tokenizer.train(["completely different words here"] * 50, vocab_size=tokenizer.vocab_size)
    with pytest.raises(ValueError, match="tokenizer"):
        train(tmp_path / "tok", config, data, other, steps=1, init_from=tmp_path / "base", **kw)


SWITCH_ON_KW = dict(batch_size=8, lr=1e-2, warmup=2, progress=False)


def switched_on_first_loss(tmp_path: Path, config: RetroConfig, data, tokenizer):
    """The checkpoint in tmp_path/"old" as loaded, its loss on the first batch, and the first step's
    loss of fine-tuning it into tmp_path/"new" with `config` (a feature switched on)."""
    old, _, _ = load_checkpoint(tmp_path / "old")
    first = data.batch(0, 8)
    with torch.no_grad():
        old_loss = old.loss(first.tokens, first.neighbours, first.targets).item()
    records = []
    train(tmp_path / "new", config, data, tokenizer, steps=1, init_from=tmp_path / "old",
          on_step=records.append, **SWITCH_ON_KW)  # fmt: skip
    return old, old_loss, records[0]["loss"]


def test_switching_the_match_gate_on_changes_nothing_at_first(tokenizer, tmp_path):
    """A checkpoint with the n-gram and bag matches (non-zero bonuses) fine-tunes with the match
    gate switched on: its first loss is the source's (every scale starts at 1), and the saved
    config records the gate on; the source's config.json, written without the field, reads as off."""
    config = config_for(tokenizer).replace(copy_match_tokens=3, copy_bag_window=4)
    data = CountingData(config)
    train(tmp_path / "old", config, data, tokenizer, steps=5, **SWITCH_ON_KW)
    saved = json.loads((tmp_path / "old" / CONFIG_FILE).read_text())
    assert "copy_match_gate" not in saved["config"]
    old, old_loss, first_loss = switched_on_first_loss(
        tmp_path, config.replace(copy_match_gate=True), data, tokenizer
    )
    assert old.copy_head.bag_weight.abs().sum() > 0  # the bag match is in use, not only the n-gram
    assert first_loss == pytest.approx(old_loss, rel=1e-6)
    assert load_checkpoint(tmp_path / "new")[0].config.copy_match_gate is True


def test_a_checkpoint_saved_before_the_neighbour_match_existed_fine_tunes_with_it(tokenizer, tmp_path):
    """A config.json without `copy_neighbour_bag` (every checkpoint saved before the field, the
    shipped demo's among them) reads as off, so a fine-tune may switch it on; its first loss is
    the source's (zero saliences), and the saved config then records it on."""
    config = config_for(tokenizer).replace(copy_bag_window=4)
    data = CountingData(config)
    train(tmp_path / "old", config, data, tokenizer, steps=5, **SWITCH_ON_KW)
    saved = json.loads((tmp_path / "old" / CONFIG_FILE).read_text())
    del saved["config"]["copy_neighbour_bag"]
    (tmp_path / "old" / CONFIG_FILE).write_text(json.dumps(saved))
    old, old_loss, first_loss = switched_on_first_loss(
        tmp_path, config.replace(copy_neighbour_bag=True), data, tokenizer
    )
    assert old.config.copy_neighbour_bag is False
    assert first_loss == pytest.approx(old_loss, rel=1e-5)
    assert load_checkpoint(tmp_path / "new")[0].config.copy_neighbour_bag is True

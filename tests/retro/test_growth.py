"""Growing a checkpoint for a fine-tune (`retro.growth`): the grown model starts as its checkpoint
(same loss on the first batch), its new blocks then learn, longer neighbours read the old part as
before, and what would change the function is refused with a message."""

from __future__ import annotations

import pytest
import torch

from retro.checkpoint import load_checkpoint
from retro.growth import NEIGHBOUR_POSITIONS
from retro.model import Retro
from retro.train import initial_weights, train

from .test_train import FINE_TUNE_KW, CountingData, config_for, first_step_loss, trained_base

KW = FINE_TUNE_KW


def test_a_grown_model_starts_as_its_checkpoint_and_its_new_blocks_learn(tokenizer, tmp_path):
    base = trained_base(tmp_path / "base", tokenizer)  # 3 blocks, CCA in 1 and 2, one encoder block
    config, data, first, base_loss = base.config, base.data, base.first, base.loss
    # two blocks appended (CCA in the last), CCA added to an old block after the first CCA, and an
    # encoder block appended
    grown = config.replace(n_layers=5, cca_layers=(1, 2, 4), enc_layers=2)
    assert first_step_loss(tmp_path / "grown", grown, base, tokenizer) == pytest.approx(base_loss, rel=1e-5)
    train(tmp_path / "grown", grown, data, tokenizer, steps=3, init_from=tmp_path / "base", **KW)
    model, _, meta = load_checkpoint(tmp_path / "grown")
    assert model.config == grown and meta["init_from"]["save_id"]
    state = model.state_dict()
    # the new residual outputs started at zero and moved; the old weights were kept, then trained
    for name in ("blocks.3.attn.proj.weight", "blocks.4.cca.proj.weight", "encoder.blocks.1.mlp.proj.weight"):
        assert state[name].abs().max() > 0, name
    assert not torch.equal(
        state["blocks.0.attn.qkv.weight"], base.model.state_dict()["blocks.0.attn.qkv.weight"]
    )
    with torch.no_grad():
        assert model.loss(first.tokens, first.neighbours, first.targets).item() < base_loss + 0.5


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (dict(n_layers=2, cca_layers=(1,)), "n_layers: 3 there, 2 here (a fine-tune can only add blocks)"),
        (dict(cca_layers=(2,)), "cannot take cross-attention out of blocks [1]"),
        (dict(cca_layers=(0, 1, 2)), "adds cross-attention before block 1"),
        (dict(d_model=64), "d_model: 32 there, 64 here"),
        (dict(retrieved_len=4), "retrieved_len: 8 there, 4 here (a fine-tune can only lengthen neighbours)"),
        (dict(retrieved_len=10), "(neighbours grow by whole chunks of 4 tokens)"),
    ],
)
def test_what_a_fine_tune_cannot_grow_is_refused(tokenizer, tmp_path, change, message):
    config = config_for(tokenizer)
    data = CountingData(config)
    train(tmp_path / "base", config, data, tokenizer, steps=2, **KW)
    with pytest.raises(ValueError, match="config differs") as refused:
        train(tmp_path / "x", config.replace(**change), data, tokenizer, steps=1,
              init_from=tmp_path / "base", **KW)  # fmt: skip
    assert message in str(refused.value)
    assert not (tmp_path / "x").exists()  # nothing written


def test_longer_neighbours_read_their_old_part_as_the_checkpoint_did_and_train(tokenizer, tmp_path):
    """`retrieved_len` 8 -> 16 (chunks of 4): the new encoder positions copy the old last chunk's,
    the old ones are kept, so neighbours of the old length (padded to the new) give the checkpoint's
    loss; the fine-tune then trains on neighbours of the new length."""
    base = trained_base(tmp_path / "base", tokenizer)
    config, first, r, m = base.config, base.first, base.config.retrieved_len, base.config.chunk_size
    longer = config.replace(retrieved_len=2 * r)
    start = initial_weights(base.folder, longer, tokenizer)
    old = base.model.state_dict()[NEIGHBOUR_POSITIONS]
    grown = start.state[NEIGHBOUR_POSITIONS]
    assert grown.shape == (2 * r, old.shape[1])
    assert torch.equal(grown[:r], old)
    for p in range(r, 2 * r):
        assert torch.equal(grown[p], old[r - m + (p - r) % m]), p
    model = Retro(longer)
    model.load_state_dict(start.state)
    model.eval()
    padded = torch.nn.functional.pad(first.neighbours, (0, r), value=config.pad_id)
    with torch.no_grad():
        loss = model.loss(first.tokens, padded, first.targets).item()
    assert loss == pytest.approx(base.loss, rel=1e-5)

    train(tmp_path / "longer", longer, type(base.data)(longer), tokenizer, steps=3,
          init_from=base.folder, **KW)  # fmt: skip
    trained, _, meta = load_checkpoint(tmp_path / "longer")
    assert trained.config.retrieved_len == 2 * r and meta["init_from"]["save_id"]
    assert not torch.equal(trained.state_dict()[NEIGHBOUR_POSITIONS][r:], grown[r:])  # the new rows learn


def test_a_baseline_cannot_be_grown_into_a_retro(tokenizer, tmp_path):
    baseline = config_for(tokenizer, cca_layers=(), copy_head=False, neighbour_prev_tokens=0)
    train(
        tmp_path / "base", baseline, CountingData(baseline, with_neighbours=False), tokenizer, steps=2, **KW
    )
    retro = config_for(tokenizer, copy_head=False, neighbour_prev_tokens=0)
    with pytest.raises(ValueError, match="without retrieval cannot be grown"):
        train(
            tmp_path / "x", retro, CountingData(retro), tokenizer, steps=1, init_from=tmp_path / "base", **KW
        )


def test_retro_train_grows_a_checkpoint_from_the_command_line(tokenizer, tmp_path):
    """`--config n_layers=.. --config cca_layers=a,b,c` over `--init-from`: the list form parses and
    the saved model is the grown one."""
    from .test_train import build_tiny_index, run_cli

    index_dir = build_tiny_index(tmp_path / "ix", tokenizer, chunk_size=16)
    common = ["--preset", "tiny", "--index", str(index_dir), "--steps", "2", "--batch-size", "2"]
    result, text = run_cli(*common, "--out", str(tmp_path / "base"))
    assert result.exit_code == 0, text
    base, _, _ = load_checkpoint(tmp_path / "base")
    layers = base.config.n_layers
    cca = ",".join(str(i) for i in (*base.config.cca_layers, layers + 1))
    result, text = run_cli(*common, "--out", str(tmp_path / "grown"), "--init-from", str(tmp_path / "base"),
                           "--config", f"n_layers={layers + 2}", "--config", f"cca_layers={cca}")  # fmt: skip
    assert result.exit_code == 0, text
    grown, _, meta = load_checkpoint(tmp_path / "grown")
    assert grown.config.n_layers == layers + 2
    assert grown.config.cca_layers == (*base.config.cca_layers, layers + 1)
    assert meta["init_from"]["path"] == str((tmp_path / "base").resolve())
    # the preset's shape from the grown checkpoint: fewer blocks
    result, text = run_cli(*common, "--out", str(tmp_path / "shrunk"), "--init-from", str(tmp_path / "grown"))
    assert result.exit_code == 2 and "a fine-tune can only add blocks" in text, text
    # longer neighbours, and the query window of inference (an optional field, unset in the preset)
    r, m = base.config.retrieved_len, base.config.chunk_size
    longer_config = ["--config", f"retrieved_len={2 * r}", "--config", f"inference_query_tokens={3 * m}",
                     "--config", "inference_first_copy_bias=3.5",
                     "--config", "inference_first_candidates=5"]  # fmt: skip
    result, text = run_cli(*common, "--out", str(tmp_path / "longer"), "--init-from", str(tmp_path / "base"),
                           *longer_config)  # fmt: skip
    assert result.exit_code == 0, text
    longer, _, _ = load_checkpoint(tmp_path / "longer")
    assert (longer.config.retrieved_len, longer.config.inference_query_tokens) == (2 * r, 3 * m)
    assert longer.config.inference_first_copy_bias == 3.5  # a float, and free in a fine-tune
    assert longer.config.inference_first_candidates == 5  # a whole number, likewise

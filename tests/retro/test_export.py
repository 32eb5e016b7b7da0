"""`retro export` writes a loadable checkpoint in a smaller type and smaller shards, or says why not."""

import json

import pytest
import torch
from safetensors import safe_open
from typer.testing import CliRunner

from retro.checkpoint import load_checkpoint, save_checkpoint
from service.cli import app

from .conftest import make_model, tiny_config
from .test_model import random_inputs


def test_float16_export_loads_and_predicts_like_the_original(tokenizer, tmp_path):
    model = make_model(tiny_config(vocab_size=tokenizer.vocab_size))
    run = save_checkpoint(tmp_path / "run", model, tokenizer, meta={"training": {"step": 7}})
    result = CliRunner().invoke(
        app, ["export", str(run), "--out", str(tmp_path / "pub"), "--dtype", "float16", "--max-shard-mb", "1"]
    )
    assert result.exit_code == 0, result.output
    for shard in (tmp_path / "pub").glob("*.safetensors"):
        with safe_open(str(shard), "pt") as f:
            assert {f.get_tensor(name).dtype for name in f.keys()} <= {torch.float16, torch.int64}  # noqa: SIM118
    loaded, loaded_tokenizer, meta = load_checkpoint(tmp_path / "pub")
    assert meta["training"] == {"step": 7} and meta["exported"]["dtype"] == "float16"
    assert loaded_tokenizer.fingerprint == tokenizer.fingerprint
    assert all(p.dtype == torch.float32 for p in loaded.parameters())  # cast back on load
    tokens, neighbours = random_inputs(model.config)
    with torch.no_grad():
        torch.testing.assert_close(loaded(tokens, neighbours), model(tokens, neighbours), atol=2e-3, rtol=0)
    body = json.loads((tmp_path / "pub" / "config.json").read_text())
    assert body["config"] == model.config.to_dict()


def test_export_refuses_bad_arguments(tokenizer, tmp_path):
    run = save_checkpoint(
        tmp_path / "run", make_model(tiny_config(vocab_size=tokenizer.vocab_size)), tokenizer
    )
    runner = CliRunner()

    def error(*args) -> str:
        result = runner.invoke(app, ["export", *args])
        assert result.exit_code == 2
        return " ".join(result.output.split())

    assert "--dtype" in error(str(run), "--out", str(tmp_path / "x"), "--dtype", "int8")
    assert "differ" in error(str(run), "--out", str(run))
    assert "config.json" in error(str(tmp_path / "missing"), "--out", str(tmp_path / "y"))
    assert "--neighbours must be >= 1" in error(str(run), "--out", str(tmp_path / "z"), "--neighbours", "0")
    assert "at least the chunk size (4); got 3" in error(
        str(run), "--out", str(tmp_path / "z"), "--query-tokens", "3"
    )
    baseline = save_checkpoint(
        tmp_path / "base",
        make_model(tiny_config(vocab_size=tokenizer.vocab_size, cca_layers=(), copy_head=False)),
        tokenizer,
    )
    assert "RETRO" in error(str(baseline), "--out", str(tmp_path / "w"), "--neighbours", "4")
    assert "copy head" in error(str(baseline), "--out", str(tmp_path / "w"), "--first-copy-bias", "5")
    assert "--first-copy-bias must be a finite number >= 0; got -1.0" in error(
        str(run), "--out", str(tmp_path / "z"), "--first-copy-bias", "-1"
    )
    assert "--first-candidates must be >= 0; got -2" in error(
        str(run), "--out", str(tmp_path / "z"), "--first-candidates", "-2"
    )
    assert not (tmp_path / "z").exists() and not (tmp_path / "w").exists()


def exported(model, tokenizer, tmp_path, *flags: str):
    """`retro export RUN --out pub FLAGS` of `model` saved as a run; the exported model."""
    run = save_checkpoint(tmp_path / "run", model, tokenizer)
    result = CliRunner().invoke(app, ["export", str(run), "--out", str(tmp_path / "pub"), *flags])
    assert result.exit_code == 0, result.output
    return load_checkpoint(tmp_path / "pub")[0]


def assert_same_weights_and_fine_tunable(loaded, model, tmp_path, tokenizer) -> None:
    """A setting of inference only: the exported weights are the run's, and a fine-tune may start
    from the export with the run's config (a FREE_FIELD: no clash)."""
    from retro.train import initial_weights

    for name, value in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], value, atol=0, rtol=0)
    start = initial_weights(tmp_path / "pub", model.config, tokenizer)
    assert set(start.state) == set(model.state_dict())


def test_export_neighbours_sets_the_k_generation_retrieves_and_nothing_else(tokenizer, tmp_path):
    """`--neighbours 4` over a model trained at k=2: its generations retrieve 4 per chunk by default
    (`default_k`, which the service and `retro eval` ask for), its weights and its outputs for the
    same neighbours are unchanged, and a fine-tune may start from it."""
    from retro.generate import RetroLanguageModel

    model = make_model(tiny_config(vocab_size=tokenizer.vocab_size))
    assert model.config.n_neighbours == 2 and model.config.inference_neighbours is None
    # unset, the field is not written: configs saved before it existed compare equal on resume
    assert "inference_neighbours" not in model.config.to_dict()
    with pytest.raises(ValueError, match="inference_neighbours must be >= 1"):
        model.config.replace(inference_neighbours=0)
    loaded = exported(model, tokenizer, tmp_path, "--neighbours", "4")
    assert loaded.config.inference_neighbours == 4 and loaded.config.n_neighbours == 2
    assert loaded.config == model.config.replace(inference_neighbours=4)
    assert RetroLanguageModel(loaded, tokenizer).default_k == 4
    assert RetroLanguageModel(model, tokenizer).default_k == 2
    assert_same_weights_and_fine_tunable(loaded, model, tmp_path, tokenizer)
    tokens, neighbours = random_inputs(model.config)
    with torch.no_grad():
        torch.testing.assert_close(loaded(tokens, neighbours), model(tokens, neighbours), atol=0, rtol=0)


def test_export_query_tokens_sets_how_far_back_generation_queries_and_nothing_else(tokenizer, tmp_path):
    """`--query-tokens 12` (chunks of 4): generation and the service query each chunk with its last
    12 tokens unless told otherwise; the weights are unchanged; unset, the field is not written."""
    from retro.generate import RetroLanguageModel

    model = make_model(tiny_config(vocab_size=tokenizer.vocab_size))
    assert "inference_query_tokens" not in model.config.to_dict()
    with pytest.raises(ValueError, match="inference_query_tokens must be at least chunk_size=4"):
        model.config.replace(inference_query_tokens=3)
    loaded = exported(model, tokenizer, tmp_path, "--query-tokens", "12")
    assert loaded.config == model.config.replace(inference_query_tokens=12)
    assert RetroLanguageModel(loaded, tokenizer).query_tokens == 12
    assert RetroLanguageModel(loaded, tokenizer, query_tokens=4).query_tokens == 4  # the caller's wins
    assert RetroLanguageModel(model, tokenizer).query_tokens == 4  # the chunk alone
    assert_same_weights_and_fine_tunable(loaded, model, tmp_path, tokenizer)


def test_export_first_copy_bias_sets_the_first_tokens_rule_and_nothing_else(tokenizer, tmp_path):
    """`--first-copy-bias 5`: generation lowers the copy head's null slot by 5 nats for the first
    token unless told otherwise; the weights and `forward` (scoring) are unchanged; unset (0), the
    field is not written, so configs saved before it existed compare equal on resume."""
    from retro.generate import RetroLanguageModel

    model = make_model(tiny_config(vocab_size=tokenizer.vocab_size))
    assert "inference_first_copy_bias" not in model.config.to_dict()
    for bad in (-0.5, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="inference_first_copy_bias must be a finite number >= 0"):
            model.config.replace(inference_first_copy_bias=bad)
    with pytest.raises(ValueError, match="needs a RETRO copy head"):
        tiny_config(copy_head=False, inference_first_copy_bias=1.0)
    loaded = exported(model, tokenizer, tmp_path, "--first-copy-bias", "5")
    assert loaded.config == model.config.replace(inference_first_copy_bias=5.0)
    assert loaded.config.to_dict()["inference_first_copy_bias"] == 5.0
    assert RetroLanguageModel(loaded, tokenizer).first_copy_bias == 5.0
    assert RetroLanguageModel(loaded, tokenizer, first_copy_bias=0.0).first_copy_bias == 0.0  # the caller's
    assert RetroLanguageModel(model, tokenizer).first_copy_bias == 0.0
    assert_same_weights_and_fine_tunable(loaded, model, tmp_path, tokenizer)
    tokens, neighbours = random_inputs(model.config)
    with torch.no_grad():
        torch.testing.assert_close(loaded(tokens, neighbours), model(tokens, neighbours), atol=0, rtol=0)


def test_export_first_candidates_sets_the_greedy_first_tokens_lookahead_and_nothing_else(tokenizer, tmp_path):
    """`--first-candidates 5`: greedy generation weighs the five likeliest first tokens by one token
    of lookahead unless told otherwise (retro.first_token); the weights and scoring are unchanged;
    a baseline without retrieval takes it too (a decoding rule, not a retrieval one)."""
    from retro.generate import RetroLanguageModel

    model = make_model(tiny_config(vocab_size=tokenizer.vocab_size))
    loaded = exported(model, tokenizer, tmp_path, "--first-candidates", "5")
    assert loaded.config == model.config.replace(inference_first_candidates=5)
    assert loaded.config.to_dict()["inference_first_candidates"] == 5
    assert RetroLanguageModel(loaded, tokenizer).first_candidates == 5
    assert RetroLanguageModel(loaded, tokenizer, first_candidates=0).first_candidates == 0  # the caller's
    assert_same_weights_and_fine_tunable(loaded, model, tmp_path, tokenizer)
    baseline = make_model(tiny_config(vocab_size=tokenizer.vocab_size, cca_layers=(), copy_head=False))
    assert exported(
        baseline, tokenizer, tmp_path / "b", "--first-candidates", "3"
    ).config == baseline.config.replace(inference_first_candidates=3)

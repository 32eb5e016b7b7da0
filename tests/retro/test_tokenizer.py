"""The tokenizer round-trips any UTF-8 text and saves/loads as one file."""

import pytest

from retro.tokenizer import Tokenizer

CORPUS = [
    "The capital of France is Paris. Paris lies on the Seine.\n",
    "Gold has the chemical symbol Au and atomic number 79.\n",
    "Ünïcödé, emoji 🚀 and  double  spaces\tand tabs\r\n",
] * 40


@pytest.fixture(scope="module")
def tokenizer():
    return Tokenizer.train(CORPUS, vocab_size=320)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "a",
        " leading space",
        "trailing space ",
        "Line one\nLine two\n\n",
        "CamelCase MIXED case",
        "日本語のテキスト",
        "emoji 🚀🔥",
        "crlf\r\nline",
        "\t\ttabs",
        "x" * 5000,
    ],
)
def test_round_trip(tokenizer, text):
    assert tokenizer.decode(tokenizer.encode(text)) == text


def test_special_ids_are_fixed(tokenizer):
    assert (tokenizer.pad_id, tokenizer.eos_id) == (0, 1)
    assert tokenizer.vocab_size == 320


def test_save_load_same_ids_and_fingerprint(tokenizer, tmp_path):
    tokenizer.save(tmp_path)
    loaded = Tokenizer.load(tmp_path)
    assert loaded.fingerprint == tokenizer.fingerprint
    assert loaded.encode(CORPUS[0]) == tokenizer.encode(CORPUS[0])


def test_batch_matches_single(tokenizer):
    texts = CORPUS[:3]
    assert tokenizer.encode_batch(texts) == [tokenizer.encode(t) for t in texts]


def test_bad_files_give_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no tokenizer"):
        Tokenizer.load(tmp_path / "missing")
    bad = tmp_path / "tokenizer.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not a valid tokenizer"):
        Tokenizer.load(bad)


def test_too_small_vocab_is_refused():
    with pytest.raises(ValueError, match="vocab_size"):
        Tokenizer.train(CORPUS, vocab_size=100)

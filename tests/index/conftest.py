"""Shared fixtures for the index tests: one MiniLM load per session, one small LM tokenizer."""

from __future__ import annotations

import pytest

from index.corpus import Document
from retro.tokenizer import Tokenizer
from tests.index.hashing_encoder import HashingEncoder

# Ten short documents on distinct topics: a query about one should retrieve it.
TOPIC_DOCUMENTS = [
    Document(
        "animals/otter", "Sea otters float on their backs and crack shellfish open with stones.", "test"
    ),
    Document(
        "space/mars",
        "Mars is the fourth planet from the Sun and has two small moons, Phobos and Deimos.",
        "test",
    ),
    Document(
        "food/bread",
        "Bread dough rises because yeast ferments sugar and releases carbon dioxide gas.",
        "test",
    ),
    Document(
        "music/violin",
        "The violin has four strings tuned in perfect fifths and is played with a bow.",
        "test",
    ),
    Document(
        "sport/chess",
        "In chess, castling moves the king two squares towards a rook on the same rank.",
        "test",
    ),
    Document("geo/nile", "The Nile flows north through eleven countries into the Mediterranean Sea.", "test"),
    Document(
        "tech/rust",
        "The Rust borrow checker enforces ownership rules to prevent data races at compile time.",
        "test",
    ),
    Document(
        "history/rome",
        "Julius Caesar crossed the Rubicon river in 49 BC, starting a civil war in Rome.",
        "test",
    ),
    Document(
        "health/sleep", "Adults need about seven to nine hours of sleep each night for good health.", "test"
    ),
    Document("art/monet", "Claude Monet painted water lilies in his garden at Giverny many times.", "test"),
]


@pytest.fixture(scope="session")
def encoder():
    """The real MiniLM encoder on CPU (the slow part of the suite: loaded once)."""
    from index.encoder import ChunkEncoder

    return ChunkEncoder("cpu")


@pytest.fixture(scope="session")
def tokenizer() -> Tokenizer:
    texts = [d.text for d in TOPIC_DOCUMENTS] * 3 + ["Zorbland is a country. Its capital is Quibbletown."]
    return Tokenizer.train(texts, vocab_size=400)


@pytest.fixture()
def hashing_encoder() -> HashingEncoder:
    return HashingEncoder()


@pytest.fixture()
def topic_documents() -> list[Document]:
    return [Document(d.doc_id, d.text, d.source, d.title) for d in TOPIC_DOCUMENTS]

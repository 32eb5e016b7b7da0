"""POST /v1/embeddings: OpenAI's embeddings API with the serving index's MiniLM encoder.

The encoder is the one retrieval uses (`service.retrieval.shared_encoder`, loaded with the index):
all-MiniLM-L6-v2, 384 dimensions, mean-pooled and L2-normalised, so a client's vectors are
comparable with the index's. `input` is a string or a list of strings (token ids are refused:
the ids of which tokenizer would be ambiguous); `encoding_format` "float" gives lists of floats,
"base64" the little-endian float32 bytes, as OpenAI (the official client asks for base64 by
default). `model` follows vLLM: the served embedding model's name
(`sentence-transformers/all-MiniLM-L6-v2`, or its short form `all-MiniLM-L6-v2`); leaving it out
picks it; any other name is a 404. `usage.prompt_tokens` counts the WordPiece tokens the encoder
read, [CLS] and [SEP] included, after its truncation at 256 tokens (longer texts are embedded from
their first 256 tokens, as the index embeds its chunks).
"""

from __future__ import annotations

import asyncio
import base64

import numpy as np
from fastapi import APIRouter

from service.deps import Index
from service.errors import APIError
from service.schemas import MAX_EMBEDDING_INPUTS, EmbeddingRequest

router = APIRouter(tags=["embeddings"])


def _texts(body: EmbeddingRequest) -> list[str]:
    texts = [body.input] if isinstance(body.input, str) else list(body.input)
    if not texts:
        raise APIError(400, "input must not be empty", "input")
    if not all(isinstance(t, str) for t in texts):
        raise APIError(
            400, "token-id input is not supported: send the text (a string or a list of strings)", "input"
        )
    if len(texts) > MAX_EMBEDDING_INPUTS:
        raise APIError(400, f"at most {MAX_EMBEDDING_INPUTS} inputs per request; got {len(texts)}", "input")
    if any(not t for t in texts):
        raise APIError(400, "input strings must not be empty", "input")
    return texts


def _check_model(name: str | None, encoder) -> None:
    served = encoder.name
    if name not in (None, "", served, served.rsplit("/", 1)[-1]):
        raise APIError(
            404,
            f"the embedding model {name!r} does not exist; this server embeds with {served}",
            "model",
            "model_not_found",
        )


def _embed(encoder, texts: list[str]) -> tuple[np.ndarray, int]:
    """Blocking: the vectors and the WordPiece tokens read (the encoder's own truncation applied)."""
    vectors = encoder.encode(texts)
    tokens = int(encoder.tokenize(texts)["attention_mask"].sum())
    return vectors, tokens


@router.post("/v1/embeddings")
async def create_embeddings(body: EmbeddingRequest, index: Index):
    encoder = index.encoder
    _check_model(body.model, encoder)
    if body.dimensions is not None and body.dimensions != encoder.dim:
        raise APIError(
            400, f"dimensions={body.dimensions}: {encoder.name} gives {encoder.dim} only", "dimensions"
        )
    texts = _texts(body)
    vectors, n_tokens = await asyncio.to_thread(_embed, encoder, texts)
    data = []
    for i, vector in enumerate(vectors):
        if body.encoding_format == "base64":
            embedding = base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
        else:
            embedding = vector.tolist()
        data.append({"object": "embedding", "index": i, "embedding": embedding})
    return {
        "object": "list",
        "data": data,
        "model": encoder.name,
        "usage": {"prompt_tokens": n_tokens, "total_tokens": n_tokens},
    }

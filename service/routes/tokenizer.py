"""vLLM's tokenizer endpoints: GET /tokenizer_info, POST /tokenize, POST /detokenize (no /v1 prefix).

lm-evaluation-harness (`tokenizer_backend=remote`, which it picks when a server answers these)
counts context lengths and finds the end-of-text token through them, so the shapes are vLLM's:

- `GET /tokenizer_info[?model=]` -> `tokenizer_class`, `eos_token`, `eos_token_id`, `bos_token`,
  `pad_token`, `model_max_length` (the model's context length), `vocab_size`, and `chat_template`:
  the server's chat template (`retro.chat_template.JINJA_TEMPLATE`) for clients that render chats.
- `POST /tokenize` `{"prompt": ...}` or `{"messages": [...]}` (rendered by the chat template, as
  /v1/chat/completions renders them) -> `{"count", "max_model_len", "tokens", "token_strs": null}`.
  The tokenizers add no special tokens to a text, so `add_special_tokens` changes one case only:
  true (the default) gives what the model is fed, where an empty prompt is one end-of-text token
  (the count then equals a completion's `usage.prompt_tokens`); false gives `[]` for it.
- `POST /detokenize` `{"tokens": [...]}` -> `{"prompt": ...}`, special tokens kept as text
  (`<eos>`), so that detokenize then tokenize gives the same ids, as vLLM's does.

`model` picks the model whose tokenizer answers (RETRO by default; the comparison model has its own).
"""

from __future__ import annotations

from fastapi import APIRouter

from retro.chat_template import JINJA_TEMPLATE
from retro.tokenizer import EOS, PAD
from retro.tokenizer import Tokenizer as RetroTokenizer
from service.deps import ReadyState, find_model
from service.errors import APIError
from service.routes.chat import chat_prompt
from service.schemas import DetokenizeRequest, TokenizeRequest

router = APIRouter(tags=["tokenizer"])


def _special_tokens(tokenizer) -> dict:
    if isinstance(tokenizer, RetroTokenizer):  # ours: <pad> and <eos>, no beginning-of-text token
        return {"eos_token": EOS, "bos_token": None, "pad_token": PAD}
    return {
        "eos_token": tokenizer.eos_token,
        "bos_token": tokenizer.bos_token,
        "pad_token": tokenizer.pad_token,
    }


def _vocab_size(tokenizer) -> int:
    if isinstance(tokenizer, RetroTokenizer):
        return tokenizer.vocab_size
    return len(tokenizer)  # a transformers tokenizer: its added tokens included


def _decode_keeping_special(tokenizer, ids: list[int]) -> str:
    if isinstance(tokenizer, RetroTokenizer):
        return tokenizer.decode(ids, skip_special=False)
    return tokenizer.decode(ids, skip_special_tokens=False)


@router.get("/tokenizer_info")
async def tokenizer_info(state: ReadyState, model: str | None = None):
    served = find_model(state, model)
    lm = served.lm
    return {
        "tokenizer_class": type(lm.tokenizer).__name__,
        **_special_tokens(lm.tokenizer),
        "eos_token_id": lm.eos_id,
        "model_max_length": lm.max_seq_len,
        "vocab_size": _vocab_size(lm.tokenizer),
        "chat_template": JINJA_TEMPLATE,
        "model": served.id,
    }


@router.post("/tokenize")
async def tokenize(body: TokenizeRequest, state: ReadyState):
    lm = find_model(state, body.model).lm
    text = chat_prompt(body.messages).text if body.messages is not None else body.prompt
    # Both tokenizers encode a non-empty text without added tokens; only "" differs (see above).
    tokens = lm.encode_prompt(text) if body.add_special_tokens or text else []
    return {"count": len(tokens), "max_model_len": lm.max_seq_len, "tokens": tokens, "token_strs": None}


@router.post("/detokenize")
async def detokenize(body: DetokenizeRequest, state: ReadyState):
    lm = find_model(state, body.model).lm
    size = _vocab_size(lm.tokenizer)
    out_of_range = [t for t in body.tokens if t >= size]
    if out_of_range:
        raise APIError(
            400, f"token id {out_of_range[0]} is out of range: this tokenizer has {size} tokens", "tokens"
        )
    return {"prompt": _decode_keeping_special(lm.tokenizer, body.tokens)}

"""A Hugging Face causal LM as a comparison model, with the generate/stream contract of `retro.generate`.

`load_hf_model(folder)` loads a `save_pretrained` folder (weights, config and tokenizer) offline with
transformers and returns an `HFCausalLM` whose `generate(prompt, params)` / `stream(prompt, params)`
take the same `SamplingParams` and give the same `GenerationResult` / `TextPiece`s as
`retro.generate`, so the service and the evaluation can swap it for a RETRO model. Sampling reuses
`retro.generate.sample_token`, so temperature, top-k, top-p and seeds mean the same for both.
It never retrieves (`retrieve` is accepted and ignored) and knows nothing of the index or service.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import torch

from retro.generate import (
    GenerationResult,
    PromptTooLongError,
    SamplingParams,
    TextPiece,
    sample_token,
    text_pieces,
)


class HFModelError(ValueError):
    """A folder that is not a loadable Hugging Face causal LM (with its tokenizer)."""


def is_hf_model_folder(folder: str | Path) -> bool:
    """True for a `save_pretrained` folder: its config.json names a transformers `model_type`."""
    path = Path(folder) / "config.json"
    try:
        body = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(body, dict) and "model_type" in body


def load_hf_model(folder: str | Path, device: str = "cpu") -> HFCausalLM:
    """Loads model and tokenizer from `folder` without any network access; raises HFModelError."""
    folder = Path(folder)
    if not is_hf_model_folder(folder):
        raise HFModelError(f"{folder} is not a Hugging Face model folder (config.json with a model_type)")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import transformers
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as e:
        raise HFModelError(
            "a Hugging Face comparison model needs transformers: pip install '.[compare]'"
        ) from e
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, KeyError) as e:
        raise HFModelError(f"could not load a causal LM and tokenizer from {folder}: {e}") from e
    return HFCausalLM(model.to(device).eval(), tokenizer, name=folder.name)


class HFCausalLM:
    """A transformers causal LM + tokenizer behind retro.generate's contract (KV-cached decoding)."""

    uses_retrieval = False

    def __init__(self, model, tokenizer, name: str = "hf-model"):
        self.model, self.tokenizer, self.name = model, tokenizer, name
        config = model.config
        self.max_seq_len: int = int(
            getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None) or 1024
        )
        self.eos_id: int | None = tokenizer.eos_token_id

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def parameter_counts(self) -> dict[str, int]:
        """Total parameters, and those outside every embedding table (token and position)."""
        total = sum(p.numel() for p in self.model.parameters())
        embedding = sum(m.weight.numel() for m in self.model.modules() if isinstance(m, torch.nn.Embedding))
        return {"total": total, "non_embedding": total - embedding}

    @property
    def prompt_token_limit(self) -> int:
        return self.max_seq_len - 1

    def encode_prompt(self, prompt: str) -> list[int]:
        ids = self.tokenizer.encode(prompt, add_special_tokens=False)
        if not ids:  # an empty prompt starts a document, as in retro.generate
            ids = [self.eos_id if self.eos_id is not None else 0]
        return ids

    def _token_stream(self, prompt_ids: list[int], params: SamplingParams) -> Iterator[int]:
        seed = params.seed if params.seed is not None else int.from_bytes(os.urandom(8), "little") >> 1
        generator = torch.Generator(device=self.device).manual_seed(seed)
        out = self.model(input_ids=torch.tensor([prompt_ids], device=self.device), use_cache=True)
        position = len(prompt_ids)
        while True:
            token = sample_token(out.logits[0, -1], params, generator)
            yield token
            if position >= self.max_seq_len:  # no position left for another token
                return
            out = self.model(
                input_ids=torch.tensor([[token]], device=self.device),
                past_key_values=out.past_key_values,
                use_cache=True,
            )
            position += 1

    @torch.inference_mode()
    def stream(
        self, prompt: str, params: SamplingParams = SamplingParams(), retrieve=None
    ) -> Iterator[TextPiece]:
        """Yields text pieces as they become final; the last one carries the finish reason."""
        prompt_ids = self.encode_prompt(prompt)
        if len(prompt_ids) > self.prompt_token_limit:
            raise PromptTooLongError(len(prompt_ids), self.prompt_token_limit)
        tokens = self._token_stream(prompt_ids, params)
        decode = partial(self.tokenizer.decode, skip_special_tokens=True)
        yield from text_pieces(tokens, decode, self.eos_id, params)

    def generate(
        self, prompt: str, params: SamplingParams = SamplingParams(), retrieve=None
    ) -> GenerationResult:
        pieces = list(self.stream(prompt, params))
        return GenerationResult(
            text="".join(p.text for p in pieces),
            finish_reason=pieces[-1].finish_reason or "length",
            prompt_tokens=len(self.encode_prompt(prompt)),
            completion_tokens=sum(p.n_tokens for p in pieces),
        )

"""The models the service answers with, behind one small interface (`LanguageModel`).

A RETRO checkpoint (`retro.checkpoint`) and a Hugging Face causal LM (`retro.hf_model`) both become
a `LanguageModel`: an id, parameter counts, context limits and `stream(prompt, params, retrieve)`.
This module owns choosing the loader for a folder; it runs no threads and knows no HTTP.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from retro.generate import SamplingParams, TextPiece, prompt_token_limit, stream


@dataclass
class LanguageModel:
    id: str
    kind: str  # "retro" or "huggingface"
    path: Path
    parameters: dict  # {"total", "non_embedding"}
    uses_retrieval: bool
    max_seq_len: int
    chunk_size: int | None  # retrieval chunk size (RETRO only)
    retrieved_len: int | None  # neighbour length r the model expects (RETRO only)
    default_k: int | None  # neighbours per chunk used in training (RETRO only)
    tokenizer: object
    _model: object

    def prompt_limit(self, with_retrieval: bool) -> int:
        if self.kind == "retro":
            return prompt_token_limit(self._model, with_retrieval and self.uses_retrieval)
        return self._model.prompt_token_limit

    def count_prompt_tokens(self, prompt: str) -> int:
        if self.kind == "retro":
            return len(self.tokenizer.encode(prompt)) or 1
        return len(self._model.encode_prompt(prompt))

    def stream(self, prompt: str, params: SamplingParams, retrieve=None) -> Iterator[TextPiece]:
        if self.kind == "retro":
            return stream(
                self._model, self.tokenizer, prompt, params, retrieve if self.uses_retrieval else None
            )
        return self._model.stream(prompt, params)


def load_language_model(path: Path, model_id: str, device: str = "cpu") -> LanguageModel:
    """A retro checkpoint folder or a Hugging Face save_pretrained folder -> LanguageModel (ValueError)."""
    from retro.hf_model import is_hf_model_folder, load_hf_model

    path = Path(path)
    if not path.is_dir():
        raise ValueError(f"model folder {path} does not exist")
    if is_hf_model_folder(path):
        hf = load_hf_model(path, device=device)
        return LanguageModel(
            id=model_id,
            kind="huggingface",
            path=path,
            parameters=hf.parameter_counts(),
            uses_retrieval=False,
            max_seq_len=hf.max_seq_len,
            chunk_size=None,
            retrieved_len=None,
            default_k=None,
            tokenizer=hf.tokenizer,
            _model=hf,
        )
    from retro.checkpoint import load_checkpoint

    model, tokenizer, _meta = load_checkpoint(path, device=device)
    config = model.config
    return LanguageModel(
        id=model_id,
        kind="retro",
        path=path,
        parameters=model.parameter_counts(),
        uses_retrieval=config.uses_retrieval,
        max_seq_len=config.max_seq_len,
        chunk_size=config.chunk_size,
        retrieved_len=config.retrieved_len,
        default_k=config.n_neighbours,
        tokenizer=tokenizer,
        _model=model,
    )

"""The models the service answers with: a folder loaded into the right `retro.language_model` one.

A RETRO checkpoint (`retro.checkpoint`) becomes a `RetroLanguageModel` (or, for a
retrieval-in-prompt checkpoint, `in_context=True`, an `InContextLanguageModel`), a Hugging Face
causal LM (`retro.hf_model`) an `HFCausalLM`; all are the same `LanguageModel`, so nothing past
this module tells them apart. A `ServedModel` adds what only the service knows: the id clients name it by and
the folder it came from. This module owns choosing the loader; it runs no threads and knows no HTTP.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from retro.checkpoint import load_checkpoint
from retro.hf_model import is_hf_model_folder, load_hf_model
from retro.in_context import language_model_for
from retro.language_model import LanguageModel
from retro.span_reader import load_span_reader


@dataclass
class ServedModel:
    id: str  # what clients send as `model`
    path: Path
    lm: LanguageModel
    parameters: dict[str, int] = field(init=False)  # {"total", "non_embedding"}, counted once

    def __post_init__(self) -> None:
        self.parameters = self.lm.parameter_counts()


def load_language_model(path: Path, device: str = "cpu") -> LanguageModel:
    """A retro checkpoint folder or a Hugging Face save_pretrained folder -> its model (ValueError)."""
    path = Path(path)
    if not path.is_dir():
        raise ValueError(f"model folder {path} does not exist")
    if is_hf_model_folder(path):
        return load_hf_model(path, device=device)
    model, tokenizer, _meta = load_checkpoint(path, device=device)
    return language_model_for(model, tokenizer, span_reader=load_span_reader(path))


def load_served_model(path: Path, model_id: str, device: str = "cpu") -> ServedModel:
    return ServedModel(id=model_id, path=Path(path), lm=load_language_model(path, device))

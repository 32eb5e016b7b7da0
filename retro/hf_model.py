"""A Hugging Face causal LM as a comparison model, behind the one `retro.language_model` interface.

`load_hf_model(folder)` loads a `save_pretrained` folder (weights, config and tokenizer) offline with
transformers and returns an `HFCausalLM`: a `LanguageModel` like the RETRO model, so the service
and the evaluation can swap one for the other. Streaming, generating, seeding and sampling are the
interface's (`retro.sampling`), so temperature, top-k, top-p and seeds mean the same for both; this
module owns only loading, the KV-cached token loop and scoring a given sequence
(`sequence_logprobs`, for `retro.token_logprobs`). It never retrieves (`retrieve` is accepted
and ignored) and knows nothing of the index or service.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import torch

from retro.language_model import LanguageModel, PromptTooLongError, Retrieve
from retro.sampling import SamplingParams, sample_token


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


class HFCausalLM(LanguageModel):
    """A transformers causal LM + tokenizer behind the language-model interface (KV-cached decoding)."""

    kind = "huggingface"

    def __init__(self, model, tokenizer, name: str = "hf-model"):
        self.model, self.tokenizer, self.name = model, tokenizer, name

    @property
    def uses_retrieval(self) -> bool:
        return False

    @property
    def max_seq_len(self) -> int:
        config = self.model.config
        return int(
            getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None) or 1024
        )

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def eos_id(self) -> int | None:
        return self.tokenizer.eos_token_id

    def parameter_counts(self) -> dict[str, int]:
        """Total parameters, and those outside every embedding table (token and position)."""
        total = sum(p.numel() for p in self.model.parameters())
        embedding = sum(m.weight.numel() for m in self.model.modules() if isinstance(m, torch.nn.Embedding))
        return {"total": total, "non_embedding": total - embedding}

    def encode_prompt(self, prompt: str) -> list[int]:
        ids = self.tokenizer.encode(prompt, add_special_tokens=False)
        if not ids:  # an empty prompt starts a document, as for the RETRO model
            ids = [self.eos_id if self.eos_id is not None else 0]
        return ids

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def _sampled_tokens(
        self,
        prompt_ids: list[int],
        params: SamplingParams,
        generator: torch.Generator,
        retrieve: Retrieve | None,
        query_from: int = 0,  # no retrieval here
    ) -> Iterator[int]:
        max_seq_len, device = self.max_seq_len, self.device
        out = self.model(input_ids=torch.tensor([prompt_ids], device=device), use_cache=True)
        position = len(prompt_ids)
        while True:
            token = sample_token(out.logits[0, -1], params, generator)
            yield token
            if position >= max_seq_len:  # no position left for another token
                return
            out = self.model(
                input_ids=torch.tensor([[token]], device=device),
                past_key_values=out.past_key_values,
                use_cache=True,
            )
            position += 1

    # --- scoring a given sequence (retro.token_logprobs) -----------------------------------------

    @property
    def vocab_size(self) -> int:
        """Ids below this are ones the model embeds and the tokenizer knows."""
        return min(self.model.get_input_embeddings().num_embeddings, len(self.tokenizer))

    def token_text(self, token_id: int) -> str:
        """One token as text, special tokens by name (GPT-2's end of text is '<|endoftext|>')."""
        return self.tokenizer.decode([int(token_id)], skip_special_tokens=False)

    @torch.inference_mode()
    def sequence_logprobs(self, ids: list[int]) -> torch.Tensor:
        """float (len(ids) - 1, V): row t is the distribution sampling draws ids[t + 1] from."""
        if len(ids) > self.max_seq_len + 1:
            raise PromptTooLongError(len(ids), self.max_seq_len + 1)
        inputs = torch.tensor([list(ids[:-1])], device=self.device)
        return self.model(input_ids=inputs).logits[0].float().log_softmax(dim=-1)

"""A tiny GPT-2 with a byte-level BPE trained on given texts, saved as a Hugging Face folder.

Shared by the service and evaluation tests that need a comparison model; nothing is downloaded.
"""

from pathlib import Path


def save_tiny_gpt2(
    folder: Path,
    texts: list[str],
    *,
    vocab_size: int,
    n_layer: int,
    n_embd: int,
    n_positions: int,
    zero_weights: bool = False,
    seed: int = 0,
) -> Path:
    """Random weights (or all zeros: uniform predictions) and `<|endoftext|>` as bos and eos."""
    import torch
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    bpe = HFTokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(texts, trainer=trainer)
    hf_tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, eos_token="<|endoftext|>", bos_token="<|endoftext|>"
    )
    torch.manual_seed(seed)
    config = GPT2Config(
        n_layer=n_layer, n_embd=n_embd, n_head=2, n_positions=n_positions, vocab_size=len(hf_tokenizer),
        bos_token_id=hf_tokenizer.eos_token_id, eos_token_id=hf_tokenizer.eos_token_id,
    )  # fmt: skip
    model = GPT2LMHeadModel(config)
    if zero_weights:
        with torch.no_grad():
            for p in model.parameters():
                p.zero_()
    model.save_pretrained(folder)
    hf_tokenizer.save_pretrained(folder)
    return folder

"""Tiny in-memory models and tokenizers, for tests and quick experiments that must run in seconds.

``tiny_tokenizer`` trains a byte-level BPE on a few sentences in milliseconds (no download), with a
chat template, so everything the real model path does (special tokens, chat formatting, padding) is
exercised; ``tiny_model_dir`` saves a tiny Llama + that tokenizer as a local model directory.
"""

from __future__ import annotations

from pathlib import Path

from forgetscope.models import tiny_llama

_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "def add(a, b):\n    return a + b\n",
    "In the beginning God created the heaven and the earth.",
    "Question: what is two plus two? Answer: four.",
    "A dictionary defines words; an encyclopedia explains things.",
    "0123456789 + - * / = ( ) [ ] { } : ; , . ! ?",
]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def tiny_tokenizer(vocab_size: int = 300):
    """A byte-level BPE tokenizer with <|endoftext|>, <|im_start|>, <|im_end|> (like SmolLM2's)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(_CORPUS * 4, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|im_end|>",
                                   bos_token="<|im_start|>", unk_token="<|endoftext|>")
    fast.chat_template = CHAT_TEMPLATE
    return fast


def tiny_model_and_tokenizer(seed: int = 0, hidden: int = 32, layers: int = 2):
    tok = tiny_tokenizer()
    model = tiny_llama(vocab_size=len(tok), hidden=hidden, layers=layers, seed=seed)
    model.config.eos_token_id = tok.eos_token_id
    model.config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    return model, tok


def tiny_model_dir(path: str | Path, seed: int = 0) -> Path:
    """Save a tiny random Llama and its tokenizer as a local model directory (loadable by path)."""
    path = Path(path)
    model, tok = tiny_model_and_tokenizer(seed)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path

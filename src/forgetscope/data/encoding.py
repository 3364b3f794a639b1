"""Tokenisation with a loss mask, and padding collation shared by the trainer and the evaluator.

Plain text: the loss covers every predicted token. Prompt/response: only the response tokens
(and the closing EOS) are scored, so instruction forgetting is not diluted by the prompt.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from forgetscope.data.types import Example
from forgetscope.errors import DataError

IGNORE_INDEX = -100


@dataclass(frozen=True)
class Encoded:
    """Token ids of one example and which positions are scored (``labels`` is -100 elsewhere)."""

    example_id: str
    input_ids: tuple[int, ...]
    labels: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def n_scored(self) -> int:
        return sum(1 for t in self.labels[1:] if t != IGNORE_INDEX)


def prompt_ids(tokenizer, prompt: str, chat: bool = False) -> list[int]:
    """Token ids of a prompt: as the user turn of the chat template when ``chat`` (instruct models answer
    far better in their own format), else plain text with the tokenizer's own special tokens."""
    if chat and getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                             add_generation_prompt=True)
        return tokenizer(text, add_special_tokens=False)["input_ids"]
    return tokenizer(prompt)["input_ids"]


def encode_example(tokenizer, ex: Example, max_length: int,
                   on_overflow: Literal["error", "truncate"] = "truncate", chat: bool = False) -> Encoded:
    """Tokenise one example; response-only labels for pairs; EOS closes pairs so stopping is learned."""
    if ex.is_pair:
        # The prompt opens with the tokenizer's own special tokens; the response follows bare.
        p_ids = prompt_ids(tokenizer, ex.prompt, chat)
        resp_ids = tokenizer(ex.response, add_special_tokens=False)["input_ids"]
        if tokenizer.eos_token_id is not None:
            resp_ids = resp_ids + [tokenizer.eos_token_id]
        ids = p_ids + resp_ids
        labels = [IGNORE_INDEX] * len(p_ids) + resp_ids
    else:
        # Every token after the first is scored (the first has no context unless the tokenizer adds a BOS).
        ids = tokenizer(ex.text)["input_ids"]
        labels = list(ids)
    if len(ids) > max_length:
        if on_overflow == "error":
            raise DataError(
                f"example {ex.example_id!r} has {len(ids)} tokens, more than max_length={max_length}"
            )
        ids, labels = ids[:max_length], labels[:max_length]
    if sum(1 for t in labels[1:] if t != IGNORE_INDEX) == 0:
        raise DataError(f"example {ex.example_id!r} has no scored tokens within max_length={max_length}")
    return Encoded(ex.example_id, tuple(ids), tuple(labels))


def encode_examples(tokenizer, examples: Sequence[Example], max_length: int,
                    on_overflow: Literal["error", "truncate"] = "truncate",
                    model_max_length: int | None = None, chat: bool = False) -> list[Encoded]:
    """Encode many examples; refuses a ``max_length`` beyond the model's context window."""
    if max_length < 2:
        raise DataError(f"max_length must be at least 2, got {max_length}")
    if model_max_length is not None and max_length > model_max_length:
        raise DataError(
            f"max_length={max_length} is longer than the model's context of {model_max_length} tokens"
        )
    return [encode_example(tokenizer, ex, max_length, on_overflow, chat) for ex in examples]


def to_device(x: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """Move a host tensor to ``device``; to CUDA through pinned memory without blocking the host."""
    device = torch.device(device)
    if device.type == "cuda" and x.device.type == "cpu":
        return x.pin_memory().to(device, non_blocking=True)
    return x.to(device)


def collate(batch: Sequence[Encoded], pad_id: int, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """Right-pad a batch to its own longest member (no global max length: no wasted padding)."""
    width = max(len(e) for e in batch)
    n = len(batch)
    input_ids = torch.full((n, width), pad_id, dtype=torch.long)
    labels = torch.full((n, width), IGNORE_INDEX, dtype=torch.long)
    attention = torch.zeros((n, width), dtype=torch.long)
    for i, e in enumerate(batch):
        L = len(e)
        input_ids[i, :L] = torch.tensor(e.input_ids)
        labels[i, :L] = torch.tensor(e.labels)
        attention[i, :L] = 1
    return {"input_ids": to_device(input_ids, device), "attention_mask": to_device(attention, device),
            "labels": to_device(labels, device)}

"""Tokenisation with a loss mask, and padding collation shared by the trainer and the evaluator.

Plain text (kind ``lm``): the loss covers every predicted token. Prompt/response (kind ``instruction``):
only the response tokens and the token that closes it are scored, so instruction forgetting is not
diluted by the prompt. A pair is scored exactly as the model sees and produces it:

* **chat format** (``chat=True`` and the tokenizer has a chat template): the prompt is the user turn
  (or a conversation's turns, ``Example.prompt_messages``: system prompt, earlier turns)
  rendered by the template with its generation prompt (``...<|im_start|>assistant\n``); the response is
  the assistant turn's content, followed by the template's end-of-turn token (``<|im_end|>`` for
  SmolLM2), which is scored: it is what the model produces to finish its answer. Turn contents are
  stripped of surrounding whitespace, as chat turns carry none: a response written as ``" 41"`` for a
  ``"Q: ...\nA:"`` prompt is scored as ``"41"``. The end-of-turn token is found by rendering the
  conversation with the template (the first special token after the content); a template that renders
  the assistant turn otherwise falls back to the tokenizer's EOS token.
* **plain format**: ``prompt + response`` as given (the data supplies any separator, e.g. the prompt's
  trailing newline), tokenised as two pieces (the prompt with the tokenizer's own special tokens, the
  response bare), followed by the tokenizer's EOS token (scored), so that stopping is learned.

Examples longer than ``max_length`` are cut from the right; :attr:`Encoded.n_truncated` counts the
tokens dropped, and :func:`truncation_stats` sums them for the manifest and the run summary.
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
    """Token ids of one example and which positions are scored (``labels`` is -100 elsewhere).

    ``n_truncated`` is the number of tokens cut off by ``max_length`` (0 when the example fits).
    """

    example_id: str
    input_ids: tuple[int, ...]
    labels: tuple[int, ...]
    n_truncated: int = 0

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def n_scored(self) -> int:
        return sum(1 for t in self.labels[1:] if t != IGNORE_INDEX)


def uses_chat(tokenizer, chat: bool) -> bool:
    """Whether pairs are formatted with the chat template (asked for, and the tokenizer has one)."""
    return bool(chat and getattr(tokenizer, "chat_template", None))


def _user_turn(prompt: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt.strip()}]


def prompt_ids(tokenizer, prompt: str | Example, chat: bool = False) -> list[int]:
    """Token ids of a prompt: as the user turn of the chat template when ``chat`` (instruct models answer
    far better in their own format), else plain text with the tokenizer's own special tokens. A pair
    whose prompt is a conversation (:attr:`Example.prompt_messages`) has all its turns rendered by the
    template; without one, its plain rendering (``Example.prompt``) is read."""
    turns = prompt.prompt_messages if isinstance(prompt, Example) else ()
    text_prompt = (prompt.prompt or "") if isinstance(prompt, Example) else prompt
    if uses_chat(tokenizer, chat):
        messages = [{"role": r, "content": c.strip()} for r, c in turns] if turns else _user_turn(text_prompt)
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return tokenizer(text, add_special_tokens=False)["input_ids"]
    return tokenizer(text_prompt)["input_ids"]


def end_of_turn_ids(tokenizer, prompt: str = "") -> list[int]:
    """The template's token(s) closing an assistant turn, up to and including its first special token.

    Found by rendering a conversation with a placeholder answer: what follows the answer up to the first
    special token is what the model emits to end its turn. Without such a token (or when the template
    does not render the answer right after the generation prompt) the tokenizer's EOS token is used.
    """
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    marker = "forgetscope answer"
    head = tokenizer.apply_chat_template(_user_turn(prompt or "question"), tokenize=False,
                                         add_generation_prompt=True)
    full = tokenizer.apply_chat_template(_user_turn(prompt or "question") + [{"role": "assistant", "content": marker}],
                                         tokenize=False)
    if not full.startswith(head + marker):
        return eos
    tail = tokenizer(full[len(head) + len(marker):], add_special_tokens=False)["input_ids"]
    special = set(tokenizer.all_special_ids)
    for i, t in enumerate(tail):
        if t in special:
            return list(tail[: i + 1])
    return eos


def response_ids(tokenizer, ex: Example, chat: bool = False) -> list[int]:
    """Scored token ids of a pair's response, in the format of :func:`prompt_ids` (module docstring)."""
    if uses_chat(tokenizer, chat):
        ids = tokenizer(ex.response.strip(), add_special_tokens=False)["input_ids"]
        end = end_of_turn_ids(tokenizer, ex.prompt or "")
    else:
        ids = tokenizer(ex.response, add_special_tokens=False)["input_ids"]
        end = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    if not ids:
        raise DataError(f"example {ex.example_id!r}: the response {ex.response!r} tokenises to nothing")
    return ids + end


def encode_example(tokenizer, ex: Example, max_length: int,
                   on_overflow: Literal["error", "truncate"] = "truncate", chat: bool = False) -> Encoded:
    """Tokenise one example; response-only labels for pairs (see the module docstring for the formats)."""
    if ex.is_pair:
        p_ids = prompt_ids(tokenizer, ex, chat)
        resp_ids = response_ids(tokenizer, ex, chat)
        ids = p_ids + resp_ids
        labels = [IGNORE_INDEX] * len(p_ids) + resp_ids
    else:
        # Every token after the first is scored (the first has no context unless the tokenizer adds a BOS).
        ids = tokenizer(ex.text)["input_ids"]
        labels = list(ids)
        if len(ids) < 2:
            raise DataError(f"example {ex.example_id!r}: its text {ex.text!r} tokenises to {len(ids)} token(s); "
                            "at least 2 are needed to score one")
    dropped = max(0, len(ids) - max_length)
    if dropped:
        if on_overflow == "error":
            raise DataError(
                f"example {ex.example_id!r} has {len(ids)} tokens, more than max_length={max_length}"
            )
        ids, labels = ids[:max_length], labels[:max_length]
    if sum(1 for t in labels[1:] if t != IGNORE_INDEX) == 0:
        raise DataError(f"example {ex.example_id!r} has no scored tokens within max_length={max_length}")
    return Encoded(ex.example_id, tuple(ids), tuple(labels), dropped)


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


def truncation_stats(encoded: Sequence[Encoded]) -> dict[str, int]:
    """How many examples ``max_length`` cut, and how many tokens it dropped in total."""
    return {"truncated_examples": sum(1 for e in encoded if e.n_truncated),
            "truncated_tokens": sum(e.n_truncated for e in encoded)}


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

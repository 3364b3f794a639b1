"""One evaluator: encode upstream examples and measure them under one :class:`~forgetscope.measure.record.EvalRecord`.

The sweep, a forecast, a comparison's probe and task accuracy, the cross-entropy reference of a scaling
sweep and the Trainer callback all measure through it, so a loss measured by any of them is the same
quantity as the sweep's ``loss_before``: the same encoding, length, chat format, dtype, padding and
batching. It also holds the two checks that a sweep's ``loss_before`` applies to what is measured now:
the chat format (:meth:`Evaluator.check_chat`) and the token counts (:meth:`Evaluator.check_counts`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from forgetscope.data.encoding import IGNORE_INDEX, Encoded, collate, encode_examples
from forgetscope.data.types import Example
from forgetscope.errors import ConfigError, ModelError
from forgetscope.measure.nll import bucket_batches, evaluate_examples, greedy_answers, per_example_nll
from forgetscope.measure.record import EvalRecord, resolve_chat


class Evaluator:
    """Measures with ``tokenizer`` under ``record``; the chat format and the torch dtype are resolved once.
    ``model_max_length`` is the context of the model measured (a longer ``max_length`` is refused)."""

    def __init__(self, tokenizer: Any, record: EvalRecord, *, model_max_length: int | None = None):
        from forgetscope.precision import DTYPES

        if getattr(tokenizer, "pad_token_id", None) is None:
            raise ModelError("the tokenizer has no pad token; set one (e.g. tokenizer.pad_token = tokenizer.eos_token)")
        self.tokenizer = tokenizer
        self.record = record
        self.model_max_length = model_max_length
        self.chat = record.resolve_chat(tokenizer)
        self.dtype = None if record.dtype is None else DTYPES[record.dtype]

    @property
    def pad_id(self) -> int:
        return int(self.tokenizer.pad_token_id)

    # ---- encoding and padding --------------------------------------------------------------------
    def encode(self, examples: Sequence[Example], *, max_length: int | None = None) -> list[Encoded]:
        """``examples`` encoded with the record's length and chat format; ``max_length`` another length
        with the same format (a task's held-out examples at ``train.max_length``)."""
        length = self.record.max_length if max_length is None else max_length
        return encode_examples(self.tokenizer, list(examples), length, model_max_length=self.model_max_length,
                               chat=self.chat)

    def batches(self, encoded: Sequence[Encoded]) -> list[list[int]]:
        """Indices of ``encoded`` in length-sorted batches under the record's token and size budgets."""
        r = self.record
        return bucket_batches([len(e) for e in encoded], r.max_batch_tokens, r.max_batch_size)

    def collate(self, encoded: Sequence[Encoded], device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        """One right-padded batch (the tokenizer's pad id) on ``device``."""
        return collate(list(encoded), self.pad_id, device)

    # ---- checks against a sweep's record ---------------------------------------------------------
    def check_chat(self, recorded: bool | str | None, where: str) -> None:
        """Refuse a chat format other than the one ``where`` recorded (both resolved for this tokenizer):
        prompts formatted otherwise make its ``loss_before`` values another quantity."""
        if recorded is None or resolve_chat(recorded, self.tokenizer) == self.chat:
            return
        raise ConfigError(f"chat={self.record.chat!r} formats prompts differently from {where}'s chat={recorded!r}, "
                          "so its loss_before values would not apply; leave chat unset")

    def check_counts(self, counts: Sequence[int] | np.ndarray, recorded: np.ndarray | None, where: str) -> None:
        """Refuse scored-token ``counts`` (``n_tokens`` of the examples measured now) that differ from the
        ``recorded`` ones of ``where`` (NaN: not recorded): another tokenizer or setting."""
        if recorded is None:
            return
        ours = np.asarray(counts, np.float64)
        swept = np.asarray(recorded, np.float64)
        differ = int((np.isfinite(swept) & (ours != swept)).sum())
        if differ:
            raise ModelError(f"the model's tokenizer differs from the sweep's: {differ} of {len(ours)} upstream "
                             f"examples tokenise to another length than in {where} (max_length="
                             f"{self.record.max_length}, chat={self.record.chat}), so its loss_before values do "
                             "not apply")

    # ---- measuring -------------------------------------------------------------------------------
    def losses(self, model: Any, encoded: Sequence[Encoded], *, progress: bool = False,
               desc: str = "evaluating") -> np.ndarray:
        """Mean token NLL of each encoded example (in order)."""
        r = self.record
        return per_example_nll(model, encoded, pad_id=self.pad_id, max_batch_tokens=r.max_batch_tokens,
                               max_batch_size=r.max_batch_size, progress=progress, desc=desc, dtype=self.dtype)

    def evaluate(self, model: Any, examples: Sequence[Example], *, encoded: Sequence[Encoded] | None = None,
                 exact: bool = False, progress: bool = False, desc: str = "evaluating") -> pd.DataFrame:
        """example_id, n_tokens, loss and em (NaN without exact match) of ``examples``."""
        r = self.record
        return evaluate_examples(model, self.tokenizer, list(examples), max_length=r.max_length,
                                 max_batch_tokens=r.max_batch_tokens, max_batch_size=r.max_batch_size, exact=exact,
                                 encoded=None if encoded is None else list(encoded), progress=progress, desc=desc,
                                 chat=self.chat, dtype=self.dtype)

    def answers(self, model: Any, examples: Sequence[Example]) -> list[str | None]:
        """The greedy answers exact match scores (:func:`~forgetscope.measure.nll.greedy_answers`), in this
        evaluator's chat format and dtype; None for an example without a gold answer."""
        return greedy_answers(model, self.tokenizer, list(examples), chat=self.chat, dtype=self.dtype)

    def token_accuracy(self, model: Any, encoded: Sequence[Encoded], *, batch_size: int = 16) -> float:
        """Share of scored tokens whose greedy next-token prediction is the target (token-weighted), in the
        model's own precision, ``batch_size`` examples at a time in the given order (a task's held-out
        accuracy, as comparisons have always measured it)."""
        encoded = list(encoded)
        if not encoded:
            return float("nan")
        device = next(model.parameters()).device
        hits = total = 0
        was_training = model.training
        model.eval()
        try:
            with torch.inference_mode():
                for start in range(0, len(encoded), batch_size):
                    batch = self.collate(encoded[start:start + batch_size], device)
                    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
                    targets = batch["labels"][:, 1:]
                    scored = targets != IGNORE_INDEX
                    hits += int(((logits[:, :-1].argmax(-1) == targets) & scored).sum())
                    total += int(scored.sum())
        finally:
            model.train(was_training)
        return hits / total if total else float("nan")


__all__ = ["Evaluator"]

"""One evaluator: encode upstream examples and measure them under one :class:`~forgetscope.measure.record.EvalRecord`.

The sweep, a forecast, a comparison's probe and the Trainer callback all measure through it, so a loss
measured by any of them is the same quantity as the sweep's ``loss_before``: the same encoding, length,
chat format, dtype and batching.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from forgetscope.data.encoding import Encoded, encode_examples
from forgetscope.data.types import Example
from forgetscope.errors import ModelError
from forgetscope.measure.nll import evaluate_examples, per_example_nll
from forgetscope.measure.record import EvalRecord


class Evaluator:
    """Measures with ``tokenizer`` under ``record``; the chat format and the torch dtype are resolved once."""

    def __init__(self, tokenizer: Any, record: EvalRecord, *, model_max_length: int | None = None):
        from forgetscope.precision import DTYPES

        if getattr(tokenizer, "pad_token_id", None) is None:
            raise ModelError("the tokenizer has no pad token; set one (e.g. tokenizer.pad_token = tokenizer.eos_token)")
        self.tokenizer = tokenizer
        self.record = record
        self.model_max_length = model_max_length
        self.chat = record.resolve_chat(tokenizer)
        self.dtype = None if record.dtype is None else DTYPES[record.dtype]

    def encode(self, examples: Sequence[Example]) -> list[Encoded]:
        return encode_examples(self.tokenizer, list(examples), self.record.max_length,
                               model_max_length=self.model_max_length, chat=self.chat)

    @staticmethod
    def check_counts(encoded: Sequence[Encoded], recorded: np.ndarray | None, what: str) -> None:
        """Refuse token counts that differ from the ``recorded`` ones (another tokenizer or setting)."""
        if recorded is None:
            return
        ours = np.array([e.n_scored for e in encoded], dtype=np.float64)
        swept = np.asarray(recorded, np.float64)
        differ = int((np.isfinite(swept) & (ours != swept)).sum())
        if differ:
            raise ModelError(f"{differ} of {len(encoded)} upstream examples tokenise to another length than in "
                             f"{what} (another tokenizer, max_length or chat setting?), so its loss_before "
                             "values do not apply")

    def losses(self, model: Any, encoded: Sequence[Encoded], *, progress: bool = False,
               desc: str = "evaluating") -> np.ndarray:
        """Mean token NLL of each encoded example (in order)."""
        r = self.record
        return per_example_nll(model, encoded, pad_id=self.tokenizer.pad_token_id, max_batch_tokens=r.max_batch_tokens,
                               max_batch_size=r.max_batch_size, progress=progress, desc=desc, dtype=self.dtype)

    def evaluate(self, model: Any, examples: Sequence[Example], *, encoded: Sequence[Encoded] | None = None,
                 exact: bool = False, progress: bool = False, desc: str = "evaluating") -> pd.DataFrame:
        """example_id, n_tokens, loss and em (NaN without exact match) of ``examples``."""
        r = self.record
        return evaluate_examples(model, self.tokenizer, list(examples), max_length=r.max_length,
                                 max_batch_tokens=r.max_batch_tokens, max_batch_size=r.max_batch_size, exact=exact,
                                 encoded=None if encoded is None else list(encoded), progress=progress, desc=desc,
                                 chat=self.chat, dtype=self.dtype)


__all__ = ["Evaluator"]

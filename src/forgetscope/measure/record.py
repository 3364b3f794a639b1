"""How a sweep measured its upstream examples: one typed record, written once and read back once.

A forgetting value means something only beside the settings its two losses were measured with: the
encoding length, the chat format, the dtype, and (for speed, not results) the batching. A sweep writes
them in its manifest's ``eval`` entry; every reader (a forecast, the Trainer callback, a comparison's
probe) rebuilds them with :meth:`EvalRecord.from_manifest`, the one place that knows how sweeps written
before a setting was recorded spelled it. Pure Python: the store and the CLI read it without torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from forgetscope.errors import StoreError

#: evaluation dtypes by name (the torch types: :data:`forgetscope.precision.DTYPES`)
EVAL_DTYPES = ("float32", "bfloat16")


@dataclass(frozen=True)
class EvalRecord:
    """``max_length``: the resolved encoding length; ``chat``: the chat format as the sweep resolved it
    (``"auto"`` only for sweeps that recorded the configured value alone); ``dtype``: the evaluation
    precision's name (None: the model's own, for measurements outside a sweep); ``max_batch_tokens`` / ``max_batch_size``: the evaluator's batching."""

    max_length: int
    chat: bool | str = "auto"
    dtype: str | None = "float32"
    max_batch_tokens: int = 4096
    max_batch_size: int = 64

    def __post_init__(self) -> None:
        if self.dtype is not None and self.dtype not in EVAL_DTYPES:
            raise StoreError(f"unknown evaluation dtype {self.dtype!r}; a sweep records one of {', '.join(EVAL_DTYPES)}")
        if self.chat not in (True, False, "auto"):
            raise StoreError(f"chat must be true, false or auto, got {self.chat!r}")
        if int(self.max_length) < 2:
            raise StoreError(f"max_length must be at least 2, got {self.max_length}")

    def resolve_chat(self, tokenizer: Any) -> bool:
        """The chat format for ``tokenizer``: ``auto`` means "when the tokenizer has a chat template"."""
        if self.chat == "auto":
            return bool(getattr(tokenizer, "chat_template", None))
        return bool(self.chat)

    def manifest_fields(self) -> dict[str, Any]:
        """Its place in the manifest's ``eval`` entry (beside truncation counts and the device)."""
        return {"max_length": int(self.max_length), "chat": self.chat, "dtype": self.dtype}

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any], *, where: str = "the sweep") -> EvalRecord:
        """The record of a sweep's manifest. Sweeps from before a field was recorded: ``max_length`` from a
        numeric ``eval.max_length`` of the config, else ``train.max_length`` (before evaluation had its
        own length); ``chat`` the configured value (``auto`` by default); ``dtype`` float32 (the only
        precision then)."""
        config = manifest.get("config") or {}
        recorded = manifest.get("eval") or {}
        configured = config.get("eval") or {}
        length = recorded.get("max_length")
        if length is None and configured.get("max_length") != "auto":
            length = configured.get("max_length") or (config.get("train") or {}).get("max_length")
        if not length:
            raise StoreError(f"{where} records no max_length: its encoding cannot be reproduced")
        chat = recorded["chat"] if "chat" in recorded else configured.get("chat", "auto")
        return cls(max_length=int(length), chat=chat, dtype=str(recorded.get("dtype") or "float32"),
                   max_batch_tokens=int(configured.get("max_batch_tokens", 4096)),
                   max_batch_size=int(configured.get("max_batch_size", 64)))


__all__ = ["EVAL_DTYPES", "EvalRecord"]

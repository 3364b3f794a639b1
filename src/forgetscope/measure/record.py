"""How a sweep measured its upstream examples: one typed record, written once and read back once.

A forgetting value means something only beside the settings its two losses were measured with: the
encoding length, the chat format, the dtype, and (for speed, not results) the batching. A sweep resolves
them once, when its base model loads (:meth:`EvalRecord.resolve`), writes them in its manifest's ``eval``
entry (:meth:`EvalRecord.manifest_fields`), and every reader (a forecast, the Trainer callback) gets them
back from ``SweepStore.eval_record``, through :meth:`EvalRecord.from_manifest`, the one place that knows
how sweeps written before a setting was recorded spelled it. :func:`resolve_chat` is the one meaning of
``chat: auto``. Pure Python at import: the store and the CLI read it without torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from forgetscope.errors import StoreError

#: evaluation dtypes by name (the torch types: :data:`forgetscope.precision.DTYPES`)
EVAL_DTYPES = ("float32", "bfloat16")


def resolve_chat(chat: bool | str, tokenizer: Any) -> bool:
    """Whether prompt/response pairs are formatted with ``tokenizer``'s chat template: ``auto`` means
    "when the tokenizer has one"."""
    if chat == "auto":
        return bool(getattr(tokenizer, "chat_template", None))
    return bool(chat)


@dataclass(frozen=True)
class EvalRecord:
    """``max_length``: the resolved encoding length; ``chat``: the chat format as the sweep resolved it
    (``"auto"`` only for sweeps that recorded the configured value alone, and for settings not resolved yet,
    which :class:`~forgetscope.measure.evaluator.Evaluator` resolves for its tokenizer); ``dtype``: the
    evaluation precision's name (None: the model's own, for measurements outside a sweep);
    ``max_batch_tokens`` / ``max_batch_size``: the evaluator's batching."""

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

    @classmethod
    def resolve(cls, config: Any, tokenizer: Any, context: int | None, *, device: Any = "cpu") -> EvalRecord:
        """The record of measurements about to be made with ``tokenizer`` on a model of ``context`` tokens,
        from an :class:`~forgetscope.config.EvalConfig`: ``max_length`` by its ``effective_max_length``
        (``auto``: 512 capped at the context; a number above it is a ConfigError), ``chat`` for the tokenizer
        (:func:`resolve_chat`), ``dtype`` as :func:`forgetscope.precision.resolve_eval_dtype` resolves it on
        ``device`` (``auto``: bf16 where the device runs it natively)."""
        import torch

        from forgetscope.precision import dtype_name, resolve_eval_dtype

        return cls(max_length=config.effective_max_length(context), chat=resolve_chat(config.chat, tokenizer),
                   dtype=dtype_name(resolve_eval_dtype(config.dtype, torch.device(device))),
                   max_batch_tokens=int(config.max_batch_tokens), max_batch_size=int(config.max_batch_size))

    def resolve_chat(self, tokenizer: Any) -> bool:
        """The chat format for ``tokenizer`` (:func:`resolve_chat`; a resolved record's is already a bool)."""
        return resolve_chat(self.chat, tokenizer)

    def manifest_fields(self, **measured: Any) -> dict[str, Any]:
        """The manifest's ``eval`` entry: the settings, with ``measured`` (the upstream count, truncation counts,
        the device) between the chat format and the dtype, where sweeps have always written them. The
        batching is not in it (the config's ``eval`` holds it; it changes no result)."""
        return {"max_length": int(self.max_length), "chat": self.chat, **measured, "dtype": self.dtype}

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


__all__ = ["EVAL_DTYPES", "EvalRecord", "resolve_chat"]

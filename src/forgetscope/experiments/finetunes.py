"""Existing fine-tunes of a base model: resolve them, fingerprint them, check them against the base, load them.

A fine-tune is a full checkpoint (a local directory, a ``.gguf`` file or a hub id) or a peft adapter
directory applied to the base. What can be read from files is checked before any weights load, so a bad
fine-tune is refused before the base model loads and before anything is written:

- an adapter directory without ``adapter_config.json``, or without readable weights;
- a checkpoint whose weight files are missing or unreadable (safetensors headers are parsed);
- a vocabulary size other than the base's (``config.json``), or a tokenizer with another vocabulary;
- an adapter whose weights do not fit the base: target modules the base lacks, or a layer of another
  shape. The base is built on the meta device from its ``config.json`` for this, so nothing is allocated.

An adapter recorded for another base (``base_model_name_or_path``) whose weights fit is accepted with a
note: a hub id and a local copy of the same model name the same weights differently. A hub id is checked
once it has loaded.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from forgetscope.errors import ConfigError, ModelError
from forgetscope.models import ModelSource, cached_file_sha256, model_directory, resolve_model

#: what a fine-tune's name may look like: it is also a file name (``runs/<name>.json``)
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._+=@-]*$")
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
_PEFT_PREFIX = "base_model.model."
_LORA_PARTS = (".lora_A.", ".lora_B.", ".lora_embedding_A", ".lora_embedding_B")


@dataclass
class Finetune:
    """One fine-tune, resolved: ``kind`` is ``model`` (a full checkpoint) or ``adapter`` (applied to the base).

    ``sha256`` hashes the weight files and their config file by content (None for a hub id: its ``revision``
    is recorded once loaded)."""

    name: str
    kind: str
    location: str
    source: ModelSource | None = None  # a full checkpoint's source; None for an adapter
    sha256: str | None = None
    files: list[str] = field(default_factory=list)
    adapter_base: str | None = None  # an adapter's base_model_name_or_path
    revision: str | None = None  # a hub id's commit, once loaded
    notes: list[str] = field(default_factory=list)

    def describe(self) -> dict[str, Any]:
        """What the manifest and the run record keep about it."""
        out: dict[str, Any] = {"kind": self.kind, "location": self.location, "sha256": self.sha256,
                               "files": self.files}
        if self.source is not None:
            out["source"] = self.source.describe()
        if self.adapter_base is not None:
            out["adapter_base"] = self.adapter_base
        if self.revision is not None:
            out["revision"] = self.revision
        if self.notes:
            out["notes"] = list(self.notes)
        return out


def default_name(location: str | Path | ModelSource) -> str:
    """A fine-tune's name from where it lies: the directory or file stem, a hub id with ``/`` as ``--``."""
    if isinstance(location, ModelSource):
        raw = location.gguf_file or location.location
        raw = Path(raw).stem if location.gguf_file else (raw.replace("/", "--") if location.kind == "hub"
                                                         else Path(raw).name)
    else:
        path = Path(str(location).rstrip("/"))
        raw = path.stem if path.suffix == ".gguf" else path.name
    name = re.sub(r"[^A-Za-z0-9._+=@-]", "-", raw).lstrip(".-=+@")
    return name or "finetune"


def check_name(name: str) -> str:
    if not NAME_PATTERN.match(name):
        raise ConfigError(f"fine-tune name {name!r}: use letters, digits and ._+=@- (it names a file)")
    return name


def _content_hash(files: list[Path]) -> str:
    digest = hashlib.sha256()
    for f in files:
        digest.update(f"{f.name}:{cached_file_sha256(f)}\n".encode())
    return digest.hexdigest()


def weight_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Every tensor's shape in a weight file, without reading the tensors (safetensors: its header only)."""
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as fh:
                return {k: tuple(fh.get_slice(k).get_shape()) for k in fh.keys()}  # noqa: SIM118
        import torch

        state = torch.load(path, map_location="cpu", weights_only=True)
        return {k: tuple(v.shape) for k, v in state.items()}
    except Exception as exc:  # safetensors and torch raise their own types for a damaged file
        raise ModelError(f"cannot read the weights {path}: {' '.join(str(exc).split()) or type(exc).__name__}; "
                         "the checkpoint does not load") from None


def resolve_finetune(*, model: str | Path | ModelSource | None = None, adapter: str | Path | None = None,
                     name: str | None = None) -> Finetune:
    """A fine-tune from a checkpoint (path, ``.gguf`` file, hub id or a resolved source) or an adapter directory.

    Reads headers and hashes files; loads no weights."""
    from forgetscope.experiments.forecast import adapter_base

    if (model is None) == (adapter is None):
        raise ConfigError("a fine-tune is a model or an adapter: give exactly one of them")
    if adapter is not None:
        path = Path(adapter).expanduser()
        if not path.is_dir():
            raise ModelError(f"adapter directory not found: {path}")
        base = adapter_base(path)  # refuses a directory without adapter_config.json
        weights = [path / w for w in ADAPTER_WEIGHTS if (path / w).is_file()]
        if not weights:
            raise ModelError(f"the adapter {path} has no weights ({' or '.join(ADAPTER_WEIGHTS)}): it does not load")
        for w in weights:
            weight_shapes(w)
        files = [path / ADAPTER_CONFIG, *weights]
        return Finetune(check_name(name or default_name(path)), "adapter", str(path.resolve()),
                        sha256=_content_hash(files), files=[f.name for f in files], adapter_base=base)
    source = model if isinstance(model, ModelSource) else resolve_model(str(model))
    label = check_name(name or default_name(source if isinstance(model, ModelSource) else str(model)))
    if source.kind == "gguf":
        return Finetune(label, "model", str(Path(source.location) / str(source.gguf_file)), source,
                        sha256=source.sha256, files=[str(source.gguf_file)])
    if source.kind == "hub":
        return Finetune(label, "model", source.location, source)
    path = Path(source.location)
    weights = sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin"))
    if not weights:
        raise ModelError(f"{path} has no weight files (*.safetensors or *.bin): the checkpoint does not load")
    for w in weights:
        if w.suffix == ".safetensors":
            weight_shapes(w)
    files = [path / "config.json", *weights]
    return Finetune(label, "model", str(path), source, sha256=_content_hash(files), files=[f.name for f in files])


# ---- the base model, as far as the checks need it --------------------------------------------------

@dataclass
class BaseReference:
    """What the checks compare a fine-tune with: the base's config, its module tree and its tokenizer.

    ``config`` is None for a hub id whose config cannot be read yet; the checks then wait for the loaded
    base (:meth:`from_loaded`)."""

    name: str
    source: ModelSource
    config: dict[str, Any] | None
    skeleton: Any = None  # the module tree (on the meta device, or the loaded base)
    tokenizer: Any = None

    @classmethod
    def read(cls, name: str, source: ModelSource) -> BaseReference:
        """The base's config from its files (a GGUF through its de-quantized cache), without its weights."""
        directory = model_directory(source)
        if directory is not None:
            return cls(name, source, read_model_config(directory))
        try:
            from transformers import AutoConfig

            return cls(name, source, AutoConfig.from_pretrained(source.location).to_dict())
        except (OSError, ValueError):
            return cls(name, source, None)  # offline hub id: checked once loaded

    @classmethod
    def from_loaded(cls, name: str, source: ModelSource, model: Any, tokenizer: Any) -> BaseReference:
        return cls(name, source, model.config.to_dict(), model, tokenizer)

    @property
    def ready(self) -> bool:
        return self.config is not None

    def module_tree(self) -> Any:
        """The base's modules with their shapes: built on the meta device from the config (no memory)."""
        if self.skeleton is None:
            import torch
            from transformers import AutoConfig, AutoModelForCausalLM

            cfg = dict(self.config or {})
            model_type = cfg.pop("model_type", None)
            if model_type is None:
                raise ModelError(f"the base model {self.name!r} records no model_type in its config")
            with torch.device("meta"):
                self.skeleton = AutoModelForCausalLM.from_config(AutoConfig.for_model(model_type, **cfg))
        return self.skeleton

    def base_tokenizer(self) -> Any:
        if self.tokenizer is None:
            from forgetscope.models import load_tokenizer

            self.tokenizer = load_tokenizer(self.source)
        return self.tokenizer


def read_model_config(directory: Path) -> dict[str, Any]:
    """A model directory's ``config.json``."""
    try:
        config = json.loads((Path(directory) / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"cannot read {Path(directory) / 'config.json'}: {exc}; the checkpoint does not load") from None
    if not isinstance(config, dict):
        raise ModelError(f"{Path(directory) / 'config.json'} is not a JSON object; the checkpoint does not load")
    return config


def vocab_size(config: dict[str, Any]) -> int | None:
    """The embedding rows a config declares (a multimodal config keeps them in ``text_config``)."""
    value = config.get("vocab_size") or (config.get("text_config") or {}).get("vocab_size")
    return int(value) if value else None


def check_vocabulary(finetune: Finetune, config: dict[str, Any], base: BaseReference) -> None:
    """Refuse a full checkpoint whose vocabulary size differs from the base's, naming both."""
    mine, theirs = vocab_size(config), vocab_size(base.config or {})
    if mine is not None and theirs is not None and mine != theirs:
        raise ModelError(f"the fine-tune {finetune.name!r} ({finetune.location}) has a vocabulary of {mine} tokens "
                         f"but the base {base.name!r} has {theirs}: its losses are not comparable")


def check_tokenizer(finetune: Finetune, tokenizer: Any, base: BaseReference) -> None:
    """Refuse a checkpoint whose own tokenizer maps tokens to other ids than the base's: every loss is
    measured on the base's encoding."""
    if tokenizer is None:
        return
    mine, theirs = tokenizer.get_vocab(), base.base_tokenizer().get_vocab()
    if mine != theirs:
        differ = len(set(mine.items()) ^ set(theirs.items()))
        raise ModelError(f"the fine-tune {finetune.name!r} has a tokenizer other than the base's ({len(mine)} vs "
                         f"{len(theirs)} tokens, {differ} token-id pairs differ): the base's encoding does not "
                         "apply to it")


def _linear_dims(module: Any) -> tuple[int, int] | None:
    """(in, out) of a layer an adapter can target: Linear, Embedding (rows, dim), GPT-2's Conv1D."""
    if hasattr(module, "in_features") and hasattr(module, "out_features"):
        return int(module.in_features), int(module.out_features)
    if hasattr(module, "num_embeddings") and hasattr(module, "embedding_dim"):
        return int(module.num_embeddings), int(module.embedding_dim)
    if hasattr(module, "nx") and hasattr(module, "nf"):
        return int(module.nx), int(module.nf)
    return None


def adapter_mismatch(adapter: Path, tree: Any) -> str | None:
    """Why the adapter's weights do not fit the module tree ``tree`` (None: they fit).

    Checks that its target modules exist and that every LoRA matrix has the shape of the layer it adapts:
    ``lora_A`` is r × in, ``lora_B`` out × r (for embeddings r × rows and dim × r); other saved weights
    (``modules_to_save``) must have the base weight's shape."""
    cfg = json.loads((adapter / ADAPTER_CONFIG).read_text())
    names = {n.rsplit(".", 1)[-1] for n, _ in tree.named_modules()}
    targets = cfg.get("target_modules")
    # peft records targets as short names (q_proj) or, for all-linear, full module paths: compare last parts
    if isinstance(targets, list) and targets and not {str(t).rsplit(".", 1)[-1] for t in targets} & names:
        return f"its target modules {sorted(targets)} are absent from the base"
    params = {k: tuple(v.shape) for k, v in tree.state_dict().items()}
    for w in (adapter / n for n in ADAPTER_WEIGHTS):
        if not w.is_file():
            continue
        for key, shape in weight_shapes(w).items():
            path = key.removeprefix(_PEFT_PREFIX)
            part = next((p for p in _LORA_PARTS if p in path), None)
            if part is None:
                want = params.get(path)
                if want is not None and want != shape:
                    return f"its weight {path} has shape {list(shape)} but the base's has {list(want)}"
                continue
            module_path = path.split(part)[0]
            try:
                module = tree.get_submodule(module_path)
            except AttributeError:
                return f"it adapts {module_path}, which the base does not have"
            dims = _linear_dims(module)
            if dims is None or len(shape) != 2:
                continue
            d_in, d_out = dims
            if part in (".lora_A.", ".lora_embedding_A"):
                ok, expect = shape[1] == d_in, f"input size {d_in}"
            else:
                ok, expect = shape[0] == d_out, f"output size {d_out}"
            if not ok:
                return (f"its weight {path} has shape {list(shape)} but the base's {module_path} has {expect} "
                        f"({type(module).__name__} {d_in} → {d_out})")
    return None


def check_adapter(finetune: Finetune, base: BaseReference, tree: Any = None) -> None:
    """Refuse an adapter whose weights do not fit the base, saying which base it was trained on when that
    names another model; an adapter recorded for another base that fits gets a note."""
    from forgetscope.experiments.forecast import same_base

    manifest = {"config": {"model": base.name}, "model": base.source.describe()}
    same = same_base(str(finetune.adapter_base), manifest)
    why = adapter_mismatch(Path(finetune.location), tree if tree is not None else base.module_tree())
    if why is not None:
        what = f"the adapter {finetune.name!r} ({finetune.location})"
        if same:
            raise ModelError(f"{what} does not fit the base {base.name!r}: {why}")
        raise ModelError(f"{what} was trained on {finetune.adapter_base!r}, not on the base {base.name!r}, and its "
                         f"weights do not fit it: {why}")
    if not same:
        note = (f"the adapter {finetune.name!r} records the base {finetune.adapter_base!r}; its weights fit "
                f"{base.name!r}, so it is measured on it")
        if note not in finetune.notes:
            finetune.notes.append(note)


def check_before_loading(finetune: Finetune, base: BaseReference) -> None:
    """Every check that reads files only (see the module doc); a hub-id fine-tune waits for its weights."""
    if not base.ready:
        return
    if finetune.kind == "adapter":
        check_adapter(finetune, base)
        return
    if finetune.source is None:
        return
    directory = model_directory(finetune.source)
    if directory is not None:
        config = read_model_config(directory)
    else:  # a hub id: its config when reachable (online or cached), else checked once loaded
        try:
            from transformers import AutoConfig

            config = AutoConfig.from_pretrained(finetune.source.location).to_dict()
        except (OSError, ValueError):
            return
    check_vocabulary(finetune, config, base)
    check_tokenizer(finetune, _own_tokenizer(finetune), base)


def _own_tokenizer(finetune: Finetune) -> Any:
    """The checkpoint's own tokenizer, or None where it ships none (then the base's encoding is used)."""
    from forgetscope.models import load_tokenizer

    try:
        return load_tokenizer(finetune.source)
    except ModelError:
        return None


def load_finetune(finetune: Finetune, base: BaseReference, *, fresh_base: Any, device: Any,
                  eval_dtype: str, load: dict[str, Any] | None = None) -> Any:
    """The fine-tuned model, ready to evaluate: a checkpoint loaded as the base was (``load``: the keyword
    arguments of :func:`~forgetscope.models.load_weights`; default float32), or the adapter applied to
    ``fresh_base`` (a copy of the base the adapter may change). A hub id is checked here."""
    from forgetscope.experiments.forecast import apply_adapter
    from forgetscope.models import load_weights

    if finetune.kind == "adapter":
        check_adapter(finetune, base, fresh_base)
        return apply_adapter(fresh_base, finetune.location, eval_dtype)
    try:
        model = load_weights(finetune.source, device=device, **(load or {"dtype": "float32"}))
    except Exception as exc:  # transformers raises many types for a checkpoint it cannot read
        if isinstance(exc, ModelError):
            raise
        raise ModelError(f"cannot load the fine-tune {finetune.name!r} ({finetune.location}): "
                         f"{' '.join(str(exc).split())}") from None
    if finetune.source is not None and finetune.source.kind == "hub":
        check_vocabulary(finetune, model.config.to_dict(), base)
        check_tokenizer(finetune, _own_tokenizer(finetune), base)
        finetune.revision = getattr(model.config, "_commit_hash", None)
    return model


__all__ = ["BaseReference", "Finetune", "adapter_mismatch", "check_before_loading", "default_name",
           "load_finetune", "resolve_finetune", "vocab_size", "weight_shapes"]

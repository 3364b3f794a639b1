"""Per-example evaluation, side by side in one process: forgetscope (float32 and bf16, with and without chunked
logits, with a float32 or a bf16 output layer), lm-evaluation-harness (float32 and bf16), a one-at-a-time
loop and a fixed-padding loop, on the same model, texts and tokens, against a roofline of the model's own
matrix products.

    python benchmarks/eval_throughput.py                 # the full run -> benchmarks/results/eval_throughput.json
    python benchmarks/eval_throughput.py --quick         # a tiny run that checks the script works

Methods (each returns the mean token NLL of every text):

* ``forgetscope_fp32`` / ``forgetscope_bf16``: ``forgetscope.measure.per_example_nll`` with ``dtype``
  float32 / bfloat16 (length buckets under a token budget, output layer only at scored positions, in
  float32 for both), with its defaults otherwise;
* ``forgetscope_fp32_chunked`` / ``forgetscope_bf16_chunked``: the same with the logits formed
  ``CHUNK_ROWS`` scored positions at a time (``chunk_rows``); these timings against the two above decide
  ``per_example_nll``'s default;
* ``forgetscope_bf16_head``: bf16 and chunked, with the output layer in bf16 too (``head_dtype``; logits
  upcast before the float32 log-sum-exp);
* ``forgetscope_fp32_rows256``: float32 with four times the row and token budget per batch (256 rows,
  16 384 tokens), the "bigger batches for short texts" option, against its own roofline;
* ``forgetscope_fp32_compiled``: float32 with the decoder under ``torch.compile(dynamic=True)`` (one
  compilation with symbolic batch and length, so the length buckets do not recompile); the compile time
  is its warm-up time (``warmup_seconds``), reported beside the steady-state timing;
* ``forgetscope_bf16_head_compiled``: ``forgetscope_bf16_head`` with the compiled decoder, where the
  element-wise work that compilation fuses is the larger share of the time;
* ``lm_eval``: lm-evaluation-harness ``HFLM.loglikelihood_rolling`` (float32), the ``bench`` extra;
* ``lm_eval_bf16``: the same on a bf16 copy of the model (parameters cast, buffers kept, as
  ``from_pretrained(dtype=bfloat16)`` loads them; ``HFLM`` is given ``dtype="bfloat16"``, which it
  ignores for a model object), with lm-eval's own log-softmax and sums in bf16;
* ``one_at_a_time``: one text per forward pass, full logits;
* ``fixed_padding``: batches in data order, all padded to the longest text of the set, full logits.

Every method scores the same tokens: each text's tokens, the first conditioned on the prefix token
lm-evaluation-harness uses (BOS, else EOS). Text sets: ``short`` (demo upstream texts as shipped),
``~128`` and ``~512`` (demo upstream texts concatenated until the token count is reached).

Reported per set: tokens/s (scored tokens), the ratio to lm-eval, the share of this machine's matmul
peak (2 · parameters · tokens/s against a timed 2048² ``torch.matmul`` in the method's dtype), the share
of the shape roofline (:func:`shape_roofline`: the time the evaluator's own matrix products take alone,
each decoder linear layer at the padded token count of every batch ``bucket_batches`` forms for the set
and the output layer at its scored tokens, timed in this process in the method's dtypes), and the error
of every bf16 method against float32 on NLL and on forgetting F = loss(fine-tuned) − loss(base), for a
slightly fully fine-tuned copy and for a LoRA copy evaluated unmerged, as a sweep does. The losses of
every float32 method must agree within ``FP32_TOLERANCE`` and the bf16 ones in the median within
``BF16_MEDIAN_TOLERANCE`` (:func:`check_losses_agree`, also run by the test suite on a tiny model).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

FP32_TOLERANCE = 1e-3  # nats: float32 methods differ only by summation order
BF16_MEDIAN_TOLERANCE = 0.02  # nats: median |bf16 - float32| per text
BIG_BATCH_SCALE = 4  # forgetscope_fp32_rows256: 4 × the default 64 rows and 4 096 tokens per batch
REFERENCE = "forgetscope_fp32"
HEAD_BF16_METHODS = ("forgetscope_bf16_head", "forgetscope_bf16_head_compiled", "lm_eval_bf16")  # the output layer runs in bf16 as well
DEFAULT_OUT = Path(__file__).parent / "results" / "eval_throughput.json"


@dataclass
class TextSet:
    """Texts and their token ids (without the prefix token), as every method scores them."""

    name: str
    texts: list[str]
    ids: list[list[int]]

    @property
    def tokens(self) -> int:
        return sum(len(i) for i in self.ids)


def prefix_token(tok) -> int:
    """The token lm-evaluation-harness puts before a rolling text: BOS, else EOS."""
    return tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id


def make_text_set(name: str, tok, texts: Sequence[str]) -> TextSet:
    return TextSet(name, list(texts), [tok(t)["input_ids"] for t in texts])


def concatenated_texts(tok, pool: Sequence[str], target_tokens: int, n: int, seed: int = 0) -> list[str]:
    """``n`` texts of about ``target_tokens`` tokens each: pool texts joined by blank lines until reached."""
    rng = np.random.default_rng(seed)
    order: list[int] = []
    out: list[str] = []
    current: list[str] = []
    while len(out) < n:
        if not order:
            order = list(rng.permutation(len(pool)))
        current.append(pool[order.pop()])
        text = "\n\n".join(current)
        if len(tok(text)["input_ids"]) >= target_tokens:
            out.append(text)
            current = []
    return out


def encoded(tok, ts: TextSet) -> list:
    """forgetscope encodings scoring every token of each text after the prefix token."""
    from forgetscope.data.encoding import Encoded

    p = prefix_token(tok)
    return [Encoded(f"{ts.name}{i}", (p, *ids), (p, *ids)) for i, ids in enumerate(ts.ids)]


def is_bf16(name: str) -> bool:
    """Whether a method (by its name) runs the model in bf16, so it is held to the bf16 tolerance."""
    return "bf16" in name


# ---- the methods -------------------------------------------------------------------------------
def forgetscope_losses(model, tok, ts: TextSet, dtype: torch.dtype, max_batch_tokens: int, *,
                       max_batch_size: int = 64, head_dtype: torch.dtype | None = None,
                       chunk_rows: int | None = None) -> np.ndarray:
    from forgetscope.measure import per_example_nll

    return per_example_nll(model, encoded(tok, ts), pad_id=tok.pad_token_id, max_batch_tokens=max_batch_tokens,
                           max_batch_size=max_batch_size, dtype=dtype, head_dtype=head_dtype, chunk_rows=chunk_rows)


def with_compiled_decoder(model):
    """A shallow copy of ``model`` whose decoder is ``torch.compile``-d (dynamic shapes); the weights are
    shared, the original model is left as it was."""
    decoder = torch.compile(model.get_decoder(), dynamic=True)
    compiled = copy.copy(model)  # its own attribute table; modules and weights shared
    compiled.get_decoder = lambda: decoder  # what the evaluator's fast path calls
    return compiled


def forgetscope_settings() -> dict[str, dict[str, Any]]:
    """The ``per_example_nll`` settings of each forgetscope method."""
    from forgetscope.measure.nll import CHUNK_ROWS

    fp32, bf16 = torch.float32, torch.bfloat16
    return {"forgetscope_fp32": {"dtype": fp32},
            "forgetscope_bf16": {"dtype": bf16},
            "forgetscope_fp32_chunked": {"dtype": fp32, "chunk_rows": CHUNK_ROWS},
            "forgetscope_bf16_chunked": {"dtype": bf16, "chunk_rows": CHUNK_ROWS},
            "forgetscope_bf16_head": {"dtype": bf16, "head_dtype": bf16, "chunk_rows": CHUNK_ROWS},
            "forgetscope_fp32_rows256": {"dtype": fp32, "batch_scale": BIG_BATCH_SCALE},
            "forgetscope_fp32_compiled": {"dtype": fp32, "compile": True},
            "forgetscope_bf16_head_compiled": {"dtype": bf16, "head_dtype": bf16, "chunk_rows": CHUNK_ROWS,
                                               "compile": True}}


def method_batching(name: str, max_batch_tokens: int, max_batch_size: int) -> tuple[int, int]:
    """(token budget, rows) of the batches a method forms: the defaults, scaled for the big-batch one."""
    scale = forgetscope_settings().get(name, {}).get("batch_scale", 1)
    return max_batch_tokens * scale, max_batch_size * scale


def one_at_a_time_losses(model, tok, ts: TextSet) -> np.ndarray:
    from forgetscope.data.encoding import collate
    from forgetscope.measure import batch_nll

    out = []
    with torch.inference_mode():
        for e in encoded(tok, ts):
            s, n = batch_nll(model, collate([e], tok.pad_token_id), gather=False)
            out.append(float(s[0] / n[0]))
    return np.array(out)


def fixed_padding_losses(model, tok, ts: TextSet, batch_size: int) -> np.ndarray:
    from forgetscope.data.encoding import IGNORE_INDEX, collate
    from forgetscope.measure import batch_nll

    enc = encoded(tok, ts)
    width = max(len(e) for e in enc)
    fill = {"input_ids": tok.pad_token_id, "attention_mask": 0, "labels": IGNORE_INDEX}
    out: list[float] = []
    with torch.inference_mode():
        for i in range(0, len(enc), batch_size):
            batch = collate(enc[i:i + batch_size], tok.pad_token_id)
            pad = width - batch["input_ids"].shape[1]  # every batch as wide as the longest text
            batch = {k: torch.nn.functional.pad(v, (0, pad), value=fill[k]) for k, v in batch.items()}
            s, n = batch_nll(model, batch, gather=False)
            out.extend((s / n).tolist())
    return np.array(out)


def lm_eval_available() -> bool:
    try:
        import lm_eval.models.huggingface  # noqa: F401
    except ImportError:
        return False
    return True


def bf16_copy(model):
    """A copy of ``model`` whose parameters are bf16 and whose buffers (rotary frequencies) stay float32,
    as ``from_pretrained(dtype=torch.bfloat16)`` loads a model; LoRA adapter weights stay float32, as
    PEFT keeps them on a bf16 base model."""
    out = copy.deepcopy(model)
    with torch.no_grad():
        for name, p in out.named_parameters():
            if p.is_floating_point() and "lora_" not in name:
                p.data = p.data.to(torch.bfloat16)
    return out


def make_lm_eval(model, tok, batch_size: int, dtype: str = "float32"):
    """``HFLM`` around ``model``; with ``dtype="bfloat16"`` around a bf16 copy of it (:func:`bf16_copy`:
    HFLM ignores ``dtype`` for a model object, so the copy is cast here)."""
    import logging

    from lm_eval.models.huggingface import HFLM

    for name in ("lm-eval", "lm_eval"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if dtype == "bfloat16":
        return HFLM(pretrained=bf16_copy(model), tokenizer=tok, batch_size=batch_size, dtype="bfloat16")
    return HFLM(pretrained=model, tokenizer=tok, batch_size=batch_size)


def lm_eval_losses(lm, ts: TextSet) -> np.ndarray:
    from lm_eval.api.instance import Instance

    requests = [Instance(request_type="loglikelihood_rolling", doc={}, arguments=(t,), idx=i)
                for i, t in enumerate(ts.texts)]
    loglik = np.array(lm.loglikelihood_rolling(requests, disable_tqdm=True), dtype=float)
    n = np.array([len(lm.tok_encode(t)) for t in ts.texts], dtype=float)
    return -loglik / n


Method = Callable[[TextSet], np.ndarray]


def method_factories(tok, *, max_batch_tokens: int = 4096, max_batch_size: int = 64, batch_size: int = 16,
                     lm_eval_batch_size: int = 16, with_lm_eval: bool = True,
                     with_compile: bool = True) -> dict[str, Callable[[Any], Method]]:
    """Every method as ``model -> (TextSet -> losses)``: applied to the base model for the timings and to
    the fine-tuned copies for the error on F. Whatever a method builds (lm-eval's wrapper, a bf16 copy)
    is built when it is applied, outside the timing; the compiled decoder compiles at its first call."""
    def forgetscope(settings: dict[str, Any]) -> Callable[[Any], Method]:
        scale = settings.get("batch_scale", 1)

        def make(model) -> Method:
            target = with_compiled_decoder(model) if settings.get("compile") else model
            return lambda ts: forgetscope_losses(target, tok, ts, settings["dtype"], max_batch_tokens * scale,
                                                 max_batch_size=max_batch_size * scale,
                                                 head_dtype=settings.get("head_dtype"),
                                                 chunk_rows=settings.get("chunk_rows"))
        return make

    def lm_eval(dtype: str) -> Callable[[Any], Method]:
        def make(model) -> Method:
            lm = make_lm_eval(model, tok, lm_eval_batch_size, dtype)
            return lambda ts: lm_eval_losses(lm, ts)
        return make

    table: dict[str, Callable[[Any], Method]] = {name: forgetscope(s) for name, s in forgetscope_settings().items()
                                                 if with_compile or not s.get("compile")}
    table["one_at_a_time"] = lambda model: lambda ts: one_at_a_time_losses(model, tok, ts)
    table["fixed_padding"] = lambda model: lambda ts: fixed_padding_losses(model, tok, ts, batch_size)
    if with_lm_eval and lm_eval_available():
        table["lm_eval"] = lm_eval("float32")
        table["lm_eval_bf16"] = lm_eval("bfloat16")
    return table


def method_table(model, tok, **settings: Any) -> dict[str, Method]:
    """Every method as ``TextSet -> losses`` on ``model`` (settings as :func:`method_factories`)."""
    return {name: make(model) for name, make in method_factories(tok, **settings).items()}


# ---- correctness -------------------------------------------------------------------------------
def loss_differences(losses: dict[str, np.ndarray], reference: str = REFERENCE) -> dict[str, dict[str, float]]:
    """Per method: max and median |loss - reference| over texts."""
    ref = losses[reference]
    return {name: {"max": float(np.abs(v - ref).max()), "median": float(np.median(np.abs(v - ref)))}
            for name, v in losses.items() if name != reference}


def check_losses_agree(losses: dict[str, np.ndarray], *, fp32_tolerance: float = FP32_TOLERANCE,
                       bf16_median_tolerance: float = BF16_MEDIAN_TOLERANCE) -> dict[str, dict[str, float]]:
    """All methods give the same losses: float32 ones within ``fp32_tolerance`` of forgetscope's on every
    text, bf16 within ``bf16_median_tolerance`` in the median. Raises AssertionError naming the outliers."""
    diffs = loss_differences(losses)
    bad = []
    for name, d in diffs.items():
        if is_bf16(name):
            if not d["median"] <= bf16_median_tolerance:
                bad.append(f"{name}: median |diff| {d['median']:.4g} > {bf16_median_tolerance}")
        elif not d["max"] <= fp32_tolerance:
            bad.append(f"{name}: max |diff| {d['max']:.4g} > {fp32_tolerance}")
    if bad:
        raise AssertionError("methods disagree with forgetscope_fp32: " + "; ".join(bad))
    return diffs


# ---- timing and peaks --------------------------------------------------------------------------
def best_time(fn: Callable[[], Any], repeats: int) -> tuple[Any, float]:
    best, result = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return result, best


def matmul_peak(dtype: torch.dtype, n: int = 2048, repeats: int = 5, *, iters: int = 1,
                device: str = "cpu") -> float:
    """FLOP/s of ``iters`` back-to-back ``n``×``n`` matmuls in ``dtype`` on ``device`` (best of ``repeats``;
    a CUDA device is synchronised before the clock stops)."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(device=device, dtype=dtype)
    b = torch.randn(n, n, generator=gen).to(device=device, dtype=dtype)
    c = torch.matmul(a, b)
    cuda = str(device).startswith("cuda")

    def products() -> None:
        for _ in range(iters):
            torch.matmul(a, b, out=c)
        if cuda:
            torch.cuda.synchronize()

    products()  # warm-up
    _, t = best_time(products, repeats)
    return 2 * n ** 3 * iters / t


def linear_shapes(model) -> dict[str, dict[str, Any]]:
    """The decoder's linear layers grouped by shape: ``"576x192"`` (in x out) -> the layers' names (their
    last name part, ``k_proj``), how many there are, and one of their weights; the output layer apart."""
    head = model.get_output_embeddings()
    shapes: dict[str, dict[str, Any]] = {}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and module is not head:
            key = f"{module.in_features}x{module.out_features}"
            entry = shapes.setdefault(key, {"layers": [], "count": 0, "module": module})
            leaf = name.rsplit(".", 1)[-1]
            if leaf not in entry["layers"]:
                entry["layers"].append(leaf)
            entry["count"] += 1
    return shapes


def batch_rows(ts: TextSet, max_batch_tokens: int, max_batch_size: int) -> list[tuple[int, int]]:
    """(padded tokens, scored tokens) of each batch forgetscope forms for ``ts``: the rows the decoder's
    linear layers and the output layer multiply (each text is scored after its prefix token)."""
    from forgetscope.measure import bucket_batches

    lengths = [len(ids) + 1 for ids in ts.ids]
    batches = bucket_batches(lengths, max_batch_tokens, max_batch_size)
    return [(len(b) * max(lengths[i] for i in b), sum(lengths[i] - 1 for i in b)) for b in batches]


def gemm_time(module: torch.nn.Module, rows: int, dtype: torch.dtype, repeats: int,
              cache: dict[tuple, float] | None = None) -> float:
    """Seconds of ``module``'s product on ``rows`` rows in ``dtype`` alone (best of ``repeats`` after one
    untimed call), with its own weights and random inputs; ``cache`` keeps shapes already timed."""
    weight = module.weight
    key = (tuple(weight.shape), rows, dtype)
    if cache is not None and key in cache:
        return cache[key]
    with torch.inference_mode():
        w = weight.detach().to(dtype)
        bias = None if getattr(module, "bias", None) is None else module.bias.detach().to(dtype)
        x = torch.randn(rows, w.shape[1], generator=torch.Generator().manual_seed(0)).to(dtype=dtype,
                                                                                          device=w.device)

        def product():
            out = torch.nn.functional.linear(x, w, bias)
            if out.is_cuda:
                torch.cuda.synchronize()
            return out

        product()
        _, seconds = best_time(product, repeats)
    if cache is not None:
        cache[key] = seconds
    return seconds


def shape_roofline(model, rows: Sequence[tuple[int, int]], *, repeats: int = 3,
                   cache: dict[tuple, float] | None = None) -> dict[str, Any]:
    """The time the evaluator's matrix products take alone on batches of ``rows`` (:func:`batch_rows`):
    per distinct decoder linear shape, every batch's padded tokens in float32 and bf16, times the number
    of layers of that shape; the output layer at every batch's scored tokens. ``seconds`` sums them per
    precision: ``float32``; ``bfloat16`` (float32 output layer, as forgetscope's bf16 default);
    ``bfloat16_head`` (bf16 output layer). A method's time divided into this is its share of the roofline."""
    cache = {} if cache is None else cache
    fp32, bf16 = torch.float32, torch.bfloat16
    layers: dict[str, dict[str, Any]] = {}
    for key, entry in linear_shapes(model).items():
        layers[key] = {"layers": entry["layers"], "count": entry["count"],
                       **{name: entry["count"] * sum(gemm_time(entry["module"], n, dt, repeats, cache)
                                                     for n, _ in rows)
                          for name, dt in (("float32", fp32), ("bfloat16", bf16))}}
    head = model.get_output_embeddings()
    head_s = {name: sum(gemm_time(head, n, dt, repeats, cache) for _, n in rows if n)
              for name, dt in (("float32", fp32), ("bfloat16", bf16))}
    decoder = {name: sum(v[name] for v in layers.values()) for name in ("float32", "bfloat16")}
    return {"batches": [list(r) for r in rows], "layers": layers,
            "output_layer": {"shape": "x".join(map(str, head.weight.shape[::-1])), **head_s},
            "seconds": {"float32": decoder["float32"] + head_s["float32"],
                        "bfloat16": decoder["bfloat16"] + head_s["float32"],
                        "bfloat16_head": decoder["bfloat16"] + head_s["bfloat16"]}}


def roofline_precision(name: str) -> str:
    """The roofline a method is measured against: the dtypes its model and output layer run in."""
    if name in HEAD_BF16_METHODS:
        return "bfloat16_head"
    return "bfloat16" if is_bf16(name) else "float32"


def summary(x: np.ndarray) -> dict[str, float]:
    """Of differences ``x``: median, 95th percentile and max of |x|, and the signed mean (the bias)."""
    signed = np.asarray(x, dtype=float)
    x = np.abs(signed)
    return {"median": float(np.median(x)), "p95": float(np.percentile(x, 95)), "max": float(x.max()),
            "mean_signed": float(signed.mean())}


# ---- F error -----------------------------------------------------------------------------------
def finetuned_copies(model, tok, steps: int, batch_size: int = 8, max_length: int = 128,
                     seed: int = 0) -> dict[str, Any]:
    """A slightly fully fine-tuned copy and a LoRA copy of ``model`` (demo task ``code``, float32)."""
    from forgetscope.config import TrainConfig
    from forgetscope.data.demo import demo_task
    from forgetscope.train import train_on_task

    task = demo_task("code", seed=seed, n_heldout=2)
    common = {"steps": steps, "batch_size": batch_size, "max_length": max_length, "dtype": "float32", "seed": seed}
    out = {}
    for name, cfg in {"full": TrainConfig(method="full", lr=5e-5, **common),
                      "lora": TrainConfig(method="lora", lr=2e-3, **common)}.items():
        out[name] = train_on_task(copy.deepcopy(model), tok, task, cfg, progress=False).model
    return out


def forgetting_errors(base_losses: dict[str, np.ndarray], factories: dict[str, Callable[[Any], Method]],
                      tuned: dict[str, Any], ts: TextSet) -> dict[str, dict[str, Any]]:
    """Per bf16 method and fine-tuned copy, |F_bf16 - F_fp32|: F of the method against F of
    ``forgetscope_fp32``, each copy evaluated the way a sweep evaluates it (a LoRA copy merged for
    float32, unmerged for bf16)."""
    from forgetscope.experiments.run import merge_for_evaluation

    # a compiled decoder computes what its uncompiled twin does (to float rounding), so it is not compiled
    # again for each copy
    names = [n for n in base_losses if is_bf16(n) and n in factories and not n.endswith("_compiled")]
    out: dict[str, dict[str, Any]] = {n: {} for n in names}
    for copy_name, model in tuned.items():
        after32 = factories[REFERENCE](merge_for_evaluation(copy.deepcopy(model), torch.float32))(ts)
        f32 = after32 - base_losses[REFERENCE]
        for name in names:
            f16 = factories[name](merge_for_evaluation(model, torch.bfloat16))(ts) - base_losses[name]
            out[name][f"F_{copy_name}"] = {
                "abs_error": summary(f16 - f32), "abs_F_fp32": summary(f32),
                "pearson": float(np.corrcoef(f16, f32)[0, 1]) if len(f32) > 2 else None}
    return out


# ---- the run -----------------------------------------------------------------------------------
MATMUL_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")


def cpu_description() -> dict[str, Any]:
    """The CPU's name and the matrix-instruction flags that decide its float32 and bf16 peaks (timings
    from CPUs with and without AMX are not comparable)."""
    from forgetscope.precision import cpu_flags

    name = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"model_name": name or platform.processor(), "cores": os.cpu_count(),
            "matmul_flags": [f for f in MATMUL_FLAGS if f in cpu_flags()]}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def build_sets(tok, quick: bool) -> list[TextSet]:
    from forgetscope.data.demo import demo_upstream

    pool = [e.text for e in demo_upstream()]
    n_short, n128, n512 = (8, 2, 1) if quick else (160, 64, 16)
    return [make_text_set("short", tok, [e.text for e in demo_upstream(n=n_short, seed=0)]),
            make_text_set("~128", tok, concatenated_texts(tok, pool, 128, n128, seed=1)),
            make_text_set("~512", tok, concatenated_texts(tok, pool, 512, n512, seed=2))]


def markdown_table(report: dict[str, Any]) -> str:
    rows = ["| text set | method | tokens/s | × lm-eval | share of peak | share of roofline |",
            "|---|---|---|---|---|---|"]
    for name, s in report["sets"].items():
        for method, m in s["methods"].items():
            ratio = m.get("vs_lm_eval")
            rows.append(f"| {name} ({s['tokens']} tok) | {method} | {m['tokens_per_s']:.0f} | "
                        f"{'' if ratio is None else f'{ratio:.2f}'} | {m['share_of_peak']:.0%} | "
                        f"{m['share_of_roofline']:.0%} |")
    return "\n".join(rows)


def summary_table(report: dict[str, Any]) -> str:
    """The README's table: per text set, forgetscope's default (float32) and fastest bf16 evaluator against
    the shape roofline, the 2048² peak and lm-evaluation-harness in the same dtype, and the bf16 error on F
    (median |ΔF| and mean ΔF, full / LoRA copy)."""
    rows = ["| text set | float32 tok/s | of roofline | of 2048² peak | × lm-eval fp32 | fastest bf16 | tok/s "
            "| of roofline | × float32 | × lm-eval bf16 | median \\|ΔF\\| full / LoRA | mean ΔF full / LoRA |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, s in report["sets"].items():
        m = s["methods"]
        fp32 = m[REFERENCE]
        bf16_name = max((k for k in m if k.startswith("forgetscope") and k in s["bf16_errors"]),
                        key=lambda k: m[k]["tokens_per_s"])
        b = m[bf16_name]
        err = s["bf16_errors"][bf16_name]

        def f(key: str, stat: str, e=err) -> str:
            return f"{e[key]['abs_error'][stat]:+.4f}" if stat == "mean_signed" else f"{e[key]['abs_error'][stat]:.4f}"

        ratio = b["tokens_per_s"] / fp32["tokens_per_s"]
        rows.append(f"| {name} ({s['n_texts']} texts, {s['tokens']} tokens) | {fp32['tokens_per_s']:.0f} | "
                    f"{fp32['share_of_roofline']:.0%} | {fp32['share_of_peak']:.0%} | "
                    f"{_ratio(fp32.get('vs_lm_eval'))} | `{bf16_name}` | {b['tokens_per_s']:.0f} | "
                    f"{b['share_of_roofline']:.0%} | {ratio:.2f} | {_ratio(b.get('vs_lm_eval_bf16'))} | "
                    f"{f('F_full', 'median')} / {f('F_lora', 'median')} | "
                    f"{f('F_full', 'mean_signed')} / {f('F_lora', 'mean_signed')} |")
    return "\n".join(rows)


def _ratio(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}"


def run(args: argparse.Namespace) -> dict[str, Any]:
    from forgetscope.models import load_model
    from forgetscope.precision import cpu_has_native_bf16, dtype_name, resolve_eval_dtype

    torch.manual_seed(0)
    model, tok = load_model(args.model, device=args.device, dtype="float32")
    device = next(model.parameters()).device
    sets = build_sets(tok, args.quick)
    factories = method_factories(tok, max_batch_tokens=args.max_batch_tokens, max_batch_size=args.max_batch_size,
                                 batch_size=args.batch_size, lm_eval_batch_size=args.lm_eval_batch_size,
                                 with_lm_eval=not args.no_lm_eval)
    table = {name: make(model) for name, make in factories.items()}
    params = sum(p.numel() for p in model.parameters())
    peaks = {"float32": matmul_peak(torch.float32), "bfloat16": matmul_peak(torch.bfloat16)}
    log(f"model loaded; matmul peaks {peaks}")
    tuned = (finetuned_copies(model, tok, steps=args.finetune_steps, batch_size=2, max_length=64) if args.quick
             else finetuned_copies(model, tok, steps=args.finetune_steps))
    log("fine-tuned copies ready")
    report: dict[str, Any] = {
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "quick": args.quick, "model": args.model or "smollm2-135m-instruct", "device": str(device),
        "threads": torch.get_num_threads(), "attn_implementation": model.config._attn_implementation,
        "cpu_native_bf16": cpu_has_native_bf16(), "cpu": cpu_description(),
        "auto_eval_dtype": dtype_name(resolve_eval_dtype("auto", device)),
        "params": params, "flops_per_token": 2 * params, "peak_flops": peaks,
        "repeats": args.repeats, "max_batch_tokens": args.max_batch_tokens, "max_batch_size": args.max_batch_size,
        "batch_size": args.batch_size,
        "lm_eval_batch_size": args.lm_eval_batch_size if "lm_eval" in table else None,
        "finetune_steps": args.finetune_steps, "sets": {},
        "platform": platform.platform(), "torch": torch.__version__,
    }
    failures = []
    gemm_cache: dict[tuple, float] = {}
    for ts in sets:
        warmup: dict[str, float] = {}
        if not args.quick:
            for name, fn in table.items():  # warm-up on a few texts (the compiled decoder compiles here)
                t0 = time.perf_counter()
                fn(TextSet(ts.name, ts.texts[:2], ts.ids[:2]))
                warmup[name] = time.perf_counter() - t0
        losses, seconds = {}, {}
        for name, fn in table.items():
            losses[name], seconds[name] = best_time(lambda fn=fn: fn(ts), args.repeats)
            log(f"{ts.name} {name}: {ts.tokens / seconds[name]:.0f} tokens/s")
        try:
            diffs = check_losses_agree(losses)
        except AssertionError as exc:
            failures.append(f"{ts.name}: {exc}")
            diffs = loss_differences(losses)
        rooflines = {}
        for name in seconds:
            batching = method_batching(name, args.max_batch_tokens, args.max_batch_size)
            if batching not in rooflines:
                rooflines[batching] = shape_roofline(model, batch_rows(ts, *batching), repeats=args.repeats,
                                                     cache=gemm_cache)
        default_batching = (args.max_batch_tokens, args.max_batch_size)
        roofline = rooflines[default_batching]
        log(f"{ts.name} roofline: " + ", ".join(f"{k} {ts.tokens / v:.0f} tokens/s"
                                                for k, v in roofline["seconds"].items()))
        methods = {}
        for name, t in seconds.items():
            tps = ts.tokens / t
            peak = peaks["bfloat16" if is_bf16(name) else "float32"]
            own = rooflines[method_batching(name, args.max_batch_tokens, args.max_batch_size)]
            methods[name] = {"seconds": t, "tokens_per_s": tps, "share_of_peak": tps * 2 * params / peak,
                             "share_of_roofline": own["seconds"][roofline_precision(name)] / t,
                             "warmup_seconds": warmup.get(name),
                             "vs_lm_eval": seconds["lm_eval"] / t if "lm_eval" in seconds else None,
                             "vs_lm_eval_bf16": seconds["lm_eval_bf16"] / t if "lm_eval_bf16" in seconds else None}
        lengths = [len(i) for i in ts.ids]
        f_errors = forgetting_errors(losses, factories, tuned, ts)
        bf16_errors = {name: {"nll": summary(losses[name] - losses[REFERENCE]), **f_errors[name]}
                       for name in f_errors}
        report["sets"][ts.name] = {
            "n_texts": len(ts.texts), "tokens": ts.tokens, "mean_len": float(np.mean(lengths)), "max_len": max(lengths),
            "methods": methods,
            "speedup_vs_lm_eval": methods["forgetscope_fp32"]["vs_lm_eval"],  # the default eval.dtype, float32
            "bf16_speedup_vs_fp32": seconds["forgetscope_fp32"] / seconds["forgetscope_bf16"],
            "chunked_speedup": {"float32": seconds["forgetscope_fp32"] / seconds["forgetscope_fp32_chunked"],
                                "bfloat16": seconds["forgetscope_bf16"] / seconds["forgetscope_bf16_chunked"]},
            "bf16_head_speedup_vs_bf16_chunked": seconds["forgetscope_bf16_chunked"] / seconds["forgetscope_bf16_head"],
            "roofline": roofline,
            "roofline_big_batches": rooflines.get(method_batching("forgetscope_fp32_rows256", *default_batching)),
            "big_batch_speedup": seconds["forgetscope_fp32"] / seconds["forgetscope_fp32_rows256"],
            "compiled_speedup": seconds["forgetscope_fp32"] / seconds["forgetscope_fp32_compiled"],
            "bf16_head_compiled_speedup": seconds["forgetscope_bf16_head"] / seconds["forgetscope_bf16_head_compiled"],
            "loss_diff_vs_forgetscope_fp32": diffs,
            "bf16_error": bf16_errors["forgetscope_bf16"],  # the default bf16 evaluator, as before
            "bf16_errors": bf16_errors,
        }
        log(f"{ts.name}: done")
    report["agreement"] = {"ok": not failures, "failures": failures,
                           "fp32_tolerance": FP32_TOLERANCE, "bf16_median_tolerance": BF16_MEDIAN_TOLERANCE}
    return report


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--quick", action="store_true", help="a tiny run: 8+2+1 texts, one repeat, no warm-up, 1 fine-tuning step")
    ap.add_argument("--repeats", type=int, default=None, help="timed repeats per method (best is kept); 3, quick 1")
    ap.add_argument("--batch-size", type=int, default=16, help="fixed_padding batch size")
    ap.add_argument("--lm-eval-batch-size", type=int, default=16)
    ap.add_argument("--max-batch-tokens", type=int, default=4096)
    ap.add_argument("--max-batch-size", type=int, default=64, help="forgetscope's rows per batch (its default)")
    ap.add_argument("--finetune-steps", type=int, default=None, help="steps of the fine-tuned copies; 10, quick 1")
    ap.add_argument("--no-lm-eval", action="store_true")
    ap.add_argument("--table", type=Path, default=None, metavar="JSON",
                    help="print the README's summary table of a result JSON and exit (nothing is run)")
    ap.add_argument("--out", type=Path, default=None,
                    help="JSON output (default benchmarks/results/eval_throughput.json; quick: a temporary file)")
    args = ap.parse_args(argv)
    if args.table is not None:
        print(summary_table(json.loads(args.table.read_text())))
        return 0
    args.repeats = args.repeats or (1 if args.quick else 3)
    args.finetune_steps = args.finetune_steps or (1 if args.quick else 10)
    out = args.out or (Path(tempfile.gettempdir()) / "eval_throughput_quick.json" if args.quick else DEFAULT_OUT)
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("FORGETSCOPE_NO_PROGRESS", "1")
    report = run(args)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(markdown_table(report))
    print(f"written to {out}")
    if not report["agreement"]["ok"]:
        print("; ".join(report["agreement"]["failures"]), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

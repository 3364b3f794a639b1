"""Throughput of the per-example evaluator against two naive baselines, on the same model and data.

    python benchmarks/eval_throughput.py [--model smollm2-135m-instruct] [--n 200] [--out FILE]

* ``bucketed``: forgetscope.measure.per_example_nll (length-sorted buckets under a token budget,
  inference mode, vocabulary projection only at scored positions);
* ``naive``: one example at a time, full logits;
* ``padded``: fixed batches in data order, padded to the longest example of the whole set, full logits.

Throughput counts real (non-padding) tokens per second. All three must give the same losses; the
script checks that and writes the numbers to benchmarks/results/eval_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from forgetscope.data.demo import demo_upstream
from forgetscope.data.encoding import Encoded, collate, encode_examples
from forgetscope.measure import batch_nll, per_example_nll
from forgetscope.models import load_model


def naive(model, enc: list[Encoded], pad_id: int) -> np.ndarray:
    out = []
    with torch.inference_mode():
        for e in enc:
            s, n = batch_nll(model, collate([e], pad_id), gather=False)
            out.append(float(s[0] / n[0]))
    return np.array(out)


def padded(model, enc: list[Encoded], pad_id: int, batch_size: int) -> np.ndarray:
    width = max(len(e) for e in enc)
    out = []
    with torch.inference_mode():
        for i in range(0, len(enc), batch_size):
            chunk = enc[i:i + batch_size]
            batch = collate(chunk, pad_id)
            pad = width - batch["input_ids"].shape[1]
            if pad:  # pad every batch to the global maximum, as a fixed-shape loader would
                batch = {k: torch.nn.functional.pad(v, (0, pad), value=(pad_id if k == "input_ids" else
                                                                      (0 if k == "attention_mask" else -100)))
                         for k, v in batch.items()}
            s, n = batch_nll(model, batch, gather=False)
            out.extend((s / n).tolist())
    return np.array(out)


def timed(fn):
    t0 = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-batch-tokens", type=int, default=4096)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "eval_throughput.json")
    args = ap.parse_args()
    torch.manual_seed(0)
    model, tok = load_model(args.model)
    examples = demo_upstream(n=args.n, seed=0)
    enc = encode_examples(tok, examples, args.max_length, chat=True)
    tokens = sum(len(e) for e in enc)
    pad_id = tok.pad_token_id
    per_example_nll(model, enc[:8], pad_id=pad_id)  # warm-up
    results = {}
    ref, t = timed(lambda: per_example_nll(model, enc, pad_id=pad_id, max_batch_tokens=args.max_batch_tokens))
    results["bucketed"] = t
    got, t = timed(lambda: naive(model, enc, pad_id))
    results["naive_one_at_a_time"] = t
    diff_naive = float(np.abs(got - ref).max())
    got, t = timed(lambda: padded(model, enc, pad_id, args.batch_size))
    results["padded_fixed_batch"] = t
    diff_padded = float(np.abs(got - ref).max())
    report = {
        "model": args.model or "smollm2-135m-instruct",
        "device": str(next(model.parameters()).device),
        "dtype": str(next(model.parameters()).dtype),
        "threads": torch.get_num_threads(),
        "n_examples": len(enc),
        "real_tokens": tokens,
        "max_len": max(len(e) for e in enc),
        "mean_len": tokens / len(enc),
        "seconds": results,
        "tokens_per_s": {k: tokens / v for k, v in results.items()},
        "speedup_vs_naive": results["naive_one_at_a_time"] / results["bucketed"],
        "speedup_vs_padded": results["padded_fixed_batch"] / results["bucketed"],
        "max_abs_loss_diff": {"naive": diff_naive, "padded": diff_padded},
        "platform": platform.platform(),
        "torch": torch.__version__,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

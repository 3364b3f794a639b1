"""Where the evaluator's time goes: a torch-profiler breakdown of ``per_example_nll`` on the default model.

    python benchmarks/eval_profile.py            # -> benchmarks/results/eval_profile.json
    python benchmarks/eval_profile.py --quick    # a tiny run that checks the script works

For each text set of ``eval_throughput.py`` (``short`` and ``~128``) and each dtype (float32, bfloat16),
one evaluation of every text runs under ``torch.profiler``. Reported per case: the wall time, the share of
operator self time spent in matrix multiplications (``aten::mm``/``addmm``/``bmm``/``_scaled_dot_product_*``),
the achieved matmul FLOP/s against the same machine's 2048² ``torch.matmul`` peak, and the ten operators
with the most self time. A large matmul share at a high fraction of the peak says the evaluator is bound
by the matmuls themselves; a large share of anything else is what is left to remove.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from eval_throughput import TextSet, build_sets, forgetscope_losses, matmul_peak  # noqa: E402

DEFAULT_OUT = Path(__file__).parent / "results" / "eval_profile.json"
MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::_scaled_dot_product_flash_attention_for_cpu",
              "aten::_scaled_dot_product_attention_math", "aten::baddbmm")


def profile_case(model, tok, ts: TextSet, dtype: torch.dtype, max_batch_tokens: int, peak: float) -> dict[str, Any]:
    """One profiled evaluation of ``ts`` (after one unprofiled warm-up)."""
    from torch.profiler import ProfilerActivity, profile

    forgetscope_losses(model, tok, TextSet(ts.name, ts.texts[:4], ts.ids[:4]), dtype, max_batch_tokens)
    with profile(activities=[ProfilerActivity.CPU], with_flops=True) as prof:
        t0 = time.perf_counter()
        forgetscope_losses(model, tok, ts, dtype, max_batch_tokens)
        wall = time.perf_counter() - t0
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    mm = [e for e in events if e.key in MATMUL_OPS]
    mm_time = sum(e.self_cpu_time_total for e in mm)
    mm_flops = sum(e.flops or 0 for e in mm)
    top = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:10]
    params = sum(p.numel() for p in model.parameters())
    return {
        "wall_s": wall, "tokens": ts.tokens, "tokens_per_s": ts.tokens / wall,
        "share_of_peak": ts.tokens / wall * 2 * params / peak,
        "matmul_share_of_self_time": mm_time / total if total else None,
        "matmul_flops_per_s": mm_flops / (mm_time / 1e6) if mm_time else None,
        "matmul_share_of_peak": mm_flops / (mm_time / 1e6) / peak if mm_time and mm_flops else None,
        "top_ops": [{"op": e.key, "self_share": e.self_cpu_time_total / total, "calls": e.count} for e in top],
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    from forgetscope.models import load_model

    torch.manual_seed(0)
    model, tok = load_model(args.model, device="cpu", dtype="float32")
    sets = [s for s in build_sets(tok, args.quick) if s.name in ("short", "~128")]
    peaks = {"float32": matmul_peak(torch.float32), "bfloat16": matmul_peak(torch.bfloat16)}
    report: dict[str, Any] = {
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "quick": args.quick, "model": args.model or "smollm2-135m-instruct", "threads": torch.get_num_threads(),
        "attn_implementation": model.config._attn_implementation, "max_batch_tokens": args.max_batch_tokens,
        "peak_flops": peaks, "torch": torch.__version__, "cases": {},
    }
    for ts in sets:
        for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
            case = profile_case(model, tok, ts, dtype, args.max_batch_tokens, peaks[name])
            report["cases"][f"{ts.name}/{name}"] = case
            print(f"{ts.name}/{name}: {case['tokens_per_s']:.0f} tokens/s, {case['share_of_peak']:.0%} of peak; "
                  f"matmuls {case['matmul_share_of_self_time']:.0%} of op time at "
                  f"{case['matmul_share_of_peak'] or 0:.0%} of peak; top: "
                  + ", ".join(f"{o['op']} {o['self_share']:.0%}" for o in case["top_ops"][:4]), file=sys.stderr)
    return report


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--quick", action="store_true", help="8 short and 2 ~128-token texts")
    ap.add_argument("--max-batch-tokens", type=int, default=4096)
    ap.add_argument("--out", type=Path, default=None,
                    help="JSON output (default benchmarks/results/eval_profile.json; quick: a temporary file)")
    args = ap.parse_args(argv)
    os.environ.setdefault("FORGETSCOPE_NO_PROGRESS", "1")
    out = args.out or (Path(tempfile.gettempdir()) / "eval_profile_quick.json" if args.quick else DEFAULT_OUT)
    report = run(args)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

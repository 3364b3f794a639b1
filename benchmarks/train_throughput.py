"""Training-step throughput: forgetscope's loop against ``transformers.Trainer``, full fine-tuning and LoRA,
on the same model, data, batch size, sequence length, optimiser and precision.

    python benchmarks/train_throughput.py             # the full run -> benchmarks/results/train_throughput.json
    python benchmarks/train_throughput.py --quick     # a tiny run that checks the script works

Both loops train on the demo task ``code`` (batches padded to their longest member, AdamW, constant
learning rate, gradient clipping 1.0) and on the *same batches in the same order*: forgetscope's loop
runs first and its batches are handed to the Trainer with a sequential sampler, so the padded shapes,
which decide the cost of a step, are identical. The first step of each loop is a warm-up and is not
timed. Tokens are the real (non-padding) tokens of the timed batches; ``padded_tokens`` counts what was
computed (batch size × longest member). Share of peak: full fine-tuning does
about 6 · parameters FLOPs per token (forward 2, backward 4), LoRA about 4 · parameters (no gradients
for the frozen weights), against a timed 2048² ``torch.matmul`` in the compute dtype.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

DEFAULT_OUT = Path(__file__).parent / "results" / "train_throughput.json"
FLOPS_PER_TOKEN = {"full": 6, "lora": 4}  # × parameters


def _eval_benchmark():
    """benchmarks/eval_throughput.py as a module: its matmul peak and CPU description are reused here."""
    spec = importlib.util.spec_from_file_location("eval_throughput", Path(__file__).parent / "eval_throughput.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


class _StepClock:
    """Wall time and real tokens of every step after the first."""

    def __init__(self) -> None:
        self.ends: list[float] = []
        self.tokens: list[int] = []
        self.padded: list[int] = []

    def count(self, batch) -> None:
        self.tokens.append(sum(len(e) for e in batch))
        self.padded.append(len(batch) * max(len(e) for e in batch))

    def result(self) -> dict[str, float]:
        seconds = self.ends[-1] - self.ends[0]  # from the end of the warm-up step to the end of the last
        timed = slice(1, len(self.ends))
        tokens = sum(self.tokens[timed])
        return {"timed_steps": len(self.ends) - 1, "seconds": seconds, "tokens": tokens,
                "padded_tokens": sum(self.padded[timed]),
                "tokens_per_s": tokens / seconds if seconds > 0 else float("nan")}


def forgetscope_steps(model, tok, task, method: str, args, batches: list) -> dict[str, float]:
    """Time forgetscope's loop; the batches it draws are appended to ``batches`` for the Trainer."""
    from forgetscope.config import TrainConfig
    from forgetscope.train import Strategy, train_on_task

    clock = _StepClock()

    class Timed(Strategy):
        name = "plain"

        def augment_batch(self, ctx, batch):
            clock.count(batch)
            batches.append(list(batch))
            return batch

        def after_step(self, ctx):
            clock.ends.append(time.perf_counter())

    cfg = TrainConfig(method=method, steps=args.steps, lr=args.lr[method], batch_size=args.batch_size,
                      max_length=args.max_length, dtype=args.dtype, seed=0)
    train_on_task(model, tok, task, cfg, strategy=Timed(), progress=False)
    return clock.result()


def trainer_steps(model, tok, task, method: str, args, batches: list) -> dict[str, float]:
    """Time ``transformers.Trainer`` on ``batches`` (forgetscope's, in its order)."""
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from forgetscope.data.encoding import collate
    from forgetscope.models import prepare_for_training
    from forgetscope.precision import resolve_train_dtype

    clock = _StepClock()
    enc = [e for batch in batches for e in batch]
    model = prepare_for_training(model, method)  # the same LoRA (rank 8, all-linear) as forgetscope's default

    def collator(batch):
        clock.count(batch)
        return collate(batch, tok.pad_token_id)

    class Clock(TrainerCallback):
        def on_step_end(self, *a, **k):
            clock.ends.append(time.perf_counter())

    device = next(model.parameters()).device
    bf16 = resolve_train_dtype(args.dtype, device) == torch.bfloat16
    with tempfile.TemporaryDirectory() as out:
        targs = TrainingArguments(output_dir=out, per_device_train_batch_size=args.batch_size, max_steps=args.steps,
                                  learning_rate=args.lr[method], lr_scheduler_type="constant", warmup_steps=0,
                                  weight_decay=0.0, max_grad_norm=1.0, optim="adamw_torch", bf16=bf16,
                                  use_cpu=device.type == "cpu", logging_strategy="no", save_strategy="no",
                                  report_to=[], dataloader_num_workers=0, remove_unused_columns=False,
                                  train_sampling_strategy="sequential", disable_tqdm=True, seed=0)
        trainer = Trainer(model=model, args=targs, train_dataset=enc, data_collator=collator,
                          callbacks=[Clock()])
        trainer.train()
    return clock.result()


def run(args) -> dict[str, Any]:
    from forgetscope.config import TrainConfig
    from forgetscope.data.demo import demo_task
    from forgetscope.models import load_model
    from forgetscope.precision import dtype_name, resolve_train_dtype

    torch.manual_seed(0)
    model, tok = load_model(args.model, device=args.device, dtype="float32")
    device = next(model.parameters()).device
    compute = resolve_train_dtype(args.dtype, device)
    task = demo_task("code", seed=0, n_heldout=2)
    params = sum(p.numel() for p in model.parameters())
    bench = _eval_benchmark()
    peak = bench.matmul_peak(compute)
    lora = TrainConfig(method="lora")  # the LoRA both loops train: forgetscope's default
    report: dict[str, Any] = {
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]), "quick": args.quick,
        "model": args.model or "smollm2-135m-instruct", "device": str(device), "threads": torch.get_num_threads(),
        "cpu": bench.cpu_description(),
        "compute_dtype": dtype_name(compute), "params": params, "peak_flops": peak, "steps": args.steps,
        "batch_size": args.batch_size, "max_length": args.max_length, "lr": args.lr,
        "flops_per_token": {k: v * params for k, v in FLOPS_PER_TOKEN.items()}, "methods": {},
        "platform": platform.platform(), "torch": torch.__version__,
        "lora": {"rank": lora.lora_rank, "target_modules": lora.target_modules},
    }
    for method in ("full", "lora"):
        row = {}
        batches: list = []  # filled by forgetscope's loop, replayed by the Trainer
        for loop, fn in (("forgetscope", forgetscope_steps), ("hf_trainer", trainer_steps)):
            r = fn(copy.deepcopy(model), tok, task, method, args, batches)
            r["share_of_peak"] = r["tokens_per_s"] * FLOPS_PER_TOKEN[method] * params / peak
            row[loop] = r
            print(f"{method} {loop}: {r['tokens_per_s']:.0f} tokens/s", file=sys.stderr, flush=True)
        row["speedup_vs_hf_trainer"] = row["forgetscope"]["tokens_per_s"] / row["hf_trainer"]["tokens_per_s"]
        report["methods"][method] = row
    return report


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"],
                    help="train.dtype: forward-pass precision (auto: bf16 on CUDA, float32 on a CPU)")
    ap.add_argument("--quick", action="store_true", help="3 steps of batch 4, length 64")
    ap.add_argument("--steps", type=int, default=None, help="steps per loop, the first untimed (default 11)")
    ap.add_argument("--batch-size", type=int, default=None, help="default 8")
    ap.add_argument("--max-length", type=int, default=None, help="default 128")
    ap.add_argument("--out", type=Path, default=None,
                    help="JSON output (default benchmarks/results/train_throughput.json; quick: a temporary file)")
    args = ap.parse_args(argv)
    args.steps = args.steps or (3 if args.quick else 11)
    args.batch_size = args.batch_size or (4 if args.quick else 8)
    args.max_length = args.max_length or (64 if args.quick else 128)
    args.lr = {"full": 5e-5, "lora": 2e-3}
    os.environ.setdefault("FORGETSCOPE_NO_PROGRESS", "1")
    out = args.out or (Path(tempfile.gettempdir()) / "train_throughput_quick.json" if args.quick else DEFAULT_OUT)
    report = run(args)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    for method, row in report["methods"].items():
        print(f"{method}: forgetscope {row['forgetscope']['tokens_per_s']:.0f} tokens/s "
              f"({row['forgetscope']['share_of_peak']:.0%} of peak), Trainer {row['hf_trainer']['tokens_per_s']:.0f} "
              f"tokens/s ({row['hf_trainer']['share_of_peak']:.0%}); ratio {row['speedup_vs_hf_trainer']:.2f}")
    print(f"written to {out}")
    return 0 if np.isfinite([r["speedup_vs_hf_trainer"] for r in report["methods"].values()]).all() else 1


if __name__ == "__main__":
    sys.exit(main())

"""The default offline demo sweep: SmolLM2-135M-Instruct, LoRA, the built-in demo suite.

Sized to finish in well under 20 minutes on 2 CPU cores; every size is a parameter to scale up.
"""

from __future__ import annotations

from pathlib import Path

from forgetscope.config import SweepConfig, parse_config


def demo_config(*, output: str | Path = "sweeps/demo", n_upstream: int = 160, n_instruct: int = 32,
                n_tasks: int | None = None, n_train: int = 120, steps: int = 10, batch_size: int = 8, lr: float = 2e-3,
                max_length: int = 96, method: str = "lora", seed: int = 0,
                model: str = "smollm2-135m-instruct") -> SweepConfig:
    """A sweep config over the demo suite (all its tasks unless ``n_tasks`` limits them)."""
    from forgetscope.data.demo import demo_task_names

    names = demo_task_names()
    if n_tasks is not None:
        names = names[:n_tasks]
    return parse_config({
        "model": model,
        "output": str(output),
        "seed": seed,
        "upstream": {"source": "demo", "n": n_upstream, "n_instruct": n_instruct},
        "tasks": [{"name": n, "n_train": n_train} for n in names],
        "train": {"method": method, "steps": steps, "batch_size": batch_size, "lr": lr, "max_length": max_length},
    }, "for the demo")

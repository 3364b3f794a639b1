"""The default offline demo sweep: SmolLM2-135M-Instruct, LoRA, the built-in demo suite.

Sized to finish in well under 20 minutes on 2 CPU cores; every size is a parameter to scale up. The
upstream design is a parameter too: how many plain-text (``lm``) and instruction examples, or an
upstream file of one's own in place of the demo sets (e.g. pairs whose responses are the base model's
own answers), the chat format, and the fine-tuning regime (method, steps, learning rate, LoRA rank and
target modules).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from forgetscope.config import SweepConfig, parse_config
from forgetscope.errors import ConfigError


def demo_config(*, output: str | Path = "sweeps/demo", n_upstream: int | None = 160, n_instruct: int = 32,
                n_tasks: int | None = None, n_train: int = 120, steps: int = 10, batch_size: int = 8, lr: float = 2e-3,
                max_length: int = 96, method: str = "lora", seed: int = 0,
                model: str = "smollm2-135m-instruct", tasks: Sequence[str] | None = None,
                upstream_source: str | Path | None = None, lora_rank: int = 8,
                target_modules: Sequence[str] | None = None, eval_max_length: int | str = "auto",
                chat: bool | str = "auto", lm_targets: str = "base_continuations") -> SweepConfig:
    """A sweep config over the demo suite (all its tasks unless ``tasks`` names them or ``n_tasks`` limits them).

    ``n_upstream`` plain-text and ``n_instruct`` instruction examples come from the demo upstream sets
    (``n_upstream=0``: instruction pairs only); the plain-text set is, by default, the base model's own
    greedy continuations of the demo texts (``lm_targets="base_continuations"``; ``"text"``: the human
    texts themselves, on which this instruction-tuned model mostly *improves* when fine-tuned). ``upstream_source`` replaces both with a data file
    (``n_upstream`` then limits it, None keeps every example; ``n_instruct`` does not apply).
    """
    from forgetscope.data.demo import demo_task_names

    names = list(tasks) if tasks else demo_task_names()
    if n_tasks is not None:
        names = names[:n_tasks]
    if upstream_source is not None:
        upstream: dict[str, Any] = {"source": str(upstream_source), "n": n_upstream}
    else:
        if not n_upstream and not n_instruct:
            raise ConfigError("the demo needs upstream examples: give --upstream or --instruct a positive number")
        upstream = {"source": "demo", "n": n_upstream, "n_instruct": n_instruct, "lm_targets": lm_targets}
    train: dict[str, Any] = {"method": method, "steps": steps, "batch_size": batch_size, "lr": lr,
                             "max_length": max_length, "lora_rank": lora_rank}
    if target_modules:
        train["target_modules"] = list(target_modules)
    return parse_config({
        "model": model,
        "output": str(output),
        "seed": seed,
        "upstream": upstream,
        "tasks": [{"name": n, "n_train": n_train} for n in names],
        "train": train,
        "eval": {"max_length": eval_max_length, "chat": chat},
    }, "for the demo")

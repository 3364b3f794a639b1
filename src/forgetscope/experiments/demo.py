"""The default offline demo sweep: SmolLM2-135M-Instruct, LoRA, a preset of the shipped demo suite.

Sized to finish in about 16 minutes on 2 CPU cores, in the regime the pre-registered SmolLM2 pilot selected
(``benchmarks/results/regimes/smollm2/selection.json``: every run learns, rows above noise, damage capped):
four instruction-format tasks and two plain-text tasks, LoRA r8 on every linear layer for 40 steps of 8 at
lr 5e-4, forgetting measured on human-written upstream text and on
instruction pairs scored on the model's own answers, with a null-control row per run. Every size is a
parameter to scale up, and so is the design: the upstream sets, the chat format and the regime.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from forgetscope.config import SweepConfig, parse_config
from forgetscope.errors import ConfigError

#: The demo's tasks: one short-answer, one classification, one transformation and one code-reading task of
#: the instruction family, and two plain-text tasks; ``n_tasks`` beyond these takes the other shipped tasks.
DEMO_TASKS = ("capital_cities", "unicode_category", "case_conversion", "python_eval", "code", "poetry")
#: Every linear layer of a Llama/Gemma-style decoder (the pilot's LoRA targets).
ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def demo_task_order() -> list[str]:
    """The preset's tasks first, then every other shipped task in index order."""
    from forgetscope.data.demo import demo_task_names

    return list(DEMO_TASKS) + [n for n in demo_task_names() if n not in DEMO_TASKS]


def demo_config(*, output: str | Path = "sweeps/demo", n_upstream: int | None = 96, n_instruct: int = 24,
                n_tasks: int | None = None, n_train: int = 120, steps: int = 40, batch_size: int = 8,
                lr: float = 5e-4, max_length: int = 96, method: str = "lora", seed: int = 0,
                model: str = "smollm2-135m-instruct", tasks: Sequence[str] | None = None,
                upstream_source: str | Path | None = None, lora_rank: int = 8,
                target_modules: Sequence[str] | None = ALL_LINEAR, eval_max_length: int | str = "auto",
                chat: bool | str = "auto", lm_targets: str = "human", instruct_targets: str = "base_samples",
                null_control: bool = True) -> SweepConfig:
    """A sweep config over the demo suite: the preset's tasks unless ``tasks`` names them, the first
    ``n_tasks`` of :func:`demo_task_order` when given.

    ``n_upstream`` plain-text and ``n_instruct`` instruction examples come from the demo upstream sets
    (``n_upstream=0``: instruction pairs only). The plain-text set is human-written text
    (``lm_targets="human"``; ``"base_samples"``: the base model's temperature-1 continuations,
    ``"base_continuations"``: its greedy ones, biased towards forgetting by construction); the instruction
    pairs are scored on the base model's own answers (``instruct_targets="base_samples"``; ``"gold"``: the
    terse gold answers), exact match always against the gold ones. ``upstream_source`` replaces both with a
    data file (``n_upstream`` then limits it, None keeps every example; ``n_instruct`` does not apply).
    ``target_modules=None``: peft's defaults for the model.
    """
    order = demo_task_order()
    if not tasks and n_tasks is not None and n_tasks > len(order):
        raise ConfigError(f"--tasks {n_tasks}: the demo suite has {len(order)} tasks; ask for at most "
                          f"{len(order)}")
    names = list(tasks) if tasks else (order[:n_tasks] if n_tasks is not None else list(DEMO_TASKS))
    if upstream_source is not None:
        upstream: dict[str, Any] = {"source": str(upstream_source), "n": n_upstream}
    else:
        if not n_upstream and not n_instruct:
            raise ConfigError("the demo needs upstream examples: give --upstream or --instruct a positive number")
        upstream = {"source": "demo", "n": n_upstream, "n_instruct": n_instruct, "lm_targets": lm_targets,
                    "instruct_targets": instruct_targets}
    train: dict[str, Any] = {"method": method, "steps": steps, "batch_size": batch_size, "lr": lr,
                             "max_length": max_length, "lora_rank": lora_rank}
    if target_modules and method == "lora":
        train["target_modules"] = list(target_modules)
    return parse_config({
        "model": model,
        "output": str(output),
        "seed": seed,
        "upstream": upstream,
        "tasks": [{"name": n, "n_train": n_train} for n in names],
        "train": train,
        "eval": {"max_length": eval_max_length, "chat": chat},
        "null_control": null_control,
    }, "for the demo")

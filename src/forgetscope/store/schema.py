"""The typed run record: what one finished run writes to ``runs/<run_id>.json`` (and ``runs.parquet``).

The trainer fills the training part (:class:`TrainRecord`), :func:`forgetscope.experiments.run.execute_run`
adds identity and timings; experiments may add their own keys (``sharpness_*``, ``mean_forgetting``), which
is why the record stays a JSON-able mapping rather than a frozen class.
"""

from __future__ import annotations

from typing import Any, TypedDict


class TrainRecord(TypedDict):
    """What one fine-tuning run reports (see :func:`forgetscope.train.train_on_task`)."""

    task: str
    method: str
    strategy: str
    seed: int
    steps: int
    lr: float
    batch_size: int
    max_length: int
    lora_rank: int | None
    trainable_params: int
    task_loss_before: float
    task_loss_after: float
    train_loss_first: float | None
    train_loss_last: float | None
    train_wall_s: float
    train_dtype: str  # forward-pass dtype (weights stay float32)
    strategy_info: dict[str, Any]


class RunRecord(TrainRecord, total=False):
    """A stored run: the training record plus identity, options, timings and experiment extras."""

    run_id: str
    strategy_options: dict[str, Any]
    family: str  # the task's family: instruction | plain_text
    task_text: str  # the task's description and a few training samples (what text-based predictors embed)
    null_seed: int  # null control (when on): the seed and rank of the random direction, tensors moved, norm
    null_rank: str  # the adapter rank, or "full"
    null_tensors: int
    update_norm: float
    eval_wall_s: float
    eval_device: str  # device type and dtype of loss_after (those of loss_before, checked)
    eval_dtype: str
    wall_s: float
    executor: str
    worker: str
    mean_forgetting: float

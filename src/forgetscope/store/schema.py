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
    rows_sha256: str  # sha256 of runs/<run_id>.parquet as written (checked when read back; not in runs.parquet)
    strategy_options: dict[str, Any]
    family: str  # the task's family: instruction | plain_text
    task_text: str  # the task's description and a few training samples (what text-based predictors embed)
    null_seed: int  # null control (when on): the seed and rank of the random direction, tensors moved, norm
    null_rank: str  # the adapter rank, or "full"
    null_tensors: int
    update_norm: float
    # null_match: effect (forgetscope.experiments.null_control.match_effect): the scale of the norm-matched
    # direction chosen, the subset's mean F the run had (target) and the null reached, the search's outcome,
    # evaluations and seconds, the norm-matched null's mean F on the subset, and the subset's size
    null_match: str
    null_scale: float
    null_match_target: float
    null_match_value: float
    null_match_status: str  # matched | not_matched | target_not_positive
    null_match_steps: int
    null_match_wall_s: float
    null_norm_effect: float
    null_match_subset: int
    control: str  # a control task's runs (forgetscope.data.controls): the control, and the task it controls
    control_of: str | None
    eval_wall_s: float
    eval_device: str  # device type and dtype of loss_after (those of loss_before, checked)
    eval_dtype: str
    wall_s: float
    executor: str
    worker: str
    mean_forgetting: float

"""The scaling sweep: LoRA at several ranks, forgetting evaluated at checkpoints along each run.

One run per (rank, seed) fine-tunes a fresh copy of the base model on one task for ``max(eval_steps)``
steps; a trainer callback evaluates, at each step in ``eval_steps`` (checkpoint evaluations inside the
run, not separate runs), on the upstream (pretraining-like) examples:

``forgetting``
    forgetscope's measure: mean over examples of the loss increase
    ``NLL_ft(x) - NLL_base(x)`` (mean token NLL of each example, nats).
``ce_forgetting``
    Kalajdzievski's measure (arXiv 2401.05605, as DESIGN.md states it): the cross-entropy between the
    base model's and the fine-tuned model's next-token predictions,
    ``mean over scored positions of  - sum_v p_base(v | x_<i) log p_ft(v | x_<i)``
    (mean per example, then over examples). Before fine-tuning it equals the base model's entropy.
``kl_forgetting``
    ``ce_forgetting`` minus the base model's entropy = ``KL(p_base || p_ft)``; zero before fine-tuning.
``task_loss``
    the task's held-out loss (token-weighted mean NLL) at that checkpoint: the fine-tuning loss of the
    paper's linear relation.

The base model's log-probabilities on the upstream examples are computed once and cached in memory
(``cache_mb``; above it they are recomputed with the base model at every checkpoint).

Config (``forgetscope scaling CONFIG.yaml``; see ``configs/scaling_demo.yaml``)::

    model: smollm2-135m-instruct
    output: sweeps/scaling_demo
    upstream: {source: demo, n: 32}
    task: code                        # or {name: ..., source: ..., heldout: ...}
    train: {steps: 40, lr: 1e-3, batch_size: 8, max_length: 64}   # method is always lora
    ranks: [1, 2, 4, 8, 16]
    eval_steps: [5, 10, 20, 40]
    holdout: largest_t                # none | largest_t | largest_p | random

Files under ``OUTPUT/``::

    scaling_config.json          the validated config (a changed config refuses to resume)
    scaling/runs/<run>.parquet   checkpoint rows of one finished run (the resume unit)
    scaling/points.parquet/.csv  all rows (see analysis.scaling), plus the t = 0 rows of the base model
    scaling/fit.json, *.png      written by analysis.scaling.write_scaling_results
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from forgetscope.config import EvalConfig, SourceConfig, SweepConfig, TaskConfig, TrainConfig
from forgetscope.errors import ConfigError, StoreError

SCALING_DIR = "scaling"
CONFIG_FILE = "scaling_config.json"


class ScalingConfig(BaseModel):
    """A scaling sweep: one task, several LoRA ranks, checkpoint evaluations at ``eval_steps``."""

    model_config = ConfigDict(extra="forbid")

    model: str = "smollm2-135m-instruct"
    output: Path = Path("sweeps/scaling")
    seed: int = 0
    seeds: list[int] | None = None
    upstream: SourceConfig = SourceConfig(n=32)
    task: TaskConfig
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig(exact_match=False)
    ranks: list[int] = Field(default_factory=lambda: [1, 2, 4, 8])
    eval_steps: list[int] = Field(default_factory=lambda: [5, 10, 20, 40])
    holdout: Literal["none", "largest_t", "largest_p", "random"] = "largest_t"
    cache_mb: int = Field(1024, ge=0)
    figures: bool = True

    @field_validator("task", mode="before")
    @classmethod
    def _name_to_task(cls, v: Any) -> Any:
        return {"name": v} if isinstance(v, str) else v

    @field_validator("ranks", "eval_steps")
    @classmethod
    def _positive_unique(cls, v: list[int]) -> list[int]:
        if not v:
            raise ValueError("needs at least one value")
        if any(x < 1 for x in v):
            raise ValueError("values must be >= 1")
        return sorted(set(v))

    @model_validator(mode="after")
    def _lora_only(self) -> ScalingConfig:
        if self.train.method != "lora":
            raise ValueError("train.method: the scaling sweep varies the LoRA rank; method must be 'lora'")
        return self

    @property
    def seed_list(self) -> list[int]:
        return self.seeds or [self.seed]

    def sweep_config(self) -> SweepConfig:
        """The equivalent one-task sweep config (to reuse the sweep's data and model loading)."""
        return SweepConfig(model=self.model, output=self.output, seed=self.seed, upstream=self.upstream,
                           tasks=[self.task], train=self.train, eval=self.eval)

    def fingerprint(self) -> str:
        data = self.model_dump(mode="json", exclude={"output", "holdout", "figures", "cache_mb"})
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def load_scaling_config(path: str | Path, **overrides: Any) -> ScalingConfig:
    from forgetscope.config import load_config

    return load_config(path, model=ScalingConfig, **overrides)


# --------------------------------------------------------------------------- evaluation against the base
def scored_logprobs(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Log-probabilities over the vocabulary at the scored positions of a collated batch.

    Returns ``(logp (n_scored, V) float32, targets (n_scored,), row index (n_scored,))``; the output layer
    is applied only at scored positions when the model allows it (as in :func:`forgetscope.measure.batch_nll`).
    """
    from forgetscope.data.encoding import IGNORE_INDEX
    from forgetscope.measure import _fast_head

    targets = batch["labels"][:, 1:]
    scored = targets != IGNORE_INDEX
    fast = _fast_head(model)
    if fast is not None:
        decoder, head = fast
        hidden = decoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        logits = head(hidden[:, :-1][scored]).float()
    else:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        logits = logits[:, :-1][scored].float()
    rows = scored.nonzero()[:, 0]
    return F.log_softmax(logits, dim=-1), targets[scored], rows


class UpstreamReference:
    """The base model's next-token distributions on the upstream examples, for checkpoint evaluations.

    :meth:`evaluate` returns per example: ``loss`` (mean token NLL), ``forgetting`` (loss increase over
    the base), ``ce`` (cross-entropy ``-sum p_base log p_model`` averaged over scored tokens), ``entropy``
    (the base model's, same average) and ``kl = ce - entropy``.
    """

    def __init__(self, base_model, tokenizer, examples, *, max_length: int = 64, chat: bool = False,
                 max_batch_tokens: int = 4096, max_batch_size: int = 64, cache_mb: float = 1024):
        from forgetscope.data.encoding import encode_examples
        from forgetscope.measure import bucket_batches
        from forgetscope.models import context_length

        self.base = base_model
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.encoded = encode_examples(tokenizer, list(examples), max_length,
                                       model_max_length=context_length(base_model), chat=chat)
        self.example_ids = [e.example_id for e in self.encoded]
        self.batches = bucket_batches([len(e) for e in self.encoded], max_batch_tokens, max_batch_size)
        self.device = next(base_model.parameters()).device
        self._cache: list[torch.Tensor] | None = []
        budget = cache_mb * 2 ** 20
        used = 0.0
        n = len(self.encoded)
        self.base_loss = np.zeros(n)
        self.entropy = np.zeros(n)
        self.n_scored = np.array([e.n_scored for e in self.encoded], dtype=float)
        for idx, logp in self._base_logprobs(force=True):
            used += logp.numel() * 4
            if self._cache is not None:
                if used <= budget:
                    self._cache.append(logp.cpu())
                else:
                    self._cache = None
        # per-example base NLL and entropy
        for idx, logp, tgt, rows in self._iter_base():
            nll = -logp.gather(1, tgt[:, None])[:, 0]
            ent = -(logp.exp() * logp).sum(-1)
            self.base_loss[idx] = self._per_row(nll, rows, len(idx))
            self.entropy[idx] = self._per_row(ent, rows, len(idx))

    @staticmethod
    def _per_row(values: torch.Tensor, rows: torch.Tensor, n: int) -> np.ndarray:
        total = torch.zeros(n, dtype=torch.float64).index_add_(0, rows.cpu(), values.double().cpu())
        count = torch.zeros(n, dtype=torch.float64).index_add_(0, rows.cpu(),
                                                               torch.ones(len(rows), dtype=torch.float64))
        return (total / count.clamp(min=1)).numpy()

    def _collate(self, idx):
        from forgetscope.data.encoding import collate

        return collate([self.encoded[i] for i in idx], self.pad_id, self.device)

    def _base_logprobs(self, force: bool = False):
        was = self.base.training
        self.base.eval()
        try:
            with torch.inference_mode():
                for idx in self.batches:
                    logp, _, _ = scored_logprobs(self.base, self._collate(idx))
                    yield idx, logp
        finally:
            self.base.train(was)

    def _iter_base(self):
        from forgetscope.data.encoding import IGNORE_INDEX

        if self._cache is not None:
            for idx, logp in zip(self.batches, self._cache):
                batch = self._collate(idx)
                targets = batch["labels"][:, 1:]
                scored = targets != IGNORE_INDEX
                yield idx, logp.to(self.device), targets[scored], scored.nonzero()[:, 0]
        else:
            was = self.base.training
            self.base.eval()
            try:
                with torch.inference_mode():
                    for idx in self.batches:
                        logp, tgt, rows = scored_logprobs(self.base, self._collate(idx))
                        yield idx, logp, tgt, rows
            finally:
                self.base.train(was)

    @property
    def cached(self) -> bool:
        return self._cache is not None

    def evaluate(self, model) -> pd.DataFrame:
        n = len(self.encoded)
        loss, ce = np.zeros(n), np.zeros(n)
        was = model.training
        model.eval()
        try:
            for idx, base_logp, tgt, rows in self._iter_base():
                with torch.inference_mode():
                    logp, tgt2, rows2 = scored_logprobs(model, self._collate(idx))
                    nll = -logp.gather(1, tgt2[:, None])[:, 0]
                    cross = -(base_logp.exp() * logp).sum(-1)
                loss[idx] = self._per_row(nll, rows2, len(idx))
                ce[idx] = self._per_row(cross, rows2, len(idx))
        finally:
            model.train(was)
        return pd.DataFrame({"example_id": self.example_ids, "loss": loss, "forgetting": loss - self.base_loss,
                             "ce": ce, "entropy": self.entropy, "kl": ce - self.entropy})

    def summary(self, per_example: pd.DataFrame) -> dict[str, float]:
        """Means over examples: forgetting, ce_forgetting, kl_forgetting, upstream_loss."""
        return {"forgetting": float(per_example["forgetting"].mean()),
                "ce_forgetting": float(per_example["ce"].mean()),
                "kl_forgetting": float(per_example["kl"].mean()),
                "upstream_loss": float(per_example["loss"].mean())}


def heldout_loss(model, encoded, pad_id: int) -> float:
    """Token-weighted mean NLL of a task's held-out examples (the fine-tuning loss)."""
    from forgetscope.measure import per_example_nll

    losses = per_example_nll(model, encoded, pad_id=pad_id)
    w = np.array([e.n_scored for e in encoded], dtype=float)
    return float(np.sum(losses * w) / max(w.sum(), 1.0))


@dataclass
class CheckpointEvaluator:
    """A trainer callback: at the chosen steps, evaluate forgetting and the task loss; keeps the rows."""

    reference: UpstreamReference
    heldout_encoded: list
    pad_id: int
    steps: Sequence[int]
    base: dict[str, Any]

    def __post_init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self._steps = {int(s) for s in self.steps}

    def __call__(self, ctx) -> None:
        if ctx.step not in self._steps:
            return
        from forgetscope.models import count_trainable

        t0 = time.perf_counter()
        per_ex = self.reference.evaluate(ctx.model)
        row = {**self.base, "P": int(count_trainable(ctx.model)), "t": int(ctx.step),
               **self.reference.summary(per_ex),
               "task_loss": heldout_loss(ctx.model, self.heldout_encoded, self.pad_id)}
        row["eval_s"] = time.perf_counter() - t0
        self.rows.append(row)


# --------------------------------------------------------------------------- the sweep
def run_id(task: str, rank: int, seed: int) -> str:
    return f"{task}__lora_r{rank}__s{seed}"


def _open_output(config: ScalingConfig, output: Path, overwrite: bool) -> Path:
    from forgetscope.store import write_json

    cfg_path = output / CONFIG_FILE
    if cfg_path.is_file():
        old = json.loads(cfg_path.read_text())
        if old.get("fingerprint") != config.fingerprint():
            if not overwrite:
                raise StoreError(f"{output} holds a different scaling sweep (config changed); "
                                 "choose another output or pass --overwrite")
            shutil.rmtree(output / SCALING_DIR, ignore_errors=True)
    elif output.exists() and any(output.iterdir()) and not overwrite:
        raise StoreError(f"{output} exists and is not a scaling sweep; choose another output or pass --overwrite")
    (output / SCALING_DIR / "runs").mkdir(parents=True, exist_ok=True)
    write_json(cfg_path, {"fingerprint": config.fingerprint(), "config": config.model_dump(mode="json")})
    return output / SCALING_DIR


def run_scaling_sweep(config: ScalingConfig, *, output: str | Path | None = None, overwrite: bool = False,
                      session=None, on_run: Callable[[str, list[dict]], None] | None = None) -> pd.DataFrame:
    """Run (or resume) the scaling sweep and return the tidy checkpoint table (also written to disk).

    ``session`` (a :class:`forgetscope.sweep.runner.SweepSession`) may be passed to reuse a loaded model.
    """
    from forgetscope.data.encoding import encode_examples
    from forgetscope.models import context_length
    from forgetscope.store import write_parquet
    from forgetscope.sweep.runner import SweepSession
    from forgetscope.train import make_strategy, train_on_task

    output = Path(output or config.output)
    if max(config.eval_steps) < 1:
        raise ConfigError("eval_steps: at least one step >= 1 is needed")
    session = session or SweepSession.prepare(config.sweep_config())
    sdir = _open_output(config, output, overwrite)
    base, tok = session.base()
    task = session.tasks[config.task.name]
    max_len = config.train.max_length
    reference = UpstreamReference(base, tok, session.upstream, max_length=max_len, chat=session.chat,
                                  max_batch_tokens=config.eval.max_batch_tokens,
                                  max_batch_size=config.eval.max_batch_size, cache_mb=config.cache_mb)
    held_enc = encode_examples(tok, task.heldout, max_len, model_max_length=context_length(base), chat=session.chat)
    base_task_loss = heldout_loss(base, held_enc, reference.pad_id)
    base_summary = reference.summary(reference.evaluate(base))
    steps = max(config.eval_steps)
    all_rows: list[dict[str, Any]] = []
    for seed in config.seed_list:
        for rank in config.ranks:
            rid = run_id(task.name, rank, seed)
            path = sdir / "runs" / f"{rid}.parquet"
            if path.is_file():
                all_rows.extend(pd.read_parquet(path).to_dict("records"))
                continue
            model, _ = session.fresh_model()
            train_cfg = config.train.model_copy(update={"seed": seed, "lora_rank": rank, "steps": steps,
                                                        "method": "lora"})
            meta = {"run": rid, "task": task.name, "seed": seed, "rank": rank}
            cb = CheckpointEvaluator(reference, held_enc, reference.pad_id, config.eval_steps, meta)
            t0 = time.perf_counter()
            result = train_on_task(model, tok, task, train_cfg, strategy=make_strategy("plain"), callbacks=[cb],
                                   chat=session.chat)
            wall = time.perf_counter() - t0
            P = int(result.record["trainable_params"])
            rows = [{**meta, "P": P, "t": 0, **base_summary, "task_loss": base_task_loss, "eval_s": 0.0}] + cb.rows
            for r in rows:
                r["run_wall_s"] = wall
            write_parquet(path, pd.DataFrame(rows))
            all_rows.extend(rows)
            if on_run is not None:
                on_run(rid, rows)
            del model, result
    points = pd.DataFrame(all_rows).sort_values(["seed", "rank", "t"]).reset_index(drop=True)
    points["cached_reference"] = reference.cached
    return points


def fit_and_write(points: pd.DataFrame, config: ScalingConfig, output: str | Path | None = None):
    """Fit the laws to the points of a sweep and write ``OUTPUT/scaling/{points,fit.json,*.png}``."""
    from forgetscope.analysis.scaling import fit_scaling, write_scaling_results

    out = Path(output or config.output) / SCALING_DIR
    report = fit_scaling(points, holdout=config.holdout, seed=config.seed)
    paths = write_scaling_results(points, report, out, figures=config.figures)
    return report, paths


def read_points(output: str | Path) -> pd.DataFrame:
    """The checkpoint table of a (possibly unfinished) sweep, from its per-run files."""
    runs = sorted((Path(output) / SCALING_DIR / "runs").glob("*.parquet"))
    if not runs:
        raise StoreError(f"no finished scaling runs under {output}")
    return pd.concat([pd.read_parquet(p) for p in runs], ignore_index=True).sort_values(
        ["seed", "rank", "t"]).reset_index(drop=True)

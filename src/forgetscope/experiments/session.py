"""What every run of an experiment shares, loaded once per process: data, tasks and the base model."""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd

from forgetscope.config import SweepConfig, TaskConfig
from forgetscope.data.types import Example, Task
from forgetscope.errors import DataError, PrecisionError

if TYPE_CHECKING:
    from forgetscope.precision import Precision


def config_fingerprint(config: SweepConfig) -> str:
    """Hash of everything that changes results (not the output path or executor)."""
    data = config.model_dump(mode="json", exclude={"output", "executor", "report_to"})
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def load_upstream(config: SweepConfig) -> list[Example]:
    src = config.upstream
    if src.source == "demo":
        from forgetscope.data.demo import demo_upstream, demo_upstream_instruct

        pairs = demo_upstream_instruct(n=src.n_instruct, seed=config.seed) if src.n_instruct else []
        return demo_upstream(n=src.n, seed=config.seed) + pairs
    from forgetscope.data.loading import load_examples

    return load_examples(src.source, name="upstream", limit=src.n, seed=config.seed, text_field=src.text_field,
                         prompt_field=src.prompt_field, response_field=src.response_field,
                         answer_field=src.answer_field, id_field=src.id_field, split=src.split)


def load_task_from_config(tc: TaskConfig, seed: int) -> Task:
    from forgetscope.data.loading import load_task

    held = {"heldout_size": int(tc.heldout)} if (isinstance(tc.heldout, int) or tc.heldout >= 1) else \
        {"heldout_fraction": float(tc.heldout)}
    if tc.source is None:
        return load_task(tc.name, f"demo:{tc.name}", n_train=tc.n_train or tc.n, seed=seed,
                         description=tc.description)
    return load_task(tc.name, tc.source, seed=seed, n_train=tc.n_train, limit=tc.n, description=tc.description,
                     text_field=tc.text_field, prompt_field=tc.prompt_field, response_field=tc.response_field,
                     answer_field=tc.answer_field, id_field=tc.id_field, split=tc.split, **held)


def upstream_frame(examples: list[Example]) -> pd.DataFrame:
    return pd.DataFrame({
        "example_id": [e.example_id for e in examples],
        "text": [e.text for e in examples],
        "prompt": [e.prompt for e in examples],
        "response": [e.response for e in examples],
        "answer": [e.answer for e in examples],
    })


@dataclass
class SweepSession:
    """What every run of a sweep shares, loaded once per process (a Ray worker builds its own)."""

    config: SweepConfig
    upstream: list[Example]
    tasks: dict[str, Task]
    source: Any = None
    _base: Any = None
    _tokenizer: Any = None
    chat: bool = False
    extras: dict[str, Any] = field(default_factory=dict)  # shipped to remote workers with every run
    cache: dict[str, Any] = field(default_factory=dict, repr=False)  # process-local (e.g. base distributions)

    @classmethod
    def prepare(cls, config: SweepConfig) -> SweepSession:
        """Load and validate data and resolve the model, without loading weights yet."""
        from forgetscope.models import resolve_model

        source = resolve_model(config.model)
        upstream = load_upstream(config)
        if not upstream:
            raise DataError("the upstream set is empty")
        tasks = {tc.name: load_task_from_config(tc, config.seed) for tc in config.tasks}
        return cls(config=config, upstream=upstream, tasks=tasks, source=source)

    def base(self):
        """(base model, tokenizer), loaded once; runs get deep copies so every run starts from it."""
        if self._base is None:
            from forgetscope.models import load_model

            # float32 weights: the optimiser's master copy; bf16 is applied per forward pass
            self._base, self._tokenizer = load_model(self.source, device=self.config.train.device,
                                                     dtype="float32")
            chat = self.config.eval.chat
            self.chat = bool(getattr(self._tokenizer, "chat_template", None)) if chat == "auto" else bool(chat)
        return self._base, self._tokenizer

    def precision(self) -> Precision:
        """Where and in which dtype this process measures losses (device of the base model, ``eval.dtype``)."""
        from forgetscope.models import pick_device
        from forgetscope.precision import Precision, dtype_name, resolve_eval_dtype

        device = pick_device(self.config.train.device)
        return Precision(device.type, dtype_name(resolve_eval_dtype(self.config.eval.dtype, device)))

    def check_precision(self, expected: Precision | None) -> None:
        """Refuse to measure ``loss_after`` with another device type or dtype than ``loss_before``."""
        if expected is None:
            return
        here = self.precision()
        if here != expected:
            raise PrecisionError(
                f"loss_before was measured on {expected.describe()} but this process evaluates on "
                f"{here.describe()}; set train.device and eval.dtype explicitly so the base and the runs "
                "match, or start a fresh sweep with --overwrite")

    def fresh_model(self):
        base, tok = self.base()
        return copy.deepcopy(base), tok

    def evaluate(self, model, examples: list[Example], desc: str) -> pd.DataFrame:
        from forgetscope.measure import evaluate_examples
        from forgetscope.precision import DTYPES

        _, tok = self.base()
        ev = self.config.eval
        dtype = DTYPES[self.precision().dtype]
        return evaluate_examples(model, tok, examples, max_length=self.config.train.max_length,
                                 max_batch_tokens=ev.max_batch_tokens, max_batch_size=ev.max_batch_size,
                                 exact=ev.exact_match, progress=True, desc=desc, chat=self.chat, dtype=dtype)

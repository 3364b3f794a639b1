"""What one run is: a task, a seed, a strategy with options, and training overrides."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RunSpec:
    """One run: a task, a seed, a strategy (with options) and optional training overrides."""

    task: str
    seed: int
    strategy: str = "plain"
    strategy_options: tuple[tuple[str, Any], ...] = ()
    train_overrides: tuple[tuple[str, Any], ...] = ()
    label: str | None = None  # a fixed run id (experiments with their own naming, e.g. the scaling grid)

    @property
    def run_id(self) -> str:
        if self.label:
            return self.label
        extra = ""
        if self.strategy_options or self.train_overrides:
            blob = json.dumps([self.strategy_options, self.train_overrides], sort_keys=True, default=str)
            extra = "__" + hashlib.sha1(blob.encode()).hexdigest()[:8]
        return f"{self.task}__{self.strategy}__s{self.seed}{extra}"

"""Provenance: what was fine-tuned, on what, with which versions (``manifest.json``, ``upstream.parquet``)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd

from forgetscope.report.sections.base import ReportContext, Section, pct

SHOWN = {"format", "source", "status", "created", "completed", "fingerprint", "model", "config", "seeds",
         "versions", "tasks", "n_upstream", "upstream_kinds", "eval", "inputs"}


def build(ctx: ReportContext) -> Section:
    man = ctx.manifest
    sec = Section("provenance", "Provenance")
    model = man.get("model")
    model_s = ", ".join(f"{k}: {v}" for k, v in model.items()) if isinstance(model, dict) else model
    cfg = man.get("config") or {}
    train = cfg.get("train") if isinstance(cfg, dict) else None
    versions = man.get("versions") or {}
    items: list[tuple[str, Any]] = [
        ("sweep directory", str(ctx.path.resolve())),
        ("source", man.get("source")),
        ("status", man.get("status")),
        ("created", man.get("created")),
        ("completed", man.get("completed")),
        ("config fingerprint", man.get("fingerprint")),
        ("base model", model_s),
        ("strategy", cfg.get("strategy") if isinstance(cfg, dict) else None),
        ("fine-tuning", ", ".join(f"{k}={v}" for k, v in train.items() if v is not None) if train else None),
        ("seeds", ", ".join(map(str, man.get("seeds") or [])) or None),
        ("upstream examples", ", ".join(f"{n} {k}" for k, n in (man.get("upstream_kinds") or {}).items()) or None),
        ("evaluation", _eval_line(man.get("eval"))),
        ("versions", ", ".join(f"{k} {v}" for k, v in versions.items()) or None),
    ]
    m = ctx.matrix
    if m is not None:
        shape = f"{m.shape[0]} runs × {m.shape[1]} upstream examples"
        items.append(("forgetting matrix", f"{shape}, {pct(float(np.isnan(m.values).mean()))} missing"))
        if m.upstream is not None and "loss_before" in m.upstream and m.upstream["loss_before"].notna().any():
            items.append(("upstream loss before fine-tuning",
                          f"{m.upstream['loss_before'].mean():.3f} nats/token (mean over examples)"))
    sec.pairs(items)
    tasks = man.get("tasks")
    if isinstance(tasks, dict) and tasks:
        sec.table(pd.DataFrame([{"task": k, **(v if isinstance(v, dict) else {"info": v})}
                                for k, v in tasks.items()]), caption="Tasks", source=ctx.source(ctx.layout.manifest))
    inputs = man.get("inputs")
    if isinstance(inputs, dict) and inputs:
        sec.details("Input content hashes (a resume with changed inputs is refused)",
                    json.dumps(inputs, indent=2, default=str))
    if cfg:
        import yaml

        sec.details("Full sweep config", yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True))
    extra = {k: v for k, v in man.items() if k not in SHOWN}
    if extra:
        sec.details("Other manifest fields", json.dumps(extra, indent=2, default=str))
    return sec


def _eval_line(ev: Any) -> str | None:
    if not isinstance(ev, dict) or "max_length" not in ev:
        return None
    return (f"max_length {ev['max_length']}, chat format {'on' if ev.get('chat') else 'off'}; "
            f"{ev.get('truncated_examples', 0)} of {ev.get('n_upstream', '?')} upstream examples truncated "
            f"({ev.get('truncated_tokens', 0)} tokens dropped)"
            + (f"; losses measured on {ev['device']} in {ev['dtype']}" if "device" in ev and "dtype" in ev else ""))

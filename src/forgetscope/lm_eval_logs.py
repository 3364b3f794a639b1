"""Per-item forgetting from lm-evaluation-harness sample logs (``lm_eval ... --log_samples``).

A base model and N fine-tuned models are each evaluated by lm-eval on the same tasks with the same task
configuration; :func:`import_lm_eval` matches their logged items by (task, doc_id) and writes a sweep
directory with one row per fine-tuned run and one column per item, which ``forgetscope analyze``,
``predict`` and ``report`` read like any sweep.

What is read, per item (one line of ``samples_<task>_<date>.jsonl``, the file lm-eval's
``EvaluationTracker.save_results_samples`` writes; its format is that of lm-eval 0.4.5 to 0.4.13):

- the **log-likelihood of the gold continuation** (total nats, summed over its tokens: lm-eval logs no
  token counts). ``multiple_choice``: the gold choice's entry of ``filtered_resps`` (``target`` is the gold
  index, or the gold choice's text); ``loglikelihood``: the one request's value; ``loglikelihood_rolling``:
  the document's value. The upstream ``loss_before`` and the long table's ``loss_after`` hold
  ``-loglikelihood``, so ``F = loss_after - loss_before = ll_before - ll_after``: the loss increase of the
  item in total nats. Items without one (``generate_until`` tasks, several gold choices, a gold choice not
  found) are left out: a column with no F at all is one analysis cannot use. The manifest counts them.
- the **accuracy** (``acc``, else ``exact_match``, or the metric asked for), stored as ``em_before`` /
  ``em_after`` so that binary forgetting (:func:`forgetscope.predict.binary.binary_forgetting`) applies.

Every item is of kind ``instruction`` (a prompt, the context lm-eval scored, and a response, the gold
continuation); the lm-eval task of each column is in the upstream columns ``category`` and
``lm_eval_task``. Bad input (a missing directory, no sample logs, logs of several models in one
directory, tasks, doc ids or prompts that differ from the base run's, an after run that is the base model)
is a one-line :class:`~forgetscope.errors.DataError`, raised before anything is written.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from forgetscope.data.types import INSTRUCTION
from forgetscope.errors import DataError
from forgetscope.store import ForgettingMatrix, SweepStore

#: lm-eval versions whose sample-log format this module follows (the writer of each was read; 0.4.13 is tested).
LM_EVAL_FORMATS = "0.4.5 to 0.4.13"
#: Metrics tried, in order, for the per-item accuracy when none is named.
DEFAULT_METRICS = ("acc", "exact_match")
_SAMPLES = re.compile(r"^samples_(?P<task>.+)_(?P<date>[^_]+)\.jsonl$")
_RESULTS = re.compile(r"^results_(?P<date>[^_]+)\.json$")
_HASHES = ("doc_hash", "prompt_hash", "target_hash")
_RUN_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._+=@-]*$")  # a run id is also a file name (runs/<id>.json)


@dataclass
class LmEvalRun:
    """One lm-eval run as read from its output directory.

    ``items`` has one row per (task, doc_id): ``task``, ``doc_id``, ``output_type``, ``filter``, ``metric``,
    ``prompt``, ``response``, ``answer``, ``ll`` (gold log-likelihood, total nats; NaN where there is none),
    ``em`` (the metric's value; NaN where the task logs none) and the lm-eval hashes of doc, prompt and target.
    """

    source: Path  # the directory named by the user
    directory: Path  # the folder holding the sample files (``source`` or its one model subfolder)
    model_name: str | None
    model_args: str | None
    lm_eval_version: str | None
    sample_files: dict[str, Path]
    results_file: Path | None
    items: pd.DataFrame = field(repr=False)

    @property
    def tasks(self) -> list[str]:
        return sorted(self.sample_files)

    def describe(self) -> dict[str, Any]:
        """What the manifest records about this run."""
        return {"directory": str(self.directory.resolve()), "model_name": self.model_name,
                "model_args": self.model_args, "lm_eval_version": self.lm_eval_version,
                "tasks": self.tasks, "items": int(len(self.items)),
                "sample_files": {t: p.name for t, p in sorted(self.sample_files.items())}}


# ---- reading one run --------------------------------------------------------------------------
def find_sample_files(directory: str | os.PathLike[str]) -> tuple[Path, dict[str, Path], Path | None]:
    """(folder, {task: sample file}, results file or None) of one lm-eval output directory.

    The sample files lie in ``directory`` or in its one model subfolder (lm-eval writes
    ``OUTPUT_PATH/<sanitised model name>/``). A task logged several times keeps its latest file (the date in
    the name, as lm-eval itself picks); the results file is the one of that date, else the latest one.
    """
    root = Path(directory)
    if not root.exists():
        raise DataError(f"lm-eval output directory not found: {root}")
    if not root.is_dir():
        raise DataError(f"not a directory: {root} (pass the folder lm-eval wrote with --output_path)")
    found = [p for p in (*root.glob("samples_*.jsonl"), *root.glob("*/samples_*.jsonl"))
             if p.is_file() and _SAMPLES.match(p.name)]
    if not found:
        hint = (" (the .jsonl files there are not lm-eval >= 0.4.5 sample logs named samples_<task>_<date>.jsonl)"
                if any(root.glob("*.jsonl")) or any(root.glob("*/*.jsonl")) else "")
        raise DataError(f"no lm-eval sample logs (samples_<task>_<date>.jsonl) in {root}: run lm_eval with "
                        f"--log_samples --output_path{hint}")
    folders = sorted({p.parent for p in found})
    if len(folders) > 1:
        names = ", ".join(str(f.relative_to(root)) or "." for f in folders)
        raise DataError(f"{root} holds sample logs of several models ({names}); pass one model's folder")
    folder = folders[0]
    latest: dict[str, tuple[str, Path]] = {}
    for p in found:
        m = _SAMPLES.match(p.name)
        task, date = m["task"], m["date"]
        if task not in latest or date > latest[task][0]:
            latest[task] = (date, p)
    results = {m["date"]: p for p in folder.glob("results_*.json") if (m := _RESULTS.match(p.name))}
    dates = {d for d, _ in latest.values()}
    same = sorted(d for d in results if d in dates)
    results_file = results[same[-1]] if same else (results[max(results)] if results else None)
    return folder, {t: p for t, (_, p) in latest.items()}, results_file


def read_run(directory: str | os.PathLike[str], *, metric: str | None = None) -> LmEvalRun:
    """Read one lm-eval output directory (see :func:`find_sample_files`) into an :class:`LmEvalRun`."""
    source = Path(directory)
    folder, files, results_file = find_sample_files(source)
    results = _read_results(results_file)
    config = results.get("config") or {}
    per_date = {m["date"]: p for p in folder.glob("results_*.json") if (m := _RESULTS.match(p.name))}
    parts = []
    for task in sorted(files):
        date = _SAMPLES.match(files[task].name)["date"]
        task_results = results if per_date.get(date) in (None, results_file) else _read_results(per_date[date])
        output_type = ((task_results.get("configs") or {}).get(task) or {}).get("output_type")
        parts.append(_read_task(files[task], task, output_type, metric))
    items = pd.concat(parts, ignore_index=True)
    return LmEvalRun(source=source, directory=folder, model_name=_str_or_none(results.get("model_name")),
                     model_args=_str_or_none(config.get("model_args")),
                     lm_eval_version=_str_or_none(results.get("lm_eval_version")), sample_files=files,
                     results_file=results_file, items=items)


def _read_results(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"cannot read lm-eval results file {path}: {exc}") from None
    return data if isinstance(data, dict) else {}


def _read_task(path: Path, task: str, output_type: str | None, metric: str | None) -> pd.DataFrame:
    samples = _read_jsonl(path)
    if not samples:
        raise DataError(f"{path} holds no samples")
    # One record per doc and filter. Older logs (0.4.5's) carry no "filter" key: the filter is then the
    # record's rank among the records of its doc (lm-eval writes them in the task's filter order).
    seen: dict[str, int] = {}
    by_filter: dict[str, list[dict[str, Any]]] = {}
    for s in samples:
        if not isinstance(s, dict) or "doc_id" not in s:
            raise DataError(f"{path}: a line is not an lm-eval sample (no doc_id)")
        doc = str(s["doc_id"])
        k = seen.get(doc, 0)
        seen[doc] = k + 1
        name = str(s["filter"]) if "filter" in s else f"#{k}"
        by_filter.setdefault(name, []).append(s)
    chosen = next(iter(by_filter))  # the task's first filter ("none" for tasks without a filter_list)
    rows = []
    docs: set[str] = set()
    for s in by_filter[chosen]:
        doc = str(s["doc_id"])
        if doc in docs:
            raise DataError(f"{path}: doc_id {doc} is logged twice for filter {chosen!r}")
        docs.add(doc)
        rows.append(_item(s, task, output_type, chosen, metric, path))
    return pd.DataFrame(rows)


def _read_jsonl(path: Path) -> list[Any]:
    out = []
    try:
        with open(path, encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                if line.strip():
                    try:
                        out.append(json.loads(line))
                    except json.JSONDecodeError as exc:
                        raise DataError(f"{path}, line {n}: not JSON ({exc.msg})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from None
    return out


def _arguments(sample: dict[str, Any]) -> list[list[Any]]:
    """The requests' arguments: ``{"gen_args_i": {"arg_j": ...}}`` as the tracker writes them, or lists."""
    args = sample.get("arguments")
    if isinstance(args, dict):
        def order(key: str) -> int:
            tail = key.rsplit("_", 1)[-1]
            return int(tail) if tail.isdigit() else 0
        return [[a[k] for k in sorted(a, key=order)] if isinstance(a, dict) else list(a)
                for _, a in sorted(args.items(), key=lambda kv: order(kv[0]))]
    if isinstance(args, list):
        return [list(a) if isinstance(a, (list, tuple)) else [a] for a in args]
    return []


def _number(x: Any) -> float:
    """A logged number (the tracker writes them as strings); NaN when it is none or not finite."""
    if isinstance(x, bool):
        return float(x)
    try:
        v = float(x)
    except (TypeError, ValueError):
        return math.nan
    return v if math.isfinite(v) else math.nan


def _request_lls(sample: dict[str, Any]) -> list[float]:
    """Each request's log-likelihood: ``filtered_resps[i]`` is ``[ll, is_greedy]`` (or ``ll``)."""
    resps = sample.get("filtered_resps")
    if not isinstance(resps, list) or not resps:
        resps = [r[0] if isinstance(r, list) and r else r for r in (sample.get("resps") or [])]
    return [_number(r[0] if isinstance(r, (list, tuple)) and r else r) for r in resps]


def _infer_type(args: list[list[Any]], lls: list[float]) -> str:
    if args and all(len(a) == 2 and isinstance(a[1], str) for a in args) and any(math.isfinite(v) for v in lls):
        return "multiple_choice" if len(args) > 1 else "loglikelihood"
    if len(args) == 1 and len(args[0]) == 1 and lls and math.isfinite(lls[0]):
        return "loglikelihood_rolling"
    return "generate_until"


def _gold_index(target: str, args: list[list[Any]]) -> int | None:
    """The gold choice of a multiple-choice item: ``target`` as an index, else as a choice's text."""
    t = target.strip()
    if re.fullmatch(r"-?\d+", t):
        i = int(t)
        return i if 0 <= i < len(args) else None
    if t.startswith("["):  # several gold choices: no single gold log-likelihood
        return None
    conts = [str(a[1]) if len(a) > 1 else "" for a in args]
    for cand in (target, t):
        for i, c in enumerate(conts):
            if c == cand or c.strip() == cand:
                return i
    return None


def _item(s: dict[str, Any], task: str, output_type: str | None, filter_name: str, metric: str | None,
          path: Path) -> dict[str, Any]:
    args = _arguments(s)
    lls = _request_lls(s)
    kind = output_type or _infer_type(args, lls)
    target = str(s.get("target", ""))
    prompt = str(args[0][0]) if args and args[0] else ""
    response, ll = target, math.nan
    if kind == "multiple_choice":
        gold = _gold_index(target, args)
        if gold is not None and gold < len(lls):
            ll = lls[gold]
            response = str(args[gold][1]) if len(args[gold]) > 1 else target
            target = response.strip() or target
    elif kind == "loglikelihood":
        ll = lls[0] if lls else math.nan
        response = str(args[0][1]) if args and len(args[0]) > 1 else target
    elif kind == "loglikelihood_rolling":
        ll = lls[0] if lls else math.nan
        prompt, response = "", str(args[0][0]) if args and args[0] else target
    if metric is not None:
        if metric not in s:
            logged = ", ".join(k for k in s.get("metrics", []) if isinstance(k, str)) or "see the file"
            raise DataError(f"{path}: metric {metric!r} is not logged for task {task!r} (logged: {logged})")
        used = metric
    else:
        used = next((m for m in DEFAULT_METRICS if m in s), None)
    em = _number(s[used]) if used is not None else math.nan
    return {"task": task, "doc_id": str(s["doc_id"]), "output_type": kind, "filter": filter_name,
            "metric": used, "prompt": prompt, "response": response if response.strip() else target,
            "answer": target, "ll": ll, "em": em, **{h: s.get(h) for h in _HASHES}}


def _str_or_none(x: Any) -> str | None:
    return None if x is None else str(x)


# ---- matching runs ----------------------------------------------------------------------------
def _check_same_items(base: LmEvalRun, run: LmEvalRun, name: str) -> pd.DataFrame:
    """``run.items`` in the base run's item order; a DataError naming the first difference."""
    if set(run.tasks) != set(base.tasks):
        missing, extra = sorted(set(base.tasks) - set(run.tasks)), sorted(set(run.tasks) - set(base.tasks))
        what = "; ".join(x for x in (f"lacks {', '.join(missing)}" if missing else "",
                                     f"adds {', '.join(extra)}" if extra else "") if x)
        raise DataError(f"run {name!r} ({run.directory}) logs other tasks than the base run: {what}")
    key = ["task", "doc_id"]
    b = base.items.set_index(key)
    r = run.items.set_index(key)
    for task in base.tasks:
        bi = set(b.loc[task].index)
        ri = set(r.loc[task].index)
        if bi != ri:
            missing, extra = sorted(bi - ri, key=_doc_order), sorted(ri - bi, key=_doc_order)
            raise DataError(
                f"run {name!r} logs other doc ids for task {task!r} than the base run ({len(ri)} vs {len(bi)} "
                f"items; missing {_few(missing)}, extra {_few(extra)}): evaluate both with the same --limit / --samples")
    r = r.loc[b.index]
    for col, what in (("filter", "filter"), ("output_type", "output type"), ("metric", "metric")):
        bv, rv = b[col].astype(str).to_numpy(), r[col].astype(str).to_numpy()
        diff = bv != rv
        if col == "filter":  # a log without filter names (0.4.5) matches any name at the same rank
            diff &= ~(np.char.startswith(bv.astype(str), "#") | np.char.startswith(rv.astype(str), "#"))
        if diff.any():
            task, doc = b.index[np.flatnonzero(diff)[0]]
            raise DataError(f"run {name!r} scored task {task!r} with another {what} than the base run "
                            f"({r[col].iloc[np.flatnonzero(diff)[0]]!r} vs {b[col].iloc[np.flatnonzero(diff)[0]]!r})")
    for h in _HASHES:
        both = b[h].notna().to_numpy() & r[h].notna().to_numpy()
        diff = both & (b[h].astype(str).to_numpy() != r[h].astype(str).to_numpy())
        if diff.any():
            task, doc = b.index[np.flatnonzero(diff)[0]]
            what = {"doc_hash": "document", "prompt_hash": "prompt", "target_hash": "target"}[h]
            raise DataError(f"run {name!r} scored task {task!r} doc {doc} with another {what} than the base run "
                            f"({h} differs): evaluate every model with the same task config, num_fewshot, "
                            "chat template and seeds")
    return r.reset_index()


def _doc_order(doc: str) -> tuple[int, Any]:
    return (0, int(doc)) if re.fullmatch(r"-?\d+", doc) else (1, doc)


def _few(xs: list[str], n: int = 3) -> str:
    if not xs:
        return "none"
    return ", ".join(xs[:n]) + (f" and {len(xs) - n} more" if len(xs) > n else "")


def _run_names(afters: list[Path], names: list[str] | None) -> list[str]:
    if names is not None and len(names) != len(afters):
        raise DataError(f"{len(names)} run names for {len(afters)} after directories; give one per directory")
    out = list(names) if names is not None else [p.resolve().name for p in afters]
    for n in out:
        if not _RUN_NAME.match(n):
            raise DataError(f"run name {n!r} must start with a letter, digit or '_' and hold only those and "
                            "'.', '+', '=', '@' or '-' (name the runs with --name)")
    dup = sorted({n for n in out if out.count(n) > 1})
    if dup:
        raise DataError(f"several after directories are named {', '.join(map(repr, dup))}; "
                        "name each run with --name")
    return out


def _check_not_base(base: LmEvalRun, run: LmEvalRun, name: str) -> None:
    if run.directory.resolve() == base.directory.resolve():
        raise DataError(f"run {name!r} is the base run's own directory ({run.directory})")
    if (run.model_name is not None and run.model_name == base.model_name
            and run.model_args == base.model_args):
        raise DataError(f"run {name!r} evaluated the base model itself (model {run.model_name!r}, "
                        f"model_args {run.model_args!r}); pass the fine-tuned models' runs after the base run")


# ---- the sweep ----------------------------------------------------------------------------------
@dataclass
class LmEvalForgetting:
    """The matched runs: the upstream table (one row per kept item), each after run's long rows and record,
    the manifest, and ``skipped``: per task, the items left out for want of a gold log-likelihood."""

    upstream: pd.DataFrame
    rows: dict[str, pd.DataFrame]
    records: list[dict[str, Any]]
    manifest: dict[str, Any]
    skipped: dict[str, int] = field(default_factory=dict)


def lm_eval_forgetting(before: str | os.PathLike[str], afters: list[str | os.PathLike[str]], *,
                       names: list[str] | None = None, metric: str | None = None) -> LmEvalForgetting:
    """Read and match the base run and the after runs (everything :func:`import_lm_eval` writes)."""
    if not afters:
        raise DataError("name at least one fine-tuned model's lm-eval output directory after the base one")
    after_paths = [Path(a) for a in afters]
    run_names = _run_names(after_paths, names)
    base = read_run(before, metric=metric)
    runs = [read_run(p, metric=metric) for p in after_paths]
    seen: dict[Path, str] = {}
    matched = []
    for name, run in zip(run_names, runs, strict=True):
        _check_not_base(base, run, name)
        where = run.directory.resolve()
        if where in seen:
            raise DataError(f"runs {seen[where]!r} and {name!r} read the same directory {run.directory}")
        seen[where] = name
        matched.append(_check_same_items(base, run, name))
    ll_before = base.items["ll"].astype(float).to_numpy()
    ll_after = np.stack([r["ll"].astype(float).to_numpy() for r in matched])
    keep = np.isfinite(ll_before) & np.isfinite(ll_after).any(0)
    if not keep.any():
        raise DataError("no logged item has a gold log-likelihood in the base run and an after run: "
                        "generate_until tasks log none; evaluate loglikelihood or multiple_choice tasks")
    dropped = base.items.loc[~keep, ["task", "output_type"]]
    items = base.items[keep].reset_index(drop=True)
    matched = [r[keep].reset_index(drop=True) for r in matched]
    ids = (items["task"] + "/" + items["doc_id"]).tolist()
    if len(set(ids)) != len(ids):
        raise DataError("two items share an example id (task/doc_id); task names must differ")
    upstream = pd.DataFrame({
        "example_id": ids, "kind": INSTRUCTION,
        "prompt": items["prompt"].astype(str), "response": items["response"].astype(str),
        "answer": items["answer"].astype(str),
        "loss_before": -items["ll"].astype(float), "em_before": items["em"].astype(float),
        "category": items["task"], "lm_eval_task": items["task"], "lm_eval_doc_id": items["doc_id"],
        "lm_eval_output_type": items["output_type"], "lm_eval_filter": items["filter"],
        "lm_eval_metric": items["metric"].astype(object), "ll_before": items["ll"].astype(float),
    })
    rows, records = {}, []
    for name, run, r in zip(run_names, runs, matched, strict=True):
        rows[name] = pd.DataFrame({"example_id": ids, "loss_after": -r["ll"].astype(float).to_numpy(),
                                   "em_after": r["em"].astype(float).to_numpy(),
                                   "ll_after": r["ll"].astype(float).to_numpy()})
        f = rows[name]["loss_after"].to_numpy() - upstream["loss_before"].to_numpy()
        records.append({"run_id": name, "task": name, "source": "lm-eval",
                        "lm_eval_dir": str(run.directory.resolve()), "lm_eval_model": run.model_name,
                        "lm_eval_model_args": run.model_args, "lm_eval_version": run.lm_eval_version,
                        "mean_forgetting": float(np.nanmean(f)) if np.isfinite(f).any() else float("nan")})
    skipped = {str(t): int(n) for t, n in dropped.groupby("task").size().items()}
    manifest = {
        "source": "lm-eval", "status": "complete",
        "quantity": "loss increase of the gold continuation, total nats per item (-loglikelihood; "
                    "lm-eval logs no token counts)",
        "lm_eval_formats": LM_EVAL_FORMATS,
        "lm_eval_skipped": skipped,
        "lm_eval": {"before": base.describe(), "afters": {n: r.describe() for n, r in zip(run_names, runs, strict=True)}},
    }
    return LmEvalForgetting(upstream=upstream, rows=rows, records=records, manifest=manifest, skipped=skipped)


def import_lm_eval(before: str | os.PathLike[str], afters: list[str | os.PathLike[str]],
                   out: str | os.PathLike[str], *, names: list[str] | None = None,
                   metric: str | None = None) -> ForgettingMatrix:
    """Write the per-item forgetting of ``afters`` against ``before`` (lm-eval output directories) as a
    sweep directory at ``out`` and return its matrix (rows: the after runs, columns: ``task/doc_id``).

    ``out`` must be absent or empty; every input check runs before anything is written.
    """
    store = SweepStore(out)
    if store.path.exists() and (not store.path.is_dir() or any(store.path.iterdir())):
        raise DataError(f"refusing to write into {store.path}: it exists and is not an empty directory")
    data = lm_eval_forgetting(before, afters, names=names, metric=metric)
    store.path.mkdir(parents=True, exist_ok=True)
    store.write_upstream(data.upstream)
    for record in data.records:
        store.write_run(record, data.rows[record["run_id"]])
    store.consolidate([r["run_id"] for r in data.records])
    store.write_manifest(data.manifest)
    return store.load_matrix()


__all__ = ["DEFAULT_METRICS", "LM_EVAL_FORMATS", "LmEvalForgetting", "LmEvalRun", "find_sample_files",
           "import_lm_eval", "lm_eval_forgetting", "read_run"]

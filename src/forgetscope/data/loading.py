"""Load upstream examples and fine-tuning tasks from their sources.

A source (:mod:`forgetscope.data.sources`) is a file (JSONL, JSON, Parquet, CSV/TSV), a ``save_to_disk``
directory or an ``hf:`` hub id, read into records by :mod:`forgetscope.data.records` and turned into
examples by :mod:`forgetscope.data.examples` (the schemas and TRL's formats are described there); or, for a
task, ``demo:NAME``, a task of the shipped demo suite (:mod:`forgetscope.data.demo`). This module keeps
subsets and splits tasks into train and held-out.

Every problem a user can cause raises :class:`~forgetscope.errors.DataError` naming the file,
and where it applies the row and field.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from forgetscope.data.demo import demo_task
from forgetscope.data.examples import Schema, check_unique_ids, examples_from_records, subsample
from forgetscope.data.records import read_records, source_sha256
from forgetscope.data.sources import HUB_PREFIX, parse_source
from forgetscope.data.types import Example, Task
from forgetscope.errors import DataError

# read_records and source_sha256 live in forgetscope.data.records, examples_from_records and subsample in
# forgetscope.data.examples, HUB_PREFIX in forgetscope.data.sources; they stay importable from here
__all__ = ["HUB_PREFIX", "examples_from_records", "load_examples", "load_task", "read_records", "source_sha256",
           "split_examples", "subsample"]


def load_examples(
    path: str | Path,
    *,
    name: str | None = None,
    limit: int | None = None,
    seed: int = 0,
    schema: Schema = "auto",
    text_field: str = "text",
    prompt_field: str = "prompt",
    response_field: str = "response",
    answer_field: str | None = "answer",
    id_field: str | None = "id",
    split: str | None = None,
) -> list[Example]:
    """Load examples from a JSONL/JSON/Parquet/CSV/TSV file, a ``save_to_disk`` directory, or a Hugging
    Face hub dataset given as ``hf:NAME`` / ``hf:NAME:CONFIG`` (online, or from the local datasets cache).

    ``limit`` keeps a random subset of that many rows (chosen with ``seed``, original order kept).
    ``name`` prefixes generated ids (default: the file's stem or the dataset's name). ``split`` picks a
    split of a saved ``DatasetDict`` or of a hub dataset (default ``train``).
    """
    source = parse_source(path)
    hub = source.kind == "hub"
    p: str | Path = path if hub else Path(path).expanduser()
    default = str(source.name).split(":")[0].split("/")[-1] if hub else (
        p.name if p.is_dir() else p.stem)  # type: ignore[union-attr]
    name = name or default or "data"
    rows = read_records(p, split=split)
    examples = examples_from_records(
        rows, name=name, source=str(p), schema=schema, text_field=text_field,
        prompt_field=prompt_field, response_field=response_field, answer_field=answer_field,
        id_field=id_field,
    )
    return subsample(examples, limit, seed, f"examples of {p}")


# --------------------------------------------------------------------------------------------
# tasks
# --------------------------------------------------------------------------------------------

def split_examples(
    examples: list[Example],
    *,
    heldout_fraction: float | None = 0.2,
    heldout_size: int | None = None,
    seed: int = 0,
    what: str = "data",
) -> tuple[list[Example], list[Example]]:
    """Deterministically split into (train, heldout); both keep the input order.

    ``heldout_size`` (a count) wins over ``heldout_fraction``; the fraction is rounded and at
    least one example goes to each side.
    """
    n = len(examples)
    if n < 2:
        raise DataError(f"{what}: need at least 2 examples to split into train and held-out, got {n}")
    if heldout_size is not None:
        if not isinstance(heldout_size, int) or heldout_size < 1 or heldout_size >= n:
            raise DataError(f"{what}: heldout_size must be an integer in [1, {n - 1}], got {heldout_size!r}")
        k = heldout_size
    else:
        if heldout_fraction is None or not (0.0 < float(heldout_fraction) < 1.0):
            raise DataError(f"{what}: heldout_fraction must be in (0, 1), got {heldout_fraction!r}")
        k = min(max(1, round(n * float(heldout_fraction))), n - 1)
    order = list(range(n))
    random.Random(seed).shuffle(order)
    held = set(order[:k])
    train = [e for i, e in enumerate(examples) if i not in held]
    heldout = [e for i, e in enumerate(examples) if i in held]
    return train, heldout


_FIELD_KEYS = ("schema", "text_field", "prompt_field", "response_field", "answer_field", "id_field", "split")
_SPEC_KEYS = {"path", "heldout_path", "description", "family", "limit", "n_train", "heldout_fraction",
              "heldout_size", "seed", "name", *_FIELD_KEYS}


def load_task(
    name: str,
    path_or_spec: str | Path | Mapping[str, Any],
    *,
    heldout_fraction: float | None = 0.2,
    heldout_size: int | None = None,
    seed: int = 0,
    heldout_path: str | Path | None = None,
    n_train: int | None = None,
    limit: int | None = None,
    description: str = "",
    family: str = "",
    **field_mapping: Any,
) -> Task:
    """Load a fine-tuning task.

    ``path_or_spec`` is a data path, ``"demo:<name>"`` for a task of the shipped demo suite, or a
    mapping with ``path`` and optionally ``heldout_path``, ``description``, ``limit``, ``n_train``,
    ``heldout_fraction``, ``heldout_size``, ``seed`` and the column mapping keys
    (``text_field`` ...); keys in the mapping override the keyword arguments.

    Without ``heldout_path`` the rows are split deterministically (``seed``) into train and
    held-out: ``heldout_size`` examples, else ``heldout_fraction`` of them. ``limit`` subsamples
    rows before the split; ``n_train`` subsamples the training side after it (so the held-out set
    does not depend on ``n_train``). Ids must be unique across both sides. ``family`` (one of
    :data:`~forgetscope.data.types.FAMILIES`; empty: by format) is recorded with every run of the task.
    """
    unknown = set(field_mapping) - set(_FIELD_KEYS)
    if unknown:
        raise TypeError(f"load_task() got unexpected keyword arguments {sorted(unknown)}")
    opts: dict[str, Any] = dict(field_mapping)
    if isinstance(path_or_spec, Mapping):
        spec = dict(path_or_spec)
        bad = set(spec) - _SPEC_KEYS
        if bad:
            raise DataError(
                f"task {name!r}: unknown key(s) {sorted(bad)} in spec; allowed: {sorted(_SPEC_KEYS)}"
            )
        if "path" not in spec:
            raise DataError(f"task {name!r}: spec has no 'path'")
        path = spec.pop("path")
        heldout_path = spec.pop("heldout_path", heldout_path)
        description = spec.pop("description", description)
        family = spec.pop("family", family)
        limit = spec.pop("limit", limit)
        n_train = spec.pop("n_train", n_train)
        seed = spec.pop("seed", seed)
        spec.pop("name", None)
        if "heldout_size" in spec or "heldout_fraction" in spec:
            heldout_size = spec.pop("heldout_size", None)
            default_fraction = heldout_fraction if heldout_size is None else None
            heldout_fraction = spec.pop("heldout_fraction", default_fraction)
        opts.update(spec)
    else:
        path = path_or_spec

    source = parse_source(path)
    if source.is_demo_task:
        task = demo_task(str(source.name), n_train=n_train, seed=seed)
        if name != task.name or description or family:
            task = Task(name, task.train, task.heldout, description or task.description,
                        family=family or task.family)
        return task

    what = f"task {name!r} ({path})"
    examples = load_examples(path, name=name, seed=seed, limit=limit, **opts)
    if heldout_path is not None:
        train = examples
        heldout = load_examples(heldout_path, name=f"{name}-heldout", **opts)
    else:
        train, heldout = split_examples(examples, heldout_fraction=heldout_fraction,
                                        heldout_size=heldout_size, seed=seed, what=what)
    train = subsample(train, n_train, seed, f"training examples (n_train) of {what} after the held-out split")
    check_unique_ids(train + heldout, what)
    return Task(name=name, train=train, heldout=heldout, description=description, family=family)

"""The shipped demo suite: small real corpora that run offline on a laptop CPU.

Files live in ``forgetscope/data/demo/`` (read with :mod:`importlib.resources`); they are built by
``scripts/build_demo_data.py`` from Debian packages and the CPython source, and ``SOURCES.md``
there records source, license and method. Contents:

* ``upstream.jsonl``: 400 short plain-text examples of general English (fortunes, WordNet example
  sentences and glosses, KJV Gospels/Acts, element descriptions, Jargon File entries), none of
  which appears in any task;
* ``upstream_continuations.jsonl``: the same 400 texts cut to their first 8 tokens and continued for
  40 tokens by the default base model's greedy decoding (``scripts/build_demo_continuations.py``): the
  default demo's plain-text set, because what the base model itself would write is what fine-tuning
  can make it forget;
* ``upstream_instruct.jsonl``: 120 prompt/response pairs with a short gold ``answer`` (chemical
  symbols, WordNet antonyms) for exact match;
* ten tasks (``tasks.yaml`` indexes them), each 150 train + 30 held-out examples of at most 64
  tokens: ``bible``, ``code``, ``definitions``, ``jargon``, ``elements``, ``quotes``,
  ``python_docs``, ``poetry``, ``classification`` (derived labels) and ``arithmetic_synthetic``
  (generated from templates; the only non-collected text).
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any

from forgetscope.data.loading import examples_from_records, subsample
from forgetscope.data.types import Example, Task
from forgetscope.errors import DataError

_PKG = "forgetscope.data"
_DIR = "demo"


def _read_text(filename: str) -> str:
    try:
        return resources.files(_PKG).joinpath(_DIR, filename).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(
            f"demo data file {filename!r} is missing from the installed package "
            "(rebuild it with scripts/build_demo_data.py or reinstall forgetscope)"
        ) from None


@functools.cache
def _records(filename: str) -> tuple[dict, ...]:
    rows = [json.loads(line) for line in _read_text(filename).splitlines() if line.strip()]
    return tuple(rows)


@functools.lru_cache(maxsize=1)
def _index() -> dict[str, dict[str, Any]]:
    import yaml

    data = yaml.safe_load(_read_text("tasks.yaml"))
    return {t["name"]: t for t in data["tasks"]}


def _examples(filename: str, name: str) -> list[Example]:
    return examples_from_records(_records(filename), name=name, source=f"demo/{filename}")


def demo_upstream(n: int | None = None, seed: int = 0, targets: str = "text") -> list[Example]:
    """Upstream plain-text examples (all 400 by default; ``n`` picks a seeded random subset).

    ``targets="base_continuations"``: the same texts cut to their first tokens and continued greedily by
    the default base model (``upstream_continuations.jsonl``), the demo's default LM set.
    """
    name = upstream_file(targets)
    return subsample(_examples(name, name.removesuffix(".jsonl")), n, seed, "demo upstream")


def upstream_file(targets: str = "text") -> str:
    """The shipped file of the demo's plain-text upstream set for ``targets``."""
    files = {"text": UPSTREAM_FILE, "base_continuations": UPSTREAM_CONTINUATIONS_FILE}
    if targets not in files:
        raise DataError(f"unknown demo lm_targets {targets!r}; choose from {', '.join(files)}")
    return files[targets]


def demo_upstream_instruct(n: int | None = None, seed: int = 0) -> list[Example]:
    """Upstream prompt/response pairs with short gold answers for exact match (120 by default)."""
    return subsample(_examples(UPSTREAM_INSTRUCT_FILE, "upstream_instruct"), n, seed,
                   "demo upstream_instruct")


UPSTREAM_FILE = "upstream.jsonl"
UPSTREAM_INSTRUCT_FILE = "upstream_instruct.jsonl"
UPSTREAM_CONTINUATIONS_FILE = "upstream_continuations.jsonl"


def demo_files_sha256(filenames: list[str]) -> str:
    """Content hash of shipped demo files (what a sweep over the demo suite measured)."""
    import hashlib

    h = hashlib.sha256()
    for name in filenames:
        h.update(f"{name}\0".encode())
        h.update(_read_text(name).encode("utf-8"))
    return h.hexdigest()


def demo_task_file(name: str) -> str:
    """The shipped file of a demo task (``task_<name>.jsonl``)."""
    return demo_task_info(name)["file"]


def demo_task_names() -> list[str]:
    """Names of the shipped demo tasks, in index order."""
    return list(_index())


def demo_task_info(name: str) -> dict[str, Any]:
    """Index entry of a task: description, source, license, schema, synthetic/derived flags, sizes."""
    idx = _index()
    if name not in idx:
        raise DataError(f"unknown demo task {name!r}; available: {', '.join(idx)}")
    return dict(idx[name])


def demo_task(name: str, n_train: int | None = None, seed: int = 0,
              n_heldout: int | None = None) -> Task:
    """One demo task (150 train / 30 held-out); ``n_train``/``n_heldout`` take seeded subsets."""
    info = demo_task_info(name)
    examples = _examples(info["file"], name)
    train = [e for e in examples if e.meta.get("split") == "train"]
    heldout = [e for e in examples if e.meta.get("split") == "heldout"]
    train = subsample(train, n_train, seed, f"demo task {name!r}")
    heldout = subsample(heldout, n_heldout, seed, f"demo task {name!r}")
    return Task(name=name, train=train, heldout=heldout, description=info["description"])


def demo_tasks(names: list[str] | None = None, n_train: int | None = None, seed: int = 0,
               n_heldout: int | None = None) -> list[Task]:
    """Several demo tasks (all ten by default), in the order given."""
    names = demo_task_names() if names is None else list(names)
    return [demo_task(n, n_train=n_train, seed=seed, n_heldout=n_heldout) for n in names]

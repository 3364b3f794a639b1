"""The shipped demo suite: small real corpora that run offline on a laptop CPU.

Files live in ``forgetscope/data/demo/`` (read with :mod:`importlib.resources`); they are built by
``scripts/build_demo_data.py`` from Debian packages and the CPython source, and ``SOURCES.md``
there records source, license and method. Contents:

* ``upstream_human.jsonl``: the default plain-text (``lm``) set, human-written text of the kinds small
  LMs are pretrained on (reference and tutorial prose from the Linux man pages and the Perl
  documentation, The Devil's Dictionary, Tcl and Perl source code), from sources no task uses
  (``scripts/build_upstream_text.py``; ``lm_targets: human``);
* ``upstream.jsonl``: the original 400 short plain-text examples of general English (fortunes, WordNet
  example sentences and glosses, KJV Gospels/Acts, element descriptions, Jargon File entries), none of
  which appears in any task, though several come from the same packages as tasks (``lm_targets: text``);
* ``upstream_continuations.jsonl``: those 400 texts cut to their first 8 tokens and continued for 40
  tokens by the default base model's *greedy* decoding (``scripts/build_demo_continuations.py``;
  ``lm_targets: base_continuations``). A biased choice, kept for reproducing earlier results: the argmax
  continuation is what almost any weight change makes less likely, so forgetting is positive by selection;
* ``upstream_samples.jsonl``: the human texts' first 8 tokens continued for 40 tokens by the default base
  model's ancestral sampling at temperature 1, seeded (``lm_targets: base_samples``): self-generated
  without the argmax bias; mean F over samples estimates KL(base ‖ fine-tuned) per token;
* ``upstream_instruct.jsonl``: 120 prompt/response pairs with a short gold ``answer`` (chemical
  symbols, WordNet antonyms) for exact match; ``upstream_instruct_samples.jsonl``: the same prompts with
  the default base model's own temperature-1 answers as responses (``instruct_targets: base_samples``), so
  the loss is not dominated by the format of terse gold strings;
* the original ten tasks (``tasks.yaml`` indexes them), each 150 train + 30 held-out examples of at most 64
  tokens: ``bible``, ``code``, ``definitions``, ``jargon``, ``elements``, ``quotes``,
  ``python_docs``, ``poetry``, ``classification`` (derived labels) and ``arithmetic_synthetic``
  (generated from templates); six are plain text (family ``plain_text``), four short prompt/response
  pairs (family ``instruction``);
* the instruction-format family (``tasks_instruction.yaml``, ``scripts/build_instruction_tasks.py``):
  templated prompt -> response tasks in the manner of FLAN (short answers, classification,
  transformation, extraction, code reading, multi-sentence answers), each recording its family.
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any

from forgetscope.data.examples import examples_from_records, subsample
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


#: The task indexes of the shipped suite, in the order their tasks are listed.
INDEX_FILES = ("tasks.yaml", "tasks_instruction.yaml")


@functools.lru_cache(maxsize=1)
def _index() -> dict[str, dict[str, Any]]:
    import yaml

    from forgetscope.data.types import FAMILIES

    out: dict[str, dict[str, Any]] = {}
    for filename in INDEX_FILES:
        for t in yaml.safe_load(_read_text(filename))["tasks"]:
            family = t.setdefault("family", "instruction" if t["schema"] == "pair" else "plain_text")
            if family not in FAMILIES:
                raise DataError(f"demo task {t['name']!r} in {filename} has unknown family {family!r}; "
                                f"use one of {', '.join(FAMILIES)}")
            out[t["name"]] = t
    return out


def _examples(filename: str, name: str) -> list[Example]:
    return examples_from_records(_records(filename), name=name, source=f"demo/{filename}")


def demo_upstream(n: int | None = None, seed: int = 0, targets: str = "human") -> list[Example]:
    """Upstream plain-text examples of one shipped set (all of it by default; ``n`` picks a seeded subset).

    ``targets`` names the set (:data:`LM_TARGETS`): ``human`` (the default; human-written,
    pretraining-like text), ``text`` (the original 400 demo texts), ``base_continuations`` (the default
    base model's greedy continuations of those: biased towards forgetting by construction),
    ``base_samples`` (its temperature-1 samples continuing the human texts: mean F estimates
    KL(base ‖ fine-tuned) per token).
    """
    name = upstream_file(targets)
    return subsample(_examples(name, name.removesuffix(".jsonl")), n, seed,
                     f"plain texts (upstream.n) of the demo upstream set {name}")


def upstream_file(targets: str = "text") -> str:
    """The shipped file of the demo's plain-text upstream set for ``targets``."""
    if targets not in LM_TARGETS:
        raise DataError(f"unknown demo lm_targets {targets!r}; choose from {', '.join(LM_TARGETS)}")
    return LM_TARGETS[targets]


def demo_upstream_instruct(n: int | None = None, seed: int = 0, targets: str = "gold") -> list[Example]:
    """Upstream prompt/response pairs with short gold answers for exact match (120 by default).

    ``targets`` (:data:`INSTRUCT_TARGETS`) says which response the loss is measured on: ``gold`` (the terse
    gold answer) or ``base_samples`` (the default base model's own temperature-1 answer in its chat format;
    the gold answer stays the exact-match target). The same ``n``/``seed`` draw the same prompts.
    """
    if targets not in INSTRUCT_TARGETS:
        raise DataError(f"unknown demo instruct_targets {targets!r}; choose from {', '.join(INSTRUCT_TARGETS)}")
    name = INSTRUCT_TARGETS[targets]
    return subsample(_examples(name, "upstream_instruct"), n, seed,
                     "instruction pairs (upstream.n_instruct) of the demo set")


UPSTREAM_FILE = "upstream.jsonl"
UPSTREAM_HUMAN_FILE = "upstream_human.jsonl"
UPSTREAM_INSTRUCT_FILE = "upstream_instruct.jsonl"
UPSTREAM_CONTINUATIONS_FILE = "upstream_continuations.jsonl"
#: The shipped plain-text upstream sets, by the name ``upstream.lm_targets`` gives them.
UPSTREAM_SAMPLES_FILE = "upstream_samples.jsonl"
UPSTREAM_INSTRUCT_SAMPLES_FILE = "upstream_instruct_samples.jsonl"
#: The shipped instruction upstream sets, by the name ``upstream.instruct_targets`` gives them.
INSTRUCT_TARGETS = {"gold": UPSTREAM_INSTRUCT_FILE, "base_samples": UPSTREAM_INSTRUCT_SAMPLES_FILE}
LM_TARGETS = {"human": UPSTREAM_HUMAN_FILE, "text": UPSTREAM_FILE,
              "base_continuations": UPSTREAM_CONTINUATIONS_FILE, "base_samples": UPSTREAM_SAMPLES_FILE}


def demo_upstream_metadata() -> list[dict[str, str]]:
    """``id``, ``category`` and ``source`` of every record of the shipped upstream sets.

    Why: a sweep's upstream table stores ids, texts and losses, not where each text came from; this is
    the side information a predictor can join on by id. A generated record (a base-model continuation or
    sample, whose ``source`` is the id of the text it continues) takes that text's ``category``, so the
    category says what the text is about, not how it was made.
    """
    files = dict.fromkeys([*LM_TARGETS.values(), *INSTRUCT_TARGETS.values()])
    rows = [r for name in files for r in _records(name)]
    category = {str(r["id"]): str(r.get("category", "")) for r in rows}
    out = []
    for r in rows:
        source = str(r.get("source", ""))
        out.append({"id": str(r["id"]), "category": category.get(source, category[str(r["id"])]),
                    "source": source})
    return out


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


def demo_task_names(family: str | None = None) -> list[str]:
    """Names of the shipped demo tasks, in index order (those of one ``family`` when given)."""
    return [n for n, t in _index().items() if family is None or t["family"] == family]


def demo_task_info(name: str) -> dict[str, Any]:
    """Index entry of a task: description, family, source, license, schema, synthetic/derived flags, sizes."""
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
    train = subsample(train, n_train, seed, f"training examples (n_train) of demo task {name!r}")
    heldout = subsample(heldout, n_heldout, seed, f"held-out examples of demo task {name!r}")
    return Task(name=name, train=train, heldout=heldout, description=info["description"], family=info["family"])


def demo_tasks(names: list[str] | None = None, n_train: int | None = None, seed: int = 0,
               n_heldout: int | None = None) -> list[Task]:
    """Several demo tasks (every shipped task by default), in the order given."""
    names = demo_task_names() if names is None else list(names)
    return [demo_task(n, n_train=n_train, seed=seed, n_heldout=n_heldout) for n in names]

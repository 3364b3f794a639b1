"""Control tasks: a task's training data rearranged so that a run learns only part of what the task teaches.

``shuffled_responses`` (the *format-only* control) keeps every training prompt and pairs it with another
training example's response of the same task, by a derangement seeded from the task's name. The run still
learns the form of the answers (chat format, answer length and vocabulary, the end-of-turn token) but not
which answer goes with which prompt. The held-out pairs stay real, so the run's held-out task loss shows
that the content was not learned. If the format-only row of a forgetting matrix reproduces the task's row,
the task's forgetting is a format shift.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import replace

from forgetscope.data.types import Task
from forgetscope.errors import DataError

#: The controls a task config's ``control`` may name.
CONTROLS: tuple[str, ...] = ("shuffled_responses",)


def derangement(n: int, seed: int) -> list[int]:
    """A seeded permutation ``p`` of ``range(n)`` with ``p[i] != i`` for every ``i`` when ``n >= 2``.

    Sattolo's shuffle draws a uniformly random cyclic permutation: a single cycle through all ``n``
    positions, so no position maps to itself.
    """
    order = list(range(n))
    rng = random.Random(seed)
    for i in range(n - 1, 0, -1):
        j = rng.randrange(i)  # j < i: never leaves i in place
        order[i], order[j] = order[j], order[i]
    return order


def control_seed(name: str) -> int:
    """A stable seed from a task's name (the same config gives the same pairs on every machine)."""
    return int(hashlib.sha256(f"control:{name}".encode()).hexdigest()[:16], 16)


def shuffled_responses(task: Task) -> Task:
    """The format-only copy of a prompt/response task: each training prompt gets another training example's
    response (and its answer); ``meta["response_from"]`` names the example it came from. Held-out pairs are
    kept as they are. A task with plain-text examples is a DataError."""
    if not all(e.is_pair for e in task.train + task.heldout):
        raise DataError(f"task {task.name!r}: control: shuffled_responses needs prompt/response examples, "
                        "but this task has plain text")
    if len(task.train) < 2:
        raise DataError(f"task {task.name!r}: control: shuffled_responses needs at least 2 training examples "
                        "(one example can only keep its own response)")
    donors = derangement(len(task.train), control_seed(task.name))
    train = [replace(e, response=task.train[k].response, answer=task.train[k].answer,
                     meta={**e.meta, "response_from": task.train[k].example_id})
             for e, k in zip(task.train, donors, strict=True)]
    return Task(task.name, train, task.heldout, task.description, family=task.family,
                control="shuffled_responses")


def apply_control(task: Task, control: str | None) -> Task:
    """``task`` rearranged by ``control`` (one of :data:`CONTROLS`; None: the task as it is)."""
    if control is None:
        return task
    if control == "shuffled_responses":
        return shuffled_responses(task)
    raise DataError(f"task {task.name!r}: unknown control {control!r}; use one of {', '.join(CONTROLS)}")

"""Where examples come from, read once from the string a config or a caller gives.

A data source is written as one string:

* ``demo``: the shipped demo suite itself (an upstream set of ``forgetscope.data.demo``);
* ``demo:NAME``: one task of the shipped demo suite;
* ``hf:NAME`` or ``hf:NAME:CONFIG``: a Hugging Face hub dataset;
* anything else: a file or a ``save_to_disk`` directory.

A task entry without a ``source`` reads the demo task of its own name (:func:`task_source`). This module
only parses; loading is :mod:`forgetscope.data.loading`'s job. It imports nothing heavy, so the config
layer can use it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from forgetscope.errors import DataError

DEMO = "demo"
DEMO_PREFIX = "demo:"
HUB_PREFIX = "hf:"

SourceKind = Literal["demo", "hub", "path"]

__all__ = ["DEMO", "DEMO_PREFIX", "HUB_PREFIX", "DataSource", "SourceKind", "check_data_source", "parse_source",
           "task_source"]


@dataclass(frozen=True)
class DataSource:
    """One parsed data source. ``name`` is a demo task's name (None: the demo suite itself), a hub dataset's
    ``NAME[:CONFIG]``, or the path as given. Equal sources compare equal, whichever way they were written."""

    kind: SourceKind
    name: str | None = None

    @property
    def spec(self) -> str:
        """The source written as a string again (``demo:<name>`` for a demo task)."""
        if self.kind == "demo":
            return DEMO if self.name is None else f"{DEMO_PREFIX}{self.name}"
        if self.kind == "hub":
            return f"{HUB_PREFIX}{self.name}"
        return str(self.name)

    @property
    def is_demo_task(self) -> bool:
        """One task of the shipped demo suite (``demo:NAME``)."""
        return self.kind == "demo" and self.name is not None

    @property
    def is_demo_suite(self) -> bool:
        """The shipped demo suite itself (``demo``: the demo upstream sets)."""
        return self.kind == "demo" and self.name is None

    def __str__(self) -> str:
        return self.spec


def parse_source(spec: str | os.PathLike[str]) -> DataSource:
    """The :class:`DataSource` a string names; a path object is always a path."""
    if not isinstance(spec, str):
        return DataSource("path", os.fspath(spec))
    if spec == DEMO:
        return DataSource("demo")
    if spec.startswith(DEMO_PREFIX):
        return DataSource("demo", spec[len(DEMO_PREFIX):])
    if spec.startswith(HUB_PREFIX):
        return DataSource("hub", spec[len(HUB_PREFIX):])
    return DataSource("path", spec)


class _TaskEntry(Protocol):
    name: str
    source: str | None


def task_source(task: _TaskEntry) -> DataSource:
    """What data a task entry reads: its ``source``, or the demo task of its name when it names none."""
    return DataSource("demo", task.name) if task.source is None else parse_source(task.source)


def check_data_source(source: str | os.PathLike[str] | None, what: str) -> None:
    """A one-line DataError when ``source`` is a local path that does not exist (the demo suite, a demo task
    and a hub dataset are not checked here); None is nothing to check."""
    if source is None or parse_source(source).kind != "path":
        return
    if not Path(source).expanduser().exists():
        raise DataError(f"{what} not found: {source}")


"""Data: example/task types, where data comes from (``sources``), file readers (``records``), records into
examples (``examples``), example and task loaders (``loading``) and the shipped demo suite
(``forgetscope.data``)."""

from forgetscope.data.demo import (
    demo_task,
    demo_task_info,
    demo_task_names,
    demo_tasks,
    demo_upstream,
    demo_upstream_instruct,
)
from forgetscope.data.loading import (
    examples_from_records,
    load_examples,
    load_task,
    split_examples,
)
from forgetscope.data.records import read_records
from forgetscope.data.types import KINDS, Example, Task, check_kind

__all__ = [
    "KINDS",
    "Example",
    "Task",
    "check_kind",
    "demo_task",
    "demo_task_info",
    "demo_task_names",
    "demo_tasks",
    "demo_upstream",
    "demo_upstream_instruct",
    "examples_from_records",
    "load_examples",
    "load_task",
    "read_records",
    "split_examples",
]

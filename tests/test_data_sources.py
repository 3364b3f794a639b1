"""One parser for where data comes from: the strings a config or a caller writes, and a task entry's source."""

from __future__ import annotations

from pathlib import Path

import pytest

from forgetscope.config import TaskConfig
from forgetscope.data.sources import DataSource, parse_source, task_source


@pytest.mark.parametrize(("spec", "kind", "name"), [
    ("demo", "demo", None),
    ("demo:code", "demo", "code"),
    ("hf:org/corpus:en", "hub", "org/corpus:en"),
    ("data/tasks.jsonl", "path", "data/tasks.jsonl"),
    ("demo_notes.jsonl", "path", "demo_notes.jsonl"),  # only the exact prefix names the demo suite
])
def test_each_written_form_parses_to_its_kind_and_back(spec, kind, name):
    source = parse_source(spec)
    assert (source.kind, source.name) == (kind, name)
    assert source.spec == str(source) == spec


def test_a_path_object_is_always_a_path():
    assert parse_source(Path("demo:code")) == DataSource("path", "demo:code")


def test_demo_suite_and_demo_task_are_told_apart():
    suite, task = parse_source("demo"), parse_source("demo:code")
    assert suite.is_demo_suite and not suite.is_demo_task
    assert task.is_demo_task and not task.is_demo_suite
    assert not parse_source("hf:x").is_demo_task and not parse_source("x.jsonl").is_demo_suite


def test_a_task_named_alone_reads_the_demo_task_of_its_name_as_demo_name_does():
    alone = task_source(TaskConfig(name="code"))
    assert alone.spec == "demo:code" and alone.is_demo_task
    assert task_source(TaskConfig(name="code_copy", source="demo:code")) == alone
    assert task_source(TaskConfig(name="mine", source="hf:org/x")) == DataSource("hub", "org/x")


def test_demo_targets_apply_to_the_demo_upstream_set_only(tmp_path):
    """One rule, for sweeps and for measuring one's own fine-tunes: lm_targets/instruct_targets pick among the
    shipped demo sets, so naming them with another source is refused, naming the source."""
    from forgetscope.config import SourceConfig, parse_config
    from forgetscope.errors import ConfigError

    SourceConfig(source="demo", lm_targets="human").check_demo_targets()  # the demo suite: accepted
    data = tmp_path / "up.jsonl"
    data.write_text('{"text": "a b c"}\n')
    with pytest.raises(ValueError, match="do not apply to source"):
        SourceConfig(source=str(data), lm_targets="text").check_demo_targets()
    with pytest.raises(ConfigError, match="do not apply to source"):
        parse_config({"tasks": ["code"], "upstream": {"source": str(data), "lm_targets": "text"}})

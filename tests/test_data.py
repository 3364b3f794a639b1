"""Tests of forgetscope.data: file loaders, schema mapping, task splits, errors, demo suite."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest

from forgetscope.data import (
    Example,
    Task,
    demo_task,
    demo_task_info,
    demo_task_names,
    demo_tasks,
    demo_upstream,
    demo_upstream_instruct,
    load_examples,
    load_task,
)
from forgetscope.errors import DataError

TEXT_ROWS = [{"text": f"Sentence number {i} about a topic."} for i in range(20)]
PAIR_ROWS = [{"id": f"q{i}", "prompt": f"Q: {i} + 1?\nA:", "response": f" {i + 1}", "answer": str(i + 1)}
             for i in range(10)]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------------
# formats
# ------------------------------------------------------------------------------------------

def test_jsonl_text_generates_ids_from_name(tmp_path):
    p = write_jsonl(tmp_path / "wiki.jsonl", TEXT_ROWS)
    ex = load_examples(p)
    assert len(ex) == 20 and all(isinstance(e, Example) and not e.is_pair for e in ex)
    assert ex[0].example_id == "wiki-00000" and ex[19].example_id == "wiki-00019"
    assert ex[3].text == "Sentence number 3 about a topic."
    assert load_examples(p, name="up")[0].example_id == "up-00000"


def test_jsonl_pairs_with_ids_and_answers(tmp_path):
    p = write_jsonl(tmp_path / "qa.jsonl", PAIR_ROWS)
    ex = load_examples(p)
    assert [e.example_id for e in ex] == [f"q{i}" for i in range(10)]
    assert ex[2].is_pair and ex[2].prompt == "Q: 2 + 1?\nA:"
    assert ex[2].response == " 3" and ex[2].answer == "3"


def test_json_array(tmp_path):
    p = tmp_path / "a.json"
    p.write_text(json.dumps(TEXT_ROWS[:5]))
    assert len(load_examples(p)) == 5


def test_parquet(tmp_path):
    p = tmp_path / "d.parquet"
    pd.DataFrame(PAIR_ROWS).to_parquet(p)
    ex = load_examples(p)
    assert len(ex) == 10 and ex[4].answer == "5" and ex[4].example_id == "q4"


def test_csv_keeps_na_text_and_extra_columns_in_meta(tmp_path):
    p = tmp_path / "d.csv"
    df = pd.DataFrame({"text": ["NA", "null", "a, quoted \"x\" line"], "topic": ["t1", "t2", "t3"]})
    df.to_csv(p, index=False)
    ex = load_examples(p)
    assert [e.text for e in ex] == ["NA", "null", 'a, quoted "x" line']
    assert ex[1].meta["topic"] == "t2" and ex[1].meta["row"] == 1


def test_hf_datasets_dir_and_dict(tmp_path):
    datasets = pytest.importorskip("datasets")
    d = tmp_path / "ds"
    datasets.Dataset.from_list(PAIR_ROWS).save_to_disk(str(d))
    ex = load_examples(d)
    assert len(ex) == 10 and ex[0].example_id == "q0" and ex[0].answer == "1"

    dd = tmp_path / "dd"
    datasets.DatasetDict({
        "train": datasets.Dataset.from_list(TEXT_ROWS[:6]),
        "test": datasets.Dataset.from_list(TEXT_ROWS[6:9]),
    }).save_to_disk(str(dd))
    assert len(load_examples(dd)) == 6  # "train" by default
    test = load_examples(dd, split="test")
    assert [e.text for e in test] == [r["text"] for r in TEXT_ROWS[6:9]]
    with pytest.raises(DataError, match="no split 'dev'"):
        load_examples(dd, split="dev")


# ------------------------------------------------------------------------------------------
# schema mapping, limit
# ------------------------------------------------------------------------------------------

def test_field_mapping(tmp_path):
    rows = [{"uid": f"u{i}", "question": f"q{i}?", "reply": f" r{i}", "gold": f"r{i}"} for i in range(4)]
    p = write_jsonl(tmp_path / "x.jsonl", rows)
    ex = load_examples(p, prompt_field="question", response_field="reply", answer_field="gold",
                       id_field="uid")
    assert ex[1] == Example("u1", prompt="q1?", response=" r1", answer="r1")
    assert "question" not in ex[1].meta

    rows = [{"content": f"body {i}"} for i in range(3)]
    p = write_jsonl(tmp_path / "y.jsonl", rows)
    assert load_examples(p, text_field="content")[2].text == "body 2"


def test_forced_text_schema_on_pair_columns(tmp_path):
    rows = [{"text": "plain", "prompt": "p", "response": "r"}]
    p = write_jsonl(tmp_path / "both.jsonl", rows)
    assert load_examples(p)[0].is_pair  # auto prefers prompt/response
    assert load_examples(p, schema="text")[0].text == "plain"


def test_limit_is_seeded_subset_in_file_order(tmp_path):
    p = write_jsonl(tmp_path / "w.jsonl", TEXT_ROWS)
    a = load_examples(p, limit=7, seed=1)
    b = load_examples(p, limit=7, seed=1)
    c = load_examples(p, limit=7, seed=2)
    assert a == b and a != c and len(a) == 7
    ids = [e.example_id for e in a]
    assert ids == sorted(ids)  # original order kept; ids stay the file-row ids


# ------------------------------------------------------------------------------------------
# tasks
# ------------------------------------------------------------------------------------------

def test_load_task_split_is_deterministic_and_disjoint(tmp_path):
    p = write_jsonl(tmp_path / "t.jsonl", TEXT_ROWS)
    t1 = load_task("t", p, heldout_fraction=0.25, seed=3)
    t2 = load_task("t", p, heldout_fraction=0.25, seed=3)
    t3 = load_task("t", p, heldout_fraction=0.25, seed=4)
    assert isinstance(t1, Task) and t1.name == "t"
    assert len(t1.heldout) == 5 and len(t1.train) == 15
    assert t1.train == t2.train and t1.heldout == t2.heldout
    assert t1.heldout != t3.heldout
    ids1 = {e.example_id for e in t1.train}
    assert ids1.isdisjoint(e.example_id for e in t1.heldout)
    assert ids1 | {e.example_id for e in t1.heldout} == {f"t-{i:05d}" for i in range(20)}


def test_load_task_heldout_size_n_train_and_spec(tmp_path):
    p = write_jsonl(tmp_path / "t.jsonl", TEXT_ROWS)
    t = load_task("t", p, heldout_size=4, n_train=6, seed=0, description="demo")
    assert len(t.heldout) == 4 and len(t.train) == 6 and t.description == "demo"
    # held-out set does not depend on n_train
    assert load_task("t", p, heldout_size=4, seed=0).heldout == t.heldout

    rows = [{"body": r["text"]} for r in TEXT_ROWS]
    q = write_jsonl(tmp_path / "m.jsonl", rows)
    held = write_jsonl(tmp_path / "h.jsonl", [{"body": "held out one"}, {"body": "held out two"}])
    t = load_task("m", {"path": str(q), "heldout_path": str(held), "text_field": "body", "description": "d"})
    assert len(t.train) == 20 and [e.text for e in t.heldout] == ["held out one", "held out two"]
    assert t.heldout[0].example_id == "m-heldout-00000"


def test_load_task_demo_spec():
    t = load_task("bible", "demo:bible", n_train=12)
    assert len(t.train) == 12 and len(t.heldout) == 30 and t.description


# ------------------------------------------------------------------------------------------
# errors
# ------------------------------------------------------------------------------------------

def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="not found.*nope.jsonl"):
        load_examples(tmp_path / "nope.jsonl")


def test_unknown_extension(tmp_path):
    p = tmp_path / "data.xml"
    p.write_text("<a/>")
    with pytest.raises(DataError, match="unknown file extension '.xml'"):
        load_examples(p)


def test_plain_directory_is_not_a_dataset(tmp_path):
    with pytest.raises(DataError, match="not a Hugging Face dataset"):
        load_examples(tmp_path)


@pytest.mark.parametrize("fname, content", [("e.jsonl", ""), ("e.jsonl", "\n\n"), ("e.csv", ""),
                                            ("e.json", "[]"), ("e.csv", "text\n")])
def test_empty_file(tmp_path, fname, content):
    p = tmp_path / fname
    p.write_text(content)
    with pytest.raises(DataError, match="no rows"):
        load_examples(p)


def test_empty_datasets_dir(tmp_path):
    datasets = pytest.importorskip("datasets")
    d = tmp_path / "empty"
    datasets.Dataset.from_dict({"text": []}).save_to_disk(str(d))
    with pytest.raises(DataError, match="no rows"):
        load_examples(d)


def test_row_missing_field_names_row_and_field(tmp_path):
    rows = [{"text": "ok"}, {"text": "fine"}, {"other": "x"}]
    p = write_jsonl(tmp_path / "m.jsonl", rows)
    with pytest.raises(DataError, match=r"row 2 .*'text'"):
        load_examples(p)
    rows = [{"prompt": "p", "response": "r"}, {"prompt": "p2", "response": ""}]
    p = write_jsonl(tmp_path / "r.jsonl", rows)
    with pytest.raises(DataError, match=r"row 1 \(id 'r-00001'\): missing or empty field 'response'"):
        load_examples(p)
    p = tmp_path / "c.csv"
    p.write_text("prompt,response\nq,a\nq2,\n")
    with pytest.raises(DataError, match=r"row 1 .*'response'"):
        load_examples(p)


def test_no_usable_columns_names_them(tmp_path):
    p = write_jsonl(tmp_path / "c.jsonl", [{"body": "x"}])
    with pytest.raises(DataError, match=r"no 'text' column.*body.*text_field="):
        load_examples(p)
    with pytest.raises(DataError, match="needs a column 'prompt'"):
        load_examples(p, schema="pair")


def test_duplicate_ids(tmp_path):
    rows = [{"id": "a", "text": "x"}, {"id": "b", "text": "y"}, {"id": "a", "text": "z"}]
    p = write_jsonl(tmp_path / "d.jsonl", rows)
    with pytest.raises(DataError, match="duplicate example ids.*'a'"):
        load_examples(p)


def test_bad_json_line_and_non_string_field(tmp_path):
    p = tmp_path / "b.jsonl"
    p.write_text('{"text": "ok"}\n{"text": oops}\n')
    with pytest.raises(DataError, match="line 2 is not valid JSON"):
        load_examples(p)
    p = write_jsonl(tmp_path / "n.jsonl", [{"text": ["a", "list"]}])
    with pytest.raises(DataError, match="'text' must be a string"):
        load_examples(p)


def test_bad_split_arguments(tmp_path):
    p = write_jsonl(tmp_path / "t.jsonl", TEXT_ROWS[:5])
    bad = [({"heldout_fraction": 1.5}, "heldout_fraction"), ({"heldout_size": 5}, "heldout_size"),
           ({"heldout_size": 0}, "heldout_size")]
    for kwargs, msg in bad:
        with pytest.raises(DataError, match=msg):
            load_task("t", p, **kwargs)
    one = write_jsonl(tmp_path / "one.jsonl", TEXT_ROWS[:1])
    with pytest.raises(DataError, match="at least 2"):
        load_task("one", one)
    with pytest.raises(DataError, match="unknown key"):
        load_task("t", {"path": str(p), "colour": "red"})


def test_a_bad_task_file_fails_the_cli_with_one_line(tiny_dir, tiny_data, tmp_path, capsys):
    """A data error is a user error: ``forgetscope run`` prints one line naming the row, exits 2, writes nothing."""
    import yaml
    from conftest import sweep_config_dict

    from forgetscope.cli import run_app

    bad = write_jsonl(tmp_path / "bad.jsonl", [{"text": "ok"}, {"text": "fine"}, {"other": "x"}])
    cfg = sweep_config_dict(tiny_dir, tiny_data, tmp_path / "out")
    cfg["tasks"] = [{"name": "bad", "source": str(bad)}]
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(cfg))
    assert run_app(["run", str(tmp_path / "run.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert re.search(r"^error: .*row 2 .*'text'", err)
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------
# demo suite
# ------------------------------------------------------------------------------------------

def _norm(s: str) -> str:
    return re.sub(r"[^a-z0-9]+", "", s.lower())


@pytest.mark.parametrize("targets, size", [("human", (1000, 1500)), ("text", (300, 500))])
def test_demo_upstream_size_and_determinism(targets, size):
    up = demo_upstream(targets=targets)
    assert size[0] <= len(up) <= size[1]
    assert all(not e.is_pair and e.text for e in up)
    assert len({e.example_id for e in up}) == len(up)
    assert len({_norm(e.text) for e in up}) == len(up)
    words = [len(e.text.split()) for e in up]
    assert max(words) <= 60 and sum(words) / len(words) < 40  # short: ~20-60 tokens
    categories = {e.meta["category"] for e in up}
    assert len(categories) >= 4  # a mix of sources
    sub = demo_upstream(50, seed=1, targets=targets)
    assert len(sub) == 50 and sub == demo_upstream(50, seed=1, targets=targets)
    assert sub != demo_upstream(50, seed=2, targets=targets)


def test_demo_upstream_instruct_has_short_answers():
    inst = demo_upstream_instruct()
    assert len(inst) >= 50
    assert all(e.is_pair and e.answer and e.response.strip() == e.answer for e in inst)
    assert all(len(e.answer.split()) <= 3 for e in inst)


def test_demo_tasks_are_many_distinct_and_nonempty():
    names = demo_task_names()
    assert len(names) >= 8 and len(set(names)) == len(names)
    tasks = demo_tasks()
    assert [t.name for t in tasks] == names
    seen: dict[str, str] = {}
    for t in tasks:
        assert t.description and "\n" not in t.description
        assert 100 <= len(t.train) <= 200 and 20 <= len(t.heldout) <= 50
        ids = [e.example_id for e in t.train + t.heldout]
        assert len(set(ids)) == len(ids)
        info = demo_task_info(t.name)
        limit = 96 if info.get("category") == "long_answer" else 64  # multi-sentence answers are longer
        for e in t.train + t.heldout:
            assert len(e.full_text.split()) <= limit
            k = " ".join(e.full_text.lower().split())  # keeps every script's letters and symbols
            assert k not in seen, f"{t.name} repeats text of {seen.get(k)}"
            seen[k] = t.name
        if info["synthetic"]:  # generated data says so where a reader of the task list looks
            assert "SYNTHETIC" in t.description
    # the formats really differ: both schemas, several kinds of text
    assert {t.train[0].is_pair for t in tasks} == {True, False}


def test_no_upstream_text_inside_task_data():
    up = [_norm(e.text) for e in demo_upstream()] + [_norm(e.full_text) for e in demo_upstream_instruct()]
    task_texts = [_norm(e.full_text) for t in demo_tasks() for e in t.train + t.heldout]
    joined = "\n".join(task_texts)
    for u in up:
        assert u not in joined


def test_demo_task_subsets_and_unknown_name():
    t = demo_task("code", n_train=20, seed=5)
    assert len(t.train) == 20 and t.train == demo_task("code", n_train=20, seed=5).train
    assert demo_task("code", n_heldout=10).heldout.__len__() == 10
    with pytest.raises(DataError, match="unknown demo task 'nope'.*bible"):
        demo_task("nope")


def test_demo_sources_md_documents_every_task():
    from importlib import resources

    demo = resources.files("forgetscope.data").joinpath("demo")
    text = "\n".join(demo.joinpath(f).read_text(encoding="utf-8")
                     for f in ("SOURCES.md", "SOURCES_instruction.md", "SOURCES_upstream_human.md"))
    for name in demo_task_names():
        assert f"`{name}`" in text
    assert "license" in text.lower() and "generated" in text


def test_hub_dataset_source_loads_with_split_and_config(monkeypatch):
    import datasets

    calls = []

    def fake_load_dataset(name, config=None, split=None):
        calls.append((name, config, split))
        return datasets.Dataset.from_list([{"text": f"row {i} of {name}"} for i in range(5)])

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    ex = load_examples("hf:org/corpus:en", split="validation", limit=3, seed=1)
    assert calls == [("org/corpus", "en", "validation")]
    assert len(ex) == 3 and all(e.text.endswith("of org/corpus") for e in ex)
    assert all(e.example_id.startswith("corpus") for e in ex)
    load_examples("hf:org/corpus")
    assert calls[-1] == ("org/corpus", None, "train")  # the default split


def test_hub_dataset_offline_is_one_clear_line(monkeypatch):
    import datasets

    def offline(*a, **k):
        raise ConnectionError("Couldn't reach the hub\nlong traceback text")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError, match=r"hf:org/corpus: cannot load the hub dataset .*save_to_disk") as e:
        load_examples("hf:org/corpus")
    assert "\n" not in str(e.value)
    with pytest.raises(DataError, match="expected hf:NAME"):
        load_examples("hf:")


def test_sweep_upstream_from_the_hub_passes_split(monkeypatch):
    import datasets

    from forgetscope.config import parse_config
    from forgetscope.experiments.session import load_upstream

    seen = []
    monkeypatch.setattr(datasets, "load_dataset", lambda name, config=None, split=None: seen.append(split) or
                        datasets.Dataset.from_list([{"text": "a b c"}, {"text": "d e f"}]))
    cfg = parse_config({"upstream": {"source": "hf:org/pile-slice", "split": "test", "n": 1}, "tasks": ["code"]})
    ups = load_upstream(cfg)
    assert seen == ["test"] and len(ups) == 1 and ups[0].text in ("a b c", "d e f")


def test_demo_continuations_continue_the_demo_texts():
    from forgetscope.data.demo import demo_upstream

    texts = {e.example_id: e.text for e in demo_upstream(targets="text")}
    cont = demo_upstream(targets="base_continuations")
    assert len(cont) == len(texts) == 400 and all(e.kind == "lm" for e in cont)
    for e in cont[:50]:
        original = texts[e.meta["source"]]
        first_words = original.split()[:2]
        assert e.text.split()[:2] == first_words and len(e.text) > 0  # the base model continued the start
    assert sum(e.text != texts[e.meta["source"]] for e in cont) > 390  # continuations, not copies
    sub = demo_upstream(n=5, seed=3, targets="base_continuations")
    same_draw = demo_upstream(n=5, seed=3, targets="text")
    assert [e.meta["source"] for e in sub] == [e.example_id for e in same_draw]
    with pytest.raises(DataError, match="unknown demo lm_targets"):
        demo_upstream(targets="poems")

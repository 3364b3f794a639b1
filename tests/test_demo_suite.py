"""The shipped measurement design: task families, human-written upstream text, and their separation."""

import filecmp
import json
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest
from conftest import load_script

from forgetscope.config import parse_config
from forgetscope.data.demo import LM_TARGETS, demo_task, demo_task_info, demo_task_names, demo_upstream
from forgetscope.data.types import FAMILIES
from forgetscope.errors import ConfigError, DataError

DEMO = Path(str(resources.files("forgetscope.data").joinpath("demo")))
SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
CATEGORIES = {"short_answer", "classification", "transformation", "extraction", "code_reading", "long_answer"}
# where the human-written upstream set comes from; no task may draw on these
UPSTREAM_SOURCES = ("manpages", "perl-doc", "perl-modules", "dict-devil", "tcl", "tk", "tcllib", "devil")


def _key(s: str) -> str:
    return " ".join(s.lower().split())


def _rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (DEMO / name).read_text(encoding="utf-8").splitlines() if line.strip()]


def test_every_task_has_a_known_family_and_the_instruction_family_is_large_and_varied():
    names = demo_task_names()
    assert all(demo_task_info(n)["family"] in FAMILIES for n in names)
    inst = demo_task_names("instruction")
    assert set(demo_task_names("plain_text")) == {"bible", "code", "jargon", "quotes", "python_docs", "poetry"}
    new = [n for n in inst if "category" in demo_task_info(n)]
    assert len(new) >= 24
    cats = [demo_task_info(n)["category"] for n in new]
    assert set(cats) == CATEGORIES
    for n in new:
        info = demo_task_info(n)
        assert info["description"] and info["source"] and info["license"], n
        task = demo_task(n)
        assert task.family == "instruction" and all(e.is_pair for e in task.train + task.heldout)
        train_items = {_key(e.prompt + e.response) for e in task.train}
        assert not train_items & {_key(e.prompt + e.response) for e in task.heldout}, n


def test_human_upstream_set_is_large_and_shares_no_source_or_text_with_any_task():
    ups = demo_upstream()
    assert len(ups) >= 1000 and all(e.kind == "lm" for e in ups)
    rows = _rows(LM_TARGETS["human"])
    cats = {r["category"] for r in rows}
    assert {"manpages", "perl_doc", "tcl_code", "perl_code", "devils_dictionary"} == cats
    task_keys, task_sources = set(), set()
    for n in demo_task_names():
        for r in _rows(demo_task_info(n)["file"]):
            task_keys.add(_key(r.get("text") or (r["prompt"] + r["response"])))
            if r.get("response"):
                task_keys.add(_key(r["response"]))
            task_sources.add(str(r.get("source", "")).split("/")[0].lower())
    assert not {_key(r["text"]) for r in rows} & task_keys
    assert not any(s.startswith(UPSTREAM_SOURCES) for s in task_sources), sorted(task_sources)


def test_a_task_with_an_unknown_family_is_refused_in_the_config():
    with pytest.raises(ConfigError, match="family"):
        parse_config({"tasks": [{"name": "code", "family": "poetry"}]})


def test_a_task_file_with_an_unknown_family_is_a_data_error(tmp_path):
    from forgetscope.data.loading import load_task

    path = tmp_path / "t.jsonl"
    path.write_text("".join(json.dumps({"text": f"line {i}"}) + "\n" for i in range(6)))
    with pytest.raises(DataError, match="unknown family"):
        load_task("t", path, family="prose")
    assert load_task("t", path).family == "plain_text"  # by format when not given
    assert load_task("t", path, family="instruction").family == "instruction"


def test_sampling_targets_apply_to_the_demo_upstream_only():
    with pytest.raises(ConfigError, match="lm_targets"):
        parse_config({"upstream": {"source": "data/mine.jsonl", "lm_targets": "base_samples"},
                      "tasks": ["code"]})
    assert parse_config({"upstream": {"source": "demo"}, "tasks": ["code"]}).upstream.lm_targets == "human"


def _build(script: str, out: Path, argv: list[str]) -> None:
    subprocess.run([sys.executable, str(SCRIPTS / f"{script}.py"), "--out", str(out), *argv], check=True,
                   capture_output=True)


@pytest.mark.slow
@pytest.mark.skipif(not (Path("/usr/share/iso-codes/json").is_dir() and Path("/usr/share/misc/countries.gz").is_file()
                         and Path("/usr/share/doc/python3.11/html/_sources/faq").is_dir()),
                    reason="the instruction-task sources are not installed (apt-get install iso-codes miscfiles "
                           "wamerican wbritish tzdata python3.11-doc)")
def test_instruction_task_builder_is_deterministic(tmp_path):
    outs = []
    for name in ("a", "b"):
        out = tmp_path / name
        shutil.copytree(DEMO, out)  # the overlap check reads the other shipped files
        _build("build_instruction_tasks", out, [])
        outs.append(out)
    files = sorted(p.name for p in outs[0].glob("task_*.jsonl")) + ["tasks_instruction.yaml"]
    match, mismatch, errors = filecmp.cmpfiles(outs[0], outs[1], files, shallow=False)
    assert not mismatch and not errors and len(match) == len(files)


def test_instruct_targets_choose_the_response_and_keep_the_gold_answer():
    from forgetscope.data.demo import demo_upstream_instruct

    assert (DEMO / "upstream_instruct_samples.jsonl").is_file()  # shipped with the package
    gold = demo_upstream_instruct(20, seed=4)
    own = demo_upstream_instruct(20, seed=4, targets="base_samples")
    assert [e.prompt for e in own] == [e.prompt for e in gold]  # the same draw of prompts
    assert [e.answer for e in own] == [e.answer for e in gold]  # exact match keeps the gold answers
    assert sum(a.response != b.response for a, b in zip(own, gold)) >= 15  # the loss is on the model's own
    with pytest.raises(DataError, match="instruct_targets"):
        demo_upstream_instruct(targets="poems")


def test_base_samples_continue_the_human_texts_they_were_sampled_from():
    human = {e.example_id: e.text for e in demo_upstream(targets="human")}
    samples = demo_upstream(targets="base_samples")
    rows = [json.loads(line) for line in (DEMO / "upstream_samples.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(samples) == len(rows) == len(human)  # one T=1 sample per shipped human text
    assert {r["source"] for r in rows} == set(human)
    assert all(r["generated_by"]["decoding"] == "ancestral sampling" and r["generated_by"]["temperature"] == 1.0
               for r in rows)
    # each sample starts with its human text's first words and then departs from it
    starts = [human[r["source"]].split()[0] == r["text"].split()[0] for r in rows]
    assert sum(starts) >= 0.9 * len(rows)
    assert sum(human[r["source"]] != r["text"] for r in rows) >= 0.95 * len(rows)


def test_a_sweep_recorded_before_the_new_fields_keeps_its_fingerprint():
    from forgetscope.experiments.session import config_fingerprint

    cfg = parse_config({"upstream": {"source": "demo", "n": 8, "lm_targets": "text"}, "tasks": ["code"]})
    recorded = cfg.model_dump(mode="json")
    recorded.pop("null_control")
    recorded["upstream"].pop("instruct_targets")
    for t in recorded["tasks"]:
        t.pop("family"), t.pop("instruct_targets"), t.pop("seeds")
    assert config_fingerprint(parse_config(recorded)) == config_fingerprint(cfg)
    changed = parse_config({**cfg.model_dump(mode="json"), "null_control": True})
    assert config_fingerprint(changed) != config_fingerprint(cfg)  # turning it on is a different sweep


def test_a_task_may_have_seeds_of_its_own():
    from forgetscope.experiments.sweep import plan_runs

    cfg = parse_config({"seeds": [0], "tasks": ["code", {"name": "bible", "seeds": [0, 1]}]})
    assert [(s.task, s.seed) for s in plan_runs(cfg)] == [("code", 0), ("bible", 0), ("bible", 1)]


def _script(name: str):
    return load_script(SCRIPTS / f"{name}.py")


def test_temperature_one_samples_are_seeded_and_reproducible(tiny):
    build = _script("build_demo_continuations")
    model, tok = tiny
    texts = ["The quick brown fox jumps over the lazy dog.", "def add(a, b):\n    return a + b\n"] * 3

    def sample(seed):
        return build.continuations(model, tok, texts, prefix=3, new=8, batch=4, sample=True, seed=seed)

    first = sample(0)
    assert first == sample(0)  # same seed, same samples
    assert first != sample(1)  # another seed, other samples
    greedy = build.continuations(model, tok, texts, prefix=3, new=8, batch=4)
    assert greedy[0] == greedy[2] and first != greedy  # greedy repeats itself; sampling does not
    answers = build.answers(model, tok, ["What is two plus two?", "Name a colour."], new=6, seed=0)
    assert answers == build.answers(model, tok, ["What is two plus two?", "Name a colour."], new=6, seed=0)

"""Strategies read no files: the experiments layer turns a config's paths (``known``, ``forgetting_file``,
``probe_file``) into the rows and mappings a strategy takes, and checks them before any work starts."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import sweep_config_dict

from forgetscope.errors import ConfigError, DataError
from forgetscope.experiments.strategy_inputs import placeholder_rows, resolve_strategy_inputs
from forgetscope.importing import load_any, load_base_losses
from forgetscope.store import ForgettingMatrix, SweepStore
from forgetscope.train import make_strategy

MITIGATE = Path(__file__).resolve().parents[1] / "src" / "forgetscope" / "mitigate"
COLS = [f"u{i}" for i in range(6)]


def _sweep(path: Path) -> Path:
    """A tiny sweep directory: three plain rows and a sam row, with the upstream base losses."""
    store = SweepStore(path)
    store.write_manifest({"source": "test"})
    store.write_upstream(pd.DataFrame({"example_id": COLS, "loss_before": np.linspace(1.0, 2.0, 6)}))
    for j, (task, strategy) in enumerate([("a", "plain"), ("b", "plain"), ("t", "plain"), ("a", "sam")]):
        store.write_run({"run_id": f"{task}__{strategy}__s0", "task": task, "strategy": strategy},
                        pd.DataFrame({"example_id": COLS, "loss_after": 2.0 + 0.1 * j * np.arange(6)}))
    store.consolidate()
    return path


def _values_file(path: Path, values: dict, evaluations: int | None = None) -> Path:
    path.write_text(json.dumps(values if evaluations is None else {"values": values, "evaluations": evaluations}))
    return path


def test_the_resolver_turns_a_sweep_directory_and_a_matrix_file_into_rows(tmp_path):
    sweep = _sweep(tmp_path / "known")
    opts = {"policy": "predicted", "known": str(sweep), "probe": 2}
    out = resolve_strategy_inputs("replay", opts)
    assert opts["known"] == str(sweep)  # the caller's options are left alone
    rows = out["known"]
    assert isinstance(rows, ForgettingMatrix) and rows.col_names == COLS
    assert rows.values.tobytes() == load_any(sweep).values.tobytes()
    assert sorted(rows.runs["task"]) == ["a", "a", "b", "t"] and list(rows.runs["strategy"]).count("sam") == 1
    assert "known_base_losses" not in out  # offline: the base losses are not needed
    s = make_strategy("replay", **out)
    assert s.options.known is rows

    csv = tmp_path / "known.csv"
    pd.DataFrame(np.arange(12.0).reshape(2, 6), index=["x", "y"], columns=COLS).to_csv(csv)
    rows = resolve_strategy_inputs("replay", {"policy": "predicted", "known": str(csv)})["known"]
    assert rows.row_names == ["x", "y"] and rows.col_names == COLS and rows.values[1, 5] == 11.0

    online = resolve_strategy_inputs("replay", {"policy": "predicted", "mode": "online", "known": str(sweep),
                                                "probe_base": "known", "predictor": "additive"})
    assert online["known_base_losses"] == load_base_losses(sweep)
    assert online["known_base_losses"]["u5"] == 2.0


def test_a_path_is_read_only_where_the_strategy_uses_it(tmp_path):
    missing = str(tmp_path / "nowhere")
    # probe-only completes nothing, other policies use no known rows: the path is dropped, never read
    assert "known" not in resolve_strategy_inputs("replay", {"policy": "predicted", "predictor": "probe-only",
                                                             "known": missing, "probe_values": {"u1": 0.1}})
    assert resolve_strategy_inputs("replay", {"policy": "random", "known": missing, "forgetting_file": missing,
                                              "probe_file": missing}) == {"policy": "random"}
    # a mapping given beside its file wins, as it always did
    out = resolve_strategy_inputs("replay", {"policy": "oracle", "forgetting": {"u1": 1.0}, "forgetting_file": missing})
    assert out == {"policy": "oracle", "forgetting": {"u1": 1.0}}
    # a misspelt predictor is reported by the strategy, not hidden behind a file error
    with pytest.raises(ConfigError, match="unknown predictor 'knnn'"):
        make_strategy("replay", **resolve_strategy_inputs("replay", {"policy": "predicted", "predictor": "knnn",
                                                                     "known": missing}))


def test_values_files_become_mappings_with_their_evaluations(tmp_path):
    f = _values_file(tmp_path / "row.json", {"u0": 0.5, "u1": None}, evaluations=40)
    out = resolve_strategy_inputs("replay", {"policy": "oracle", "forgetting_file": str(f)})
    assert out["forgetting"]["u0"] == 0.5 and np.isnan(out["forgetting"]["u1"])
    assert out["forgetting_evaluations"] == 40 and "forgetting_file" not in out
    plain = _values_file(tmp_path / "plain.json", {"u2": 0.1})
    out = resolve_strategy_inputs("replay", {"policy": "predicted", "probe_file": str(plain), "predictor": "probe-only"})
    assert out["probe_values"] == {"u2": 0.1} and "probe_evaluations" not in out  # the file says no count
    s = make_strategy("replay", **resolve_strategy_inputs("replay", {"policy": "oracle", "forgetting_file": str(f)}))
    assert s.options.forgetting_evaluations == 40


def test_missing_and_invalid_inputs_fail_in_one_line_with_the_loaders_messages(tmp_path):
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{not json")
    (tmp_path / "plain_dir").mkdir()
    cases = [
        ({"policy": "predicted", "known": str(tmp_path / "none")}, "no such sweep directory or matrix file"),
        ({"policy": "predicted", "known": str(tmp_path / "plain_dir")}, "not a forgetscope sweep"),
        ({"policy": "predicted", "known": str(bad_json)}, "unsupported matrix file 'bad.json'"),
        ({"policy": "oracle", "forgetting_file": str(tmp_path / "none.json")}, "values file not found"),
        ({"policy": "oracle", "forgetting_file": str(bad_json)}, "is not valid JSON"),
        ({"policy": "predicted", "probe_file": str(tmp_path / "none.json")}, "values file not found"),
    ]
    csv = tmp_path / "known.csv"
    pd.DataFrame(np.ones((2, 6)), index=["x", "y"], columns=COLS).to_csv(csv)
    cases.append(({"policy": "predicted", "mode": "online", "known": str(csv), "probe_base": "known"},
                  "probe_base 'known' needs a sweep directory with upstream base losses"))
    for opts, msg in cases:
        for load in (True, False):  # the checks before any work fail exactly as the run would
            with pytest.raises(DataError, match=msg) as exc:
                resolve_strategy_inputs("replay", opts, load=load)
            assert "\n" not in str(exc.value)
    with pytest.raises(ConfigError, match="forgetting_file: expected a path"):
        resolve_strategy_inputs("replay", {"policy": "oracle", "forgetting_file": 3})


def test_checking_reads_no_matrix(tmp_path, monkeypatch):
    sweep = _sweep(tmp_path / "known")

    def no_reading(*a, **k):
        raise AssertionError("the check read the sweep")

    monkeypatch.setattr(SweepStore, "load_matrix", no_reading)
    monkeypatch.setattr(SweepStore, "read_upstream", no_reading)
    out = resolve_strategy_inputs("replay", {"policy": "predicted", "mode": "online", "known": str(sweep),
                                             "probe_base": "known"}, load=False)
    assert out["known"].shape == (0, 0) and out["known"].path == sweep and out["known_base_losses"] == {}
    make_strategy("replay", **out)  # the stand-ins satisfy the options' checks
    assert placeholder_rows().path is None


def test_a_sweep_config_with_replay_paths_is_checked_before_any_work(tiny_dir, tiny_data, tmp_path):
    from forgetscope.config import SweepConfig
    from forgetscope.experiments.validate import validate_sweep

    d = sweep_config_dict(tiny_dir, tiny_data, tmp_path / "sw")
    d.update(strategy="replay", strategy_options={"policy": "predicted", "known": str(tmp_path / "missing")})
    with pytest.raises(DataError, match="no such sweep directory or matrix file"):
        validate_sweep(SweepConfig.model_validate(d))
    d["strategy_options"]["known"] = str(_sweep(tmp_path / "known"))  # config YAML: known is a path
    validate_sweep(SweepConfig.model_validate(d))


def test_a_compare_config_checks_the_known_sweep_it_names(tiny_dir, tiny_data, tmp_path):
    from forgetscope.experiments.compare import load_compare_config

    d = sweep_config_dict(tiny_dir, tiny_data, tmp_path / "cmp")
    d["strategies"] = [{"name": "replay", "label": "pred", "options": {"policy": "predicted"}},
                       {"name": "replay", "label": "online", "options": {"policy": "predicted", "mode": "online",
                                                                         "probe_base": "known"}},
                       {"name": "replay", "label": "oracle", "options": {"policy": "oracle"}}]
    p = tmp_path / "compare.yaml"
    p.write_text(yaml.safe_dump(d))
    load_compare_config(p)  # the known rows default to the comparison's own plain runs, not there yet
    d["compare"] = {"known": str(tmp_path / "missing")}
    p.write_text(yaml.safe_dump(d))
    with pytest.raises(DataError, match="no such sweep directory or matrix file"):
        load_compare_config(p)


def test_mitigate_imports_no_file_reader():
    """The layering rule: strategies receive arrays and mappings; reading sweeps and files is the
    experiments layer's job."""
    bad = []
    for path in sorted(MITIGATE.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            bad += [f"{path.name}:{node.lineno} {n}" for n in names
                    if n == "forgetscope.importing" or n.startswith(("forgetscope.importing.",
                                                                      "forgetscope.store.sweep_store"))]
            if isinstance(node, ast.ImportFrom) and node.module in ("forgetscope", "forgetscope.store"):
                bad += [f"{path.name}:{node.lineno} {node.module}.{a.name}" for a in node.names
                        if a.name in ("importing", "load_forgetting", "SweepStore")]
    assert not bad, "mitigate/ reads files through: " + ", ".join(bad)


def test_the_resolver_reads_what_an_options_model_declares_whatever_the_strategy(tmp_path, monkeypatch):
    """A strategy the experiments layer has never heard of gets its values file read, because its options
    model declares it: the resolver knows readers, not strategy names."""
    from forgetscope.train import STRATEGIES, Strategy
    from forgetscope.train.hooks import FileInput, StrategyInputs, StrategyOptions

    class AnchorOptions(StrategyOptions):
        weights: dict[str, float] | None = None
        weights_evaluations: int | None = None

        @classmethod
        def inputs(cls, options):
            return StrategyInputs(files=(FileInput("weights_file", "values", into="weights",
                                                   cost="weights_evaluations"),))

    class Anchor(Strategy):
        name = "anchor-test"
        Options = AnchorOptions

    monkeypatch.setitem(STRATEGIES._entries, "anchor-test", Anchor)
    f = _values_file(tmp_path / "w.json", {"u0": 0.25}, evaluations=7)
    out = resolve_strategy_inputs("anchor-test", {"weights_file": str(f)})
    assert out == {"weights": {"u0": 0.25}, "weights_evaluations": 7}
    assert make_strategy("anchor-test", **out).options.weights == {"u0": 0.25}
    with pytest.raises(ConfigError, match="'anchor-test': weights_file: expected a path"):
        resolve_strategy_inputs("anchor-test", {"weights_file": 3})
    assert resolve_strategy_inputs("sam", {"rho": 0.1}) == {"rho": 0.1}  # declares nothing: left alone


@pytest.mark.parametrize("options,own_row,probe_row,known_rows,completes", [
    ({"policy": "random"}, None, None, None, False),
    ({"policy": "mir"}, None, None, None, False),
    ({"policy": "oracle"}, "forgetting_file", None, None, False),
    ({"policy": "predicted"}, None, "probe_file", "known", True),
    ({"policy": "predicted", "mode": "online"}, None, None, "known", True),
    ({"policy": "predicted", "predictor": "probe-only"}, None, "probe_file", "known", False),
])
def test_replay_options_declare_what_a_comparison_provides(options, own_row, probe_row, known_rows, completes):
    from forgetscope.train.hooks import declared_inputs, strategy_kind

    inputs = declared_inputs("replay", options)
    assert (inputs.own_row, inputs.probe_row, inputs.known_rows, inputs.completes) == (
        own_row, probe_row, known_rows, completes)
    assert inputs.replays and inputs.policy == options["policy"]
    assert inputs.measures_probe == (options.get("mode") == "online")
    assert not declared_inputs("ewc", {}).replays and declared_inputs("ewc", {}).policy is None
    assert (strategy_kind("lwf"), strategy_kind("sam")) == ("graceful forgetting", "mitigation")


def test_no_strategy_is_known_by_name_outside_mitigate():
    """Outside ``mitigate/`` (and the registry's registrations) no code compares a value with a built-in
    strategy's name: the experiments ask the strategy's options what it needs."""
    names = {"replay", "sam", "ewc", "lwf"}
    src = MITIGATE.parent
    found = []
    for path in sorted(src.rglob("*.py")):
        if MITIGATE in path.parents:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Compare):
                continue
            values = [node.left, *node.comparators]
            consts = [v.value for v in values if isinstance(v, ast.Constant)]
            consts += [e.value for v in values if isinstance(v, (ast.Tuple, ast.List, ast.Set))
                       for e in v.elts if isinstance(e, ast.Constant)]
            if names & {c for c in consts if isinstance(c, str)}:
                found.append(f"{path.relative_to(src)}:{node.lineno}")
    assert not found, "strategy names tested outside mitigate/: " + ", ".join(found)

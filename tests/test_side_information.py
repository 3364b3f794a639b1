"""Prediction that knows the examples: feature predictors, the noise floor and the share of the gap closed."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from forgetscope.cli import run_app
from forgetscope.errors import DataError
from forgetscope.predict import evaluate, get_predictor
from forgetscope.predict.features import encode_features, with_example_meta
from forgetscope.predict.noise import gap_closed, gap_summary, task_noise
from forgetscope.store import ForgettingMatrix, write_matrix_sweep

N, KNOWN, NEW, NOISE = 300, 10, 10, 0.5


def planted(seed: int, informative: bool = True):
    """(known rows, new rows, upstream table, the new rows' true interaction): additive effects plus an
    interaction β_i · h_j, where h is the upstream table's ``hardness`` column (or, uninformative, an
    unrelated column of the same size while ``hardness`` stays random)."""
    rng = np.random.default_rng(seed)
    hardness = rng.normal(size=N)
    beta = rng.normal(0, 0.5, size=KNOWN + NEW)
    a, b = rng.normal(0, 0.3, size=KNOWN + NEW), rng.normal(0, 0.3, size=N)
    inter = np.outer(beta, hardness if informative else rng.normal(size=N))
    F = 0.2 + a[:, None] + b[None, :] + inter + NOISE * rng.normal(size=(KNOWN + NEW, N))
    upstream = pd.DataFrame({"example_id": [f"e{j}" for j in range(N)], "hardness": hardness})
    return F[:KNOWN], F[KNOWN:], upstream, inter[KNOWN:]


def _scores(seed: int, informative: bool) -> dict[str, float]:
    known, new, upstream, inter = planted(seed, informative)
    idx = np.sort(np.random.default_rng(seed + 100).choice(N, 30, replace=False))
    unprobed = np.ones(N, dtype=bool)
    unprobed[idx] = False
    out = {}
    for name in ("additive", "lowrank", "additive-features", "lowrank-features"):
        params = {"features": ["hardness"]} if name.endswith("features") else {}
        pred = get_predictor(name, **params).fit(known, upstream=upstream).predict_rows(idx, new[:, idx])
        out[name] = float(np.sqrt(np.mean((pred - new)[:, unprobed] ** 2)))
        if name == "additive-features":
            additive = get_predictor("additive").fit(known).predict_rows(idx, new[:, idx])
            found = (pred - additive)[:, unprobed].ravel()  # what the features added to additive's row
            out["recovered"] = float(np.corrcoef(found, inter[:, unprobed].ravel())[0, 1])
    return out


def test_feature_predictor_recovers_a_feature_interaction_from_30_probes_and_beats_lowrank():
    runs = [_scores(seed, informative=True) for seed in range(3)]
    for s in runs:
        assert s["recovered"] > 0.9  # the interaction on unprobed examples, recovered from 30 probes
        assert s["additive-features"] < NOISE * 1.1  # close to the noise floor
    mean = {k: np.mean([s[k] for s in runs]) for k in runs[0]}
    assert mean["additive-features"] < 0.97 * mean["lowrank"] < 0.97 * mean["additive"]
    assert mean["lowrank-features"] < 0.97 * mean["lowrank"]


def test_uninformative_feature_is_no_worse_than_additive_within_noise():
    runs = [_scores(seed, informative=False) for seed in range(3)]
    mean = {k: np.mean([s[k] for s in runs]) for k in runs[0]}
    assert abs(mean["recovered"]) < 0.1
    assert mean["additive-features"] <= 1.02 * mean["additive"]
    assert mean["lowrank-features"] <= 1.02 * mean["lowrank"]


def test_columns_no_known_row_observed_are_predicted_from_their_features():
    known, new, upstream, _ = planted(0)
    held = np.arange(N) >= 250  # a "new source": no known row measured these examples
    known = known.copy()
    known[:, held] = np.nan
    idx = np.sort(np.random.default_rng(1).choice(np.flatnonzero(~held), 30, replace=False))
    with pytest.raises(DataError, match="no observed entry"):
        get_predictor("lowrank").fit(known)
    pred = get_predictor("lowrank-features", features=["hardness"]).fit(known, upstream=upstream) \
        .predict_rows(idx, new[:, idx])
    assert np.isfinite(pred).all()
    probe_mean = np.repeat(new[:, idx].mean(1, keepdims=True), N, axis=1)
    err = lambda p: np.sqrt(np.mean((p - new)[:, held] ** 2))  # noqa: E731
    assert err(pred) < 0.9 * err(probe_mean)


def test_feature_columns_are_checked_in_one_line():
    table = pd.DataFrame({"loss_before": [1.0, 2.0, 3.0], "category": ["a", "b", "a"]})
    Z, names = encode_features(table, ["loss_before", "category:onehot"])
    assert names == ["loss_before", "category=a", "category=b"] and Z.shape == (3, 3)
    np.testing.assert_allclose(Z.mean(0), 0.0, atol=1e-12)
    for features, msg in ((["nope"], "feature column 'nope' is not in the upstream table"),
                          (["category"], "not numeric.*category:onehot")):
        with pytest.raises(DataError, match=msg) as exc:
            encode_features(table, features)
        assert "\n" not in str(exc.value)
    with pytest.raises(DataError, match="needs the upstream table"):
        get_predictor("additive-features").fit(np.ones((3, 3)))


# ---- the noise floor ------------------------------------------------------------------------

def _seeded(values: np.ndarray, tasks: list[str], seeds: list[int]) -> ForgettingMatrix:
    runs = pd.DataFrame({"run_id": [f"r{i}" for i in range(len(tasks))], "task": tasks, "seed": seeds})
    cols = [f"e{j}" for j in range(values.shape[1])]
    return ForgettingMatrix(values, list(runs["run_id"]), cols, runs=runs,
                            upstream=pd.DataFrame({"example_id": cols, "loss_before": 1.0}))


def test_noise_floor_equals_its_closed_form():
    rng = np.random.default_rng(3)
    truth = rng.normal(size=(3, 80))
    noisy = [truth[t] + s * rng.normal(size=80) for t, s in enumerate((0.1, 0.3, 0.6)) for _ in range(2)]
    tasks = ["a", "a", "b", "b", "c", "c"]
    X = np.stack(noisy)
    noise = task_noise(_seeded(X, tasks, [0, 1] * 3)).set_index("task")
    for t, (i, j) in zip("abc", ((0, 1), (2, 3), (4, 5))):
        assert noise.loc[t, "floor"] == pytest.approx(np.sqrt(np.mean((X[i] - X[j]) ** 2 / 2)), rel=1e-12)
        assert noise.loc[t, "n_seeds"] == 2 and noise.loc[t, "n_entries"] == 80
    # three seeds: the pooled within-task variance
    three = task_noise(_seeded(X[:3], ["a", "a", "a"], [0, 1, 2])).set_index("task")
    assert three.loc["a", "floor"] == pytest.approx(np.sqrt(np.var(X[:3], axis=0, ddof=1).mean()), rel=1e-12)


def test_gap_closed_is_the_share_of_additive_to_floor():
    tasks = pd.DataFrame({"predictor": ["additive", "x", "additive", "x"], "method": ["additive", "x"] * 2,
                          "probe_size": 30, "task": ["a", "a", "b", "b"], "rmse": [0.5, 0.4, 0.2, 0.1]})
    noise = pd.DataFrame({"task": ["a", "b"], "floor": [0.3, 0.19]})
    g = gap_closed(tasks, noise).set_index(["predictor", "task"])
    assert g.loc[("x", "a"), "gap_closed"] == pytest.approx((0.5 - 0.4) / (0.5 - 0.3))
    assert not g.loc[("x", "b"), "above_noise"] and np.isnan(g.loc[("x", "b"), "gap_closed"])
    s = gap_summary(g.reset_index()).set_index("predictor")
    assert s.loc["x", "n_above_noise"] == 1 and s.loc["x", "gap_closed_median"] == pytest.approx(0.5)


def test_evaluate_reports_the_noise_floor_and_refuses_it_without_seeds():
    rng = np.random.default_rng(4)
    base = rng.normal(size=(6, 1)) @ rng.normal(size=(1, 60)) + 0.3 * rng.normal(size=(6, 60))
    X = np.repeat(base, 2, axis=0) + 0.05 * rng.normal(size=(12, 60))
    m = _seeded(X, [f"t{i // 2}" for i in range(12)], [0, 1] * 6)
    result = evaluate(m, ["additive", "lowrank"], probe=[10], draws=2, n_folds=3, coverage=None,
                      noise_floor=True)
    assert len(result.noise) == 6
    summary = result.gap_summary().set_index("predictor")
    assert summary.loc["lowrank", "n_tasks"] == 6
    one_seed = _seeded(X[::2], [f"t{i}" for i in range(6)], [0] * 6)
    with pytest.raises(DataError, match="at least 2 seeds") as exc:
        evaluate(one_seed, ["additive"], probe=[10], draws=1, n_folds=3, noise_floor=True)
    assert "\n" not in str(exc.value)


# ---- the CLI ----------------------------------------------------------------------------------

@pytest.fixture()
def seeded_sweep(tmp_path):
    """A sweep of 6 tasks x 2 seeds whose interaction follows the upstream table's ``hardness``."""
    known, new, upstream, _ = planted(5)
    X = np.repeat(np.vstack([known, new])[:6], 2, axis=0) + 0.1 * np.random.default_rng(6).normal(size=(12, N))
    m = _seeded(X, [f"t{i // 2}" for i in range(12)], [0, 1] * 6)
    m = ForgettingMatrix(m.values, m.row_names, m.col_names, runs=m.runs,
                         upstream=upstream.assign(loss_before=1.0 + upstream["hardness"] ** 2))
    write_matrix_sweep(m, tmp_path / "sweep")
    return tmp_path / "sweep"


def test_cli_predict_shows_the_noise_floor_and_runs_the_feature_predictors(seeded_sweep, tmp_path, capsys):
    out = tmp_path / "out"
    assert run_app(["predict", str(seeded_sweep), "-m", "additive-features", "-m", "lowrank", "--features",
                    "hardness,loss_before", "--folds", "3", "--draws", "2", "--no-figures", "--noise-floor",
                    "--output", str(out)]) == 0
    text = " ".join(capsys.readouterr().out.split())  # the console wraps long lines
    assert "noise floor of 6 tasks" in text and "dominated by the noisiest tasks" in text
    assert "share of the gap additive → floor closed" in text
    gaps = pd.read_csv(out / "predict_gap_summary.csv").set_index("predictor")
    assert {"additive-features", "lowrank"} <= set(gaps.index)
    assert len(pd.read_csv(out / "predict_noise.csv")) == 6


@pytest.mark.parametrize("args, msg", [
    (["-m", "additive-features", "--features", "nope"], "feature column 'nope' is not in the upstream table"),
    (["-m", "additive-features", "--features", "example_id"], "encode it as example_id:onehot"),
    (["-m", "knn", "--features", "hardness"], "--features is read only by"),
])
def test_cli_feature_errors_are_one_line(seeded_sweep, tmp_path, capsys, args, msg):
    out = tmp_path / "never"
    assert run_app(["predict", str(seeded_sweep), *args, "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert msg in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_cli_noise_floor_without_seeds_is_one_line(tmp_path, capsys):
    rng = np.random.default_rng(7)
    path = tmp_path / "F.npy"
    np.save(path, rng.normal(size=(8, 40)))
    assert run_app(["predict", str(path), "--noise-floor", "--output", str(tmp_path / "never")]) == 2
    err = capsys.readouterr().err
    assert "noise floor" in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "never").exists()


def test_example_metadata_joins_by_id():
    cols = ["uh-0000", "uh-0001", "not-shipped"]
    m = ForgettingMatrix(np.zeros((2, 3)), ["r0", "r1"], cols, upstream=pd.DataFrame({"example_id": cols}))
    joined = with_example_meta(m, "demo").upstream
    assert joined["category"].iloc[0] == "perl_doc" and pd.isna(joined["category"].iloc[2])


# ---- forecast and replay selection -------------------------------------------------------------

def test_forecast_completes_a_row_with_a_feature_predictor():
    from types import SimpleNamespace

    from forgetscope.data.types import Example
    from forgetscope.predict.forecast import SweepData, forecast_row

    known, new, upstream, _ = planted(8)
    m = _seeded(known, [f"t{i}" for i in range(KNOWN)], [0] * KNOWN)
    m = ForgettingMatrix(m.values, m.row_names, m.col_names, runs=m.runs,
                         upstream=upstream.assign(loss_before=1.0 + upstream["hardness"]))
    record = SimpleNamespace(max_length=64, chat=False, dtype="float32")
    data = SweepData(None, {}, "lm", m, [Example(c, text=f"text {c}") for c in m.col_names],
                     m.upstream["loss_before"].to_numpy(), None, record, 0.1, "given")
    idx = np.sort(np.random.default_rng(2).choice(N, 30, replace=False))
    result = forecast_row(data, idx, new[0, idx], predictor="lowrank-features")
    row = result.table["forgetting"].to_numpy()
    assert result.predictor == "lowrank-features" and np.isfinite(row).all()
    np.testing.assert_allclose(row[idx], new[0, idx])  # measured values win on the probe
    assert {"lower", "upper"} <= set(result.table.columns)


def test_replay_fits_a_feature_predictor_on_the_columns_it_keeps():
    from types import SimpleNamespace

    from forgetscope.train import make_strategy

    known, _, upstream, _ = planted(9)
    known = known.copy()
    known[:, 0] = np.nan  # a column no known row measured: dropped, and its table row with it
    m = ForgettingMatrix(known, [f"r{i}" for i in range(KNOWN)], list(upstream["example_id"]),
                         runs=pd.DataFrame({"run_id": [f"r{i}" for i in range(KNOWN)],
                                            "task": [f"t{i}" for i in range(KNOWN)]}), upstream=upstream)
    strategy = make_strategy("replay", policy="predicted", predictor="additive-features",
                             predictor_options={"features": ["hardness"]}, known=m)
    fitted, cols, name = strategy._fitted_predictor(SimpleNamespace(task=SimpleNamespace(name="t0")))
    assert name == "additive-features" and cols == list(upstream["example_id"][1:])
    assert fitted.n_rows_ == KNOWN - 1 and fitted._upstream["example_id"].tolist() == cols

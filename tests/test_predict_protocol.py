"""The prediction protocol: task-grouped splits, fixed and out-of-domain splits, draws, τ, binary forgetting."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score, roc_auc_score

from forgetscope.cli import run_app
from forgetscope.errors import ConfigError, DataError
from forgetscope.predict import evaluate, get_predictor, make_splits, noise_margin
from forgetscope.predict.base import Predictor
from forgetscope.predict.binary import binary_forgetting, binary_matrix
from forgetscope.predict.evaluate import prediction_matrix
from forgetscope.predict.lowrank import choose_rank
from forgetscope.predict.metrics import score_binary
from forgetscope.store import ForgettingMatrix, SweepLayout, SweepStore, load_forgetting, write_matrix_sweep

TASKS = [f"t{i}" for i in range(8)]


def seeded_matrix(n=300, noise=0.2, seed=0, groups=False):
    """8 tasks x 2 seeds x 2 strategies: rows of a task share a rank-3 profile, seeds add noise."""
    rng = np.random.default_rng(seed)
    V = rng.normal(size=(3, n))
    rows, runs = [], []
    for t, task in enumerate(TASKS):
        u = rng.normal(size=3)
        for strategy in ("plain", "replay"):
            for s in (0, 1):
                rows.append(0.3 + u @ V + (0.2 if strategy == "replay" else 0.0) + noise * rng.normal(size=n))
                runs.append({"run_id": f"{task}__{strategy}__s{s}", "task": task, "strategy": strategy, "seed": s,
                             **({"group": "A" if t < 5 else "B"} if groups else {})})
    runs = pd.DataFrame(runs)
    return ForgettingMatrix(np.array(rows), runs["run_id"].tolist(), [f"e{j}" for j in range(n)], runs=runs)


class Spy(Predictor):
    """An additive predictor that records the row ids it was fitted on and asked to predict.

    Row r of the test matrix holds ``1000 * r`` plus small values, so every entry names its row.
    """

    name = "spy"
    log: list[tuple[set[int], set[int]]] = []

    def _fit(self, X, *, task_texts, example_texts):
        self.fit_rows_ = {int(round(v / 1000)) for v in np.nanmedian(X, axis=1)}
        self.inner_ = get_predictor("additive").fit(X)

    def _predict_rows(self, idx, Y, *, task_texts):
        Spy.log.append((self.fit_rows_, {int(round(v / 1000)) for v in np.median(Y, axis=1)}))
        return self.inner_.predict_rows(idx, Y)


def test_grouped_cv_never_has_a_task_in_train_and_test():
    mat = seeded_matrix()
    mat.values += 1000 * np.arange(mat.shape[0])[:, None]  # every entry names its row
    tasks = mat.runs["task"].to_numpy()
    Spy.log = []
    table = evaluate(mat, {"spy": Spy()}, probe=[20], n_folds=3, draws=2, baselines=False, coverage=None).table
    assert set(table["predictor"]) == {"spy", "additive"}
    assert len(Spy.log) == 3 * 2  # folds x draws
    tested: list[int] = []
    for fit_rows, test_rows in Spy.log:
        assert not set(tasks[list(fit_rows)]) & set(tasks[list(test_rows)])  # no task on both sides
        assert fit_rows | test_rows == set(range(mat.shape[0]))
        tested += sorted(test_rows)
    assert sorted(set(tested)) == list(range(mat.shape[0]))  # every row is predicted
    for split in make_splits(mat, mat.shape[0], n_folds=5)[0]:
        assert not set(tasks[split.train]) & set(tasks[split.test])
        assert np.unique(tasks[split.test]).size * 4 == split.test.size  # all 4 rows of each test task


def test_fixed_and_out_of_domain_splits():
    mat = seeded_matrix(groups=True)
    tasks = mat.runs["task"].to_numpy()
    splits, desc = make_splits(mat, mat.shape[0], test_tasks=["t1", "t6"])
    assert len(splits) == 1 and set(tasks[splits[0].test]) == {"t1", "t6"} and "fixed split" in desc
    assert not {"t1", "t6"} & set(tasks[splits[0].train])
    splits, desc = make_splits(mat, mat.shape[0], train_group="A", test_group="B")
    assert set(tasks[splits[0].train]) == {"t0", "t1", "t2", "t3", "t4"} and set(tasks[splits[0].test]) == {"t5", "t6", "t7"}
    result = evaluate(mat, ["knn"], probe=[30], test_group="B", draws=3)
    assert result.protocol["test_rows"] == ["t5", "t6", "t7"] and (result.table["n_test"] == 12).all()
    with pytest.raises(DataError, match="test task 'nope' is not in the sweep; its tasks: t0, t1"):
        make_splits(mat, mat.shape[0], test_tasks=["t1", "nope"])
    with pytest.raises(DataError, match="group 'C' has no rows; the runs table's groups: A, B"):
        make_splits(mat, mat.shape[0], test_group="C")
    with pytest.raises(DataError, match="no known rows"):
        make_splits(mat, mat.shape[0], test_tasks=TASKS)
    with pytest.raises(DataError, match="'group' column"):
        make_splits(seeded_matrix(), 32, test_group="B")
    with pytest.raises(ConfigError, match="not both"):
        make_splits(mat, mat.shape[0], test_tasks=["t1"], test_group="B")
    with pytest.raises(DataError, match="at least 2 tasks"):
        evaluate(ForgettingMatrix(mat.values[:4], mat.row_names[:4], mat.col_names, runs=mat.runs.iloc[:4]), ["knn"],
                 probe=[10])


def test_draws_give_mean_and_sd_and_counts_are_the_default():
    result = evaluate(seeded_matrix(), ["knn", "lowrank"], draws=4, baselines=False)
    table, summary = result.table, result.summary()
    assert sorted(table["draw"].unique()) == [0, 1, 2, 3] and (table["probe_size"] == 30).all()
    assert len(table) == 4 * 3 and (summary["draws"] == 4).all()
    assert {"rmse_sd", "f1_sd", "pearson_sd", "rmse_ratio_vs_additive_sd"} <= set(summary.columns)
    assert (summary["rmse_sd"] > 0).all()  # random probes differ between draws
    mean = table.groupby("predictor")["rmse"].mean()
    np.testing.assert_allclose(summary.set_index("predictor").loc[mean.index, "rmse"], mean)
    assert mean["lowrank"] < mean["additive"]



def test_per_task_errors_pool_every_draw_and_tasks_are_the_units_of_the_test(tmp_path):
    result = evaluate(seeded_matrix(), ["lowrank"], draws=3, baselines=False, coverage=None)
    tasks = result.tasks
    # one row per predictor and test task; its RMSE pools the task's rows (2 seeds x 2 strategies) and draws
    assert sorted(tasks["task"].unique()) == TASKS and len(tasks) == 2 * len(TASKS)
    entries = 4 * (300 - 30) * 3
    assert (tasks["n_entries"] == entries).all()
    sse = ((tasks["rmse"] ** 2) * tasks["n_entries"]).groupby(tasks["predictor"]).sum()
    pooled = np.sqrt(sse / (entries * len(TASKS)))
    np.testing.assert_allclose(pooled, result.table.groupby("predictor")["rmse"].apply(
        lambda r: np.sqrt(np.mean(r ** 2))).loc[pooled.index], rtol=1e-9)  # equal n per draw: pooled = RMS of draws
    tests = result.task_tests()
    row = tests.set_index("predictor").loc["lowrank"]
    assert row["n_tasks"] == len(TASKS) and row["tasks_better"] == len(TASKS)  # rank-3 rows: completion wins on all
    assert row["mean_diff"] < 0 and row["ci_high"] < 0 and row["p_wilcoxon"] == pytest.approx(2 / 2 ** 8)
    paths = result.save(tmp_path)
    assert pd.read_csv(paths["task_tests"]).shape[0] == 1 and pd.read_csv(paths["tasks"]).shape == tasks.shape
def test_noise_margin_from_seed_pairs_and_its_default():
    mat = seeded_matrix(noise=0.2)
    tau, source = noise_margin(mat)
    assert tau == pytest.approx(0.2 * np.sqrt(2), rel=0.05) and "seed-to-seed" in source and "16 pairs" in source
    one_seed = ForgettingMatrix(mat.values[::2], mat.row_names[::2], mat.col_names, runs=mat.runs.iloc[::2])
    assert noise_margin(one_seed) == (0.05, "default 0.05 nats (no task was run with several seeds)")
    assert noise_margin(mat.values)[0] == 0.05
    table = evaluate(mat, ["knn"], probe=[30], draws=2).table
    assert np.allclose(table["tau"], tau)  # F1 and precision@k count F > tau as forgotten
    loose = evaluate(mat, ["knn"], probe=[30], draws=2, tau=0.0).table
    assert (table["forgotten_share"] < loose["forgotten_share"]).all()


def test_lowrank_rank_chosen_by_grouped_cv():
    mat = seeded_matrix(noise=0.05)
    rank, scores = choose_rank(mat.values, mat.runs["task"].to_numpy())
    assert rank == 3 and list(scores["rank"]) == list(range(1, 11))
    p = get_predictor("lowrank").fit(mat.values, groups=mat.runs["task"].tolist())
    assert p.rank is None and p.rank_ == 3
    assert get_predictor("lowrank", rank=2).fit(mat.values).rank_ == 2
    assert choose_rank(mat.values[:2])[0] == 1  # M - 1 = 1: nothing to choose


def test_binary_matrix_hand_case():
    em_before = np.array([1.0, 1.0, 0.0, np.nan, 1.0])
    em_after = np.array([[0.0, 1.0, 0.0, 1.0, np.nan],
                         [1.0, 0.0, 1.0, 0.0, 0.0]])
    B = binary_matrix(em_before, em_after)
    expected = np.array([[1.0, 0.0, np.nan, np.nan, np.nan],
                         [0.0, 1.0, np.nan, np.nan, 1.0]])
    np.testing.assert_array_equal(B, expected)


def test_binary_metrics_match_sklearn():
    t = np.array([[1, 0, np.nan, 1], [0, 0, 1, np.nan]], dtype=float)
    s = np.array([[0.9, 0.6, 0.1, 0.2], [0.3, 0.1, 0.8, 0.5]])
    got = score_binary(t, s)
    ok = np.isfinite(t)
    y, p = t[ok].astype(bool), s[ok]
    assert got["f1"] == pytest.approx(f1_score(y, p > 0.5))
    assert got["auc"] == pytest.approx(roc_auc_score(y, p))
    assert got["precision"] == pytest.approx(2 / 3) and got["recall"] == pytest.approx(2 / 3)
    assert np.isnan(score_binary(np.array([[1.0, 1.0]]), np.array([[0.2, 0.9]]))["auc"])  # one class


@pytest.fixture()
def em_sweep(tmp_path):
    """A sweep directory with exact-match columns: 6 tasks, 20 plain texts and 40 instruction pairs."""
    rng = np.random.default_rng(0)
    n_lm, n_ins = 20, 40
    ids = [f"t{j}" for j in range(n_lm)] + [f"q{j}" for j in range(n_ins)]
    em_before = np.r_[np.full(n_lm, np.nan), (rng.random(n_ins) < 0.8).astype(float)]
    upstream = pd.DataFrame({"example_id": ids, "text": [f"text {j}" for j in range(n_lm)] + [None] * n_ins,
                             "prompt": [None] * n_lm + [f"question {j}?" for j in range(n_ins)],
                             "response": [None] * n_lm + [f"answer {j}" for j in range(n_ins)],
                             "n_tokens": 5.0, "loss_before": rng.random(n_lm + n_ins) + 1, "em_before": em_before})
    store = SweepStore(tmp_path / "em")
    store.path.mkdir()
    store.write_manifest({"status": "complete", "source": "test"})
    store.write_upstream(upstream)
    hardness = rng.normal(size=n_ins)
    order = []
    for i in range(6):
        task, harsh = f"task{i}", rng.normal()
        p_lost = 1 / (1 + np.exp(-(harsh + 2 * hardness)))
        em_after = np.where(em_before[n_lm:] == 1, (rng.random(n_ins) > p_lost).astype(float), 0.0)
        rows = pd.DataFrame({"example_id": ids, "loss_after": upstream["loss_before"] + rng.random(n_lm + n_ins),
                             "em_after": np.r_[np.full(n_lm, np.nan), em_after]})
        run_id = f"{task}__plain__s0"
        store.write_run({"run_id": run_id, "task": task, "seed": 0, "strategy": "plain"}, rows)
        order.append(run_id)
    store.consolidate(order)
    return store.path


def test_binary_forgetting_from_a_sweep(em_sweep):
    mat = load_forgetting(em_sweep)
    B = binary_forgetting(mat)
    inst = mat.select_kind("instruction")  # plain texts have no exact match: only instruction columns
    assert B.shape == inst.shape == (mat.shape[0], mat.shape[1] - 20) and B.col_names == inst.col_names
    long = pd.read_parquet(em_sweep / "forgetting.parquet")
    up = mat.upstream.set_index("example_id")
    r, j = 2, 5
    em_after = long[(long.run_id == B.row_names[r]) & (long.example_id == B.col_names[j])]["em_after"].item()
    expected = (1.0 - em_after) if up.loc[B.col_names[j], "em_before"] == 1 else np.nan
    np.testing.assert_equal(B.values[r, j], expected)
    binary = prediction_matrix(mat, kind="instruction", binary=True)
    assert binary.shape[1] == int((up["em_before"] == 1).sum()) and set(np.unique(binary.values)) <= {0.0, 1.0}
    result = evaluate(binary, ["logistic"], probe=[8], binary=True, draws=3, n_folds=3)
    summary = result.summary().set_index("predictor")
    assert {"f1", "precision", "recall", "auc"} <= set(summary.columns)
    assert summary.loc["logistic", "auc"] > 0.6  # example hardness is shared across tasks
    assert "rmse" not in summary.columns or summary["rmse"].isna().all()


def test_predict_cli_binary_and_bad_splits(em_sweep, capsys):
    assert run_app(["predict", str(em_sweep), "--binary", "--probe", "8", "--draws", "2", "--folds", "3"]) == 0
    out = capsys.readouterr().out
    assert "AUC" in out and "binary forgetting" in out and "±" in out
    assert (SweepLayout(em_sweep).predict_dir_for("instruction") / "predict_protocol.json").is_file()  # --binary: instruction
    assert run_app(["predict", str(em_sweep), "--kind", "lm", "--probe", "5", "--draws", "2",
                    "--test-tasks", "task0,task1", "--no-figures"]) == 0
    out = capsys.readouterr().out
    assert "fixed split: test tasks task0, task1" in out and "F1(τ)" in out
    for args, msg in [(["--test-tasks", "task0,taskX"], "test task 'taskX' is not in the sweep"),
                      (["--test-group", "B"], "'group' column"),
                      (["--kind", "code"], "unknown example kind")]:
        assert run_app(["predict", str(em_sweep), "--probe", "5", *args]) == 2
        err = capsys.readouterr().err
        assert msg in err and len(err.strip().splitlines()) == 1


def test_predict_cli_group_with_no_rows(tmp_path, capsys):
    mat = seeded_matrix(groups=True)
    write_matrix_sweep(mat, tmp_path / "imp")
    assert run_app(["predict", str(tmp_path / "imp"), "--probe", "20", "--draws", "2", "--train-group", "A",
                    "--test-group", "B", "--no-figures"]) == 0
    assert "out-of-domain: train A (20 rows) → test B (12 rows)" in capsys.readouterr().out
    assert run_app(["predict", str(tmp_path / "imp"), "--test-group", "C"]) == 2
    err = capsys.readouterr().err
    assert "group 'C' has no rows" in err and len(err.strip().splitlines()) == 1

"""The HTML report: every section for a demo sweep, skipped sections, self-containment, headless Chromium."""

import base64
import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

from forgetscope.report import build_report, collect_sections
from forgetscope.report.demo import write_demo_sweep
from forgetscope.report.sortable import SCRIPT
from forgetscope.store import SweepLayout

ALL_SECTIONS = ["headline", "runs", "heatmap", "examples", "lowrank", "fits", "prediction", "strategies", "scaling",
                "sharpness", "provenance"]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
                  "--disable-extensions", "--hide-scrollbars"]


@pytest.fixture(scope="module")
def demo_report(tmp_path_factory):
    sweep = tmp_path_factory.mktemp("report") / "sweep"
    write_demo_sweep(sweep, n_examples=120, tasks=("code", "bible", "quotes", "jargon"))
    return build_report(sweep, strict=True)


def _section_ids(html):
    return re.findall(r'<section id="([a-z]+)"[^>]*>', html)


def _scripts(html):
    """The content of every <script> element of a page; a script element with attributes (e.g. src) fails."""
    assert re.findall(r"<script[^>]*>", html) == ["<script>"] * html.count("<script")
    return re.findall(r"<script>(.*?)</script>", html, re.S)


def test_demo_sweep_report_has_every_section_and_is_self_contained(demo_report):
    html = demo_report.read_text()
    assert demo_report.name == "report.html"
    assert _section_ids(html) == ALL_SECTIONS
    imgs = re.findall(r'<img src="([^"]+)"', html)
    assert len(imgs) >= 11
    for src in imgs:  # every figure is an embedded, valid PNG
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert html.count("<b>Reading:</b>") == len(imgs)  # each figure has its one-line reading
    assert not re.search(r'(src|href)="(https?:)?//', html)  # nothing fetched from a network
    assert _scripts(html) == [SCRIPT]  # the one script: the table sorter, allowed by its hash
    assert "Sections left out" not in html


def test_sections_without_data_are_left_out(tmp_path):
    sweep = tmp_path / "bare"
    write_demo_sweep(sweep, n_examples=40, tasks=("a", "b"), seeds=(0,), strategies=("plain",), extras=False)
    html = build_report(sweep, tmp_path / "out.html", predict=False, strict=True).read_text()
    assert _section_ids(html) == ["headline", "runs", "heatmap", "examples", "lowrank", "fits", "provenance"]
    assert "Sections left out (no data)" in html and "no sharpness.parquet" in html


def test_a_broken_optional_input_does_not_break_the_report(tmp_path):
    sweep = tmp_path / "s"
    write_demo_sweep(sweep, n_examples=40, tasks=("a", "b", "c"), seeds=(0,), strategies=("plain",))
    SweepLayout(sweep).sharpness_table.write_bytes(b"not a parquet file")
    html = build_report(sweep, predict=False).read_text()
    assert "sharpness" not in _section_ids(html) and "scaling" in _section_ids(html)
    assert "Sharpness (failed:" in html


def test_saved_prediction_results_are_read_not_recomputed(tmp_path):
    from forgetscope.predict import evaluate
    from forgetscope.store import load_forgetting

    sweep = tmp_path / "s"
    write_demo_sweep(sweep, n_examples=60, tasks=("a", "b", "c", "d"), seeds=(0,), strategies=("plain",),
                     extras=False)
    evaluate(load_forgetting(sweep).values, ["additive", "knn"], probe=[6], n_folds=2).save(SweepLayout(sweep).predict_dir)
    html = build_report(sweep, predict=False, strict=True).read_text()
    assert "prediction" in _section_ids(html) and "read from predict/predict_summary.csv" in html


def _compare_summary():
    """Rows as :func:`forgetscope.experiments.compare.summarize` writes them (a subset of its columns)."""
    return pd.DataFrame([
        {"strategy": "plain", "runs": 2, "forgetting_heldout": 0.10, "forgetting_ci_low": 0.08,
         "forgetting_ci_high": 0.12, "task_loss_after": 1.5, "task_loss_sd": 0.05},
        {"strategy": "replay-random", "runs": 2, "forgetting_heldout": 0.04, "forgetting_ci_low": 0.03,
         "forgetting_ci_high": 0.05, "task_loss_after": 1.6, "task_loss_sd": 0.04, "diff_forgetting": -0.06,
         "p_wilcoxon_holm": 0.001, "p_t": 0.5},
    ])


def _strategies(sweep):
    sections, skipped, _ = collect_sections(sweep, predict=False, strict=True)
    return next((s for s in sections if s.key == "strategies"), None), dict((k, why) for k, _, why in skipped)


def test_compare_summary_at_the_layout_path_gives_the_strategies_section(tmp_path):
    sweep = tmp_path / "s"
    write_demo_sweep(sweep, n_examples=30, tasks=("a", "b"), seeds=(0,), strategies=("plain",), extras=False)
    path = SweepLayout(sweep).compare_summary
    path.parent.mkdir(parents=True)
    _compare_summary().to_csv(path, index=False)
    sec, _ = _strategies(sweep)
    assert sec is not None and "read from compare/summary.csv" in sec.lead
    kinds = [b["kind"] for b in sec.blocks]
    assert kinds == ["figure", "table"]
    reading = sec.blocks[0]["figure"].reading
    assert "'replay-random' forgets least" in reading
    assert "Holm-adjusted; column 'p Wilcoxon (Holm)'): replay-random." in reading
    assert "replay-random" in sec.blocks[1]["html"]
    html = build_report(sweep, predict=False, strict=True).read_text()
    assert "strategies" in _section_ids(html)


def test_a_comparison_file_at_a_name_the_layout_does_not_own_is_ignored(tmp_path):
    sweep = tmp_path / "s"
    write_demo_sweep(sweep, n_examples=30, tasks=("a", "b"), seeds=(0,), strategies=("plain",), extras=False)
    layout = SweepLayout(sweep)
    layout.compare_dir.mkdir(parents=True)
    for name in (layout.compare_dir / "comparison.csv", sweep / "compare.csv", sweep / "comparison.csv"):
        _compare_summary().to_csv(name, index=False)
    sec, skipped = _strategies(sweep)
    assert sec is None
    assert skipped["strategies"] == "one strategy only and no compare/summary.csv"


def test_strategies_without_a_summary_are_compared_from_the_runs(tmp_path):
    sweep = tmp_path / "s"
    write_demo_sweep(sweep, n_examples=30, tasks=("a", "b", "c"), seeds=(0, 1), strategies=("plain", "replay"),
                     extras=False)
    sec, _ = _strategies(sweep)
    assert sec is not None and "from this sweep's runs" in sec.lead
    assert "run-level" in sec.lead and "descriptive only, never a test" in sec.lead
    html = sec.blocks[-1]["html"]
    assert "p (examples)" not in html and "p examples (descriptive)" in html and "Δ vs plain" in html
    assert "p Wilcoxon (runs, Holm)" in html and "p t (runs, Holm)" in html
    reading = sec.blocks[0]["figure"].reading
    assert "'replay' forgets least" in reading
    assert "run-level paired Wilcoxon, Holm-adjusted; column 'p Wilcoxon (runs, Holm)'" in reading


def _holm(p):
    """Holm's step-down adjustment written out: sorted p times (m, m-1, ..., 1), running max, capped at 1."""
    order = np.argsort(p)
    adj = np.empty(len(p))
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p) - rank) * p[i]))
        adj[i] = running
    return adj


def test_run_level_p_values_of_the_fallback_are_scipy_on_per_run_differences_after_holm(tmp_path):
    from scipy import stats

    from forgetscope.report.sections.base import fmt
    from forgetscope.report.sections.strategies import P_EXAMPLES, P_T, P_WILCOXON, compare_runs
    from forgetscope.store import load_forgetting

    sweep = tmp_path / "s"
    # the demo scales forgetting by 0.55 for replay and 0.9 for ewc; 'other' is unscaled (no effect)
    tasks, seeds, arms = ("a", "b", "c", "d"), (0, 1), ("replay", "ewc", "other")
    write_demo_sweep(sweep, n_examples=12, tasks=tasks, seeds=seeds, strategies=("plain", *arms), extras=False)
    m = load_forgetting(sweep)
    F = pd.DataFrame(m.values, index=m.row_names)
    # per task x seed run: mean over upstream examples of (strategy row - plain row); 8 pairs per strategy
    diffs = {s: np.array([np.nanmean(F.loc[f"{t}__{s}__s{sd}"] - F.loc[f"{t}__plain__s{sd}"])
                          for t in tasks for sd in seeds]) for s in arms}
    p_w = np.array([stats.wilcoxon(diffs[s]).pvalue for s in arms])
    p_t = np.array([stats.ttest_1samp(diffs[s], 0.0).pvalue for s in arms])

    table = compare_runs(m, n_resamples=200).set_index("strategy")
    assert table.loc[list(arms), "paired_runs"].tolist() == [8, 8, 8]
    assert np.allclose(table.loc[list(arms), "Δ vs plain"], [diffs[s].mean() for s in arms])
    assert np.allclose(table.loc[list(arms), P_WILCOXON], _holm(p_w))
    assert np.allclose(table.loc[list(arms), P_T], _holm(p_t))
    assert (table.loc[list(arms), P_WILCOXON] >= p_w - 1e-15).all()  # adjusted, not raw
    assert np.isnan(table.loc["plain", P_WILCOXON]) and table.loc[list(arms), P_EXAMPLES].notna().all()

    sec, _ = _strategies(sweep)
    html = sec.blocks[-1]["html"]
    for p in _holm(p_w):
        assert f"<td>{fmt(p)}</td>" in html
    sig = [s for s, p in zip(arms, _holm(p_w)) if p < 0.05]
    assert 0 < len(sig) < len(arms) and "other" not in sig
    assert len(set(_holm(p_w))) == len(arms) and not np.allclose(_holm(p_w), np.minimum(1, 3 * p_w))  # not Bonferroni
    reading = sec.blocks[0]["figure"].reading
    assert reading.endswith(f"differs from 'plain' at p < 0.05 (run-level paired Wilcoxon, Holm-adjusted; "
                            f"column '{P_WILCOXON}'): {', '.join(sig)}.")


def test_fallback_with_too_few_paired_runs_reports_not_testable(tmp_path):
    from forgetscope.report.sections.strategies import P_T, P_WILCOXON, compare_runs
    from forgetscope.store import load_forgetting

    two = tmp_path / "two"  # 2 tasks x 1 seed: a t-test (>= 2 pairs) but no Wilcoxon (needs 6)
    write_demo_sweep(two, n_examples=30, tasks=("a", "b"), seeds=(0,), strategies=("plain", "replay"),
                     extras=False)
    row = compare_runs(load_forgetting(two), n_resamples=200).set_index("strategy").loc["replay"]
    assert row["paired_runs"] == 2 and np.isnan(row[P_WILCOXON]) and np.isfinite(row[P_T])
    assert "Wilcoxon not testable: 2 paired runs (needs 6)" in row["note"]
    sec, _ = _strategies(two)
    assert "<td>not testable</td>" in sec.blocks[-1]["html"]
    reading = sec.blocks[0]["figure"].reading
    assert "not testable against 'plain'" in reading and "differs" not in reading

    one = tmp_path / "one"  # 1 pair: neither test
    write_demo_sweep(one, n_examples=30, tasks=("a",), seeds=(0,), strategies=("plain", "replay"), extras=False)
    row = compare_runs(load_forgetting(one), n_resamples=200).set_index("strategy").loc["replay"]
    assert row["paired_runs"] == 1 and np.isnan(row[P_WILCOXON]) and np.isnan(row[P_T])
    assert row["note"].startswith("not testable: 1 paired run")
    sec, _ = _strategies(one)
    assert sec.blocks[-1]["html"].count("<td>not testable</td>") == 2


def _with_kinds(sweep, kinds):
    """Record a kind for each upstream example of a demo sweep (its upstream table has none)."""
    layout = SweepLayout(sweep)
    up = pd.read_parquet(layout.upstream)
    up["kind"] = kinds
    up.to_parquet(layout.upstream)


def test_fallback_on_one_kind_of_upstream_is_the_comparison_over_every_column(tmp_path):
    from forgetscope.report.sections.strategies import compare_runs
    from forgetscope.store import load_forgetting

    sweep = tmp_path / "s"
    write_demo_sweep(sweep, n_examples=30, tasks=("a", "b", "c"), seeds=(0, 1), strategies=("plain", "replay"),
                     extras=False)
    before = compare_runs(load_forgetting(sweep), n_resamples=200)  # no kinds recorded: every column
    _with_kinds(sweep, ["lm"] * 30)
    m = load_forgetting(sweep)
    assert m.kind_counts() == {"lm": 30}
    pd.testing.assert_frame_equal(compare_runs(m, n_resamples=200), before)


def test_fallback_on_a_mixed_upstream_compares_the_report_kind(tmp_path):
    from forgetscope.report.sections.base import fmt
    from forgetscope.report.sections.strategies import compare_runs
    from forgetscope.store import load_forgetting

    sweep = tmp_path / "s"
    write_demo_sweep(sweep, n_examples=30, tasks=("a", "b", "c"), seeds=(0, 1), strategies=("plain", "replay"),
                     extras=False)
    kinds = np.array(["lm", "instruction", "instruction"] * 10)
    _with_kinds(sweep, kinds)
    m = load_forgetting(sweep)
    plain = [i for i, r in enumerate(m.row_names) if "__plain__" in r]
    table = compare_runs(m, n_resamples=200).set_index("strategy")  # the default kind: lm
    lm_mean = np.nanmean(np.nanmean(m.values[plain][:, kinds == "lm"], 1))
    all_mean = np.nanmean(np.nanmean(m.values[plain], 1))
    assert table.loc["plain", "mean_forgetting"] == pytest.approx(lm_mean)
    assert lm_mean != pytest.approx(all_mean)
    pd.testing.assert_frame_equal(compare_runs(m, n_resamples=200), compare_runs(m.select_kind("lm"), n_resamples=200))
    inst = compare_runs(m, kind="instruction", n_resamples=200).set_index("strategy")
    assert inst.loc["plain", "mean_forgetting"] == pytest.approx(
        np.nanmean(np.nanmean(m.values[plain][:, kinds == "instruction"], 1)))

    sec, _ = _strategies(sweep)  # the report's first kind: the default
    assert "its mean over every 'lm' upstream example" in sec.lead
    assert f"<td>{fmt(table.loc['plain', 'mean_forgetting'])}</td>" in sec.blocks[-1]["html"]
    sections, _, _ = collect_sections(sweep, predict=False, strict=True, kind="instruction")
    sec = next(s for s in sections if s.key == "strategies")
    assert "its mean over every 'instruction' upstream example" in sec.lead
    assert f"<td>{fmt(inst.loc['plain', 'mean_forgetting'])}</td>" in sec.blocks[-1]["html"]

    path = SweepLayout(sweep).compare_summary  # compare's table names its kind
    path.parent.mkdir(parents=True)
    _compare_summary().assign(upstream_kind="lm").to_csv(path, index=False)
    sec, _ = _strategies(sweep)
    assert "mean forgetting on the held-out upstream examples of kind 'lm'" in sec.lead


def test_report_of_a_real_tiny_sweep(tiny_dir, tiny_data, tmp_path):
    from conftest import sweep_config_dict

    from forgetscope.config import parse_config
    from forgetscope.experiments import run_sweep

    out = tmp_path / "sweep"
    run_sweep(parse_config(sweep_config_dict(tiny_dir, tiny_data, out)))
    html = build_report(out, strict=True).read_text()
    assert _section_ids(html) == ["headline", "runs", "heatmap", "examples", "lowrank", "fits",
                                  "provenance"]  # 2 runs: nothing to predict
    assert "Full sweep config" in html and "transformers" in html  # provenance from the real manifest


def test_cli_report_and_errors(tmp_path, capsys):
    from forgetscope.cli import run_app

    sweep = tmp_path / "s"
    write_demo_sweep(sweep, n_examples=30, tasks=("a", "b"), seeds=(0,), strategies=("plain",), extras=False)
    assert run_app(["report", str(sweep), "-o", str(tmp_path / "r.html"), "--no-predict"]) == 0
    assert (tmp_path / "r.html").is_file()
    assert run_app(["report", str(tmp_path / "missing")]) == 2
    assert "sweep directory not found" in capsys.readouterr().err


def _chromium(args, tmp_path, timeout=120):
    return subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}", *args],
                          check=False, capture_output=True, text=True, timeout=timeout)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install -y chromium)")
def test_report_renders_in_headless_chromium(demo_report, tmp_path):
    html = demo_report.read_text()
    n_imgs = len(re.findall(r"<img ", html))
    # 1. the page as shipped paints with no console message (a CSP violation or a failed fetch would log one);
    #    the screenshot is kept as a check that it is not blank at the width the figures were made for
    shot = tmp_path / "report.png"
    res = _chromium(["--enable-logging=stderr", "--v=0", f"--screenshot={shot}", "--window-size=1280,2400",
                     demo_report.as_uri()], tmp_path)
    assert res.returncode == 0 and shot.is_file() and shot.stat().st_size > 50_000, res.stderr[-2000:]
    console = [ln for ln in res.stderr.splitlines() if ":CONSOLE" in ln or "Uncaught" in ln]
    assert console == [], console
    try:
        from PIL import Image

        img = np.asarray(Image.open(shot).convert("RGB"))
        assert img.shape[1] == 1280 and len(np.unique(img.reshape(-1, 3), axis=0)) > 200
    except ImportError:
        pass
    # 2. every section is in the DOM and every image decodes: a probe script (in a test copy only, the report
    #    itself has no script) counts images with a natural width
    probe = tmp_path / "probe.html"
    probe.write_text(re.sub(r"script-src [^;\"]+", "script-src 'unsafe-inline'", html).replace(
        "</body>", "<script>window.addEventListener('load', () => { const im = [...document.images];"
                   " document.title = 'decoded:' + im.filter(i => i.complete && i.naturalWidth > 0).length"
                   " + '/' + im.length; });</script></body>"))
    res = _chromium(["--enable-logging=stderr", "--v=0", "--dump-dom", probe.as_uri()], tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert _section_ids(res.stdout) == ALL_SECTIONS
    assert f"<title>decoded:{n_imgs}/{n_imgs}</title>" in res.stdout, res.stdout[:300]
    assert [ln for ln in res.stderr.splitlines() if ":CONSOLE" in ln or "Uncaught" in ln] == []


def test_report_has_a_section_set_per_kind(tiny_dir, tiny_data, tmp_path, capsys):
    from conftest import sweep_config_dict

    from forgetscope.cli import run_app
    from forgetscope.config import parse_config
    from forgetscope.experiments import run_sweep

    out = tmp_path / "sweep"
    run_sweep(parse_config(sweep_config_dict(tiny_dir, tiny_data, out)))
    html = build_report(out, strict=True).read_text()
    ids = re.findall(r'<section id="([a-z-]+)">', html)
    # lm (the default kind) first with the plain ids, then the instruction columns (1 example: no spectrum)
    assert ids == ["headline", "runs", "heatmap", "examples", "lowrank", "fits", "heatmap-instruction",
                   "examples-instruction", "provenance"]
    assert "Forgetting heat map — plain text (lm)" in html and "Forgetting heat map — prompt/response" in html
    assert "12 lm, 1 instruction" in html and "share F&gt;0 (instruction)" in html
    only = build_report(out, tmp_path / "inst.html", strict=True, kind="instruction").read_text()
    assert re.findall(r'<section id="([a-z-]+)">', only) == ["headline", "runs", "heatmap", "examples", "provenance"]
    assert run_app(["report", str(out), "--kind", "all", "-o", str(tmp_path / "all.html")]) == 0
    assert "kinds: all" in capsys.readouterr().out


def test_report_of_a_kind_the_sweep_lacks_is_one_line_and_writes_nothing(tmp_path, capsys):
    from forgetscope.cli import run_app

    sweep = tmp_path / "s"
    write_demo_sweep(sweep, n_examples=30, tasks=("a", "b"), seeds=(0,), strategies=("plain",), extras=False)
    assert run_app(["report", str(sweep), "--kind", "lm"]) == 2
    assert "does not record which examples are 'lm'" in capsys.readouterr().err
    assert not SweepLayout(sweep).report.exists()


# ---- which texts were forgotten ------------------------------------------------------------------


def _text_sweep(path, upstream, F=None, tasks=("a", "b", "c"), seeds=(0, 1), seed=0):
    """A sweep whose matrix is small noise plus whatever ``F`` plants (rows: task-major, then seed)."""
    from forgetscope.store import ForgettingMatrix, write_matrix_sweep

    rng = np.random.default_rng(seed)
    runs = pd.DataFrame([{"run_id": f"{t}__plain__s{sd}", "task": t, "strategy": "plain", "seed": sd}
                         for t in tasks for sd in seeds])
    values = rng.normal(0, 0.01, (len(runs), len(upstream))) if F is None else F
    m = ForgettingMatrix(values, runs["run_id"].tolist(), upstream["example_id"].tolist(), runs=runs,
                         upstream=upstream)
    write_matrix_sweep(m, path, manifest={"source": "test"})
    return path


def _examples_section(sweep, **kw):
    sections, skipped, _ = collect_sections(sweep, predict=False, strict=True, **kw)
    return next((s for s in sections if s.key == "examples"), None), dict((k, why) for k, _, why in skipped)


def _table_rows(block):
    """The cells of each body row of a table block, unescaped."""
    import html as html_mod

    body = block["html"].split("<tbody>", 1)[1]
    return [[html_mod.unescape(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", row)]
            for row in re.findall(r"<tr>(.*?)</tr>", body)]


def test_examples_section_lists_each_tasks_most_forgotten_texts(tmp_path):
    n = 8
    up = pd.DataFrame({"example_id": [f"e{j}" for j in range(n)], "text": [f"text number {j}" for j in range(n)],
                       "loss_before": 3.0})
    F = np.random.default_rng(1).normal(0, 0.01, (6, n))
    F[[2, 3], 5] = [1.9, 2.1]  # task b (rows 2, 3: seeds 0, 1) forgets e5, and no other task does
    F[:, 2] += 0.5  # every task forgets e2
    sweep = _text_sweep(tmp_path / "s", up, F)
    sec, _ = _examples_section(sweep)
    assert sec is not None and sec.title == "Which texts were forgotten"
    captions = [b["caption"] for b in sec.blocks]
    assert captions == ["Forgotten by the most tasks", "Task 'a' (mean of 2 runs)", "Task 'b' (mean of 2 runs)",
                        "Task 'c' (mean of 2 runs)"]
    common = _table_rows(sec.blocks[0])
    assert common[0][:2] == ["e2", "3 of 3"] and common[0][3] == "text number 2"
    b_rows = _table_rows(sec.blocks[2])
    assert b_rows[0][0] == "e5" and float(b_rows[0][1]) == pytest.approx(2.0, abs=1e-3)  # seeds averaged
    assert abs(float(b_rows[0][2])) < 0.05  # the other tasks' mean: e5 is specific to task b
    assert b_rows[0][3] == "text number 5" and b_rows[1][0] == "e2"
    assert len(b_rows) <= 5 and all(float(r[1]) > 0 for r in b_rows)
    for block in (sec.blocks[1], sec.blocks[3]):  # tasks a and c forget e2 most; e5 only at noise level
        rows = _table_rows(block)
        assert rows[0][0] == "e2" and all(float(r[1]) < 0.05 for r in rows if r[0] == "e5")
    html = build_report(sweep, predict=False, strict=True).read_text()
    ids = _section_ids(html)
    assert ids[ids.index("heatmap") + 1] == "examples"  # right after the heat map
    assert "text number 5" in html


def test_examples_section_escapes_texts_and_shows_pairs(tmp_path):
    evil = "<script>alert('x')</script> & <b>bold</b>"
    up = pd.DataFrame({"example_id": ["e0", "e1", "e2"], "kind": ["lm", "lm", "lm"],
                       "text": [evil, "plain text", "third"], "loss_before": 3.0})
    F = np.tile([1.0, 0.5, 0.2], (6, 1))
    html = build_report(_text_sweep(tmp_path / "s", up, F), predict=False, strict=True).read_text()
    assert _scripts(html) == [SCRIPT] and "<b>bold</b>" not in html
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; &lt;b&gt;bold&lt;/b&gt;" in html

    pairs = pd.DataFrame({"example_id": ["p0", "p1"], "kind": ["instruction"] * 2, "text": [None, None],
                          "prompt": ["What is <2+2>?", "Name a colour."], "response": ["Four.", "Blue."],
                          "loss_before": 3.0})
    sec, _ = _examples_section(_text_sweep(tmp_path / "p", pairs, np.tile([0.8, 0.3], (6, 1))))
    assert _table_rows(sec.blocks[1])[0][-1] == "What is <2+2>? → Four."
    assert "What is &lt;2+2&gt;? → Four." in sec.blocks[1]["html"]


def test_examples_section_shortens_long_texts(tmp_path):
    from forgetscope.report.sections.examples import TEXT_LIMIT, example_text

    long = " ".join(f"word{i}" for i in range(400))
    shown = example_text({"text": long})
    assert len(shown) <= TEXT_LIMIT and shown.endswith("…") and long.startswith(shown[:-1])
    assert example_text({"text": "short\n\n text"}) == "short text"
    pair = example_text({"text": None, "prompt": "q " * 400, "response": "the answer " * 100})
    assert len(pair) <= TEXT_LIMIT and " → the answer" in pair and pair.count("…") == 2
    assert example_text({"text": None, "prompt": "q " * 400, "response": "Yes."}).endswith("… → Yes.")

    up = pd.DataFrame({"example_id": ["e0", "e1"], "text": [long, "tiny"], "loss_before": 3.0})
    sec, _ = _examples_section(_text_sweep(tmp_path / "s", up, np.tile([0.9, 0.1], (6, 1))))
    cell = _table_rows(sec.blocks[1])[0][-1]
    assert cell == shown and long not in sec.blocks[1]["html"]


def test_examples_section_without_texts_is_one_line_skip(tmp_path):
    up = pd.DataFrame({"example_id": [f"e{j}" for j in range(5)], "loss_before": 3.0})  # ids only
    sweep = _text_sweep(tmp_path / "s", up)
    sec, skipped = _examples_section(sweep)
    assert sec is None
    assert skipped["examples"] == "the upstream table (upstream.parquet) stores no example texts, only ids"
    html = build_report(sweep, predict=False, strict=True).read_text()
    assert "examples" not in _section_ids(html) and "heatmap" in _section_ids(html)
    assert "Which texts were forgotten (the upstream table (upstream.parquet) stores no example texts" in html


def _group_rows(block, cls):
    """The cells of each body row of class ``cls`` (e.g. the most-improved group) of a table block, unescaped."""
    import html as html_mod

    return [[html_mod.unescape(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", row)]
            for row in re.findall(rf'<tr class="{cls}">(.*?)</tr>', block["html"])]


def html_escape(s):
    import html as html_mod

    return html_mod.escape(s, quote=True)


def test_examples_section_lists_each_tasks_most_improved_texts(tmp_path):
    from forgetscope.report.sections.examples import FORGOTTEN_LABEL, IMPROVED_LABEL

    n = 8
    up = pd.DataFrame({"example_id": [f"e{j}" for j in range(n)], "text": [f"text number {j}" for j in range(n)],
                       "loss_before": 3.0})
    F = np.random.default_rng(2).normal(0, 0.01, (6, n))
    F[[2, 3], 6] = [-1.1, -0.9]  # task b (rows 2, 3) improves e6, and no other task does
    F[:, 1] -= 0.4  # every task improves e1
    F[:, 2] += 0.5  # every task forgets e2
    sec, _ = _examples_section(_text_sweep(tmp_path / "s", up, F))
    block = sec.blocks[2]
    assert block["caption"] == "Task 'b' (mean of 2 runs)"
    improved = _group_rows(block, "improved")
    assert improved[0][0] == "e6" and float(improved[0][1]) == pytest.approx(-1.0, abs=1e-3)  # seeds averaged
    assert abs(float(improved[0][2])) < 0.05 and improved[0][3] == "text number 6"  # specific to task b
    assert improved[1][0] == "e1" and improved[1][3] == "text number 1"
    values = [float(r[1]) for r in improved]
    assert len(improved) <= 5 and all(v < 0 for v in values) and values == sorted(values)  # most negative first
    forgotten = _table_rows(block)  # the plain rows: the most-forgotten group, unchanged
    assert forgotten[0][0] == "e2" and all(float(r[1]) > 0 for r in forgotten)
    assert not {r[0] for r in forgotten} & {r[0] for r in improved}
    h = block["html"]  # both groups labelled, the improved one after the forgotten one
    assert h.index(html_escape(FORGOTTEN_LABEL)) < h.index(html_escape(IMPROVED_LABEL)) < h.index(">e6<")
    for other in (sec.blocks[1], sec.blocks[3]):  # tasks a and c improve e1 most; e6 only at noise level
        rows = _group_rows(other, "improved")
        assert rows[0][0] == "e1" and all(float(r[1]) > -0.05 for r in rows if r[0] == "e6")
    html = build_report(tmp_path / "s", predict=False, strict=True).read_text()
    assert "Most improved (most negative F" in html and "text number 6" in html


def test_examples_section_notes_a_task_that_improves_nothing(tmp_path):
    up = pd.DataFrame({"example_id": ["e0", "e1", "e2"], "text": ["zero", "one", "two"], "loss_before": 3.0})
    F = np.tile([0.3, 0.2, 0.1], (6, 1))
    F[4:, :] = [-0.3, -0.2, -0.1]  # task c only improves
    sec, _ = _examples_section(_text_sweep(tmp_path / "s", up, F))
    by_caption = {b["caption"]: b for b in sec.blocks if b["kind"] == "table"}
    assert _group_rows(by_caption["Task 'a' (mean of 2 runs)"], "improved") == []
    c = by_caption["Task 'c' (mean of 2 runs)"]
    assert _table_rows(c) == [] and [r[0] for r in _group_rows(c, "improved")] == ["e0", "e1", "e2"]
    texts = [b["text"] for b in sec.blocks if b["kind"] == "text"]
    assert "No upstream example with F > 0 for task(s): 'c'." in texts
    assert "No upstream example with F < 0 for task(s): 'a', 'b'." in texts


def test_first_words_of_a_text():
    from forgetscope.report.sections.examples import first_words, short_texts

    assert first_words("one two three") == "one two three"
    assert first_words(" ".join(f"w{i}" for i in range(20))) == "w0 w1 w2 w3 w4 w5 w6 w7…"
    assert first_words("x" * 200).endswith("…") and len(first_words("x" * 200)) <= 60
    assert first_words(None) is None and first_words("") is None
    up = pd.DataFrame({"example_id": ["a", "b"], "text": ["short\n text", None], "prompt": [None, "Why is it so?"],
                       "response": [None, "Because."]})
    assert short_texts(up) == ["short text", "Why is it so? → Because."]
    assert short_texts(pd.DataFrame({"example_id": ["a"]})) is None


def _hover_tooltips(svg):
    """The tooltip of every cell of a hoverable heat map (not the colour scale's swatches), unescaped, in order."""
    import html as html_mod

    cells = svg[svg.index('<g class="cells">'):svg.index("</g>")]
    return [html_mod.unescape(t) for t in re.findall(r"<rect [^>]*><title>(.*?)</title></rect>", cells, re.S)]


def _expected_tooltips(sweep):
    """Every cell's tooltip, built here from the stored matrix (run, task, example, F, the first 8 words)."""
    from forgetscope.store import load_forgetting

    m = load_forgetting(sweep)
    words = [" ".join(str(t).split()[:8]) + ("…" if len(str(t).split()) > 8 else "") for t in m.upstream["text"]]
    tasks = m.runs["task"].tolist()
    return {f"run {r} (task {tasks[i]})\nexample {m.col_names[j]}\n"
            + (f"F = {m.values[i, j]:.4g}" if np.isfinite(m.values[i, j]) else "F not measured")
            + f"\n“{words[j]}”" for i, r in enumerate(m.row_names) for j in range(m.shape[1])}


def _hover_sweep(path):
    long = "the quick brown fox jumps over the lazy dog and keeps running far away"
    up = pd.DataFrame({"example_id": [f"e{j}" for j in range(6)],
                       "text": [long, "<b>bold</b> & <script>x</script>", "two words", "alpha beta", "gamma", "delta"],
                       "loss_before": 3.0})
    F = np.random.default_rng(3).normal(0, 0.02, (6, 6))
    F[2, 0] = 2.0  # run b__plain__s0 forgets e0 far more than anything else
    F[5, 3] = np.nan  # one entry not measured
    return _text_sweep(path, up, F)


def test_heat_map_has_a_hoverable_svg_with_a_tooltip_per_cell(tmp_path, monkeypatch):
    from forgetscope.report import hover

    sweep = _hover_sweep(tmp_path / "s")
    sections, _, _ = collect_sections(sweep, predict=False, strict=True)
    heat = next(s for s in sections if s.key == "heatmap")
    # the PNG, the table of its largest entries, then the SVG
    assert [b["kind"] for b in heat.blocks] == ["figure", "table", "hover"]
    svg = heat.blocks[2]["svg"]
    tips = _hover_tooltips(svg)
    assert len(tips) == 36 and set(tips) == _expected_tooltips(sweep)
    assert "run b__plain__s0 (task b)\nexample e0\nF = 2\n“the quick brown fox jumps over the lazy…”" in tips
    assert "run c__plain__s1 (task c)\nexample e3\nF not measured\n“alpha beta”" in tips
    assert "<script" not in svg and "<b>" not in svg and "&lt;b&gt;bold&lt;/b&gt; &amp; &lt;script&gt;" in svg
    reddest = hover._palette()[-1]
    fills = re.findall(r'<rect x="(\d+)" y="(\d+)" width="1" height="1" fill="(#[0-9a-f]{6})"><title>run '
                       r'b__plain__s0 \(task b\)\nexample e0\n', svg)
    assert len(fills) == 1 and fills[0][2] == reddest  # F far beyond the colour limit: clipped to the top colour
    assert svg.count(f'fill="{hover.MISSING}"') == 1
    assert not re.search(r"\b(href|src|id)=", svg)  # nothing referenced, nothing to collide with another section
    html = build_report(sweep, predict=False, strict=True).read_text()
    section = html[html.index('<section id="heatmap">'):html.index('<section id="examples">')]
    assert '<details class="hover" open>' in section and svg in section and _scripts(html) == [SCRIPT]

    monkeypatch.setattr(hover, "MAX_ROWS", 5)  # more runs than the hoverable map takes: a line says so
    sections, _, _ = collect_sections(sweep, predict=False, strict=True)
    heat = next(s for s in sections if s.key == "heatmap")
    assert [b["kind"] for b in heat.blocks] == ["figure", "table", "text"]
    assert heat.blocks[2]["text"].startswith("The hoverable version of this map is drawn for at most 5 runs")


def _forecast_sweep(path, n=40):
    """A demo sweep whose upstream examples are plain text with distinct texts, and one forecast under forecast/."""
    from forgetscope.predict.forecast import forecast_from_losses, load_sweep

    write_demo_sweep(path, n_examples=n, tasks=("a", "b", "c", "d"), seeds=(0,), strategies=("plain",), extras=False)
    layout = SweepLayout(path)
    up = pd.read_parquet(layout.upstream)
    up["kind"] = "lm"
    up["text"] = [f"upstream text {j} <i>" for j in range(n)]
    up.to_parquet(layout.upstream)
    data = load_sweep(path, "lm")
    idx = np.arange(8)
    result = forecast_from_losses(data, idx, data.loss_before[idx] + np.linspace(0.6, -0.1, 8), predictor="additive",
                                  out_dir=layout.forecast_dir("newtask"), settings={"task_name": "newtask"})
    return layout, result


def test_prediction_section_lists_a_stored_forecasts_top_predicted_forgotten_texts(tmp_path):
    import shutil as sh

    from forgetscope.report.sections.prediction import FORECAST_TOP

    layout, result = _forecast_sweep(tmp_path / "s")
    sections, skipped, _ = collect_sections(layout.root, predict=False, strict=True)
    sec = next(s for s in sections if s.key == "prediction")  # the forecast alone brings the section
    assert sec.lead.startswith("No cross-validation of predictors (no saved prediction results")
    tables = [b for b in sec.blocks if b["kind"] == "table"]
    assert len(tables) == 1
    assert tables[0]["caption"] == "Forecast 'newtask' (task newtask, predictor additive, 8 of 40 examples measured on the probe)"
    rows = _table_rows(tables[0])
    top = result.top(FORECAST_TOP)
    top = top[top["forgetting"] > 0]
    assert [r[1] for r in rows] == top["example_id"].tolist() and [int(r[0]) for r in rows] == top["rank"].tolist()
    assert [r[-1] for r in rows] == [f"upstream text {int(e[1:])} <i>" for e in top["example_id"]]
    assert [float(r[2]) for r in rows] == pytest.approx(top["forgetting"].tolist(), rel=5e-3)  # 3 digits
    source = dict(zip(top["example_id"], top["observed"]))
    assert [r[-2] for r in rows] == ["measured (probe)" if source[r[1]] else "predicted" for r in rows]
    assert "90% interval" in tables[0]["html"] and "&lt;i&gt;" in tables[0]["html"]

    other = layout.forecast_dir("other-kind")  # a forecast of instruction examples: not in the lm section
    sh.copytree(layout.forecast_dir("newtask"), other)
    pd.read_parquet(other / "forecast.parquet").assign(kind="instruction").to_parquet(other / "forecast.parquet")
    (layout.forecast_dir("broken")).mkdir()
    (layout.forecast_dir("broken") / "forecast.parquet").write_bytes(b"not a parquet file")
    html = build_report(layout.root, predict=False, strict=True).read_text()
    section = html[html.index('<section id="prediction">'):]
    assert section.count("Forecast &#39;") == 1 and "other-kind" not in section
    assert "Forecasts that could not be read: forecast/broken/forecast.parquet" in section

    with_cv = tmp_path / "cv"  # with cross-validation results as well, the forecast follows them
    sh.copytree(layout.root, with_cv)
    sh.rmtree(with_cv / "forecast" / "broken")
    html = build_report(with_cv, strict=True).read_text()
    section = html[html.index('<section id="prediction">'):html.index("</section>", html.index('<section id="prediction">'))]
    assert "Mean over probe draws" in section and "Forecast &#39;newtask&#39;" in section
    sh.rmtree(with_cv / "forecast")  # no forecast: nothing new
    html = build_report(with_cv, strict=True).read_text()
    assert "Forecast" not in html and "forecast/" not in html


def _page_requests(net_log):
    """URLs the page itself asked for, from a Chromium NetLog (the browser's own requests have no origin)."""
    import json

    log = json.loads(net_log.read_text())
    start = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    return [e["params"]["url"] for e in log["events"] if e["type"] == start and "url" in e.get("params", {})
            and e["params"].get("initiator") != "not an origin"]


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install -y chromium)")
def test_hover_tooltips_are_in_the_dom_chromium_renders(tmp_path):
    sweep = _hover_sweep(tmp_path / "s")
    report = build_report(sweep, predict=False, strict=True)
    net = tmp_path / "net.json"
    res = _chromium(["--enable-logging=stderr", "--v=0", f"--log-net-log={net}", "--dump-dom", report.as_uri()],
                    tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    dom = res.stdout
    assert _scripts(dom) == [SCRIPT] and _section_ids(dom)[:4] == ["headline", "runs", "heatmap", "examples"]
    svg = dom[dom.index('<svg class="hover"'):]
    assert set(_hover_tooltips(svg)) == _expected_tooltips(sweep)  # one <title> per cell, as the parser built them
    assert [ln for ln in res.stderr.splitlines() if ":CONSOLE" in ln or "Uncaught" in ln] == []
    assert net.is_file() and _page_requests(net) == []
    # the check above sees a request: the same page without its CSP and with one remote image does make one
    control = tmp_path / "control.html"
    control.write_text(re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", report.read_text())
                       .replace("</body>", '<img src="http://127.0.0.1:9/probe.png" alt=""></body>'))
    res = _chromium([f"--log-net-log={tmp_path / 'control.json'}", "--dump-dom", control.as_uri()], tmp_path)
    assert res.returncode == 0 and _page_requests(tmp_path / "control.json") == ["http://127.0.0.1:9/probe.png"]


# ---- what was found (the headline) ----------------------------------------------------------------


def test_headline_leads_with_each_tasks_forgetting_texts_and_controls(tmp_path):
    from forgetscope.report.sections.headline import task_table
    from forgetscope.store import load_forgetting
    from forgetscope.store.io import write_npy

    n = 40
    up = pd.DataFrame({"example_id": [f"e{j}" for j in range(n)], "text": [f"text number {j}" for j in range(n)],
                       "loss_before": 3.0})
    rng = np.random.default_rng(5)
    profile = rng.normal(0, 0.05, (3, n))  # each task its own profile over the examples, repeated by its seeds
    F = np.vstack([0.1 + profile[t] + rng.normal(0, 0.01, n) for t in range(3) for _ in range(2)])
    F[[2, 3], 7] += 1.0  # task b (both seeds) forgets e7 most
    sweep = _text_sweep(tmp_path / "s", up, F)
    write_npy(SweepLayout(sweep).null_matrix, np.full_like(F, 0.01))  # a null row 10x weaker
    html = build_report(sweep, predict=False, strict=True).read_text()
    assert _section_ids(html)[0] == "headline" and _section_ids(html)[-1] == "provenance"
    m = load_forgetting(sweep)
    table, _ = task_table(m)
    assert table["task"].tolist() == ["a", "b", "c"] and table["runs"].tolist() == [2, 2, 2]
    assert table["mean F"].to_numpy() == pytest.approx([F[0:2].mean(), F[2:4].mean(), F[4:6].mean()])
    assert table["share F > 0"].to_numpy() == pytest.approx([(F[g] > 0).mean() for g in (slice(0, 2), slice(2, 4),
                                                                                          slice(4, 6))])
    assert table["null mean F"].to_numpy() == pytest.approx(0.01)
    assert table["× null"].to_numpy() == pytest.approx(table["mean F"].to_numpy() / 0.01)
    assert table.loc[1, "top"][0] == 7  # task b's most forgotten example
    assert (table["seed r"] > 0.5).all() and (table["shuffle 95%"] < 0.5).all()  # seeds agree beyond the shuffles
    import html as html_mod

    start = html.index('<section id="headline">')
    section = html_mod.unescape(html[start:html.index("</section>", start)])
    value = (F[2, 7] + F[3, 7]) / 2
    assert f"“text number 7” ({value:+.3g})" in section and "from <code>F.npy + runs.parquet + upstream.parquet + F_null.npy</code>" \
        in section
    assert "Null control (a random update of each run's size, matched in norm, a lower bound): mean F +0.01" in section
    assert "Within-row shuffle baseline —" in section and "between runs" in section


def test_tables_have_readable_headers_rounded_numbers_a_source_and_sort(demo_report):
    html = demo_report.read_text()
    headers = set(re.findall(r"<th[^>]*>([^<]*)</th>", html))
    assert not [h for h in headers if "_" in h]  # no raw field name
    assert {"task loss before", "trainable parameters", "wall time (s)", "share of energy"} <= headers
    assert not re.findall(r"<td>-?\d+\.\d{4,}</td>", html)  # at most 3 significant digits after the point
    assert html.count("<table") == html.count('<div class="source">from <code>') > 10
    assert '<div class="source">from <code>runs.parquet + F.npy</code></div>' in html
    csp = re.search(r'Content-Security-Policy" content="([^"]+)"', html).group(1)
    from forgetscope.report.sortable import csp_source

    assert "default-src 'none'" in csp and f"script-src {csp_source(SCRIPT)}" in csp and "unsafe" not in \
        csp.replace("style-src 'unsafe-inline'", "")


def test_heat_map_lists_its_largest_cells_and_writes_small_values_in_the_cells(tmp_path):
    sweep = _hover_sweep(tmp_path / "s")
    sections, _, _ = collect_sections(sweep, predict=False, strict=True)
    heat = next(s for s in sections if s.key == "heatmap")
    rows = [r for r in re.findall(r"<tr>(.*?)</tr>", heat.blocks[1]["html"])]
    first = [c for c in re.findall(r"<td[^>]*>(.*?)</td>", rows[0])]
    assert first[:4] == ["b__plain__s0", "b", "e0", "2"] and first[4].startswith("the quick brown fox")
    svg = heat.blocks[2]["svg"]
    assert len(re.findall(r'pointer-events="none">[+-][0-9.e+-]+</text>', svg)) == 35  # 36 cells, one not measured
    assert 'pointer-events="none">+2</text>' in svg


# ---- several sweeps ---------------------------------------------------------------------------------


def _two_sweeps(tmp_path, n_b=60, seed_b=3):
    a, b = tmp_path / "a", tmp_path / "b"
    write_demo_sweep(a, n_examples=60, tasks=("code", "bible", "quotes"), seeds=(0, 1), strategies=("plain",),
                     extras=False)
    write_demo_sweep(b, n_examples=n_b, tasks=("code", "bible", "jargon"), seeds=(0, 1), strategies=("plain",),
                     extras=False, seed=seed_b)
    return a, b


def test_report_of_two_sweeps_sharing_their_examples_compares_them_per_example(tmp_path):
    from scipy import stats

    from forgetscope.store import load_forgetting

    a, b = _two_sweeps(tmp_path)
    path = SweepLayout(a).compare_summary  # sweep a's compare folder: its arms against plain
    path.parent.mkdir(parents=True)
    _compare_summary().to_csv(path, index=False)
    out = build_report([a, b], tmp_path / "both.html", strict=True)
    html = out.read_text()
    ids = re.findall(r'<section id="([a-z-]+)">', html)
    assert ids == ["sweeps", "per-example", "per-task", "strategies", "headline-a", "headline-b", "provenance-a",
                   "provenance-b"]
    means = [np.nanmean(load_forgetting(s).values, 0) for s in (a, b)]  # one strategy: every run is a baseline run
    tasks = [load_forgetting(s).runs["task"].to_numpy() for s in (a, b)]
    per_task = [np.mean([load_forgetting(s).values[t == name].mean(0) for name in dict.fromkeys(t)], 0)
                for s, t in zip((a, b), tasks)]  # tasks weighted equally
    r = stats.pearsonr(*per_task)[0]
    from forgetscope.report.sections.base import fmt

    assert f"correlates at Pearson r = {fmt(r)}" in html and np.isfinite(r) and means[0].shape == (60,)
    assert "from <code>F.npy + runs.parquet + upstream.parquet of each sweep</code>" in html
    section = html[html.index('<section id="per-task">'):html.index('<section id="strategies">')]
    assert "mean F (a)" in section and "mean F (b)" in section and "jargon" in section and "quotes" in section
    section = html[html.index('<section id="strategies">'):html.index('<section id="headline-a">')]
    assert "from <code>a/compare/summary.csv</code>" in section and "replay-random" in section
    assert "Δ vs plain (a)" in section and "<td>-0.06</td>" in section
    assert "What was found — a" in html and "Provenance — b" in html and _scripts(html) == [SCRIPT]
    assert "2 sweeps: a (6 runs × 60 examples), b (6 runs × 60 examples)" in html


def test_report_of_sweeps_without_shared_examples_puts_tasks_side_by_side(tmp_path):
    from forgetscope.store import load_forgetting

    a, b = _two_sweeps(tmp_path, n_b=40)
    up = pd.read_parquet(SweepLayout(b).upstream)
    up["example_id"] = [f"other{j}" for j in range(40)]
    up.to_parquet(SweepLayout(b).upstream)
    html = build_report([a, b], tmp_path / "both.html", strict=True).read_text()
    ids = re.findall(r'<section id="([a-z-]+)">', html)
    assert "per-example" not in ids and ids[:2] == ["sweeps", "per-task"]
    m = load_forgetting(b)
    code = m.values[(m.runs["task"] == "code").to_numpy()].mean()
    from forgetscope.report.sections.base import fmt

    section = html[html.index('<section id="per-task">'):html.index("</section>", html.index('<section id="per-task">'))]
    row = re.search(r"<tr>\s*<td>code</td>(.*?)</tr>", section, re.S).group(1)
    assert f"<td>{fmt(code)}</td>" in row


def test_same_folder_names_get_distinct_labels(tmp_path):
    from forgetscope.report.multi import sweep_labels

    assert sweep_labels([tmp_path / "x" / "sweep", tmp_path / "y" / "sweep"]) == ["x/sweep", "y/sweep"]
    assert sweep_labels([tmp_path / "a", tmp_path / "b"]) == ["a", "b"]


def test_cli_report_of_several_sweeps_needs_an_output(tmp_path, capsys):
    from forgetscope.cli import run_app

    a, b = _two_sweeps(tmp_path)
    assert run_app(["report", str(a), str(b)]) == 2
    assert "needs an output file: -o/--output FILE.html" in capsys.readouterr().err
    assert not SweepLayout(a).report.exists() and not SweepLayout(b).report.exists()
    assert run_app(["report", str(a), str(b), "-o", str(tmp_path / "ab.html")]) == 0
    assert "2 sweeps side by side" in capsys.readouterr().out and (tmp_path / "ab.html").is_file()
    with pytest.raises(Exception, match="named twice"):
        build_report([a, a], tmp_path / "aa.html")


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install -y chromium)")
def test_report_of_several_sweeps_renders_and_sorts_in_headless_chromium(tmp_path):
    a, b = _two_sweeps(tmp_path)
    report = build_report([a, b], tmp_path / "both.html", strict=True)
    shot = tmp_path / "both.png"
    res = _chromium(["--enable-logging=stderr", "--v=0", f"--screenshot={shot}", "--window-size=1280,2000",
                     report.as_uri()], tmp_path)
    assert res.returncode == 0 and shot.is_file() and shot.stat().st_size > 20_000, res.stderr[-2000:]
    assert [ln for ln in res.stderr.splitlines() if ":CONSOLE" in ln or "Uncaught" in ln] == []
    res = _chromium(["--dump-dom", report.as_uri()], tmp_path)
    assert res.returncode == 0 and len(res.stdout) > 10_000
    assert re.findall(r'<section id="([a-z-]+)">', res.stdout)[:3] == ["sweeps", "per-example", "per-task"]
    assert 'class="sortable"' in res.stdout  # the page's own script ran under its CSP: headers became sortable
    # clicking "mean F (a)" in the per-task table sorts its rows by that column (a probe script in a test copy)
    probe = tmp_path / "probe.html"
    probe.write_text(re.sub(r"script-src [^;\"]+", "script-src 'unsafe-inline'", report.read_text()).replace(
        "</body>", "<script>window.addEventListener('load', () => { const t = document.querySelector("
                   "'#per-task table.data'); const h = [...t.tHead.rows[0].cells].find(c => c.textContent === "
                   "'mean F (a)'); h.click(); h.click(); document.title = 'order:' + [...t.tBodies[0].rows]"
                   ".map(r => r.cells[0].textContent).join(','); });</script></body>"))
    res = _chromium(["--dump-dom", probe.as_uri()], tmp_path)
    order = re.search(r"<title>order:([^<]*)</title>", res.stdout).group(1).split(",")
    from forgetscope.store import load_forgetting

    m = load_forgetting(a)
    means = {t: m.values[(m.runs["task"] == t).to_numpy()].mean() for t in ("code", "bible", "quotes")}
    assert order == sorted(means, key=means.get, reverse=True) + ["jargon"]  # descending; the dash last

"""The evaluation benchmark's correctness check, on the tiny model: every method scores the same tokens
and gives the same losses (timing is never asserted)."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
from conftest import TEXTS, load_script

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "eval_throughput.py"


@pytest.fixture(scope="module")
def bench():
    return load_script(SCRIPT)


def test_all_methods_give_the_same_losses_on_the_tiny_model(bench, tiny):
    model, tok = copy.deepcopy(tiny[0]), tiny[1]
    ts = bench.make_text_set("tiny", tok, TEXTS)
    table = bench.method_table(model, tok, max_batch_tokens=128, batch_size=4, lm_eval_batch_size=4,
                               with_compile=False)  # compiling takes a minute: its own test below
    if bench.lm_eval_available():
        assert {"lm_eval", "lm_eval_bf16"} <= set(table)
    losses = {name: fn(ts) for name, fn in table.items()}
    assert {"forgetscope_fp32", "forgetscope_bf16", "forgetscope_fp32_chunked", "forgetscope_bf16_chunked",
            "forgetscope_bf16_head", "forgetscope_fp32_rows256", "one_at_a_time", "fixed_padding"} <= set(losses)
    diffs = bench.check_losses_agree(losses)
    assert all(np.isfinite(v).all() and len(v) == len(TEXTS) for v in losses.values())
    assert all(d["max"] <= bench.FP32_TOLERANCE for name, d in diffs.items() if not bench.is_bf16(name))
    assert diffs["forgetscope_fp32_chunked"]["max"] <= 1e-5


@pytest.mark.slow
def test_the_compiled_decoder_scores_the_same_losses_and_leaves_the_model_alone(bench, tiny):
    model, tok = copy.deepcopy(tiny[0]), tiny[1]
    ts = bench.make_text_set("tiny", tok, TEXTS)
    factories = bench.method_factories(tok, max_batch_tokens=128, with_lm_eval=False)
    reference = factories["forgetscope_fp32"](model)(ts)
    compiled = factories["forgetscope_fp32_compiled"](model)
    assert np.abs(compiled(ts) - reference).max() <= 1e-5
    assert type(model.get_decoder()).__name__ == "LlamaModel"  # the original is not the compiled copy


def test_the_check_names_a_method_that_disagrees(bench):
    ref = np.linspace(3.0, 5.0, 8)
    losses = {"forgetscope_fp32": ref, "one_at_a_time": ref + 1e-5, "lm_eval": ref + 0.01,
              "forgetscope_bf16": ref + 0.005}
    with pytest.raises(AssertionError, match=r"lm_eval: max \|diff\| 0.01"):
        bench.check_losses_agree(losses)
    losses["lm_eval"] = ref
    losses["forgetscope_bf16"] = ref + 0.05
    with pytest.raises(AssertionError, match="forgetscope_bf16: median"):
        bench.check_losses_agree(losses)


def test_the_shape_roofline_times_every_product_of_the_tiny_model(bench, tiny):
    model, tok = tiny
    ts = bench.make_text_set("tiny", tok, TEXTS)
    rows = bench.batch_rows(ts, max_batch_tokens=64, max_batch_size=4)
    assert len(rows) > 1 and sum(scored for _, scored in rows) == ts.tokens
    assert all(padded >= scored + 1 for padded, scored in rows)
    roofline = bench.shape_roofline(model, rows, repeats=1)
    layers = [name for entry in roofline["layers"].values() for name in entry["layers"]]
    assert {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"} <= set(layers)
    assert sum(entry["count"] for entry in roofline["layers"].values()) == 7 * model.config.num_hidden_layers
    times = [entry[p] for entry in roofline["layers"].values() for p in ("float32", "bfloat16")]
    times += [roofline["output_layer"][p] for p in ("float32", "bfloat16")]
    assert all(t > 0 for t in times) and all(t > 0 for t in roofline["seconds"].values())
    assert bench.roofline_precision("forgetscope_bf16_head") == "bfloat16_head"
    assert bench.roofline_precision("forgetscope_bf16_chunked") == "bfloat16"
    assert bench.roofline_precision("lm_eval") == "float32"


def test_concatenated_texts_reach_the_token_target(bench, tiny):
    tok = tiny[1]
    texts = bench.concatenated_texts(tok, TEXTS, 40, 3, seed=0)
    assert len(texts) == 3
    assert all(len(tok(t)["input_ids"]) >= 40 for t in texts)
    shorter = [len(tok(t.rsplit("\n\n", 1)[0])["input_ids"]) for t in texts]
    assert all(n < 40 for n in shorter)  # stops at the first text that reaches the target


def test_the_summary_table_reads_the_fastest_bf16_evaluator_and_its_errors(bench):
    def method(tps, roof, peak, lm=None, lm16=None):
        return {"tokens_per_s": tps, "share_of_roofline": roof, "share_of_peak": peak, "vs_lm_eval": lm,
                "vs_lm_eval_bf16": lm16}

    def err(median, mean):
        return {"abs_error": {"median": median, "p95": 0.0, "max": 0.0, "mean_signed": mean}}

    errors = {"F_full": err(0.004, -0.001), "F_lora": err(0.003, 0.0005)}
    report = {"sets": {"short": {"n_texts": 3, "tokens": 90, "methods": {
        "forgetscope_fp32": method(700, 0.79, 0.45, lm=1.4),
        "forgetscope_bf16": method(1600, 0.58, 0.18, lm16=1.2),
        "forgetscope_bf16_head": method(2100, 0.40, 0.24, lm16=1.65),
        "lm_eval": method(500, 0.5, 0.3)},
        "bf16_errors": {"forgetscope_bf16": {"F_full": err(0.01, 0.0), "F_lora": err(0.01, 0.0)},
                        "forgetscope_bf16_head": errors}}}}
    row = bench.summary_table(report).splitlines()[2]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[:5] == ["short (3 texts, 90 tokens)", "700", "79%", "45%", "1.40"]
    assert cells[5:10] == ["`forgetscope_bf16_head`", "2100", "40%", "3.00", "1.65"]
    assert cells[10:] == ["0.0040 / 0.0030", "-0.0010 / +0.0005"]

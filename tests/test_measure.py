import numpy as np
import pytest
import torch
from conftest import TEXTS

from forgetscope.data.encoding import collate, encode_examples
from forgetscope.data.types import Example
from forgetscope.measure import (
    answer_matches,
    batch_nll,
    bucket_batches,
    evaluate_examples,
    exact_match,
    greedy_answers,
    per_example_nll,
)


@pytest.fixture
def encoded(tiny):
    _, tok = tiny
    exs = [Example(f"t{i}", text=t) for i, t in enumerate(TEXTS)]
    exs += [Example("p1", prompt="What is two plus two?", response="Four."),
            Example("p2", prompt="Name a colour.", response="Blue, like the sky.")]
    return exs, encode_examples(tok, exs, 64)


def test_batched_losses_equal_one_at_a_time(tiny, encoded):
    model, tok = tiny
    _, enc = encoded
    batched = per_example_nll(model, enc, pad_id=tok.pad_token_id, max_batch_tokens=128)
    single = np.array([per_example_nll(model, [e], pad_id=tok.pad_token_id)[0] for e in enc])
    np.testing.assert_allclose(batched, single, atol=1e-4)
    assert np.all(np.isfinite(batched))


def test_gathered_head_matches_full_logits(tiny, encoded):
    model, tok = tiny
    _, enc = encoded
    batch = collate(enc, tok.pad_token_id)
    with torch.inference_mode():
        fast_sum, fast_n = batch_nll(model, batch, gather=True)
        slow_sum, slow_n = batch_nll(model, batch, gather=False)
    assert torch.equal(fast_n, slow_n)
    torch.testing.assert_close(fast_sum, slow_sum, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("chunk_rows", [1, 3, 17, 10_000])
def test_chunked_loss_equals_the_full_logits_loss(tiny, encoded, chunk_rows):
    """Mixed lengths, padding, prompt tokens that are not scored, several batches: the same losses
    whether a batch's logits are formed at once or ``chunk_rows`` positions at a time."""
    model, tok = tiny
    _, enc = encoded
    full = per_example_nll(model, enc, pad_id=tok.pad_token_id, max_batch_tokens=128)
    chunked = per_example_nll(model, enc, pad_id=tok.pad_token_id, max_batch_tokens=128, chunk_rows=chunk_rows)
    np.testing.assert_allclose(chunked, full, atol=1e-5, rtol=0)
    batch = collate(enc, tok.pad_token_id)
    with torch.inference_mode():
        whole, n_whole = batch_nll(model, batch)
        parts, n_parts = batch_nll(model, batch, chunk_rows=chunk_rows)
    assert parts.dtype == torch.float32 and torch.equal(n_parts, n_whole)
    torch.testing.assert_close(parts, whole, atol=1e-5 * n_whole.max().item(), rtol=0)


def test_chunking_falls_back_to_full_logits_without_a_separable_head(tiny, encoded, monkeypatch):
    import forgetscope.measure.nll as nll

    model, tok = tiny
    _, enc = encoded
    expected = per_example_nll(model, enc, pad_id=tok.pad_token_id, max_batch_tokens=128)
    monkeypatch.setattr(nll, "_fast_head", lambda model: None)
    fallback = per_example_nll(model, enc, pad_id=tok.pad_token_id, max_batch_tokens=128, chunk_rows=4)
    np.testing.assert_allclose(fallback, expected, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="chunk_rows"):
        nll.chunked_nll(model.get_output_embeddings(), torch.zeros(2, 32), torch.zeros(2, dtype=torch.long),
                        chunk_rows=0)


@pytest.mark.parametrize("dtype", [None, torch.bfloat16])
def test_bf16_head_is_close_to_float32_and_sums_in_float32(tiny, encoded, dtype):
    from forgetscope.measure.nll import CHUNK_ROWS, ScoredIndex, chunked_nll

    model, tok = tiny
    _, enc = encoded
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    fp32 = per_example_nll(model, enc, pad_id=tok.pad_token_id, max_batch_tokens=128)
    f32_head = per_example_nll(model, enc, pad_id=tok.pad_token_id, max_batch_tokens=128, dtype=dtype)
    for chunk_rows in (None, 5, CHUNK_ROWS):
        bf16_head = per_example_nll(model, enc, pad_id=tok.pad_token_id, max_batch_tokens=128, dtype=dtype,
                                    head_dtype=torch.bfloat16, chunk_rows=chunk_rows)
        assert np.all(np.isfinite(bf16_head))
        assert np.abs(bf16_head - fp32).max() <= 0.05
        assert not np.array_equal(bf16_head, f32_head)  # the head really ran in bf16
    for n, p in model.named_parameters():
        assert p.dtype == torch.float32 and torch.equal(p, before[n]), n
    batch = collate(enc, tok.pad_token_id)
    head = model.get_output_embeddings()
    with torch.inference_mode():
        hidden = model.get_decoder()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        index = ScoredIndex.of(batch["labels"])
        rows = hidden.last_hidden_state.reshape(-1, hidden.last_hidden_state.shape[-1])[index.positions]
        nll = chunked_nll(head, rows.bfloat16(), index.targets, head_weight=head.weight.bfloat16(), chunk_rows=7)
        total, _ = batch_nll(model, batch, head_weight=head.weight.bfloat16(), chunk_rows=7)
    assert nll.dtype == torch.float32 and total.dtype == torch.float32


def test_loss_is_mean_token_nll_of_hf_loss(tiny):
    model, tok = tiny
    enc = encode_examples(tok, [Example("a", text=TEXTS[0])], 64)
    ours = per_example_nll(model, enc, pad_id=tok.pad_token_id)[0]
    ids = torch.tensor([enc[0].input_ids])
    with torch.no_grad():
        ref = model(input_ids=ids, labels=ids).loss.item()
    assert ours == pytest.approx(ref, abs=1e-5)


def test_untrained_model_is_near_uniform(tiny, encoded):
    model, tok = tiny
    _, enc = encoded
    loss = per_example_nll(model, enc, pad_id=tok.pad_token_id)
    assert abs(loss.mean() - np.log(len(tok))) < 0.5


def test_buckets_respect_budget_and_cover_everything():
    lengths = [5, 50, 7, 30, 30, 2, 64, 9]
    batches = bucket_batches(lengths, max_batch_tokens=64, max_batch_size=3)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        assert len(b) <= 3
        assert max(lengths[i] for i in b) * len(b) <= 64  # every example fits the budget, so every batch does
    widths = [max(lengths[i] for i in b) for b in batches]
    assert widths == sorted(widths)
    # an example longer than the budget still gets evaluated, alone in its batch
    over = bucket_batches([5, 100, 7], max_batch_tokens=64, max_batch_size=3)
    assert over == [[0, 2], [1]]


def test_answer_matching():
    assert answer_matches("The capital of France is Paris.", "Paris")
    assert answer_matches("paris", "Paris.")
    assert not answer_matches("Parisian food", "Paris")
    assert not answer_matches("", "Paris")
    assert not answer_matches("anything", "")


def _greedy(model, ids: list[int], n: int) -> list[int]:
    """Greedy decoding by hand: argmax of the last position's logits, n times (no generate())."""
    cur = torch.tensor([ids])
    out = []
    with torch.no_grad():
        for _ in range(n):
            nxt = model(input_ids=cur).logits[0, -1].argmax()
            out.append(int(nxt))
            cur = torch.cat([cur, nxt.view(1, 1)], dim=1)
    return out


def test_exact_match_is_nan_without_answer_and_exact_with(tiny):
    """The tiny model's greedy continuation (decoded by hand) is the one answer that matches."""
    from forgetscope.data.encoding import prompt_ids

    model, tok = tiny
    greedy = tok.decode(_greedy(model, prompt_ids(tok, "Say hi", False), 3), skip_special_tokens=True)
    assert answer_matches(greedy, greedy)  # precondition: the continuation has a word to match
    exs = [Example("t", text="hello"),
           Example("q", prompt="Say hi", response="hi", answer=greedy),
           Example("r", prompt="Say hi", response="hi", answer=greedy + " and more words"),
           Example("s", prompt="Say hi", response="hi")]  # no gold answer
    em = exact_match(model, tok, exs, max_new_tokens=3)
    assert np.isnan(em[0]) and np.isnan(em[3])
    assert em[1] == 1.0 and em[2] == 0.0


class _ForcedGenerator(torch.nn.Module):
    """A 'model' whose greedy output is fixed per prompt: the text in ``replies`` after the prompt."""

    def __init__(self, tok, replies: dict[str, str]):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.tok, self.replies, self.calls = tok, replies, []

    def generate(self, input_ids, attention_mask, max_new_tokens, do_sample, pad_token_id, **kw):
        self.calls.append({"do_sample": do_sample, "training": self.training, "rows": input_ids.shape[0]})
        rows = []
        for ids, mask in zip(input_ids.tolist(), attention_mask.tolist()):
            assert mask[-1] == 1  # left padding: every prompt ends at the last column
            prompt = self.tok.decode([t for t, m in zip(ids, mask) if m])
            rows.append(self.tok.encode(self.replies[prompt])[:max_new_tokens])
        width = max(len(r) for r in rows)
        new = torch.tensor([r + [pad_token_id] * (width - len(r)) for r in rows])
        return torch.cat([input_ids, new], dim=1)


def test_exact_match_scores_the_forced_greedy_output(tiny):
    _, tok = tiny
    prompts = {"Capital of France?": "The capital of France is Paris.\nMore text",
               "What is two plus two?": "Four.",
               "Name a colour.": "Blue, like the sky.",
               "Say hi": "Parisian food"}
    model = _ForcedGenerator(tok, prompts)
    model.train()
    exs = [Example("a", prompt="Capital of France?", response="Paris.", answer="Paris"),
           Example("b", prompt="What is two plus two?", response="Four.", answer="four"),
           Example("c", prompt="Name a colour.", response="Red.", answer="red"),
           Example("d", prompt="Say hi", response="Paris", answer="Paris"),
           Example("e", text="plain text has no answer")]
    em = exact_match(model, tok, exs, max_new_tokens=32, batch_size=3)
    np.testing.assert_array_equal(em[:4], [1.0, 1.0, 0.0, 0.0])
    assert np.isnan(em[4])
    assert [c["rows"] for c in model.calls] == [3, 1]  # 4 answerable examples in batches of 3
    assert all(c["do_sample"] is False and c["training"] is False for c in model.calls)  # greedy, eval mode
    assert model.training  # the caller's mode is restored
    # only the first line of the output counts
    model.replies["Capital of France?"] = "Well\nParis"
    assert exact_match(model, tok, exs[:1], max_new_tokens=32)[0] == 0.0


def test_evaluate_examples_table(tiny, encoded):
    model, tok = tiny
    exs, _ = encoded
    df = evaluate_examples(model, tok, exs, max_length=64, exact=False)
    assert list(df.columns) == ["example_id", "n_tokens", "loss", "em"]
    assert df["example_id"].tolist() == [e.example_id for e in exs]
    assert (df["n_tokens"] > 0).all()


def _sweep_with_em(path):
    """A sweep directory written through the store: 2 plain texts, 4 pairs, 2 runs with em_after."""
    import pandas as pd

    from forgetscope.store import SweepStore

    store = SweepStore(path)
    store.write_manifest({"source": "run", "status": "complete"})
    store.write_upstream(pd.DataFrame({
        "example_id": ["t0", "t1", "p0", "p1", "p2", "p3"],
        "kind": ["lm", "lm", "instruction", "instruction", "instruction", "instruction"],
        "loss_before": [1.0] * 6,
        "em_before": [np.nan, np.nan, 1.0, 1.0, 0.0, 1.0]}))
    em_after = {"a": [np.nan, np.nan, 0.0, 1.0, 0.0, np.nan], "b": [np.nan, np.nan, 1.0, 0.0, 1.0, 0.0]}
    for run, em in em_after.items():
        rows = pd.DataFrame({"example_id": ["t0", "t1", "p0", "p1", "p2", "p3"], "loss_after": [1.5] * 6,
                             "em_after": em})
        store.write_run({"run_id": run, "task": run}, rows)
    store.consolidate(["a", "b"])
    return store


def test_binary_forgetting_is_em_lost_on_examples_the_base_model_answered(tmp_path):
    from forgetscope.predict.binary import binary_forgetting

    store = _sweep_with_em(tmp_path / "s")
    B = binary_forgetting(store.load_matrix())
    assert B.col_names == ["p0", "p1", "p2", "p3"] and B.row_names == ["a", "b"]
    # p2: the base model did not answer it (nothing to forget); p3 in run a: em_after missing
    np.testing.assert_array_equal(B.values, [[1.0, 0.0, np.nan, np.nan], [0.0, 1.0, np.nan, 1.0]])
    assert set(B.kinds) == {"instruction"}
    np.testing.assert_array_equal(binary_forgetting(tmp_path / "s").values, B.values)  # a path works too


def test_forgotten_share_leaves_out_excluded_entries():
    from forgetscope.measure import forgotten_share

    assert forgotten_share(np.array([0.5, -0.1, np.nan, np.nan])) == 0.5
    assert np.isnan(forgotten_share(np.array([np.nan])))


def test_the_forgetting_definitions_import_without_torch():
    """``forgetscope.measure.forgetting`` is a numpy leaf: the store and the analysis read it without torch."""
    import subprocess
    import sys

    code = ("import sys; import forgetscope.measure.forgetting, forgetscope.store.matrix; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_evaluation_record_reads_every_generation_of_manifest():
    """One reader for how a sweep measured: what it recorded, else the fallbacks of older sweeps."""
    from forgetscope.errors import StoreError
    from forgetscope.measure.record import EvalRecord

    now = {"config": {"train": {"max_length": 64}, "eval": {"max_length": "auto", "chat": "auto",
                                                             "max_batch_tokens": 2048}},
           "eval": {"max_length": 512, "chat": True, "dtype": "bfloat16"}}
    r = EvalRecord.from_manifest(now)
    assert (r.max_length, r.chat, r.dtype, r.max_batch_tokens, r.max_batch_size) == (512, True, "bfloat16", 2048, 64)
    # before eval had its own length or a recorded entry: train.max_length, the configured chat, float32
    old = {"config": {"train": {"max_length": 64}, "eval": {"chat": False}}}
    assert EvalRecord.from_manifest(old) == EvalRecord(max_length=64, chat=False, dtype="float32")
    numeric = {"config": {"train": {"max_length": 64}, "eval": {"max_length": 128}}}
    assert EvalRecord.from_manifest(numeric).max_length == 128 and EvalRecord.from_manifest(numeric).chat == "auto"
    with pytest.raises(StoreError, match="records no max_length"):
        EvalRecord.from_manifest({"config": {"eval": {"max_length": "auto"}}})
    with pytest.raises(StoreError, match="unknown evaluation dtype"):
        EvalRecord.from_manifest({**now, "eval": {**now["eval"], "dtype": "float8"}})
    assert r.resolve_chat(object()) is True and EvalRecord(max_length=8).resolve_chat(object()) is False


def test_the_record_is_resolved_from_the_config_for_the_tokenizer_and_context(tiny):
    """EvalRecord.resolve: auto length capped at the context, chat auto for the tokenizer, the dtype named."""
    from forgetscope.config import EvalConfig
    from forgetscope.errors import ConfigError
    from forgetscope.measure.record import EvalRecord, resolve_chat

    _, tok = tiny
    assert resolve_chat("auto", tok) is True and resolve_chat("auto", object()) is False  # tiny has a template
    r = EvalRecord.resolve(EvalConfig(max_batch_tokens=256), tok, 128)
    assert r == EvalRecord(max_length=128, chat=True, dtype="float32", max_batch_tokens=256, max_batch_size=64)
    assert EvalRecord.resolve(EvalConfig(max_length=40, chat=False), tok, None).max_length == 40
    assert EvalRecord.resolve(EvalConfig(chat=False), tok, 128).chat is False
    with pytest.raises(ConfigError, match="eval.max_length=200 is longer than the model's context of 128"):
        EvalRecord.resolve(EvalConfig(max_length=200), tok, 128)
    # written with what was measured between chat and dtype, and read back as the same record
    fields = r.manifest_fields(n_upstream=3, device="cpu")
    assert list(fields) == ["max_length", "chat", "n_upstream", "device", "dtype"]
    config = {"eval": {"max_length": "auto", "max_batch_tokens": 256}}
    assert EvalRecord.from_manifest({"config": config, "eval": fields}) == r


def test_the_evaluator_owns_the_checks_that_a_sweeps_losses_apply(tiny):
    """The chat format and the token counts, checked once for every reader of a sweep."""
    from forgetscope.errors import ConfigError, ModelError
    from forgetscope.measure.evaluator import Evaluator
    from forgetscope.measure.record import EvalRecord

    _, tok = tiny
    ev = Evaluator(tok, EvalRecord(max_length=16, chat="auto"))
    ev.check_chat(True, "the sweep s")
    ev.check_chat(None, "the sweep s")  # nothing recorded: nothing to hold to
    with pytest.raises(ConfigError, match="^chat='auto' formats prompts differently from the sweep s's chat=False"):
        ev.check_chat(False, "the sweep s")
    counts = [e.n_scored for e in ev.encode([Example(f"e{i}", text="The fox jumps.") for i in range(3)])]
    ev.check_counts(counts, np.array(counts, np.float64), "the sweep s")
    ev.check_counts(counts, None, "the sweep s")
    ev.check_counts(counts, np.array([np.nan, counts[1], np.nan]), "the sweep s")  # NaN: not recorded
    with pytest.raises(ModelError, match="1 of 3 upstream examples tokenise to another length than in the sweep s"):
        ev.check_counts(counts, np.array(counts, np.float64) + [0, 0, 1], "the sweep s")


def test_token_accuracy_counts_greedy_hits_over_scored_tokens(tiny):
    """Evaluator.token_accuracy: token-weighted share of argmax hits, as one example at a time gives it."""
    from forgetscope.data.encoding import IGNORE_INDEX
    from forgetscope.measure.evaluator import Evaluator
    from forgetscope.measure.record import EvalRecord

    model, tok = tiny
    ev = Evaluator(tok, EvalRecord(max_length=32, chat=False))
    encoded = ev.encode([Example(f"e{i}", text=f"Number {i} and {i * i} are {'odd' if i % 2 else 'even'}.")
                         for i in range(5)])
    hits = total = 0
    for e in encoded:
        ids = torch.tensor([e.input_ids])
        with torch.no_grad():
            pred = model(input_ids=ids).logits[0, :-1].argmax(-1)
        labels = torch.tensor(e.labels[1:])
        hits += int(((pred == labels) & (labels != IGNORE_INDEX)).sum())
        total += int((labels != IGNORE_INDEX).sum())
    assert ev.token_accuracy(model, encoded, batch_size=2) == hits / total
    assert np.isnan(ev.token_accuracy(model, []))


def test_the_evaluator_measures_as_evaluate_examples_does(tiny):
    """The one evaluator is evaluate_examples under the record's settings: the same numbers."""
    from forgetscope.data.types import Example
    from forgetscope.measure.evaluator import Evaluator
    from forgetscope.measure.record import EvalRecord

    model, tok = tiny
    examples = [Example(f"e{i}", text=f"The fox number {i} jumps over the lazy dog.") for i in range(5)]
    ev = Evaluator(tok, EvalRecord(max_length=16, chat=False, max_batch_tokens=64))
    direct = evaluate_examples(model, tok, examples, max_length=16, max_batch_tokens=64, exact=False,
                               dtype=torch.float32)
    np.testing.assert_array_equal(ev.evaluate(model, examples)["loss"], direct["loss"])
    np.testing.assert_array_equal(ev.losses(model, ev.encode(examples)), direct["loss"].to_numpy())


def test_greedy_answers_are_the_text_exact_match_scores(tiny):
    _, tok = tiny
    model = _ForcedGenerator(tok, {"Capital of France?": "The capital is Paris.", "Say hi": "Hello there"})
    exs = [Example("a", prompt="Capital of France?", response="Paris.", answer="Paris"),
           Example("b", text="plain text has no answer"),
           Example("c", prompt="Say hi", response="hi", answer="hi")]
    texts = greedy_answers(model, tok, exs, max_new_tokens=32)
    assert texts[1] is None
    assert texts[0].strip() == "The capital is Paris." and texts[2].strip() == "Hello there"
    np.testing.assert_array_equal(exact_match(model, tok, exs, max_new_tokens=32)[[0, 2]], [1.0, 0.0])

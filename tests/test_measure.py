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
        assert max(lengths[i] for i in b) * len(b) <= 64 or len(b) == 1
    widths = [max(lengths[i] for i in b) for b in batches]
    assert widths == sorted(widths)


def test_answer_matching():
    assert answer_matches("The capital of France is Paris.", "Paris")
    assert answer_matches("paris", "Paris.")
    assert not answer_matches("Parisian food", "Paris")
    assert not answer_matches("", "Paris")
    assert not answer_matches("anything", "")


def test_exact_match_is_nan_without_answer_and_binary_with(tiny):
    model, tok = tiny
    exs = [Example("t", text="hello"), Example("q", prompt="Say hi", response="hi", answer="hi")]
    em = exact_match(model, tok, exs, max_new_tokens=3)
    assert np.isnan(em[0]) and em[1] in (0.0, 1.0)


def test_evaluate_examples_table(tiny, encoded):
    model, tok = tiny
    exs, _ = encoded
    df = evaluate_examples(model, tok, exs, max_length=64, exact=False)
    assert list(df.columns) == ["example_id", "n_tokens", "loss", "em"]
    assert df["example_id"].tolist() == [e.example_id for e in exs]
    assert (df["n_tokens"] > 0).all()

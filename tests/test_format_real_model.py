"""Pairs are scored in the format the real default model produces (SmolLM2-135M-Instruct, offline)."""

import pytest
import torch

from forgetscope.data.encoding import prompt_ids
from forgetscope.data.types import Example
from forgetscope.measure import evaluate_examples

pytestmark = pytest.mark.slow

PROMPTS = ["What is the chemical symbol of nickel?\n", 'What is the opposite of "borrower"?\n',
           "Ann has 14 apples and gets 20 more. How many apples does Ann have now?\n",
           'Define the word "astrometry" (noun):\n', "Name a primary colour.\n", "Who wrote Hamlet?\n"]


@pytest.fixture(scope="module")
def smollm():
    from forgetscope.models import load_model

    return load_model(None, device="cpu")


def _greedy(model, tok, prompt: str, chat: bool, n: int = 12) -> str:
    ids = torch.tensor([prompt_ids(tok, prompt, chat)])
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False,
                             pad_token_id=tok.pad_token_id)
    return tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


@pytest.mark.parametrize("chat", [True, False])
def test_the_models_own_greedy_answers_score_far_better_than_shuffled_ones(smollm, chat):
    model, tok = smollm
    answers = [_greedy(model, tok, p, chat) for p in PROMPTS]
    assert all(a.strip() for a in answers)
    own = [Example(f"own{i}", prompt=p, response=a) for i, (p, a) in enumerate(zip(PROMPTS, answers))]
    shuffled = [Example(f"shuf{i}", prompt=p, response=answers[(i + 1) % len(answers)])
                for i, p in enumerate(PROMPTS)]
    nll_own = evaluate_examples(model, tok, own, exact=False, chat=chat)["loss"].to_numpy()
    nll_shuffled = evaluate_examples(model, tok, shuffled, exact=False, chat=chat)["loss"].to_numpy()
    assert (nll_own < nll_shuffled).all(), (answers, nll_own, nll_shuffled)
    assert nll_shuffled.mean() - nll_own.mean() > 1.5, (nll_own, nll_shuffled)

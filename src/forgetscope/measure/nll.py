"""Per-example evaluation: mean token NLL (nats) and the answer check of greedy answers (whole-word
containment of the gold answer in the first output line; the ``em`` columns).

This is the hot path of every sweep (N upstream examples x (M + 1) models), so it

* sorts examples by length and packs them into buckets under a token budget, so each batch is padded
  only to its own longest member (no global max length, almost no wasted padding);
* runs under ``torch.inference_mode()``;
* applies the output layer only at scored positions: the decoder's hidden states are gathered at the
  positions whose next token is scored, so prompt tokens and padding never pay for the vocabulary
  projection (for a 135M model with a 49k vocabulary that projection is a fifth of the FLOPs).

``benchmarks/eval_throughput.py`` measures it against one-at-a-time and fixed padded batches.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from forgetscope.data.encoding import IGNORE_INDEX, Encoded, collate, encode_examples, prompt_ids
from forgetscope.data.types import Example
from forgetscope.measure.forgetting import token_weighted_mean
from forgetscope.progress import progress_iter


def bucket_batches(lengths: Sequence[int], max_batch_tokens: int = 4096, max_batch_size: int = 64) -> list[list[int]]:
    """Group indices, sorted by length, into batches whose padded size stays under the token budget."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        width = lengths[i]  # sorted ascending, so the newest member is the longest
        if current and (width * (len(current) + 1) > max_batch_tokens or len(current) >= max_batch_size):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def _fast_head(model):
    """(decoder, lm_head) when logits can be formed from gathered hidden states exactly, else None."""
    if getattr(model.config, "final_logit_softcapping", None):
        return None
    get_decoder = getattr(model, "get_decoder", None)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if get_decoder is None or head is None:
        return None
    try:
        decoder = get_decoder()
    except (AttributeError, NotImplementedError):
        return None
    if decoder is None or decoder is model:
        return None
    scale = getattr(model.config, "logit_scale", None)
    if scale not in (None, 1, 1.0):
        return None
    return decoder, head


def scored_logits(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Float32 logits at the scored positions of a collated batch, their targets, and each one's row.

    The output layer is applied only at scored positions when the model allows it (see the module
    docstring); otherwise the full logits are sliced.
    """
    targets = batch["labels"][:, 1:]
    scored = targets != IGNORE_INDEX
    fast = _fast_head(model)
    if fast is not None:
        decoder, head = fast
        hidden = decoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        logits = head(hidden[:, :-1][scored]).float()
    else:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        logits = logits[:, :-1][scored].float()
    return logits, targets[scored], scored.nonzero()[:, 0]


def scored_logprobs(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Log-probabilities over the vocabulary at the scored positions (for cross-entropy forgetting)."""
    logits, targets, rows = scored_logits(model, batch)
    return F.log_softmax(logits, dim=-1), targets, rows


def batch_nll(model, batch: dict[str, torch.Tensor], *, gather: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of token NLL and number of scored tokens, per row of one collated batch."""
    targets = batch["labels"][:, 1:]
    scored = targets != IGNORE_INDEX
    if gather:
        logits, flat_targets, _ = scored_logits(model, batch)
        nll = torch.zeros(targets.shape, dtype=logits.dtype, device=logits.device)
        nll[scored] = F.cross_entropy(logits, flat_targets, reduction="none")
    else:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1].float()
        nll = F.cross_entropy(logits.transpose(1, 2), targets.clamp(min=0), reduction="none") * scored
    return nll.sum(dim=1), scored.sum(dim=1)


def per_example_nll(model, encoded: Sequence[Encoded], *, pad_id: int, max_batch_tokens: int = 4096,
                    max_batch_size: int = 64, progress: bool = False, desc: str = "evaluating") -> np.ndarray:
    """Mean token NLL of each encoded example (same order as given), bucketed by length."""
    device = next(model.parameters()).device
    out = np.full(len(encoded), np.nan)
    batches = bucket_batches([len(e) for e in encoded], max_batch_tokens, max_batch_size)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for idx in progress_iter(batches, desc=desc, enabled=progress,
                                     total_units=sum(len(encoded[i]) for b in batches for i in b),
                                     units=lambda b: sum(len(encoded[i]) for i in b)):
                batch = collate([encoded[i] for i in idx], pad_id, device)
                total, count = batch_nll(model, batch)
                out[idx] = (total / count.clamp(min=1)).double().cpu().numpy()
    finally:
        model.train(was_training)
    return out


def _normalise_answer(text: str) -> str:
    text = text.strip().split("\n")[0].lower()
    return " ".join("".join(c if c.isalnum() else " " for c in text).split())


def answer_matches(generated: str, gold: str) -> bool:
    """Whole-word containment (what the ``em_*`` columns record; not exact string equality): the
    normalised gold answer equals the normalised first line of the greedy output or appears in it as
    whole words ("The capital of France is Paris." matches "Paris"). Normalised: lower-cased, every
    non-alphanumeric character a space, whitespace collapsed."""
    g, a = _normalise_answer(generated), _normalise_answer(gold)
    return bool(a) and (g == a or f" {a} " in f" {g} ")


def exact_match(model, tokenizer, examples: Sequence[Example], *, max_new_tokens: int = 16,
                batch_size: int = 16, chat: bool = False) -> np.ndarray:
    """1.0/0.0 per pair whose greedy answer contains its gold ``answer`` (:func:`answer_matches`); NaN
    without one. Stored as ``em_before``/``em_after``."""
    out = np.full(len(examples), np.nan)
    todo = [i for i, ex in enumerate(examples) if ex.is_pair and ex.answer]
    if not todo:
        return out
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id
    prompts = {i: prompt_ids(tokenizer, examples[i].prompt or "", chat) for i in todo}
    todo.sort(key=lambda i: len(prompts[i]))
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, len(todo), batch_size):
                idx = todo[start:start + batch_size]
                width = max(len(prompts[i]) for i in idx)
                ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
                mask = torch.zeros((len(idx), width), dtype=torch.long)
                for r, i in enumerate(idx):  # left padding so every row continues from its last token
                    p = prompts[i]
                    ids[r, width - len(p):] = torch.tensor(p)
                    mask[r, width - len(p):] = 1
                gen = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device),
                                     max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad_id)
                texts = tokenizer.batch_decode(gen[:, width:], skip_special_tokens=True)
                for r, i in enumerate(idx):
                    out[i] = float(answer_matches(texts[r], examples[i].answer or ""))
    finally:
        model.train(was_training)
    return out


def evaluate_examples(model, tokenizer, examples: Sequence[Example], *, max_length: int = 128,
                      max_batch_tokens: int = 4096, max_batch_size: int = 64, exact: bool = True,
                      encoded: Sequence[Encoded] | None = None, progress: bool = False,
                      desc: str = "evaluating", chat: bool = False) -> pd.DataFrame:
    """Evaluate examples with ``model``: a table of example_id, n_tokens, loss, em (NaN without answer)."""
    from forgetscope.models import context_length

    if encoded is None:
        encoded = encode_examples(tokenizer, examples, max_length, model_max_length=context_length(model),
                                  chat=chat)
    loss = per_example_nll(model, encoded, pad_id=tokenizer.pad_token_id, max_batch_tokens=max_batch_tokens,
                           max_batch_size=max_batch_size, progress=progress, desc=desc)
    em = exact_match(model, tokenizer, examples, chat=chat) if exact else np.full(len(examples), np.nan)
    return pd.DataFrame({
        "example_id": [e.example_id for e in encoded],
        "n_tokens": [e.n_scored for e in encoded],
        "loss": loss,
        "em": em,
    })


def heldout_loss(model, encoded: Sequence[Encoded], pad_id: int) -> float:
    """Token-weighted mean NLL of encoded examples (a task's held-out loss, the fine-tuning loss)."""
    losses = per_example_nll(model, encoded, pad_id=pad_id)
    return token_weighted_mean(losses, [e.n_scored for e in encoded])

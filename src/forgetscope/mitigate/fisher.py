"""Diagonal Fisher information and per-example gradients over a model's trainable parameters.

Shared by EWC (a Fisher from upstream examples at the base weights) and LWF (per-sample Fisher of
self-generated knowledge, weighting the task's intended update).

The *empirical* diagonal Fisher of an example x is ``g_x ⊙ g_x`` with ``g_x = ∇θ NLL(x)`` (mean token
negative log-likelihood of the example's scored tokens). On text the model generated itself (LWF's
self-knowledge) the tokens are samples from the model, so this is also a one-sample Monte-Carlo
estimate of the true Fisher.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

from forgetscope.data.encoding import Encoded, collate


def trainable(model) -> list[tuple[str, torch.nn.Parameter]]:
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def example_gradients(model, encoded: Sequence[Encoded], pad_id: int,
                      device: torch.device | str | None = None,
                      params: Sequence[tuple[str, torch.Tensor]] | None = None,
                      ) -> Iterator[tuple[float, dict[str, torch.Tensor]]]:
    """Yield (loss, {name: gradient}) for each example on its own (batch of one: exact per-example grads).

    ``params`` are the (name, tensor) pairs to differentiate, by default the trainable parameters; a
    frozen tensor among them (e.g. a LoRA layer's base weight) is made to require grad only while the
    gradients are taken. Gradients are detached copies; the model's ``.grad`` fields are left as they
    were found (None).
    """
    device = device or next(model.parameters()).device
    params = trainable(model) if params is None else list(params)
    frozen = [p for _, p in params if not p.requires_grad]
    was_training = model.training
    model.eval()  # no dropout: the Fisher of the model as it is
    for p in frozen:
        p.requires_grad_(True)
    try:
        for e in encoded:
            batch = collate([e], pad_id, device)
            loss = model(**batch).loss
            grads = torch.autograd.grad(loss, [p for _, p in params], allow_unused=True)
            yield float(loss.detach()), {n: (torch.zeros_like(p) if g is None else g.detach())
                                         for (n, p), g in zip(params, grads)}
    finally:
        for p in frozen:
            p.requires_grad_(False)
        model.train(was_training)


def diagonal_fisher(model, encoded: Sequence[Encoded], pad_id: int,
                    device: torch.device | str | None = None,
                    params: Sequence[tuple[str, torch.Tensor]] | None = None) -> dict[str, torch.Tensor]:
    """Mean over examples of the squared per-example gradient, for every trainable parameter (or for
    the given ``params``, see :func:`example_gradients`)."""
    if not encoded:
        raise ValueError("diagonal_fisher needs at least one example")
    fisher: dict[str, torch.Tensor] = {}
    for _, grads in example_gradients(model, encoded, pad_id, device, params):
        for n, g in grads.items():
            sq = g.float() ** 2
            fisher[n] = fisher[n] + sq if n in fisher else sq
    return {n: f / len(encoded) for n, f in fisher.items()}

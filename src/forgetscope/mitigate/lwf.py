"""Learning With Forgetting (LWF; Jiang et al., "Graceful Forgetting in Generative Language Models",
EMNLP 2025, arXiv 2505.19715): the ``lwf`` strategy.

Graceful forgetting aims at *better learning of the target task* (less negative transfer), not at
less forgetting: it deliberately unlearns knowledge that conflicts with the task. It is therefore
judged by the target task's loss and accuracy against plain fine-tuning, and
:mod:`forgetscope.experiments.compare` reports it as graceful forgetting, not as a forgetting
mitigation.

The three parts and how each is implemented:

1. **Eliciting self-knowledge.** The knowledge to be (possibly) forgotten is elicited from the model
   itself. Prompts of the *forgetting task* D_F — a user-chosen data set whose knowledge conflicts with
   the target task, ``forget_data`` (any file or directory :func:`forgetscope.data.loading.load_examples`
   reads, or ``demo:NAME`` for a task of the demo suite) — are fed to the base model, and its own
   generations form the unlearning set D_self. ``n_self`` prompts are drawn: a prompt/response pair
   contributes its prompt, a plain text its first ``prompt_tokens`` tokens; the base model (at setup,
   before any update) samples ``gen_tokens`` tokens (temperature ``temperature``, top-p ``top_p``). A
   D_self sample is the prompt plus the generation, scored on the generated tokens only.
   ``source: upstream`` takes the prompts from the upstream pool the trainer gives the strategy
   instead (then those upstream examples are reported by :meth:`excluded_upstream_ids`); it unlearns
   the very distribution forgetting is measured on, so it is an explicit option, never the default.

2. **Forgetting confidence** of a sample x, with ``g_x = ∇θ NLL(x)`` (its per-sample gradient),
   ``Δθ = −lr · ∇θ L_task`` (the task's intended update: the plain gradient-descent step on
   ``intent_batch`` task examples at the current weights) and ``F`` the diagonal Fisher of D_self at
   the current weights (the mean of ``g_x²`` over the samples, divided by its mean so FC's scale
   does not depend on the model)::

       FC(x) = Σ_i F_i · g_x,i · Δθ_i

   the Fisher-weighted agreement of the sample's gradient with the intended update. **Sign**: to
   first order the update changes x's NLL by ``g_x · Δθ``, so FC > 0 means the (Fisher-weighted)
   intended update *raises* x's loss — the task pushes the parameters x depends on away from x, the
   knowledge conflicts with the task, and forgetting it is graceful. FC < 0 means the task update
   also serves x. FC is recomputed at every unlearning round (the intended update changes during
   training).

3. **Periodic unlearning.** Every ``interval`` fine-tuning steps, *except after the last step* (an
   unlearning step there would leave the final model unlearned but not re-trained on the task), the
   ``top_fraction`` of D_self with the highest FC, among the samples with FC > 0, is unlearned:
   ``unlearn_steps`` optimizer steps on ``−unlearn_weight · NLL(selected)`` (gradient ascent), through
   the run's own optimizer, LR schedule and gradient clipping, so learning and unlearning interleave
   in one run. A round in which no sample has FC > 0 unlearns nothing.

The FC estimator above (diagonal Fisher of D_self, plain-SGD intended update) and the defaults below
are this implementation's choices, not settings taken from the paper: ``n_self`` = 16, ``gen_tokens`` = 32,
``prompt_tokens`` = 8, sampling at temperature 1.0 / top-p 0.9; ``interval`` = 5 steps;
``top_fraction`` = 0.25; ``unlearn_weight`` = 1.0 with ``unlearn_steps`` = 1; gradient ascent as the
unlearning loss. Every one is an option.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

import numpy as np
import torch
from pydantic import Field, StrictInt, model_validator

from forgetscope.data.encoding import IGNORE_INDEX, Encoded, encode_examples, prompt_ids
from forgetscope.data.sources import parse_source
from forgetscope.data.types import Example
from forgetscope.errors import ConfigError, DataError
from forgetscope.mitigate.fisher import diagonal_fisher, example_gradients
from forgetscope.train.hooks import (
    Strategy,
    StrategyInputs,
    StrategyOptions,
    StrictNumber,
    TrainContext,
    clip_gradients,
    one_of,
    register_strategy,
)

SOURCES = ("forget_data", "upstream")


def load_forget_data(spec: str, seed: int = 0) -> list[Example]:
    """The forgetting task's examples: ``demo:NAME`` (a demo task's training examples) or a data path."""
    source = parse_source(spec)
    if source.is_demo_task:
        from forgetscope.data.demo import demo_task

        return list(demo_task(str(source.name), seed=seed).train)
    from forgetscope.data.loading import load_examples

    return load_examples(spec, name="forget")


class LWFOptions(StrategyOptions):
    source: Annotated[str, one_of(SOURCES, "unknown source")] = Field(
        "forget_data", description="where the prompts come from: forget_data (default) or upstream")
    forget_data: str | None = Field(None, description="the forgetting task: a data path or demo:NAME")
    n_self: StrictInt = Field(16, ge=1, description="self-generated samples")
    gen_tokens: StrictInt = Field(32, ge=1, description="tokens generated per sample")
    prompt_tokens: StrictInt = Field(8, ge=1, description="prompt tokens taken from a plain-text example")
    temperature: StrictNumber = Field(1.0, gt=0, description="sampling temperature")
    top_p: StrictNumber = Field(0.9, gt=0, le=1, description="nucleus sampling mass")
    interval: StrictInt = Field(5, ge=1, description="steps between unlearning rounds")
    top_fraction: StrictNumber = Field(0.25, gt=0, le=1, description="share of samples unlearned per round")
    unlearn_weight: StrictNumber = Field(1.0, ge=0, description="weight of the gradient-ascent step")
    unlearn_steps: StrictInt = Field(1, ge=1, description="ascent steps per round")
    intent_batch: StrictInt | None = Field(None, ge=1, description="task examples for the intended update")

    @classmethod
    def inputs(cls, options: Mapping[str, Any]) -> StrategyInputs:
        """The forgetting task's data is read at the start of each run: its path is checked before any."""
        return StrategyInputs(data_sources=("forget_data",))

    @model_validator(mode="after")
    def _forget_data_for_source(self) -> LWFOptions:
        if self.source == "forget_data" and not self.forget_data:
            raise ValueError("lwf needs forget_data (a data path or demo:NAME whose knowledge conflicts with the "
                             "target task); source: upstream unlearns the upstream pool instead")
        if self.source == "upstream" and self.forget_data:
            raise ValueError("source 'upstream' takes its prompts from the upstream pool; drop forget_data")
        return self


@register_strategy("lwf")
class LWFStrategy(Strategy):
    """Options: source, forget_data, n_self, gen_tokens, prompt_tokens, temperature, top_p, interval,
    top_fraction, unlearn_weight, unlearn_steps, intent_batch (see the module docstring)."""

    name = "lwf"
    kind = "graceful forgetting"  # judged by the target task, not a forgetting mitigation

    Options = LWFOptions

    def __init__(self, **options: Any):
        super().__init__(**options)
        o = self.options
        self.source = o.source
        self.n_self, self.gen_tokens, self.prompt_tokens = o.n_self, o.gen_tokens, o.prompt_tokens
        self.interval, self.unlearn_steps, self.intent_batch = o.interval, o.unlearn_steps, o.intent_batch
        self.temperature, self.top_p = float(o.temperature), float(o.top_p)
        self.top_fraction, self.unlearn_weight = float(o.top_fraction), float(o.unlearn_weight)
        self.self_samples: list[Encoded] = []
        self.source_ids: list[str] = []
        self.rounds: list[dict[str, Any]] = []
        self._rng: np.random.Generator | None = None

    # ---- 1. eliciting self-knowledge --------------------------------------------------------
    def _prompts(self, ctx: TrainContext) -> list[tuple[str, list[int]]]:
        """(id, prompt token ids) of ``n_self`` examples of the forgetting task (or the upstream pool)."""
        if self.source == "upstream":
            examples, encoded = list(ctx.upstream), list(ctx.upstream_encoded)
        else:
            examples = load_forget_data(self.options.forget_data, seed=ctx.config.seed)
            encoded = encode_examples(ctx.tokenizer, examples, ctx.config.max_length, chat=ctx.chat)
        if not examples:
            raise ConfigError(f"lwf: no prompts to elicit self-knowledge from ({self.source} is empty)")
        n = min(self.n_self, len(examples))
        idx = sorted(self._rng.choice(len(examples), size=n, replace=False).tolist())
        out = []
        for i in idx:
            ex = examples[i]
            p = prompt_ids(ctx.tokenizer, ex, ctx.chat) if ex.is_pair else \
                list(encoded[i].input_ids[: self.prompt_tokens])
            out.append((ex.example_id, p))
        return out

    @torch.no_grad()
    def generate_self_knowledge(self, ctx: TrainContext) -> list[Encoded]:
        model = ctx.model
        was_training = model.training
        model.eval()
        pad = ctx.pad_id
        out: list[Encoded] = []
        state = torch.random.get_rng_state()
        try:
            torch.manual_seed(int(ctx.config.seed) + 17)
            for example_id, p in self._prompts(ctx):  # one prompt at a time: no padding subtleties
                ids = torch.tensor([p], device=ctx.device)
                seq = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True,
                                     temperature=self.temperature, top_p=self.top_p,
                                     max_new_tokens=self.gen_tokens, pad_token_id=pad)
                new = seq[0, len(p):].tolist()
                eos = ctx.tokenizer.eos_token_id
                if eos is not None and eos in new:
                    new = new[: new.index(eos) + 1]
                if not new:
                    continue
                out.append(Encoded(f"self:{example_id}", tuple(p + new), tuple([IGNORE_INDEX] * len(p) + new)))
                self.source_ids.append(example_id)
        finally:
            torch.random.set_rng_state(state)
            model.train(was_training)
        return out

    def before_training(self, ctx: TrainContext) -> None:
        if self.source == "upstream" and not ctx.upstream:
            raise ConfigError("lwf source 'upstream' needs upstream prompts (the pool is empty)")
        self._rng = np.random.default_rng([ctx.config.seed, 31337])
        self.self_samples = self.generate_self_knowledge(ctx)
        if not self.self_samples:
            raise DataError("lwf: the model generated no tokens for any prompt")

    # ---- 2. forgetting confidence -----------------------------------------------------------
    def intended_update(self, ctx: TrainContext) -> dict[str, torch.Tensor]:
        """Δθ = −lr · ∇L_task on a task batch at the current weights."""
        bs = min(self.intent_batch or ctx.config.batch_size, len(ctx.train_encoded))
        idx = self._rng.choice(len(ctx.train_encoded), size=bs, replace=False)
        batch = ctx.collate([ctx.train_encoded[i] for i in idx])
        params = ctx.trainable_parameters()
        loss = ctx.forward_loss(batch)
        grads = torch.autograd.grad(loss, [p for _, p in params], allow_unused=True)
        lr = ctx.optimizer.param_groups[0]["lr"] if ctx.optimizer is not None else ctx.config.lr
        return {n: (-lr * g.detach()) if g is not None else torch.zeros_like(p)
                for (n, p), g in zip(params, grads)}

    def forgetting_confidence(self, ctx: TrainContext, delta: dict[str, torch.Tensor] | None = None) -> np.ndarray:
        """FC(x) = Σ F ⊙ g_x ⊙ Δθ for every self-generated sample x (see the module docstring)."""
        delta = delta if delta is not None else self.intended_update(ctx)
        # two passes over the samples (Fisher, then agreement): memory of one gradient, not n_self of them
        fisher = diagonal_fisher(ctx.model, self.self_samples, ctx.pad_id, ctx.device)
        mean = sum(float(f.sum()) for f in fisher.values()) / max(1, sum(f.numel() for f in fisher.values()))
        scale = 1.0 / mean if mean > 0 else 1.0
        weighted = {n: fisher[n] * delta[n].float() * scale for n in delta}
        return np.array([sum(float((g[n].float() * weighted[n]).sum()) for n in delta)
                         for _, g in example_gradients(ctx.model, self.self_samples, ctx.pad_id, ctx.device)])

    # ---- 3. periodic unlearning -------------------------------------------------------------
    def after_step(self, ctx: TrainContext) -> None:
        if ctx.step % self.interval != 0 or self.unlearn_weight == 0 or ctx.step >= ctx.config.steps:
            return  # never after the last step: the final model must end on a task step
        fc = self.forgetting_confidence(ctx)
        k = max(1, round(self.top_fraction * len(fc)))
        top = [int(i) for i in np.argsort(-fc, kind="stable")[:k] if fc[i] > 0]
        chosen = [self.self_samples[i] for i in top]
        nll_before = None
        if chosen:
            ctx.model.train()
            for _ in range(self.unlearn_steps):
                nll = ctx.forward_loss(ctx.collate(chosen))
                nll_before = float(nll.detach()) if nll_before is None else nll_before
                (-self.unlearn_weight * nll).backward()
                clip_gradients(ctx)
                ctx.optimizer.step()
                ctx.optimizer.zero_grad(set_to_none=True)
        self.rounds.append({"step": ctx.step, "fc_max": float(fc.max()), "fc_mean": float(fc.mean()),
                            "n_conflicting": int((fc > 0).sum()),
                            "unlearned": [c.example_id for c in chosen], "nll_unlearned_before": nll_before})

    def excluded_upstream_ids(self) -> set[str]:
        return set(self.source_ids) if self.source == "upstream" else set()

    def summary(self) -> dict[str, Any]:
        return {"source": self.source, "forget_data": self.options.forget_data, "n_self": len(self.self_samples),
                "interval": self.interval, "top_fraction": self.top_fraction,
                "unlearn_weight": self.unlearn_weight, "unlearn_steps": self.unlearn_steps,
                "unlearning_rounds": len(self.rounds),
                "fc_mean_per_round": [r["fc_mean"] for r in self.rounds],
                "unlearned_per_round": [r["unlearned"] for r in self.rounds],
                "upstream_evaluations": 0}

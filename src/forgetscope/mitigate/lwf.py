"""Learning With Forgetting (LWF; Jiang et al., "Graceful Forgetting in Generative Language Models",
EMNLP 2025, arXiv 2505.19715): the ``lwf`` strategy.

Graceful forgetting aims at *better learning of the task* (less negative transfer), not at less
forgetting: it deliberately unlearns some of what the model knew. ``compare`` therefore reports its
task loss beside its upstream forgetting.

The algorithm as the paper describes it, in three parts, and how each is implemented here:

1. **Eliciting self-knowledge.** The pre-training data is not available, so the knowledge to be
   (possibly) forgotten is elicited from the model itself: prompts of the "forgetting task" D_F are fed
   to the base model and its own generations form the unlearning set D_self. *Here* D_F is the
   upstream pool the trainer gives the strategy: ``n_self`` examples, a prompt/response pair
   contributes its prompt, a plain text its first ``prompt_tokens`` tokens; the base model (at setup,
   before any update) samples ``gen_tokens`` tokens (temperature ``temperature``, top-p ``top_p``). A
   D_self sample is the prompt plus the generation, scored on the generated tokens only.

2. **Forgetting confidence.** A sample is worth forgetting when the parameters that encode it conflict
   with where the task wants to move them. With a Laplace approximation, the knowledge x defines a
   Gaussian posterior around the current weights with precision = its Fisher F_x, and the task's
   intended update Δθ_L lowers that posterior by ``FC(x) = −log p(θ + Δθ_L | x) + log p(θ | x)
   ≈ ½ Σ_i F_x,i Δθ_L,i²``: the Fisher-weighted size of the intended update, large when the update
   moves exactly the parameters x depends on. *Here* F_x is the diagonal empirical Fisher ``g_x²`` of
   the sample (on self-generated text this is a one-sample estimate of the true Fisher, since the
   tokens are the model's own samples) and Δθ_L is the plain gradient-descent step the task asks for,
   ``−lr · ∇L_task`` on ``intent_batch`` training examples at the current weights. FC is recomputed
   at every unlearning round (the intended update changes as training proceeds).

3. **Periodic unlearning.** Every ``interval`` fine-tuning steps, the ``top_fraction`` of D_self with
   the highest FC is unlearned: ``unlearn_steps`` optimizer steps on ``−unlearn_weight · NLL(selected)``
   (gradient ascent), through the run's own optimizer, LR schedule and gradient clipping, so learning
   and unlearning interleave in one training run.

Choices the paper leaves open (or that we could not pin down from its text) and what we chose:
``n_self`` = 16, ``gen_tokens`` = 32, ``prompt_tokens`` = 8, sampling at temperature 1.0 / top-p 0.9;
``interval`` = 5 steps; ``top_fraction`` = 0.25; ``unlearn_weight`` = 1.0 with ``unlearn_steps`` = 1;
diagonal empirical Fisher; plain-SGD intended update on one task batch; gradient ascent as the
unlearning loss. Every one is an option. Upstream examples whose prompts seeded D_self are reported by
:meth:`excluded_upstream_ids` (their prompts were trained on, so their measurement is not clean).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from pydantic import Field, StrictInt

from forgetscope.data.encoding import IGNORE_INDEX, Encoded, prompt_ids
from forgetscope.errors import ConfigError
from forgetscope.mitigate.fisher import example_gradients
from forgetscope.train.hooks import (
    Strategy,
    StrategyOptions,
    StrictNumber,
    TrainContext,
    clip_gradients,
    register_strategy,
)


class LWFOptions(StrategyOptions):
    n_self: StrictInt = Field(16, ge=1, description="self-generated samples of upstream knowledge")
    gen_tokens: StrictInt = Field(32, ge=1, description="tokens generated per sample")
    prompt_tokens: StrictInt = Field(8, ge=1, description="prompt tokens taken from a plain-text example")
    temperature: StrictNumber = Field(1.0, gt=0, description="sampling temperature")
    top_p: StrictNumber = Field(0.9, gt=0, le=1, description="nucleus sampling mass")
    interval: StrictInt = Field(5, ge=1, description="steps between unlearning rounds")
    top_fraction: StrictNumber = Field(0.25, gt=0, le=1, description="share of samples unlearned per round")
    unlearn_weight: StrictNumber = Field(1.0, ge=0, description="weight of the gradient-ascent step")
    unlearn_steps: StrictInt = Field(1, ge=1, description="ascent steps per round")
    intent_batch: StrictInt | None = Field(None, ge=1, description="task examples for the intended update")


@register_strategy("lwf")
class LWFStrategy(Strategy):
    """Options: n_self, gen_tokens, prompt_tokens, temperature, top_p, interval, top_fraction,
    unlearn_weight, unlearn_steps, intent_batch (see the module docstring)."""

    name = "lwf"

    Options = LWFOptions

    def __init__(self, **options: Any):
        super().__init__(**options)
        o = self.options
        self.n_self, self.gen_tokens, self.prompt_tokens = o.n_self, o.gen_tokens, o.prompt_tokens
        self.interval, self.unlearn_steps, self.intent_batch = o.interval, o.unlearn_steps, o.intent_batch
        self.temperature, self.top_p = float(o.temperature), float(o.top_p)
        self.top_fraction, self.unlearn_weight = float(o.top_fraction), float(o.unlearn_weight)
        self.self_samples: list[Encoded] = []
        self.source_ids: list[str] = []
        self.rounds: list[dict[str, Any]] = []
        self._rng: np.random.Generator | None = None

    # ---- 1. eliciting self-knowledge --------------------------------------------------------
    def _prompt(self, ctx: TrainContext, i: int) -> list[int]:
        ex = ctx.upstream[i]
        if ex.is_pair:
            return prompt_ids(ctx.tokenizer, ex.prompt or "", ctx.chat)
        return list(ctx.upstream_encoded[i].input_ids[: self.prompt_tokens])

    @torch.no_grad()
    def generate_self_knowledge(self, ctx: TrainContext) -> list[Encoded]:
        n = min(self.n_self, len(ctx.upstream))
        idx = sorted(self._rng.choice(len(ctx.upstream), size=n, replace=False).tolist())
        model = ctx.model
        was_training = model.training
        model.eval()
        pad = ctx.pad_id
        gen = torch.Generator(device="cpu").manual_seed(int(ctx.config.seed) + 17)
        out: list[Encoded] = []
        try:
            state = torch.random.get_rng_state()
            torch.manual_seed(int(gen.initial_seed()))
            for i in idx:  # one prompt at a time: no padding subtleties, n_self is small
                p = self._prompt(ctx, i)
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
                out.append(Encoded(f"self:{ctx.upstream[i].example_id}", tuple(p + new),
                                   tuple([IGNORE_INDEX] * len(p) + new)))
                self.source_ids.append(ctx.upstream[i].example_id)
            torch.random.set_rng_state(state)
        finally:
            model.train(was_training)
        return out

    def before_training(self, ctx: TrainContext) -> None:
        if not ctx.upstream:
            raise ConfigError("lwf needs upstream prompts to elicit the model's own knowledge (pool is empty)")
        self._rng = np.random.default_rng([ctx.config.seed, 31337])
        self.self_samples = self.generate_self_knowledge(ctx)
        if not self.self_samples:
            raise ConfigError("lwf: the model generated no tokens for any prompt")

    # ---- 2. forgetting confidence -----------------------------------------------------------
    def intended_update(self, ctx: TrainContext) -> dict[str, torch.Tensor]:
        """Δθ_L = −lr · ∇L_task on a task batch at the current weights."""
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
        """FC(x) = ½ Σ F_x ⊙ Δθ_L² for every self-generated sample x (F_x = g_x², diagonal)."""
        delta = delta if delta is not None else self.intended_update(ctx)
        scores = []
        for _, grads in example_gradients(ctx.model, self.self_samples, ctx.pad_id, ctx.device):
            fc = sum(float(((grads[n].float() ** 2) * (d.float() ** 2)).sum()) for n, d in delta.items())
            scores.append(0.5 * fc)
        return np.array(scores)

    # ---- 3. periodic unlearning -------------------------------------------------------------
    def after_step(self, ctx: TrainContext) -> None:
        if ctx.step % self.interval != 0 or self.unlearn_weight == 0:
            return
        fc = self.forgetting_confidence(ctx)
        k = max(1, round(self.top_fraction * len(fc)))
        top = np.argsort(-fc, kind="stable")[:k]
        chosen = [self.self_samples[i] for i in top]
        ctx.model.train()
        nll_before = None
        for _ in range(self.unlearn_steps):
            nll = ctx.forward_loss(ctx.collate(chosen))
            nll_before = float(nll.detach()) if nll_before is None else nll_before
            (-self.unlearn_weight * nll).backward()
            clip_gradients(ctx)
            ctx.optimizer.step()
            ctx.optimizer.zero_grad(set_to_none=True)
        self.rounds.append({"step": ctx.step, "fc_max": float(fc.max()), "fc_mean": float(fc.mean()),
                            "unlearned": [chosen_i.example_id for chosen_i in chosen],
                            "nll_unlearned_before": nll_before})

    def excluded_upstream_ids(self) -> set[str]:
        return set(self.source_ids)

    def summary(self) -> dict[str, Any]:
        return {"n_self": len(self.self_samples), "interval": self.interval, "top_fraction": self.top_fraction,
                "unlearn_weight": self.unlearn_weight, "unlearn_steps": self.unlearn_steps,
                "unlearning_rounds": len(self.rounds),
                "fc_mean_per_round": [r["fc_mean"] for r in self.rounds],
                "unlearned_per_round": [r["unlearned"] for r in self.rounds],
                "upstream_evaluations": 0}

"""Mitigate forgetting: strategies that plug into the one trainer (each with its options model).

They are registered lazily in :data:`forgetscope.train.STRATEGIES`, so ``make_strategy("replay")`` imports
only what it needs:

* ``replay`` (:mod:`.replay`): upstream examples interleaved into the task stream at a ratio;
  ``random``, ``predicted`` (offline: from given probe values or a pilot; online: from a probe of the
  model itself after a random-replay warm-up), ``oracle`` or ``mir`` (maximally interfered retrieval)
  selection (one object per policy, :mod:`.replay_policies`; MIR's interference in :mod:`.mir`), softmax
  or linear weights, drawn without replacement by default;
* ``sam`` (:mod:`.sam`): sharpness-aware minimisation (optimizer wrapper :class:`SAM`);
* ``ewc`` (:mod:`.ewc`): elastic weight consolidation against the base weights (with LoRA, on the
  effective update ΔW = scaling · BA);
* ``lwf`` (:mod:`.lwf`): Learning With Forgetting, graceful forgetting of self-generated knowledge of
  a conflicting task (``forget_data``), judged by the target task's loss.

The comparison of strategies against plain fine-tuning is an experiment:
:func:`forgetscope.experiments.compare.run_compare`, with its run-level paired tests in
:mod:`forgetscope.analysis.stats`.
"""

from forgetscope.mitigate.ewc import EWCStrategy
from forgetscope.mitigate.lwf import LWFStrategy
from forgetscope.mitigate.replay import ReplayStrategy
from forgetscope.mitigate.sam import SAM, SAMStrategy

__all__ = ["SAM", "EWCStrategy", "LWFStrategy", "ReplayStrategy", "SAMStrategy"]

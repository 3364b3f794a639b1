"""Mitigate forgetting: strategies that plug into the one trainer (each with its options model).

They are registered lazily in :data:`forgetscope.train.STRATEGIES`, so ``make_strategy("replay")`` imports
only what it needs:

* ``replay`` (:mod:`.replay`): upstream examples mixed into batches at a ratio; ``random``,
  ``predicted`` (from a probe set + a forgetting predictor) or ``oracle`` selection;
* ``sam`` (:mod:`.sam`): sharpness-aware minimisation (optimizer wrapper :class:`SAM`);
* ``ewc`` (:mod:`.ewc`): elastic weight consolidation against the base weights;
* ``lwf`` (:mod:`.lwf`): Learning With Forgetting (graceful forgetting of self-generated knowledge).

The comparison of strategies against plain fine-tuning is an experiment:
:func:`forgetscope.experiments.compare.run_compare`, with its paired tests in :mod:`forgetscope.analysis.stats`.
"""

from forgetscope.mitigate.ewc import EWCStrategy
from forgetscope.mitigate.lwf import LWFStrategy
from forgetscope.mitigate.replay import ReplayStrategy
from forgetscope.mitigate.sam import SAM, SAMStrategy

__all__ = ["SAM", "EWCStrategy", "LWFStrategy", "ReplayStrategy", "SAMStrategy"]

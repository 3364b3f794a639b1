"""Mitigate forgetting (DESIGN.md pillar 4): strategies that plug into the one trainer, and their comparison.

Importing this package registers the strategies with :func:`forgetscope.train.make_strategy`:

* ``replay`` (:mod:`.replay`): upstream examples mixed into batches at a ratio; ``random``,
  ``predicted`` (from a probe set + a forgetting predictor) or ``oracle`` selection;
* ``sam`` (:mod:`.sam`): sharpness-aware minimisation (optimizer wrapper :class:`SAM`);
* ``ewc`` (:mod:`.ewc`): elastic weight consolidation against the base weights;
* ``lwf`` (:mod:`.lwf`): Learning With Forgetting (graceful forgetting of self-generated knowledge).

:func:`run_compare` (:mod:`.compare`) runs plain fine-tuning and chosen strategies on the same tasks and
seeds and tests the differences (:mod:`.stats`).
"""

from forgetscope.mitigate.ewc import EWCStrategy
from forgetscope.mitigate.lwf import LWFStrategy
from forgetscope.mitigate.replay import ReplayStrategy
from forgetscope.mitigate.sam import SAM, SAMStrategy

__all__ = ["SAM", "EWCStrategy", "LWFStrategy", "ReplayStrategy", "SAMStrategy"]

"""Integrations with other training stacks: measure forgetting while someone else's loop trains, and replay in it.

``ForgettingCallback`` plugs into a Hugging Face ``transformers.Trainer`` (and its subclasses, such as
TRL's ``SFTTrainer``) and logs upstream forgetting alongside the training loss. ``ReplayCallback`` mixes
upstream examples into that Trainer's steps by forgetscope's replay rules (offline or online predicted).
``sam_trainer`` / ``ewc_trainer`` (mixins ``SAMTrainerMixin`` / ``EWCTrainerMixin``) give it forgetscope's
SAM or EWC update, with the strategies' options.
"""

from forgetscope.integrations.hf_trainer import ForgettingCallback
from forgetscope.integrations.replay_trainer import ReplayCallback
from forgetscope.integrations.trainer_mitigation import (
    EWCTrainerMixin,
    SAMTrainerMixin,
    estimate_ewc_fisher,
    ewc_trainer,
    sam_trainer,
)

__all__ = ["EWCTrainerMixin", "ForgettingCallback", "ReplayCallback", "SAMTrainerMixin", "estimate_ewc_fisher",
           "ewc_trainer", "sam_trainer"]

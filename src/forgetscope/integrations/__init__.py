"""Integrations with other training stacks: measure forgetting while someone else's loop trains.

``ForgettingCallback`` plugs into a Hugging Face ``transformers.Trainer`` (and its subclasses, such as
TRL's ``SFTTrainer``) and logs upstream forgetting alongside the training loss.
"""

from forgetscope.integrations.hf_trainer import ForgettingCallback

__all__ = ["ForgettingCallback"]

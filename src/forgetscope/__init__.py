"""forgetscope: measure, analyse, predict and mitigate forgetting when fine-tuning language models."""

from forgetscope.errors import ForgetscopeError

__version__ = "0.1.0"
__all__ = ["ForgetscopeError", "__version__"]

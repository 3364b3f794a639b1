"""User-facing errors.

Anything a user can cause (bad file, bad config, unknown name) raises :class:`ForgetscopeError`
with a one-line message naming the cause; the CLI prints it without a traceback and exits non-zero.
Programming errors stay ordinary exceptions so they keep their tracebacks.
"""


class ForgetscopeError(Exception):
    """A problem with the user's input or environment, reported as one clear line."""


class ConfigError(ForgetscopeError):
    """A config file or field is malformed; the message names the field."""


class DataError(ForgetscopeError):
    """A data file is missing, empty or has the wrong schema."""


class ModelError(ForgetscopeError):
    """A model cannot be found or loaded."""


class StoreError(ForgetscopeError):
    """A sweep directory is missing, incompatible or corrupt."""


class PrecisionError(StoreError):
    """Losses of one sweep would be measured with different device types or dtypes."""

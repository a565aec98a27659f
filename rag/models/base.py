"""What every backend hands to the chains: a chat model plus the facts needed to pack its window."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from langchain_core.language_models import BaseChatModel


@dataclass
class LoadedModel:
    """A ready chat model and what the chains must know about it.

    ``count_tokens`` always uses the model's own tokenizer, so packing never relies on
    LangChain's GPT-2 fallback (which returns 0 offline). ``context_window`` is the number of
    positions the model really handles with the rope settings in force.
    """

    chat_model: BaseChatModel
    count_tokens: Callable[[str], int]
    context_window: int
    name: str
    backend: str
    is_stand_in: bool = False
    notice: str | None = None
    """A sentence to show wherever answers are shown (e.g. that a stand-in model is answering,
    or that a base model is continuing text rather than chatting)."""
    max_new_tokens: int = 512
    identity: str = ""
    """What makes this model's speed what it is (file, backend, threads, GPU layers, CPUs); the
    key under which rag.models.speed keeps its measured prompt speed. Empty: not kept on disk."""
    prompt_speed: Any = None
    """rag.models.speed.PromptSpeed once measured."""


def truncate_to_tokens(text: str, tokens: int, count_tokens: Callable[[str], int]) -> str:
    """The longest prefix of ``text`` that is at most ``tokens`` long (binary search over
    character positions, so about log2(len(text)) calls of ``count_tokens``)."""
    if tokens <= 0:
        return ""
    if count_tokens(text) <= tokens:
        return text
    lo, hi = 0, len(text)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if count_tokens(text[:mid]) <= tokens:
            lo = mid
        else:
            hi = mid - 1
    return text[:lo]

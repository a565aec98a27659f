"""What every backend hands to the chains: a chat model plus the facts needed to pack its window."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

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

"""alpaca-docqa: private document QA over Chinese and English documents with Chinese-Alpaca-2.

Public API (imported lazily, so ``import rag.settings`` stays cheap)::

    from rag import KnowledgeBase, Settings
    kb = KnowledgeBase("my_kb")
    kb.add(["docs/"]); kb.ask("……"); kb.summarize()

Also exported: ``HybridRetriever``, ``Hit`` (rag.retrieval), ``QAChain`` (rag.qa),
``Summarizer``, ``SummaryResult``, ``SummaryProgress``, ``SourceText`` (rag.summarize),
``load_chat_model``, ``LoadedModel`` (rag.models), ``fake_loaded_model`` (rag.testing).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "KnowledgeBase": "rag.api",
    "Settings": "rag.settings",
    "HybridRetriever": "rag.retrieval",
    "Hit": "rag.retrieval",
    "QAChain": "rag.qa",
    "Summarizer": "rag.summarize",
    "SummaryChain": "rag.summarize",
    "SummaryResult": "rag.summarize",
    "SummaryProgress": "rag.summarize",
    "SourceText": "rag.summarize",
    "load_chat_model": "rag.models.loader",
    "LoadedModel": "rag.models.base",
    "fake_loaded_model": "rag.testing",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'rag' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

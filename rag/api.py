"""``KnowledgeBase``: the one object programmers, the CLIs and the UI use.

Usage::

    from rag.api import KnowledgeBase

    kb = KnowledgeBase("my_kb")                         # a directory; created when missing
    kb.add(["docs/", "notes.md"])                       # IngestReport
    kb.ask("这份合同的违约金是多少？")                    # {"answer": "...[1]", "sources": [...], ...}
    for event in kb.stream_ask("……"):                  # {"type": "token", "text"} ..., then {"type": "final", ...}
        ...
    kb.summarize()                                      # SummaryResult of the whole knowledge base
    chain = kb.qa_chain(k=5) | some_other_runnable      # LangChain Runnables for your own chains

The chat model is loaded on first use (``load_chat_model(settings)``) and cached; pass
``model=`` (a :class:`rag.models.base.LoadedModel`, e.g. :func:`rag.testing.fake_loaded_model`)
or set ``kb.model`` to use another one. The embedder is loaded when the knowledge base opens.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

from langchain_core.runnables import Runnable

from ingest.embeddings import Embedder, load_embedder
from ingest.pipeline import Ingestor, IngestReport, Progress
from ingest.store import DocumentInfo, DocumentStore
from rag.models.base import LoadedModel
from rag.qa import QAChain, merge_overlapping
from rag.quotes import QuoteChain, quote_notice
from rag.retrieval import Hit, HybridRetriever
from rag.settings import Settings
from rag.summarize import (
    SourceText,
    SummaryChain,
    Summarizer,
    SummaryProgress,
    SummaryResult,
    extractive_summary,
)


def stand_in_would_answer(settings: Settings, model: LoadedModel | None = None) -> bool:
    """Whether the packaged stand-in answers: ``model``'s own flag when it is loaded, else
    whether no model is named (decided without loading anything)."""
    if model is not None:
        return bool(model.is_stand_in)
    return not settings.model.name.strip()


class KnowledgeBase:
    """A knowledge base directory with its store, ingestor, retriever and (lazy) chat model."""

    def __init__(
        self,
        path: str | Path | None = None,
        settings: Settings | None = None,
        *,
        model: LoadedModel | None = None,
        embedder: Embedder | None = None,
    ) -> None:
        settings = settings or Settings()
        if path is not None:
            settings = settings.with_store(path)
        self.settings: Settings = settings
        self.embedder: Embedder = embedder or load_embedder(settings.embedding)
        self.store: DocumentStore = DocumentStore.open(settings, self.embedder)
        self.ingestor: Ingestor = Ingestor(settings, embedder=self.embedder, store=self.store)
        self.retriever: HybridRetriever = HybridRetriever.from_store(self.store, settings.retrieval)
        self._model = model
        self._model_lock = threading.Lock()

    @property
    def path(self) -> Path:
        return self.store.dir

    # -- documents ------------------------------------------------------------------------------

    def add(self, paths: str | Path | Iterable[str | Path], progress: Callable[[Progress], None] | None = None) -> IngestReport:
        """Ingest files and folders (unchanged files cost nothing); see :class:`IngestReport`."""
        if isinstance(paths, (str, Path)):
            paths = [paths]
        return self.ingestor.ingest(paths, progress=progress)

    def documents(self) -> list[DocumentInfo]:
        return self.store.documents()

    def remove(self, ref: str) -> bool:
        """Remove by document id or id prefix (the whole document, with all its files) or by
        source path or file name (only that file; the document goes with its last file). False
        when nothing, or more than one thing, matches."""
        return self.ingestor.remove(ref)

    # -- model ------------------------------------------------------------------------------------

    @property
    def model(self) -> LoadedModel:
        """The chat model, loaded on first use with ``load_chat_model(self.settings)``."""
        if self._model is None:
            with self._model_lock:
                if self._model is None:
                    from rag.models.loader import load_chat_model

                    self._model = load_chat_model(self.settings)
        return self._model

    @model.setter
    def model(self, value: LoadedModel | None) -> None:
        self._model = value

    # -- retrieval and QA ---------------------------------------------------------------------------

    def retrieve(self, question: str, k: int | None = None, doc_ids: list[str] | None = None,
                 translate: bool = False) -> list[Hit]:
        """The best chunks for ``question`` (hybrid dense + BM25), best first; see rag.retrieval.
        When the documents in scope are in the other language, its translation is searched too
        (rag.translate), as answers do: by the chat model when one is loaded or ``translate``
        loads it, else an English question's words rendered by a dictionary (rag.dictionary)."""
        from rag.translate import search_with_translation

        hits, _ = search_with_translation(self.retriever, self.translator(load_model=translate), question,
                                          k or self.settings.retrieval.k, doc_ids)
        return hits

    def translator(self, load_model: bool = True):
        """The question translator (rag.translate) for ``settings.retrieval.translate_questions``,
        or None when switched off. ``load_model`` False: only a model already loaded translates
        (quote mode loads none); otherwise the translator only says why it could not."""
        if not self.settings.retrieval.translate_questions:
            return None
        from rag.translate import QuestionTranslator

        model = self.model if load_model else self._model
        return QuestionTranslator(model, system_prompt=self.settings.model.system_prompt)

    def qa_chain(self, k: int | None = None, doc_ids: Sequence[str] | None = None) -> Runnable:
        """Runnable: ``{"question", "history": [(user, assistant), ...]}`` → answer dict (rag.qa).

        The prompt is packed within ``settings.answer.context_budget``; with ``auto`` the model's
        prompt speed is measured on first use (a few seconds, then kept; rag.models.speed)."""
        from rag.models.speed import context_budget_tokens

        model = self.model
        return QAChain(
            model,
            self.retriever,
            k=k,
            doc_ids=doc_ids,
            system_prompt=self.settings.model.system_prompt,
            context_budget=context_budget_tokens(self.settings.answer, model),
            translator=self.translator(),
        )

    def answer_mode(self, mode: str | None = None) -> str:
        """``quote`` or ``generate`` for ``mode`` (default ``settings.answer.mode``); ``auto`` is
        ``quote`` while the answering model is the packaged stand-in (decided without loading it
        when it is not loaded yet)."""
        mode = mode or self.settings.answer.mode
        if mode not in ("auto", "generate", "quote"):
            raise ValueError(f"unknown answer mode {mode!r}: auto, generate or quote")
        if mode != "auto":
            return mode
        return "quote" if stand_in_would_answer(self.settings, self._model) else "generate"

    def quote_chain(self, k: int | None = None, doc_ids: Sequence[str] | None = None) -> Runnable:
        """Runnable: ``{"question"}`` → the passages' best sentences with citations (rag.quotes);
        needs no chat model."""
        return QuoteChain(self.retriever, self.embedder, k=k, doc_ids=doc_ids,
                          sentences=self.settings.answer.quote_sentences, notice=quote_notice(),
                          translator=self.translator(load_model=False))

    def _chain(self, mode: str | None, k: int | None, doc_ids) -> Runnable:
        if self.answer_mode(mode) == "quote":
            return self.quote_chain(k=k, doc_ids=doc_ids)
        return self.qa_chain(k=k, doc_ids=doc_ids)

    def ask(self, question: str, history=None, doc_ids: list[str] | None = None, k: int | None = None,
            mode: str | None = None) -> dict:
        """The answer dict (rag.qa; quote mode: rag.quotes, with ``"mode": "quote"``)."""
        return self._chain(mode, k, doc_ids).invoke({"question": question, "history": history or []})

    def stream_ask(self, question: str, history=None, doc_ids: list[str] | None = None, k: int | None = None,
                   mode: str | None = None) -> Iterator[dict]:
        """``{"type": "sources", "sources"}`` once retrieval is done, ``{"type": "token", "text"}``
        events, then one ``{"type": "final", "answer", "sources", ...}``."""
        yield from self._chain(mode, k, doc_ids).stream({"question": question, "history": history or []})

    # -- summaries ----------------------------------------------------------------------------------

    def document_texts(self, doc_ids: Sequence[str] | None = None) -> list[SourceText]:
        """Documents rebuilt from their stored chunks (overlaps removed), in catalogue order."""
        docs = self.store.documents()
        if doc_ids is not None:
            wanted = list(doc_ids)
            by_id = {d.doc_id: d for d in docs}
            docs = [by_id[i] for i in wanted if i in by_id]
        out = []
        for doc in docs:
            text = ""
            page = object()
            for chunk in self.store.document_chunks(doc.doc_id):
                if not text:
                    text = chunk.text
                elif chunk.page != page:
                    text += "\n\n" + chunk.text
                else:
                    text = merge_overlapping(text, chunk.text)
                page = chunk.page
            name = doc.file_names[0] if doc.file_names else doc.title
            out.append(SourceText(name, text, doc.doc_id))
        return out

    def summarizer(self) -> Summarizer:
        return Summarizer(self.model, system_prompt=self.settings.model.system_prompt)

    def summarize(
        self,
        doc_ids: list[str] | None = None,
        strategy: str = "auto",
        progress: Callable[[SummaryProgress], None] | None = None,
        on_text: Callable[[str], None] | None = None,
    ) -> SummaryResult:
        """Summary of the given documents (all of them when ``doc_ids`` is None); ``progress``
        after each model call, ``on_text(piece)`` as the final summary is written."""
        return self.summarizer().summarize(self.document_texts(doc_ids), strategy, progress, on_text=on_text)

    def extractive_summary(self, doc_ids: list[str] | None = None, sentences: int | None = None):
        """Outline and key sentences of the given documents (all when None), with no chat model
        (rag.summarize.extractive_summary)."""
        ids = doc_ids if doc_ids is not None else [d.doc_id for d in self.store.documents()]
        return extractive_summary([self.store.document_chunks(i) for i in ids], self.embedder, sentences)

    def summary_chain(self, strategy: str = "auto") -> Runnable:
        """Runnable: ``{"doc_ids": [...] | None}``, a text or a list of texts → ``SummaryResult`` dict."""
        return SummaryChain(self.summarizer(), strategy, loader=self.document_texts)

    def close(self) -> None:
        self.store.close()

    def __repr__(self) -> str:
        return f"KnowledgeBase({str(self.store.dir)!r})"


__all__ = ["KnowledgeBase", "Hit", "SummaryResult", "SummaryProgress", "DocumentInfo", "IngestReport", "Progress"]

"""Questions in another language than the documents: searched as asked and as translated.

An English question about Chinese papers rarely finds the Chinese page that answers it: BM25
shares no words with it, and a small multilingual embedder ranks the paper's English abstract or
references above the body. So when the documents in scope are mostly in the other language, the
loaded chat model translates the question (one short call, cached per model and question) and
both are searched, each only where its language matches (:func:`own_language_hits`), and the hit
lists are fused (:func:`rag.retrieval.fuse_hit_lists`). Across languages a small embedder's
similarity does not tell an answer from an unrelated passage (e5-small: 0.75-0.81 for both), so
once a translation exists it, not the question, judges the passages in the other language.

Usage::

    from rag.translate import QuestionTranslator
    translator = QuestionTranslator(model)                  # model: rag.models.LoadedModel
    result = translator.for_search(retriever, "When did the Longkou–Yantai railway open?")
    result.target, result.text, result.note                 # "zh", "龙烟铁路何时开通？", None

The packaged stand-in (SmolLM2-135M) cannot translate Chinese. For an English question about
Chinese documents it (and a model whose reply is no translation) falls back to a word-by-word
rendering through CC-CEDICT (rag.dictionary; ``by == "dictionary"``, with a ``note``): a bag of
Chinese words, whose hits score lower than a sentence's, so their scores are scaled by
:data:`DICTIONARY_SCORE_SCALE` before the relevance threshold. For a Chinese question about
English documents no dictionary is used: ``text`` is None and ``note`` says why.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterator, Literal, Sequence

from langchain_core.messages import HumanMessage, SystemMessage
from langchain_core.output_parsers import StrOutputParser

from rag.dictionary import english_to_chinese_words
from rag.language import detect_language
from rag.prompts_qa import clean_rewrite, defuse

DICTIONARY_SCORE_SCALE = 1.45
"""Hits for a word-by-word rendering (rag.dictionary) have their score multiplied by this (up to
1) before the threshold: the bag of words matches passages less fully than a sentence, and this
puts the default threshold where it keeps and refuses as for Chinese questions (dev half of
bench/questions.py; docs/benchmarks.md)."""
OTHER_LANGUAGE_SHARE = 0.25
"""Translate when at least this share of the chunks in scope is in the other language."""
TRANSLATE_MAX_NEW_TOKENS = 128
LANGUAGE_NAMES = {"zh": ("中文", "Chinese"), "en": ("英文", "English")}

INSTRUCTION = {
    # Asked in the question's own language, so the model reads the instruction as easily as the
    # question; the question sits between markers so it is translated, not answered.
    "zh": "把下面 <question> 与 </question> 之间的问题翻译成{target}。不要回答问题，只输出译文。\n\n"
          "<question>{question}</question>",
    "en": "Translate the question between <question> and </question> into {target}. Do not answer it; "
          "reply with the translation only.\n\n<question>{question}</question>",
}


def cache_file() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "alpaca-docqa" / "translations.sqlite"


@dataclass(frozen=True)
class Translation:
    """What to search besides the question: ``text`` in language ``target``, or None with a
    ``note`` saying why not (for the user)."""

    target: str
    text: str | None
    note: str | None = None
    by: Literal["model", "dictionary"] = "model"


class TranslationCache:
    """Translations on disk (SQLite), keyed by model, target language and question, so a
    question asked again (a CLI call, a restarted app) costs no model call."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = Path(path) if path else cache_file()
        self._lock = threading.Lock()

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """A connection under the lock, committed and closed on the way out."""
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=5)
            try:
                db.execute("CREATE TABLE IF NOT EXISTS translations (key TEXT PRIMARY KEY, translation TEXT NOT NULL)")
                yield db
                db.commit()
            finally:
                db.close()

    @staticmethod
    def key(model: str, target: str, question: str) -> str:
        return hashlib.sha256(f"{model}\0{target}\0{question}".encode("utf-8")).hexdigest()

    def get(self, key: str) -> str | None:
        try:
            with self._connect() as db:
                row = db.execute("SELECT translation FROM translations WHERE key = ?", (key,)).fetchone()
        except (OSError, sqlite3.Error):
            return None  # a cache that cannot be read only costs a model call
        return row[0] if row else None

    def put(self, key: str, translation: str) -> None:
        try:
            with self._connect() as db:
                db.execute("INSERT OR REPLACE INTO translations VALUES (?, ?)", (key, translation))
        except (OSError, sqlite3.Error):
            pass


def other_language(language: str) -> str:
    return "en" if language == "zh" else "zh"


def language_to_search(retriever: Any, question: str, doc_ids: Sequence[str] | None = None) -> str | None:
    """The other language when at least :data:`OTHER_LANGUAGE_SHARE` of the chunks in scope are
    in it, else None (the question's language is the documents' language)."""
    share = retriever.bm25_index().chinese_share(doc_ids)
    if share is None:
        return None
    language = detect_language(question)
    other_share = 1.0 - share if language == "zh" else share
    return other_language(language) if other_share >= OTHER_LANGUAGE_SHARE else None


class QuestionTranslator:
    """Translates questions with a loaded chat model; see the module docstring. ``model`` None
    (or the stand-in) translates nothing, and says so where a translation was needed."""

    def __init__(self, model: Any, cache: TranslationCache | None = None, system_prompt: str | None = None) -> None:
        from rag.models.prompts import resolve_system_prompt

        self.model = model
        self.system_prompt = resolve_system_prompt(system_prompt)
        self.cache = cache if cache is not None else TranslationCache()
        self._chain = None
        if self.can_translate:
            chat = model.chat_model
            own = hasattr(chat, "max_new_tokens")  # our backends take the budget per call
            self._chain = (chat.bind(max_new_tokens=TRANSLATE_MAX_NEW_TOKENS) if own else chat) | StrOutputParser()

    @property
    def can_translate(self) -> bool:
        return self.model is not None and not getattr(self.model, "is_stand_in", False)

    def translate(self, question: str, target: str, config: Any = None) -> str | None:
        """``question`` in ``target`` (``zh``/``en``), or None when the model's reply is not a
        translation (empty, in the wrong language, far too long) or the call fails."""
        question = question.strip()
        source = detect_language(question)
        if not question or source == target:
            return question or None
        if self._chain is None:
            return None
        key = TranslationCache.key(self.model.name, target, question)
        cached = self.cache.get(key)
        if cached is not None:
            return cached or None
        zh_name, en_name = LANGUAGE_NAMES[target]
        prompt = INSTRUCTION[source].format(target=zh_name if source == "zh" else en_name,
                                            question=defuse(question))
        try:
            reply = self._chain.invoke([SystemMessage(self.system_prompt), HumanMessage(prompt)], config)
        except Exception:
            return None  # not cached: the next question may find the model working again
        text = clean_translation(reply)
        valid = bool(text) and detect_language(text) == target and len(text) <= 4 * len(question) + 100
        self.cache.put(key, text if valid else "")  # a reply that is no translation stays none
        return text if valid else None

    def for_search(self, retriever: Any, question: str, doc_ids: Sequence[str] | None = None,
                   config: Any = None) -> Translation | None:
        """The translation to search besides ``question``; None when the documents in scope are
        in the question's language (nothing to translate)."""
        target = language_to_search(retriever, question, doc_ids)
        if target is None:
            return None
        text = self.translate(question, target, config) if self.can_translate else None
        if text is not None:
            return Translation(target, text)
        words = english_to_chinese_words(question) if target == "zh" else None
        if words:
            return Translation(target, words, DICTIONARY_NOTE, by="dictionary")
        return Translation(target, None, stand_in_note(target) if not self.can_translate else NO_TRANSLATION_NOTE)


def translation_dict(translation: Translation | None) -> dict | None:
    """How a result reports it: ``{"target", "text", "note", "by"}`` or None."""
    if translation is None:
        return None
    return {"target": translation.target, "text": translation.text, "note": translation.note, "by": translation.by}


def stand_in_note(target: str) -> str:
    if target == "zh":
        return ("The documents are in Chinese and the question is not. No model that can translate it is loaded "
                "(the stand-in cannot), so it was searched as asked only; configure Chinese-Alpaca-2 to search its "
                "translation too.")
    return ("The documents are in English and the question is not. No model that can translate it is loaded "
            "(the stand-in cannot), so it was searched as asked only; configure Chinese-Alpaca-2 to search its "
            "translation too.")


DICTIONARY_NOTE = ("The documents are in Chinese and no model translated the question, so its words were also "
                   "searched as rendered one by one by a dictionary (CC-CEDICT); Chinese-Alpaca-2 translates "
                   "whole questions and finds more.")
NO_TRANSLATION_NOTE = "The model gave no usable translation of the question; it was searched as asked only."


def search_with_translation(retriever: Any, translator: "QuestionTranslator | None", question: str, k: int,
                            doc_ids: Sequence[str] | None = None, **search: Any) -> tuple[list, Translation | None]:
    """``retriever.search`` for ``question`` and, when the documents in scope are in the other
    language, for its translation too, fused (:func:`rag.retrieval.fuse_hit_lists`). Returns the
    hits and the :class:`Translation` (None when none was needed)."""
    from rag.retrieval import fuse_hit_lists

    translation = translator.for_search(retriever, question, doc_ids) if translator is not None else None
    asked = retriever.search(question, k=k, doc_ids=doc_ids, **search)
    if translation is None or not translation.text:
        return asked, translation
    translated = search_translation(retriever, translation, k, doc_ids, **search)
    return fuse_hit_lists([own_language_hits(asked, question), translated], k), translation


def search_translation(retriever: Any, translation: Translation, k: int, doc_ids: Sequence[str] | None = None,
                       **search: Any) -> list:
    """``retriever.search`` for the translation's text; a word-by-word rendering's scores scaled
    by :data:`DICTIONARY_SCORE_SCALE` (not a reranker's) before the relevance threshold."""
    if translation.by != "dictionary" or retriever.active_reranker() is not None:
        return retriever.search(translation.text, k=k, doc_ids=doc_ids, **search)
    threshold = retriever.effective_threshold(search.pop("relevance_threshold", None))
    hits = retriever.search(translation.text, k=k, doc_ids=doc_ids, relevance_threshold=0.0, **search)
    scaled = [replace(h, score=min(1.0, h.score * DICTIONARY_SCORE_SCALE)) for h in hits]
    return [h for h in scaled if h.score >= threshold]


def own_language_hits(hits: Sequence[Any], question: str) -> list:
    """The hits in ``question``'s language (the others are left to its translation)."""
    language = detect_language(question)
    return [h for h in hits if detect_language(h.text) == language]


def clean_translation(text: str) -> str:
    """The model's reply without markers, a label ("译文：") or quotes: its first line."""
    text = text.replace("<question>", "").replace("</question>", "")
    text = clean_rewrite(text)
    for label in ("译文", "翻译", "Translation", "translation"):
        for colon in ("：", ":"):
            if text.startswith(label + colon):
                text = text[len(label) + 1:].strip().strip("\"'“”「」")
    return text


__all__ = ["QuestionTranslator", "Translation", "TranslationCache", "language_to_search", "clean_translation",
           "search_with_translation", "search_translation", "translation_dict", "own_language_hits"]

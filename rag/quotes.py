"""Quote mode: an answer made of the documents' own sentences, with no chat model.

The packaged stand-in model cannot answer Chinese questions usefully, and a real model is not
always at hand; the retrieved passages usually hold the answer in one or two sentences. This
chain retrieves as question answering does, scores every sentence of the retrieved passages
against the question, and answers with the best ``sentences`` of them, in document order, each
followed by its ``[n]`` citation::

    from rag.quotes import QuoteChain
    chain = QuoteChain(retriever, embedder, sentences=2)
    result = chain.invoke({"question": "北京的常住人口是多少？"})
    result["answer"]        # "北京常住人口约两千一百万。[1]"
    result["sources"][0]["quotes"]   # [[start, end]] of the quoted sentences in that passage's text

A sentence's score weighs three parts, each 0..1: the cosine of question and sentence (the
embedder's query and passage vectors, rescaled by the embedder's cosine floor), the passage's
own retrieval relevance, and how much of the question the sentence shares — the question's
character bigrams (Chinese) and words (other scripts), each weighted by how few of the candidate
sentences contain it (``log(1 + N / df)``), so the topic every sentence repeats counts little.
Question words (什么, 哪里, what, …) are left out; bigrams rather than jieba words because the
answer sentence often segments differently from the question. Picking, each later sentence
gives way to one that does not repeat those already picked (:func:`choose`). The weights
(0.45 / 0.45 / 0.10) and the redundancy weight (0.6) were chosen on the dev half of 300 CMRC 2018
passages (even-numbered passages) and are reported on the odd half in docs/benchmarks.md
(``bench/quotes.py --passages 300 --grid``).

The result has the same keys as :class:`rag.qa.QAChain`'s, plus ``mode: "quote"``; ``stream``
yields the same events.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np
from langchain_core.runnables import RunnableConfig

from ingest.lexical import QUERY_STOPWORDS, to_simplified
from ingest.splitter import sentence_spans
from rag.language import detect_language
from rag.qa import EventChain, leans_on_conversation
from rag.retrieval import Hit, boxes_json, cosine_floor, fuse_hit_lists, no_passage_message
from rag.translate import search_with_translation, translation_dict

DENSE_WEIGHT = 0.45
RANK_WEIGHT = 0.45
OVERLAP_WEIGHT = 0.10
REDUNDANCY_WEIGHT = 0.6
MIN_SENTENCE_CHARS = 4
_WORD_CHAR = re.compile(r"[^\W_]")
MAX_SENTENCE_CHARS = 400
"""Longer "sentences" (tables, unpunctuated runs) are cut to this for scoring and quoting."""


@dataclass
class Sentence:
    n: int
    """The citation number of the passage it comes from."""
    start: int
    end: int
    text: str
    score: float = 0.0
    vector: Any = None
    """Its unit-length embedding, once scored."""


def _word_chars(text: str) -> int:
    return len(_WORD_CHAR.findall(text))


_SENTENCE_MARKS = re.compile(r"[，。；！？：,.;!?:、]")
HEADING_MAX_CHARS = 30


def _is_heading_line(text: str, start: int, end: int) -> bool:
    """Whether ``text[start:end]`` is a line of its own that reads as a heading (``# …``, or
    short with no sentence punctuation: a section title in a PDF), not a sentence to quote."""
    line_start = text.rfind("\n", 0, start) + 1
    line_end = text.find("\n", end)
    line = text[line_start: len(text) if line_end < 0 else line_end].strip()
    if line != text[start:end].strip():
        return False
    if line.startswith("#"):
        return True
    # a table row (cells between |) is data that may answer, not a heading
    return len(line) <= HEADING_MAX_CHARS and "|" not in line and not _SENTENCE_MARKS.search(line)


def passage_sentences(n: int, text: str) -> list[Sentence]:
    """The quotable sentences of passage ``n``: at least ``MIN_SENTENCE_CHARS`` letters, digits or
    CJK characters (so a table's ``|---|---|`` row is never an answer), not a heading line, cut to
    ``MAX_SENTENCE_CHARS``. A passage of only tiny sentences is offered whole."""
    out = []
    for start, end in sentence_spans(text):
        if _word_chars(text[start:end]) < MIN_SENTENCE_CHARS or _is_heading_line(text, start, end):
            continue
        end = min(end, start + MAX_SENTENCE_CHARS)
        out.append(Sentence(n, start, end, text[start:end]))
    if not out and _word_chars(text) >= 2:
        start = len(text) - len(text.lstrip())
        end = min(len(text.rstrip()), start + MAX_SENTENCE_CHARS)
        out.append(Sentence(n, start, end, text[start:end]))
    return out


_QUESTION_CHARS = frozenset("什么哪里谁多少怎么如何为是的了吗呢个些几")
_CJK_RUN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")
_WORD_RUN = re.compile(r"[^\W_]+")


def overlap_units(text: str) -> set[str]:
    """Character bigrams of Chinese runs (a lone character as itself) and lower-cased words of
    other scripts, in Simplified script."""
    text = to_simplified(text)
    units: set[str] = set()
    for run in _CJK_RUN.findall(text):
        units.update(run[i:i + 2] for i in range(len(run) - 1)) if len(run) > 1 else units.add(run)
    for word in _WORD_RUN.findall(_CJK_RUN.sub(" ", text)):
        units.add(word.lower())
    return units


def question_units(question: str) -> set[str]:
    return {u for u in overlap_units(question)
            if not (set(u) & _QUESTION_CHARS and len(u) <= 2 and _CJK_RUN.fullmatch(u))
            and u not in QUERY_STOPWORDS}


def overlap_shares(question: str, texts: Sequence[str]) -> list[float]:
    """For each text, the share of the question's units it holds, each unit weighted by
    ``log(1 + N / df)`` over these ``N`` texts (see the module docstring)."""
    wanted = question_units(question)
    sets = [overlap_units(t) & wanted for t in texts]
    df: dict[str, int] = {}
    for units in sets:
        for u in units:
            df[u] = df.get(u, 0) + 1
    if not df:
        return [0.0] * len(texts)
    n = len(texts)
    weight = {u: math.log(1 + n / d) for u, d in df.items()}
    total = sum(weight.values())
    return [sum(weight[u] for u in units) / total for units in sets]


def score_sentences(question: str, sentences: list[Sentence], passage_scores: dict[int, float],
                    embedder: Any) -> None:
    """Fill in ``Sentence.score`` (see the module docstring)."""
    if not sentences:
        return
    query = np.asarray(embedder.embed_query(question), dtype=np.float32)
    vectors = np.asarray(embedder.encode_passages([s.text for s in sentences]), dtype=np.float32)
    cosines = vectors @ query / (np.linalg.norm(vectors, axis=1) * np.linalg.norm(query) + 1e-12)
    floor = cosine_floor(getattr(embedder, "name", ""))
    dense = np.clip((cosines - floor) / max(1.0 - floor, 1e-6), 0.0, 1.0)
    overlap = overlap_shares(question, [s.text for s in sentences])
    unit = vectors / (np.linalg.norm(vectors, axis=1, keepdims=True) + 1e-12)
    for s, d, o, v in zip(sentences, dense, overlap, unit):
        s.score = DENSE_WEIGHT * float(d) + OVERLAP_WEIGHT * o + RANK_WEIGHT * passage_scores.get(s.n, 0.0)
        s.vector = v


def choose(sentences: list[Sentence], count: int, floor: float = 0.0) -> list[Sentence]:
    """The ``count`` best sentences, in document order (passage number, then position).

    After the first, each pick is the best score minus ``REDUNDANCY_WEIGHT`` × its (floor-rescaled)
    cosine to the closest sentence already picked: a second sentence that only repeats the first
    (two introductions of the same topic) makes way for one that adds something.
    """
    picked: list[Sentence] = []
    left = list(sentences)
    while left and len(picked) < count:
        def value(s: Sentence) -> float:
            if not picked or s.vector is None:
                return s.score
            closest = max(float(s.vector @ p.vector) for p in picked if p.vector is not None)
            return s.score - REDUNDANCY_WEIGHT * min(max((closest - floor) / max(1 - floor, 1e-6), 0.0), 1.0)

        best = max(left, key=value)
        picked.append(best)
        left.remove(best)
    return sorted(picked, key=lambda s: (s.n, s.start))


def quote_notice() -> str:
    return ("Quote mode: these are the documents' own sentences that best match the question, "
            "with their sources; no model wrote them.")


def quote_answer(quotes: list[Sentence]) -> str:
    return "\n\n".join(f"{q.text}[{q.n}]" for q in quotes)


class QuoteChain(EventChain):
    """Question → the passages' best sentences with citations. See the module docstring."""

    def __init__(self, retriever: Any, embedder: Any, *, k: int | None = None,
                 doc_ids: Sequence[str] | None = None, sentences: int = 2, notice: str | None = None,
                 translator: Any = None):
        self.retriever = retriever
        self.translator = translator
        self.embedder = embedder
        self.k = k
        self.doc_ids = list(doc_ids) if doc_ids is not None else None
        self.sentences = max(1, int(sentences))
        self.notice = notice

    def stream(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Iterator[dict]:
        if isinstance(input, str):
            input = {"question": input}
        # lone surrogates (from broken clipboards or terminals) would fail in the tokenizers
        question = str(input.get("question") or "").encode("utf-8", "replace").decode("utf-8").strip()
        if not question:
            raise ValueError("the question is empty")
        if not _word_chars(question):
            raise ValueError("the question has no words to search for")
        language = detect_language(question)
        k = input.get("k", self.k) or getattr(self.retriever, "k", None) or self.retriever.settings.k
        if int(k) < 1:
            raise ValueError(f"k must be at least 1, not {k}")
        doc_ids = input.get("doc_ids", self.doc_ids)
        searched = [question]
        hits, translation = search_with_translation(self.retriever, self.translator, question, int(k), doc_ids)
        if translation is not None and translation.text:
            searched.append(translation.text)
        history = [(str(q), str(a)) for q, a in (input.get("history") or [])]
        if history and leans_on_conversation(question):
            # no model to rewrite a follow-up: also search it together with the previous question
            joined = f"{history[-1][0]} {question}"
            searched.append(joined)
            hits = fuse_hit_lists([hits, self.retriever.search(joined, k=int(k), doc_ids=doc_ids)], int(k))
        sentences = [s for n, hit in enumerate(hits, 1) for s in passage_sentences(n, hit.text)]
        if not sentences:
            answer = no_passage_message(language)
            yield {"type": "token", "text": answer}
            yield {"type": "final", "answer": answer, "sources": [], "cited": [], "standalone_question": question,
                   "searched_for": searched, "language": language, "notice": self.notice, "found": False,
                   "mode": "quote", "translation": translation_dict(translation)}
            return
        # sentences in the documents' language are closest to the question's translation
        scored_against = translation.text if translation is not None and translation.text else question
        score_sentences(scored_against, sentences, {n: float(h.score) for n, h in enumerate(hits, 1)}, self.embedder)
        quotes = choose(sentences, self.sentences, cosine_floor(getattr(self.embedder, "name", "")))
        answer = quote_answer(quotes)
        sources = []
        for n, hit in enumerate(hits, 1):
            sources.append({
                "n": n, "doc_id": hit.doc_id, "source": hit.source, "file_name": hit.file_name,
                "title": hit.title, "page": hit.page, "chunk": hit.chunk, "chunks": [hit.chunk, hit.chunk],
                "text": hit.text, "score": round(float(hit.score), 4),
                "quotes": [[q.start, q.end] for q in quotes if q.n == n],
                "boxes": boxes_json(hit.boxes),
                "ocr": hit.ocr,
            })
        yield {"type": "sources", "sources": sources}
        yield {"type": "token", "text": answer}
        yield {"type": "final", "answer": answer, "sources": sources, "cited": sorted({q.n for q in quotes}),
               "standalone_question": question, "searched_for": searched, "language": language,
               "notice": self.notice, "found": True, "mode": "quote", "translation": translation_dict(translation),
               "quotes": [{"n": q.n, "text": q.text, "score": round(q.score, 4)} for q in quotes]}


__all__ = ["QuoteChain", "quote_notice", "Sentence", "choose", "passage_sentences", "score_sentences", "quote_answer"]

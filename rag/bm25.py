"""BM25 over the search tokens stored at ingest, as one sparse matrix per store generation.

Usage::

    from rag.bm25 import BM25Index, load_index
    index = load_index(store)                    # cached per (store dir, generation)
    index.search(["北京", "首都"], k=10)          # [(row, score)] best first
    index.chunk_ids[row], index.doc_ids[row]

How it works
------------
``DocumentStore.lexical_rows()`` gives every complete chunk's space-joined tokens (computed once
at ingest by :func:`ingest.lexical.search_tokens`). From them we build ``W``, a SciPy CSR matrix
of shape ``(vocabulary, chunks)`` whose entry ``(t, d)`` is the full Okapi BM25 weight of term
``t`` in chunk ``d``::

    idf(t) * tf * (k1 + 1) / (tf + k1 * (1 - b + b * len(d) / avgdl))
    idf(t) = ln(1 + (N - df + 0.5) / (df + 0.5))

A query's scores are then the sum of its terms' rows (``W[terms].sum(0)``, a few sparse rows),
and the top k come from ``np.argpartition``; nothing is rebuilt per query.

The index follows the store's ``generation`` (every committed ingest or removal bumps it)
incrementally: the catalogue logs which documents each generation added and removed
(``DocumentStore.changes_since``), so an index at an older generation drops the removed
documents' columns, reads and tokenises only the added ones, and recomputes the weights from the
raw term counts it keeps (``counts``), a few vectorised passes. Only without a usable log (a
catalogue from before it, an index whose generation is unknown) is it built from every row.
This is what lets several app instances share one catalogue (docs/deploy.md): each follows the
others' ingests at the cost of what changed. A built index is also saved in the store directory
as ``bm25-<generation>.npz``, so that a new process (a CLI call, a Streamlit restart) loads the
newest one and brings it up to date; older files are deleted. docs/benchmarks.md has build,
load and update times at 100k chunks.
"""

from __future__ import annotations

import math
import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from scipy import sparse

K1 = 1.2
B = 0.75
INDEX_PREFIX = "bm25-"
INDEX_FORMAT = 3  # 3: raw term counts and lengths are saved, weights are derived
_CJK_TERM = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_LATIN_TERM = re.compile(r"[a-z]")


@dataclass
class BM25Index:
    """A BM25 weight matrix and the chunks its columns stand for."""

    weights: sparse.csr_matrix  # (terms, chunks), float32
    vocab: dict[str, int]
    idf: np.ndarray  # (terms,), float32
    chunk_ids: list[str]
    doc_ids: list[str]
    generation: int = -1
    counts: sparse.csc_matrix | None = field(default=None, repr=False)
    """(terms, chunks) raw term counts: what an update starts from."""
    lengths: np.ndarray | None = field(default=None, repr=False)
    """Tokens per chunk."""
    built_in_s: float = 0.0
    loaded_from_disk: bool = False
    _doc_rows: dict[str, np.ndarray] | None = field(default=None, repr=False)
    _columns: dict[str, int] | None = field(default=None, repr=False)
    _chinese: np.ndarray | None = field(default=None, repr=False)

    # -- building ----------------------------------------------------------------------------

    @classmethod
    def build(
        cls,
        rows: Iterable[tuple[str, str, str]],
        k1: float = K1,
        b: float = B,
        generation: int = -1,
    ) -> "BM25Index":
        """From ``(chunk_id, doc_id, space-joined tokens)`` rows (``DocumentStore.lexical_rows``)."""
        start = time.perf_counter()
        vocab: dict[str, int] = {}
        chunk_ids: list[str] = []
        doc_ids: list[str] = []
        counts, lengths = _count(rows, vocab, chunk_ids, doc_ids)
        index = cls.from_counts(counts, lengths, vocab, chunk_ids, doc_ids, generation, k1, b)
        index.built_in_s = time.perf_counter() - start
        return index

    @classmethod
    def from_counts(cls, counts: sparse.csc_matrix, lengths: np.ndarray, vocab: dict[str, int],
                    chunk_ids: list[str], doc_ids: list[str], generation: int = -1,
                    k1: float = K1, b: float = B) -> "BM25Index":
        """The weights (module docstring) from raw counts, vectorised."""
        n_terms, n_docs = counts.shape
        if n_docs == 0:
            empty = sparse.csr_matrix((n_terms, 0), dtype=np.float32)
            return cls(empty, vocab, np.zeros(n_terms, np.float32), [], [], generation,
                       counts=counts, lengths=lengths)
        avgdl = float(lengths.mean()) or 1.0
        df = np.bincount(counts.indices, minlength=n_terms).astype(np.float32)
        idf = np.log1p((n_docs - df + 0.5) / (df + 0.5)).astype(np.float32)
        norm = (k1 * (1.0 - b + b * lengths / avgdl)).astype(np.float32)
        tf = counts.data
        cols = np.repeat(np.arange(n_docs), np.diff(counts.indptr))
        data = (idf[counts.indices] * tf * (k1 + 1.0) / (tf + norm[cols])).astype(np.float32)
        weights = sparse.csc_matrix((data, counts.indices, counts.indptr), shape=counts.shape).tocsr()
        weights.sort_indices()  # matched_idf_fraction searches a row's columns
        return cls(weights, vocab, idf, chunk_ids, doc_ids, generation, counts=counts, lengths=lengths)

    def advance(self, removed: Iterable[str], added_rows: Iterable[tuple[str, str, str]],
                generation: int) -> "BM25Index":
        """This index with the chunks of the ``removed`` documents dropped and ``added_rows``
        (``lexical_rows`` of the added documents) appended: what :meth:`build` would give at
        ``generation``, at the cost of what changed."""
        start = time.perf_counter()
        added_rows = list(added_rows)
        gone = set(removed) | {doc_id for _, doc_id, _ in added_rows}  # a re-added document is replaced
        keep = np.asarray([i for i, d in enumerate(self.doc_ids) if d not in gone], dtype=np.int64)
        vocab = dict(self.vocab)
        chunk_ids = [self.chunk_ids[i] for i in keep]
        doc_ids = [self.doc_ids[i] for i in keep]
        new_counts, new_lengths = _count(added_rows, vocab, chunk_ids, doc_ids)
        kept = self.counts[:, keep] if len(keep) else sparse.csc_matrix((self.counts.shape[0], 0), dtype=np.float32)
        kept = sparse.csc_matrix(kept)
        kept.resize((len(vocab), kept.shape[1]))  # new words: empty rows
        counts = sparse.hstack([kept, new_counts], format="csc", dtype=np.float32)
        lengths = np.concatenate([self.lengths[keep], new_lengths]).astype(np.float32)
        index = BM25Index.from_counts(counts, lengths, vocab, chunk_ids, doc_ids, generation)
        index.built_in_s = time.perf_counter() - start
        return index

    # -- persistence ----------------------------------------------------------------------------

    def save(self, path: Path) -> None:
        """Write atomically (temp file + rename) so a reader never sees half a file."""
        terms = sorted(self.vocab, key=self.vocab.__getitem__)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        with open(tmp, "wb") as fh:
            np.savez(
                fh,
                format=np.int64(INDEX_FORMAT),
                generation=np.int64(self.generation),
                data=self.counts.data,
                indices=self.counts.indices,
                indptr=self.counts.indptr,
                shape=np.asarray(self.counts.shape, dtype=np.int64),
                lengths=self.lengths,
                terms="\n".join(terms),
                chunk_ids="\n".join(self.chunk_ids),
                doc_ids="\n".join(self.doc_ids),
            )
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> "BM25Index":
        start = time.perf_counter()
        with np.load(path, allow_pickle=False) as z:
            if int(z["format"]) != INDEX_FORMAT:
                raise ValueError(f"{path}: index format {int(z['format'])}, expected {INDEX_FORMAT}")
            shape = tuple(int(x) for x in z["shape"])
            counts = sparse.csc_matrix((z["data"], z["indices"], z["indptr"]), shape=shape)
            terms = str(z["terms"]).split("\n") if shape[0] else []
            chunk_ids = str(z["chunk_ids"]).split("\n") if shape[1] else []
            doc_ids = str(z["doc_ids"]).split("\n") if shape[1] else []
            index = cls.from_counts(counts, z["lengths"], {t: i for i, t in enumerate(terms)}, chunk_ids, doc_ids,
                                    int(z["generation"]))
        index.built_in_s = time.perf_counter() - start
        index.loaded_from_disk = True
        return index

    # -- searching --------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.chunk_ids)

    def term_ids(self, tokens: Sequence[str]) -> list[int]:
        """Known query terms, each once (repeating a word in a question does not weigh it more)."""
        seen: dict[int, None] = {}
        for t in tokens:
            i = self.vocab.get(t)
            if i is not None:
                seen.setdefault(i, None)
        return list(seen)

    def scores(self, tokens: Sequence[str]) -> np.ndarray:
        """BM25 score of every chunk (dense float32 array, one per column)."""
        ids = self.term_ids(tokens)
        if not ids or not len(self):
            return np.zeros(len(self), dtype=np.float32)
        if len(ids) == 1:
            return np.asarray(self.weights[ids[0]].toarray()).ravel()
        return np.asarray(self.weights[ids].sum(axis=0)).ravel()

    def column(self, chunk_id: str) -> int | None:
        """The column of a chunk id (None when the chunk is not in this index)."""
        if self._columns is None:
            self._columns = {c: i for i, c in enumerate(self.chunk_ids)}
        return self._columns.get(chunk_id)

    def chinese_columns(self) -> np.ndarray:
        """Per column, whether the chunk is Chinese: at least a fifth of its distinct words are
        Chinese (the rule of :func:`rag.language.detect_language`, on words; numbers count for
        neither language). Worked out once per index from its vocabulary."""
        if self._chinese is None:
            kind = np.zeros(len(self.vocab), dtype=np.int8)  # 1 Chinese, 2 Latin, 0 neither
            for term, i in self.vocab.items():
                kind[i] = 1 if _CJK_TERM.match(term) else 2 if _LATIN_TERM.match(term) else 0
            rows = np.repeat(kind, np.diff(self.weights.indptr))
            cols = self.weights.indices
            chinese = np.bincount(cols, weights=(rows == 1), minlength=len(self))
            latin = np.bincount(cols, weights=(rows == 2), minlength=len(self))
            total = chinese + latin
            self._chinese = (total > 0) & (chinese >= 0.2 * np.maximum(total, 1))
        return self._chinese

    def chinese_share(self, doc_ids: Iterable[str] | None = None) -> float | None:
        """Share of the chunks (of ``doc_ids``, or all) that are Chinese; None without chunks."""
        flags = self.chinese_columns()
        if doc_ids is not None:
            flags = flags[self.rows_for_docs(doc_ids)]
        return float(flags.mean()) if len(flags) else None

    def rows_for_docs(self, doc_ids: Iterable[str]) -> np.ndarray:
        if self._doc_rows is None:
            by_doc: dict[str, list[int]] = {}
            for i, d in enumerate(self.doc_ids):
                by_doc.setdefault(d, []).append(i)
            self._doc_rows = {d: np.asarray(r, dtype=np.int64) for d, r in by_doc.items()}
        parts = [self._doc_rows[d] for d in doc_ids if d in self._doc_rows]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    def search(
        self, tokens: Sequence[str], k: int, doc_ids: Iterable[str] | None = None
    ) -> list[tuple[int, float]]:
        """Top ``k`` ``(column, score)`` with score > 0, best first, optionally within documents."""
        if k <= 0 or not len(self):
            return []
        scores = self.scores(tokens)
        if doc_ids is not None:
            allowed = self.rows_for_docs(doc_ids)
            if not len(allowed):
                return []
            sub = scores[allowed]
            top = _top(sub, k)
            return [(int(allowed[i]), float(sub[i])) for i in top if sub[i] > 0]
        return [(int(i), float(scores[i])) for i in _top(scores, k) if scores[i] > 0]

    def idf_mass(self, tokens: Sequence[str]) -> float:
        """Summed IDF of the distinct query tokens (unknown ones at the IDF of an unseen term):
        how much the question's words can tell passages apart."""
        n = len(self)
        unknown_idf = math.log1p((n + 0.5) / 0.5) if n else 1.0
        return float(sum(
            float(self.idf[self.vocab[t]]) if t in self.vocab else unknown_idf for t in dict.fromkeys(tokens)
        ))

    def matched_idf_fraction(self, tokens: Sequence[str], column: int) -> float:
        """Share (0..1) of the query's IDF mass whose terms occur in chunk ``column``.

        A readable lexical relevance: 1.0 means every informative word of the question is in the
        chunk; rare words count more than common ones. Unknown query words count as missing
        (weight: the IDF of a term seen in no chunk).
        """
        if not tokens:
            return 0.0
        n = len(self)
        unknown_idf = math.log1p((n + 0.5) / 0.5) if n else 1.0
        total = 0.0
        present = 0.0
        for t in dict.fromkeys(tokens):
            i = self.vocab.get(t)
            if i is None:
                total += unknown_idf
                continue
            w = float(self.idf[i])
            total += w
            start, end = self.weights.indptr[i], self.weights.indptr[i + 1]
            cols = self.weights.indices[start:end]
            pos = np.searchsorted(cols, column)
            if pos < len(cols) and cols[pos] == column:
                present += w
        return present / total if total > 0 else 0.0


def _count(rows: Iterable[tuple[str, str, str]], vocab: dict[str, int], chunk_ids: list[str],
           doc_ids: list[str]) -> tuple[sparse.csc_matrix, np.ndarray]:
    """Term counts of ``rows`` as a (terms, rows) CSC matrix over ``vocab`` (extended with new
    words), and their lengths; the rows' ids are appended to ``chunk_ids`` / ``doc_ids``."""
    term_idx: list[int] = []
    col_idx: list[int] = []
    lengths: list[int] = []
    setdefault = vocab.setdefault
    for col, (chunk_id, doc_id, tokens) in enumerate(rows):
        chunk_ids.append(chunk_id)
        doc_ids.append(doc_id)
        words = tokens.split()
        lengths.append(len(words))
        ids = [setdefault(w, len(vocab)) for w in words]
        term_idx.extend(ids)
        col_idx.extend([col] * len(ids))
    counts = sparse.coo_matrix(
        (np.ones(len(term_idx), dtype=np.float32), (np.asarray(term_idx, dtype=np.int64), np.asarray(col_idx, dtype=np.int64))),
        shape=(len(vocab), len(lengths)),
    ).tocsc()
    counts.sum_duplicates()  # duplicates summed = term frequencies
    return counts, np.asarray(lengths, dtype=np.float32)


def _top(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest values, best first (argpartition, then a sort of k)."""
    n = len(scores)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if k >= n:
        return np.argsort(-scores, kind="stable")
    part = np.argpartition(-scores, k - 1)[:k]
    return part[np.argsort(-scores[part], kind="stable")]


# -- per-store cache ---------------------------------------------------------------------------

_cache: dict[str, BM25Index] = {}
_cache_lock = threading.Lock()
_build_locks: dict[str, threading.Lock] = {}


def index_path(store_dir: Path, generation: int) -> Path:
    return Path(store_dir) / f"{INDEX_PREFIX}{generation}.npz"


def load_index(store, persist: bool = True) -> BM25Index:
    """The BM25 index of ``store`` at its current generation: from memory, else from the newest
    ``.npz`` an earlier process wrote; either brought up to date through the store's change log
    when it is older, else built from ``lexical_rows()``. A new one is saved."""
    key = str(store.dir)
    generation = store.generation
    cached = _cache.get(key)
    if cached is not None and cached.generation == generation:
        return cached
    with _cache_lock:
        lock = _build_locks.setdefault(key, threading.Lock())
    with lock:
        cached = _cache.get(key)
        if cached is not None and cached.generation == generation:
            return cached
        start = cached if cached is not None and cached.generation >= 0 else _newest_saved(store.dir) if persist else None
        index = start if start is not None and start.generation == generation else \
            _advanced(store, start) if start is not None else None
        if index is None:
            # read the generation again with the rows: a writer may commit in between, and then
            # the index must not be labelled with the older number
            rows = store.lexical_rows()
            after = store.generation
            index = BM25Index.build(rows, generation=generation if after == generation else -1)
        if persist and index.generation >= 0 and not index.loaded_from_disk:
            path = index_path(store.dir, index.generation)
            try:
                index.save(path)
                _remove_stale(store.dir, keep=path)
            except OSError:
                pass  # a read-only store still works, it just rebuilds next time
        _cache[key] = index
        return index


def _newest_saved(store_dir: Path) -> BM25Index | None:
    files = sorted(Path(store_dir).glob(f"{INDEX_PREFIX}*.npz"),
                   key=lambda p: int(p.stem[len(INDEX_PREFIX):]) if p.stem[len(INDEX_PREFIX):].isdigit() else -1)
    for path in reversed(files):
        try:
            return BM25Index.load(path)
        except Exception:  # a damaged or old-format file: try the next, else rebuild
            continue
    return None


def _advanced(store, index: BM25Index) -> BM25Index | None:
    """``index`` brought to the store's generation through its change log; None when the log
    cannot do it (see ``DocumentStore.changes_since``)."""
    changes_since = getattr(store, "changes_since", None)
    delta = changes_since(index.generation) if changes_since is not None and index.counts is not None else None
    if delta is None:
        return None
    current, log = delta
    if current == index.generation:
        return index
    final: dict[str, str] = {}
    for _generation, doc_id, op in log:  # the last change of each document counts
        final[doc_id] = op
    added = [d for d, op in final.items() if op == "add"]
    removed = [d for d, op in final.items() if op == "remove"]
    rows = store.lexical_rows(doc_ids=added) if added else []
    return index.advance(removed, rows, current)


def _remove_stale(store_dir: Path, keep: Path) -> None:
    for old in Path(store_dir).glob(f"{INDEX_PREFIX}*.npz"):
        if old != keep:
            try:
                old.unlink()
            except OSError:
                pass


def clear_cache() -> None:
    with _cache_lock:
        _cache.clear()


__all__ = ["BM25Index", "load_index", "index_path", "clear_cache", "K1", "B"]

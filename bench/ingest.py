"""Ingestion throughput on Chinese text built from CMRC 2018 passages.

    python bench/ingest.py            # about 3 MB of text
    python bench/ingest.py --quick    # about 0.3 MB

Reports, measured side by side in one run with the offline default embedder:
- chunks per second of the whole pipeline (load, split, embed, BM25 tokens, Chroma, catalogue);
- the ratio of pipeline time to the raw ``encode`` time of the very same chunk texts (goal ≤ 1.15);
- the time of a second ingest of the unchanged files as a fraction of the first (goal ≤ 0.02).
The last line printed is a JSON object with the figures.

Data: CMRC 2018 dev set (Cui et al., EMNLP-IJCNLP 2019; CC BY-SA 4.0), ../shared/data/cmrc2018/.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

CMRC = REPO.parent / "shared" / "data" / "cmrc2018" / "cmrc2018_dev.json"


def cmrc_passages(path: Path = CMRC) -> list[str]:
    data = json.loads(path.read_text(encoding="utf-8"))
    return [p["context"] for article in data["data"] for p in article["paragraphs"]]


def build_corpus(folder: Path, target_bytes: int, seed: int = 0) -> tuple[int, int]:
    """Write text files of 5-30 passages each, reshuffling the passages in every round so that
    no two files have the same content, until ``target_bytes`` are written."""
    passages = cmrc_passages()
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    written = files = 0
    while written < target_bytes:
        order = passages[:]
        rng.shuffle(order)
        while order and written < target_bytes:
            take, order = order[: rng.randint(5, 30)], order[30:]
            data = "\n\n".join(take).encode("utf-8")
            (folder / f"cmrc_{files:05d}.txt").write_bytes(data)
            written += len(data)
            files += 1
    return files, written


def chunk_texts(folder: Path, embedder, settings) -> list[str]:
    """The chunk texts the pipeline will embed, made with the same loader and splitter."""
    from ingest.loaders import load_document
    from ingest.splitter import split_document

    texts = []
    for path in sorted(folder.iterdir()):
        drafts = split_document(
            load_document(path),
            embedder.count_tokens,
            chunk_tokens=settings.chunking.chunk_tokens,
            overlap_tokens=settings.chunking.overlap_tokens,
            max_tokens=embedder.max_tokens,
        )
        texts.extend(d.text for d in drafts)
    return texts


def timed(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="about 0.3 MB instead of 3 MB")
    parser.add_argument("--mb", type=float, default=None, help="corpus size in MB")
    args = parser.parse_args()
    size_mb = args.mb or (0.3 if args.quick else 3.0)

    from ingest.embeddings import load_embedder
    from ingest.pipeline import Ingestor
    from rag.settings import Settings

    work = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    try:
        files, written = build_corpus(work / "docs", int(size_mb * 1024 * 1024))
        settings = Settings(store={"dir": work / "kb"})
        embedder = load_embedder(settings.embedding)
        embedder.encode_passages(["预热。"])  # first call maps the model file
        ingestor = Ingestor(settings, embedder=embedder)

        # The raw encode of the same chunk texts is timed before and after the pipeline and
        # averaged, so that a change in machine load during the run biases neither side.
        texts = chunk_texts(work / "docs", embedder, settings)
        encode_before_s = timed(embedder.encode_passages, texts)

        start = time.perf_counter()
        first = ingestor.ingest([work / "docs"])
        first_s = time.perf_counter() - start
        assert not first.failed, first.failed
        assert first.chunks == len(texts), (first.chunks, len(texts))

        start = time.perf_counter()
        second = ingestor.ingest([work / "docs"])
        second_s = time.perf_counter() - start
        assert second.unchanged == files and second.chunks == 0

        encode_after_s = timed(embedder.encode_passages, texts)
        encode_s = (encode_before_s + encode_after_s) / 2
    finally:
        shutil.rmtree(work, ignore_errors=True)

    figures = {
        "embedder": embedder.name,
        "files": files,
        "mb": round(written / 1048576, 2),
        "chunks": first.chunks,
        "pipeline_s": round(first_s, 2),
        "raw_encode_s": round(encode_s, 2),
        "raw_encode_before_after_s": [round(encode_before_s, 2), round(encode_after_s, 2)],
        "chunks_per_s": round(first.chunks / first_s, 2),
        "pipeline_to_encode_ratio": round(first_s / encode_s, 3),
        "unchanged_reingest_s": round(second_s, 3),
        "unchanged_fraction": round(second_s / first_s, 4),
        "goals": {"pipeline_to_encode_ratio": 1.15, "unchanged_fraction": 0.02},
    }
    print(f"{files} files, {figures['mb']} MB, {first.chunks} chunks")
    print(f"pipeline {first_s:.1f} s ({figures['chunks_per_s']} chunks/s); raw encode {encode_s:.1f} s; "
          f"ratio {figures['pipeline_to_encode_ratio']} (goal <= 1.15)")
    print(f"unchanged re-ingest {second_s:.2f} s = {figures['unchanged_fraction']:.4f} of the first (goal <= 0.02)")
    print(json.dumps(figures, ensure_ascii=False))


if __name__ == "__main__":
    main()

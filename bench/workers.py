"""Ingestion split across workers (ingest.queue): one worker against two, side by side.

    .venv/bin/python bench/workers.py                   # 200 CMRC passages, 1 and 2 workers
    .venv/bin/python bench/workers.py --files 100 --workers 1,2

Each run queues the same files (one CMRC 2018 passage each) into a fresh knowledge base and
starts that many ``python -m ingest --worker`` processes, each limited to one core
(``OMP_NUM_THREADS=1``), as workers on separate one-core machines would be; the time is from the
workers' start to the last one's exit (loading the embedder included). The catalogue is the
embedded SQLite one (the workers share a directory); with PostgreSQL the workers claim the same
way (tests/test_ingest_queue.py). On this 2-core machine two workers are the most that can run
side by side. Last line: JSON.

Data: CMRC 2018 (Cui et al., 2019, CC BY-SA 4.0), ../shared/data/cmrc2018/.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.retrieval import load_cmrc  # noqa: E402


def run(files: list[Path], workers: int, folder: Path) -> dict:
    from ingest.queue import IngestQueue
    from ingest.store import DocumentStore
    from rag.settings import Settings

    kb = folder / f"kb-{workers}"
    settings = Settings(store={"dir": kb})
    queue = IngestQueue.open(settings)
    queue.enqueue(files)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCQA_")}
    # one core each: one embedding thread, reading and splitting in the same process
    env.update(OMP_NUM_THREADS="1", DOCQA_INGEST__PARSE_WORKERS="0", HF_HUB_OFFLINE="1",
               ANONYMIZED_TELEMETRY="False", PYTHONPATH=str(ROOT))
    started = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-m", "ingest", "--kb", str(kb), "--worker", "--json"], cwd=ROOT,
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(workers)]
    done = []
    for p in procs:
        out, err = p.communicate()
        if p.returncode != 0:
            raise SystemExit(f"a worker failed: {err[-2000:]}")
        done.append(json.loads(out.splitlines()[-1])["worker"]["done"])
    seconds = time.perf_counter() - started
    from ingest.embeddings import load_embedder

    store = DocumentStore.open(settings, load_embedder(settings.embedding))
    documents, chunks = len(store.documents()), store.chunk_count()
    assert documents == len(files) and queue.counts()["done"] == len(files), (documents, queue.counts())
    return {"workers": workers, "seconds": round(seconds, 1), "files_per_worker": done, "chunks": chunks,
            "chunks_per_s": round(chunks / seconds, 2)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files", type=int, default=200)
    ap.add_argument("--workers", default="1,2")
    args = ap.parse_args(argv)
    passages, _ = load_cmrc()
    folder = Path(tempfile.mkdtemp(prefix="docqa-workers-"))
    try:
        docs = folder / "docs"
        docs.mkdir()
        files = []
        for i, text in enumerate(passages[: args.files]):
            path = docs / f"p{i:04d}.txt"
            path.write_text(text, encoding="utf-8")
            files.append(path)
        results = []
        for n in (int(w) for w in args.workers.split(",")):
            result = run(files, n, folder)
            results.append(result)
            print(f"{n} worker(s): {result['seconds']} s, {result['chunks_per_s']} chunks/s, "
                  f"files per worker {result['files_per_worker']}", flush=True)
        base = results[0]["seconds"]
        for r in results[1:]:
            r["speedup"] = round(base / r["seconds"], 2)
            print(f"{r['workers']} workers: {r['speedup']}x the speed of {results[0]['workers']}")
        print(json.dumps({"files": len(files), "runs": results}))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

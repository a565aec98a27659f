# ruff: noqa: F811  (pytest fixtures are imported, then named as arguments)
"""Ingestion split across workers (ingest.queue): a queue of files in the catalogue; a killed
worker loses nothing and nothing is ingested twice; on a shared PostgreSQL catalogue, workers in
separate processes take from one queue."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ingest.queue import DONE, FAILED, MAX_ATTEMPTS, IngestQueue, jobs, run_worker
from rag.settings import Settings
from tests.helpers_reliability import REPO, check_consistent, cli_env
from tests.helpers_servers import postgres_server, postgres_url  # noqa: F401  (fixtures)

TOPICS = "长城 故宫 黄山 西湖 泰山 长江 黄河 熊猫 丝绸 瓷器 茶叶 书法 京剧 太极 灯笼 饺子".split()


def corpus(folder: Path, n: int, start: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(start, start + n):
        topic = TOPICS[i % len(TOPICS)]
        (folder / f"doc{i:03d}.txt").write_text(f"{topic}是第{i}号文件的主题。{topic}的故事很长。" * 3, encoding="utf-8")
    return folder


def job_rows(queue: IngestQueue) -> list[tuple]:
    from sqlalchemy import select

    with queue.catalog.reading() as conn:
        return [tuple(r) for r in conn.execute(select(jobs.c.path, jobs.c.state, jobs.c.worker, jobs.c.attempts)
                                               .order_by(jobs.c.job_id))]


def test_workers_take_the_queued_files_once(tmp_path, embedder):
    from ingest.store import DocumentStore

    settings = Settings(store={"dir": tmp_path / "kb"})
    docs = corpus(tmp_path / "docs", 5)
    (docs / "broken.pdf").write_bytes(b"not a pdf")
    queue = IngestQueue.open(settings)
    assert queue.enqueue([docs, tmp_path / "missing"]) == (6, [str(tmp_path / "missing")])
    assert queue.enqueue([docs]) == (0, [])  # already queued: not twice
    report = run_worker(settings)
    assert report.done == 5 and [Path(p).name for p, _ in report.failed] == ["broken.pdf"]
    assert "PDF" in report.failed[0][1]
    assert queue.counts() == {"queued": 0, "running": 0, "done": 5, "failed": 1}
    store = DocumentStore.open(settings, embedder)
    assert len(store.documents()) == 5
    check_consistent(store)
    # queued again after they are done: the unchanged files cost nothing
    assert queue.enqueue([docs / "doc000.txt"]) == (1, [])
    again = run_worker(settings)
    assert again.done == 1 and again.chunks == 0


def test_a_dead_workers_jobs_are_taken_again_then_given_up(tmp_path):
    settings = Settings(store={"dir": tmp_path / "kb"})
    queue = IngestQueue.open(settings)
    queue.enqueue([corpus(tmp_path / "docs", 2)])
    taken = queue.claim("dead-1", lease_s=0.2)  # a worker that dies without finishing
    assert len(taken) == 2 and queue.claim("other") == []  # leased: nobody else takes them
    time.sleep(0.3)
    assert [j.path for j in queue.claim("dead-2", lease_s=0.2)] == [j.path for j in taken]
    queue.finish(taken[0], "dead-1")  # a late report of the first, dead worker changes nothing
    assert {r[1] for r in job_rows(queue)} == {"running"}
    for attempt in range(3, MAX_ATTEMPTS + 1):
        time.sleep(0.3)
        assert len(queue.claim(f"dead-{attempt}", lease_s=0.2)) == 2
    time.sleep(0.3)
    assert queue.claim("last") == []  # out of attempts: failed, with the reason
    assert {r[1] for r in job_rows(queue)} == {FAILED}
    assert all("stopped" in error for _, error in queue.failures())


@pytest.mark.timeout(600)
def test_a_killed_worker_process_loses_nothing_and_nothing_is_stored_twice(tmp_path, embedder):
    """SIGKILL a `python -m ingest --worker` while it writes; a second worker finishes the queue."""
    from ingest.store import DocumentStore

    kb = tmp_path / "kb"
    settings = Settings(store={"dir": kb}, ingest={"worker_lease_s": 2.0})
    queue = IngestQueue.open(settings)
    queue.enqueue([corpus(tmp_path / "docs", 24)])
    env = cli_env(DOCQA_INGEST__WORKER_LEASE_S="2", DOCQA_EMBEDDING__BATCH_SIZE="1", OMP_NUM_THREADS="1")
    worker = subprocess.Popen([sys.executable, "-m", "ingest", "--kb", str(kb), "--worker"], cwd=REPO, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 180
        while queue.counts()[DONE] < 3:  # some files are stored, others are on their way
            assert worker.poll() is None and time.monotonic() < deadline, worker.communicate()[1][-2000:]
            time.sleep(0.05)
        worker.send_signal(signal.SIGKILL)
        worker.wait()
    finally:
        worker.kill()
        worker.communicate()
    counts = queue.counts()
    assert counts["running"] > 0 and counts[DONE] < 24, counts  # killed in the middle
    time.sleep(2.1)  # its leases run out
    second = subprocess.run([sys.executable, "-m", "ingest", "--kb", str(kb), "--worker", "--json"], cwd=REPO,
                            env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-2000:]
    summary = json.loads(second.stdout.splitlines()[-1])
    assert summary["jobs"] == {"queued": 0, "running": 0, "done": 24, "failed": 0}
    assert summary["catalogue"] == f"sqlite:///{(kb / 'catalog.sqlite3').resolve()}"  # which one it used
    store = DocumentStore.open(settings, embedder)
    assert sorted(Path(s).name for d in store.documents() for s in d.sources) == [f"doc{i:03d}.txt" for i in range(24)]
    check_consistent(store, settled=True)  # no half-written document, no vector twice


@pytest.mark.server
@pytest.mark.timeout(600)
def test_workers_on_two_machines_share_one_queue(tmp_path, postgres_url, chroma_server, embedder):
    """Two worker processes with their own directories (two machines), a shared PostgreSQL
    catalogue and Chroma server: every file ingested once, by one of them, both busy."""
    from ingest.store import DocumentStore

    shared = {"catalog_url": postgres_url, "chroma_host": chroma_server[0], "chroma_port": chroma_server[1]}
    queue = IngestQueue.open(Settings(store={"dir": tmp_path / "enqueuer", **shared}))
    assert queue.enqueue([corpus(tmp_path / "docs", 40)])[0] == 40
    env = cli_env(DOCQA_STORE__CATALOG_URL=postgres_url, DOCQA_STORE__CHROMA_HOST=chroma_server[0],
                  DOCQA_STORE__CHROMA_PORT=str(chroma_server[1]), OMP_NUM_THREADS="1")
    workers = [subprocess.Popen([sys.executable, "-m", "ingest", "--kb", str(tmp_path / f"machine-{i}"), "--worker",
                                 "--json"], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for i in range(2)]
    reports = []
    for w in workers:
        out, err = w.communicate(timeout=400)
        assert w.returncode == 0, err[-2000:]
        reports.append(json.loads(out.splitlines()[-1])["worker"])
    assert sum(r["done"] for r in reports) == 40 and all(r["done"] > 0 for r in reports), reports
    rows = job_rows(queue)
    assert [r[1] for r in rows] == [DONE] * 40 and {r[3] for r in rows} == {1}  # each taken once
    assert len({r[2] for r in rows}) == 2  # by both workers
    store = DocumentStore.open(Settings(store={"dir": tmp_path / "reader", **shared}), embedder)
    assert len(store.documents()) == 40
    check_consistent(store, settled=True)


@pytest.mark.server
def test_concurrent_claims_never_hand_a_job_to_two_workers(tmp_path, postgres_url):
    """Eight threads claim one job at a time from one PostgreSQL queue as fast as they can."""
    import threading

    queue = IngestQueue.open(Settings(store={"dir": tmp_path / "kb", "catalog_url": postgres_url}))
    assert queue.enqueue([corpus(tmp_path / "docs", 120)])[0] == 120
    claimed: list[int] = []
    lock = threading.Lock()

    def claim_all(name: str) -> None:
        while taken := queue.claim(name, n=1):
            with lock:
                claimed.extend(j.job_id for j in taken)

    threads = [threading.Thread(target=claim_all, args=(f"w{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(claimed) == 120 and len(set(claimed)) == 120
    assert {r[3] for r in job_rows(queue)} == {1}

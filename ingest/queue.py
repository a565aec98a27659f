"""Ingestion split across worker processes or machines: a queue of files in the catalogue.

Usage::

    python -m ingest --enqueue /shared/docs/          # files to ingest, one job each
    python -m ingest --worker                         # on each machine: take jobs until none is left
    python -m ingest --worker --follow                # ... and wait for more
    python -m ingest --queue                          # how many jobs are queued, running, done, failed

    from ingest.queue import IngestQueue, run_worker
    IngestQueue.open(settings).enqueue(["/shared/docs"])
    run_worker(settings)                              # -> WorkerReport

The queue is a table of the catalogue (ingest.catalog), so with a shared PostgreSQL catalogue
every machine's workers take from one queue; claiming uses ``FOR UPDATE SKIP LOCKED`` there (and
SQLite's single writer on one machine), so no job is handed to two workers. Workers embed in
parallel and only take the knowledge base's writer lock to store a finished batch
(ingest.pipeline), so N workers on N machines embed about N times as fast.

A job is leased to its worker (``settings.ingest.worker_lease_s``, renewed while it makes
progress). A worker that is killed loses nothing: its jobs' leases run out and another worker
takes them again (up to :data:`MAX_ATTEMPTS` times); what it had stored stays, and ingesting is idempotent (a file whose
content is stored is not embedded again, a document half written is removed by the next writer),
so nothing is ingested twice. Paths must name the same files on every machine (a shared mount).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Column, Float, Integer, Table, Text, func, or_, select, update

from ingest import catalog as cat
from rag.settings import Settings

LEASE_S = 300.0
"""How long a claimed job stays with its worker without progress before others may take it
(``settings.ingest.worker_lease_s`` for :func:`run_worker`)."""
MAX_ATTEMPTS = 3
"""A job whose worker died this many times is marked failed (the file itself may kill workers)."""
CLAIM_FILES = 8
"""Jobs a worker claims at once: small files are embedded and stored in one batch."""
QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"

jobs = Table(
    "jobs", cat.metadata,
    Column("job_id", Integer, primary_key=True, autoincrement=True),
    Column("path", Text, nullable=False),
    Column("state", Text, nullable=False),
    Column("worker", Text),
    Column("lease_until", Float),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("error", Text),
    Column("enqueued_at", Float, nullable=False),
    Column("finished_at", Float),
)


@dataclass(frozen=True)
class Job:
    job_id: int
    path: str
    attempts: int


@dataclass
class WorkerReport:
    done: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    """(path, reason) of the jobs that failed."""
    chunks: int = 0

    def to_dict(self) -> dict:
        return {"done": self.done, "failed": [{"path": p, "error": e} for p, e in self.failed],
                "chunks": self.chunks}


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class IngestQueue:
    """The jobs table of one knowledge base's catalogue."""

    def __init__(self, catalog: cat.Catalog) -> None:
        self.catalog = catalog

    @classmethod
    def open(cls, settings: Settings) -> "IngestQueue":
        from ingest.store import open_store_catalog

        return cls(open_store_catalog(settings))

    def enqueue(self, paths: Iterable[str | Path]) -> tuple[int, list[str]]:
        """One job per file found under ``paths`` (folders recursively), unless the same path
        is already queued or running. Returns (jobs added, paths that are not files to ingest)."""
        from ingest.pipeline import discover

        files, _skipped, missing = discover(paths)
        now = time.time()
        with self.catalog.transaction() as tx:
            pending = {r[0] for r in tx.execute(select(jobs.c.path).where(jobs.c.state.in_([QUEUED, RUNNING])))}
            new = [str(f) for f in files if str(f) not in pending]
            if new:
                tx.execute(jobs.insert(), [{"path": p, "state": QUEUED, "attempts": 0, "enqueued_at": now}
                                           for p in new])
        return len(new), [m.path for m in missing]

    def claim(self, worker: str, n: int = CLAIM_FILES, lease_s: float = LEASE_S) -> list[Job]:
        """Up to ``n`` jobs for ``worker``: queued ones, and running ones whose lease ran out
        (their worker died); jobs out of attempts are marked failed instead."""
        now = time.time()
        claimable = or_(jobs.c.state == QUEUED, (jobs.c.state == RUNNING) & (jobs.c.lease_until < now))
        with self.catalog.transaction() as tx:
            rows = tx.execute(select(jobs.c.job_id, jobs.c.attempts).where(claimable)
                              .order_by(jobs.c.job_id).limit(n).with_for_update(skip_locked=True)).all()
            spent = [r.job_id for r in rows if r.attempts >= MAX_ATTEMPTS]
            if spent:
                tx.execute(update(jobs).where(jobs.c.job_id.in_(spent)).values(
                    state=FAILED, finished_at=now, error=f"its worker stopped {MAX_ATTEMPTS} times while ingesting it"))
            wanted = [r.job_id for r in rows if r.attempts < MAX_ATTEMPTS]
            if not wanted:
                taken = []
            # claimable again in the UPDATE: a job another worker took since the SELECT (its row
            # lock waited for, then the row re-read) is not taken twice
            else:
                taken = tx.execute(update(jobs).where(jobs.c.job_id.in_(wanted), claimable)
                                   .values(state=RUNNING, worker=worker, lease_until=now + lease_s,
                                           attempts=jobs.c.attempts + 1)
                                   .returning(jobs.c.job_id, jobs.c.path, jobs.c.attempts)).all()
        if not taken and spent:  # only given-up jobs this time: others may still be queued
            return self.claim(worker, n, lease_s)
        return [Job(r.job_id, r.path, r.attempts) for r in sorted(taken)]

    def renew(self, taken: Iterable[Job], worker: str, lease_s: float = LEASE_S) -> None:
        ids = [j.job_id for j in taken]
        if ids:
            with self.catalog.transaction() as tx:
                tx.execute(update(jobs).where(jobs.c.job_id.in_(ids), jobs.c.worker == worker)
                           .values(lease_until=time.time() + lease_s))

    def finish(self, job: Job, worker: str, error: str | None = None) -> None:
        """Done (or failed with ``error``), unless another worker has taken the job since."""
        with self.catalog.transaction() as tx:
            tx.execute(update(jobs).where(jobs.c.job_id == job.job_id, jobs.c.worker == worker,
                                          jobs.c.state == RUNNING)
                       .values(state=FAILED if error else DONE, error=error, finished_at=time.time()))

    def counts(self) -> dict[str, int]:
        with self.catalog.reading() as conn:
            found = dict(conn.execute(select(jobs.c.state, func.count()).group_by(jobs.c.state)).all())
        return {state: int(found.get(state, 0)) for state in (QUEUED, RUNNING, DONE, FAILED)}

    def failures(self) -> list[tuple[str, str]]:
        with self.catalog.reading() as conn:
            return [tuple(r) for r in conn.execute(select(jobs.c.path, jobs.c.error)
                                                   .where(jobs.c.state == FAILED).order_by(jobs.c.job_id))]


def run_worker(settings: Settings, follow: bool = False, poll_s: float = 2.0, worker: str | None = None,
               on_job: Callable[[Job, str | None], None] | None = None) -> WorkerReport:
    """Take and ingest jobs until none is left (``follow``: wait for more, until interrupted)."""
    from ingest.pipeline import Ingestor

    worker = worker or worker_name()
    lease_s = settings.ingest.worker_lease_s
    ingestor = Ingestor(settings)
    queue = IngestQueue(ingestor.store.catalog)
    report = WorkerReport()
    while True:
        taken = queue.claim(worker, lease_s=lease_s)
        if not taken:
            if not follow:
                return report
            time.sleep(poll_s)
            continue
        last_renewal = time.monotonic()

        def progress(_event) -> None:
            nonlocal last_renewal
            if time.monotonic() - last_renewal > lease_s / 5:  # still working: keep the jobs
                queue.renew(taken, worker, lease_s)
                last_renewal = time.monotonic()

        run = ingestor.ingest([j.path for j in taken], progress=progress)
        failed = {f.path: f.error for f in run.failed}
        report.chunks += run.chunks
        for job in taken:
            error = failed.get(job.path) or failed.get(str(Path(job.path).resolve()))
            queue.finish(job, worker, error)
            if error:
                report.failed.append((job.path, error))
            else:
                report.done += 1
            if on_job is not None:
                on_job(job, error)


__all__ = ["IngestQueue", "Job", "WorkerReport", "run_worker", "LEASE_S", "MAX_ATTEMPTS", "jobs"]

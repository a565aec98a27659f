"""Which files hold a document, and what removing or renaming one does.

Real files in tmp folders, the real embedder and real Chroma (embedded and, where a test takes
``any_kb_settings``, a Chroma server). The CLI runs in a subprocess, as a user would run it.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from ingest.pipeline import content_id
from ingest.store import SCHEMA_VERSION
from rag.api import KnowledgeBase
from tests.conftest import REPO
from tests.helpers_reliability import unversion_catalogue

HANDBOOK = "员工手册：公司每年为正式员工提供十五天带薪年假，年假需要提前两周向部门经理申请。"
HANDBOOK_Q = "每年有多少天带薪年假？"
TRAVEL = "报销制度：差旅费用须在出差结束后三十天内凭发票报销，超过期限的费用不予报销。"
TRAVEL_Q = "差旅费用多久之内报销？"
PANDA = "大熊猫是中国特有的动物，主要生活在四川、陕西和甘肃的山区。它们以竹子为主要食物。"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path.resolve()


def doc_id_of(text: str) -> str:
    return content_id(text.encode("utf-8"))


def run_module(module: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


def listed(kb_dir: Path, cwd: Path) -> dict[str, dict]:
    """``python -m ingest --list --json``, by document id."""
    run = run_module("ingest", "--kb", str(kb_dir), "--list", "--json", cwd=cwd)
    assert run.returncode == 0, run.stderr
    return {d["doc_id"]: d for d in json.loads(run.stdout)["documents"]}


def retrieved(kb_dir: Path, question: str, cwd: Path) -> list[dict]:
    """``python -m rag retrieve QUESTION --json``: the hits as the CLI gives them."""
    run = run_module("rag", "retrieve", question, "--kb", str(kb_dir), "--k", "3", "--json", cwd=cwd)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout.strip().splitlines()[-1])["hits"]


def consistent(kb: KnowledgeBase) -> None:
    assert kb.store.vector_ids() == kb.store.catalog_chunk_ids()


# -- identical files ---------------------------------------------------------------------------------


def test_removing_one_identical_file_keeps_the_document(any_kb_settings, embedder, tmp_path):
    folder = tmp_path / "docs"
    original = write(folder / "handbook.txt", HANDBOOK)
    copy = write(folder / "handbook_copy.txt", HANDBOOK)
    write(folder / "panda.txt", PANDA)
    kb = KnowledgeBase(settings=any_kb_settings, embedder=embedder)
    report = kb.add(folder)
    assert report.added == 3 and report.failed == []
    doc_id = doc_id_of(HANDBOOK)
    assert sorted(kb.store.document(doc_id).sources) == sorted([str(original), str(copy)])
    chunk_ids = {c.chunk_id for c in kb.store.document_chunks(doc_id)}
    assert chunk_ids

    # By file name: only that file leaves; the copy keeps the document, its chunks and vectors.
    assert kb.remove("handbook.txt") is True
    assert original.exists()  # the file on disk is not touched
    assert kb.store.document(doc_id).sources == [str(copy)]
    assert chunk_ids <= kb.store.catalog_chunk_ids() and chunk_ids <= kb.store.vector_ids()
    hit = kb.retrieve(HANDBOOK_Q, k=3)[0]
    assert (hit.doc_id, hit.source, hit.file_name) == (doc_id, str(copy), "handbook_copy.txt")
    assert hit.title == "handbook_copy"  # a title taken from a file name follows the file cited
    assert kb.remove("handbook.txt") is False  # nothing by that name is left
    consistent(kb)

    # By path, the last file: now the document and its chunks go.
    assert kb.remove(str(copy)) is True
    assert kb.store.document(doc_id) is None
    assert not chunk_ids & kb.store.catalog_chunk_ids()
    assert not chunk_ids & kb.store.vector_ids()
    assert all(h.doc_id != doc_id for h in kb.retrieve(HANDBOOK_Q, k=5))
    assert [d.file_names for d in kb.documents()] == [["panda.txt"]]
    consistent(kb)


def test_cli_remove_by_name_detaches_one_file_and_by_id_removes_them_all(tmp_path, embedder):
    folder = tmp_path / "docs"
    original = write(folder / "handbook.txt", HANDBOOK)
    copy = write(folder / "handbook_copy.txt", HANDBOOK)
    panda = write(folder / "panda.txt", PANDA)
    kb_dir = tmp_path / "kb"
    doc_id = doc_id_of(HANDBOOK)

    run = run_module("ingest", str(folder), "--kb", str(kb_dir), "--json", "--no-progress", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["added"] == 3

    # The text listing shows every file that holds a document, the JSON one lists them too.
    text = run_module("ingest", "--kb", str(kb_dir), "--list", cwd=tmp_path)
    assert text.returncode == 0, text.stderr
    assert all(str(p) in text.stdout for p in (original, copy, panda))
    assert sorted(listed(kb_dir, tmp_path)[doc_id]["sources"]) == sorted([str(original), str(copy)])

    # The help says what each kind of reference removes.
    helptext = " ".join(run_module("ingest", "--help", cwd=tmp_path).stdout.split())
    assert "id or id prefix: remove the document with all its files" in helptext
    assert "file name: remove only that file" in helptext

    removed = run_module("ingest", "--kb", str(kb_dir), "--remove", "handbook.txt", "--json", cwd=tmp_path)
    assert removed.returncode == 0, removed.stderr
    assert json.loads(removed.stdout)["removed"] == 1
    docs = listed(kb_dir, tmp_path)
    assert docs[doc_id]["sources"] == [str(copy)] and len(docs) == 2
    hits = retrieved(kb_dir, HANDBOOK_Q, tmp_path)
    assert hits[0]["doc_id"] == doc_id and hits[0]["source"] == str(copy)

    # Adding the folder again brings handbook.txt back (nothing to embed: the content is there).
    again = run_module("ingest", str(folder), "--kb", str(kb_dir), "--json", "--no-progress", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["added"] == 1 and json.loads(again.stdout)["chunks"] == 0
    assert sorted(listed(kb_dir, tmp_path)[doc_id]["sources"]) == sorted([str(original), str(copy)])

    # By id prefix: the document goes with all its files; the files on disk stay.
    by_id = run_module("ingest", "--kb", str(kb_dir), "--remove", doc_id[:10], "--json", cwd=tmp_path)
    assert by_id.returncode == 0, by_id.stderr
    assert json.loads(by_id.stdout)["removed"] == 1
    docs = listed(kb_dir, tmp_path)
    assert doc_id not in docs and [d["sources"] for d in docs.values()] == [[str(panda)]]
    assert original.exists() and copy.exists()
    assert all(h["doc_id"] != doc_id for h in retrieved(kb_dir, HANDBOOK_Q, tmp_path))


def test_app_delete_removes_every_source_but_deletes_only_uploaded_copies(kb_settings, embedder, tmp_path):
    from ui import services

    kb = KnowledgeBase(settings=kb_settings, embedder=embedder)
    uploads = services.uploads_dir(kb.store.dir)
    uploaded, _ = services.save_upload(uploads, "handbook.txt", HANDBOOK.encode("utf-8"))
    other_upload, _ = services.save_upload(uploads, "panda.txt", PANDA.encode("utf-8"))
    outside = write(tmp_path / "mine" / "handbook.txt", HANDBOOK)
    assert kb.add([uploads, outside]).added == 3
    doc_id = doc_id_of(HANDBOOK)
    assert len(kb.store.document(doc_id).sources) == 2

    assert services.delete_document(kb, doc_id) is True
    assert kb.store.document(doc_id) is None  # both of its sources are gone from the list
    assert not uploaded.exists()  # the app's own copy is deleted ...
    assert outside.exists() and other_upload.exists()  # ... nothing else is
    assert [d.file_names for d in kb.documents()] == [["panda.txt"]]
    consistent(kb)


# -- renamed and moved files ---------------------------------------------------------------------------


@pytest.mark.parametrize("again", ["folder", "new file only"])
def test_renamed_file_is_cited_under_its_new_name(any_kb_settings, counting_embedder, tmp_path, again):
    folder = tmp_path / "docs"
    old = write(folder / "old.txt", TRAVEL)
    write(folder / "panda.txt", PANDA)
    kb = KnowledgeBase(settings=any_kb_settings, embedder=counting_embedder)
    assert kb.add(folder).added == 2
    doc_id = doc_id_of(TRAVEL)
    assert kb.store.document(doc_id).title == "old"
    embedded = counting_embedder.embedded

    new = folder / "new.txt"
    old.rename(new)
    new = new.resolve()
    report = kb.add(folder if again == "folder" else new)
    assert (report.added, report.updated, report.removed, report.failed) == (1, 0, 1, [])
    assert counting_embedder.embedded == embedded  # the same content: nothing embedded again

    doc = kb.store.document(doc_id)
    assert doc.sources == [str(new)] and doc.title == "new"
    assert "old.txt" not in [n for d in kb.documents() for n in d.file_names]
    hit = kb.retrieve(TRAVEL_Q, k=3)[0]
    assert (hit.doc_id, hit.source, hit.file_name, hit.title) == (doc_id, str(new), "new.txt", "new")
    assert all(c.source == str(new) and c.title == "new" and c.heading == "new"
               for c in kb.store.document_chunks(doc_id))
    consistent(kb)

    # Nothing left to do on the next run.
    report = kb.add(folder if again == "folder" else new)
    assert (report.added, report.updated, report.removed) == (0, 0, 0) and report.unchanged >= 1


def test_cli_lists_and_cites_a_renamed_file_under_its_new_path_only(tmp_path, embedder):
    folder = tmp_path / "docs"
    old = write(folder / "old.txt", TRAVEL)
    write(folder / "panda.txt", PANDA)
    kb_dir = tmp_path / "kb"
    doc_id = doc_id_of(TRAVEL)
    first = run_module("ingest", str(folder), "--kb", str(kb_dir), "--json", "--no-progress", cwd=tmp_path)
    assert first.returncode == 0, first.stderr

    new = folder / "sub" / "new.txt"  # moved into a sub-folder and renamed
    new.parent.mkdir()
    old.rename(new)
    new = new.resolve()
    run = run_module("ingest", str(new), "--kb", str(kb_dir), "--json", "--no-progress", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert (result["added"], result["removed"], result["chunks"]) == (1, 1, 0)

    text = run_module("ingest", "--kb", str(kb_dir), "--list", cwd=tmp_path).stdout
    assert str(new) in text and "old.txt" not in text
    doc = listed(kb_dir, tmp_path)[doc_id]
    assert doc["sources"] == [str(new)] and doc["title"] == "new"
    hits = retrieved(kb_dir, TRAVEL_Q, tmp_path)
    assert hits[0]["doc_id"] == doc_id and hits[0]["source"] == str(new)


@pytest.mark.parametrize("name", ["old.md", "差旅报销制度.md"])  # the heading is, or is not, the stem
def test_title_from_inside_the_document_survives_a_rename(kb_settings, embedder, tmp_path, name):
    old = write(tmp_path / "docs" / name, f"# 差旅报销制度\n\n{TRAVEL}")
    kb = KnowledgeBase(settings=kb_settings, embedder=embedder)
    kb.add(old)
    doc_id = content_id(old.read_bytes())
    assert kb.store.document(doc_id).title == "差旅报销制度"

    new = old.with_name("new.md")
    old.rename(new)
    assert kb.add(new).removed == 1
    doc = kb.store.document(doc_id)
    assert doc.sources == [str(new)] and doc.title == "差旅报销制度"
    hit = kb.retrieve(TRAVEL_Q, k=1)[0]
    assert (hit.source, hit.file_name, hit.title) == (str(new), "new.md", "差旅报销制度")


def test_renamed_file_with_an_identical_copy_still_present(kb_settings, embedder, tmp_path):
    folder = tmp_path / "docs"
    first = write(folder / "a.txt", HANDBOOK)
    copy = write(folder / "z_copy.txt", HANDBOOK)
    kb = KnowledgeBase(settings=kb_settings, embedder=embedder)
    kb.add(folder)
    doc_id = doc_id_of(HANDBOOK)
    assert kb.store.document(doc_id).sources[0] == str(first)  # the first file is cited

    renamed = folder / "b.txt"
    first.rename(renamed)
    renamed = renamed.resolve()
    report = kb.add(folder)
    assert (report.added, report.removed, report.unchanged) == (1, 1, 1)
    doc = kb.store.document(doc_id)
    # The renamed file takes the old name's place: still cited first, the copy stays listed.
    assert doc.sources == [str(renamed), str(copy)] and doc.title == "b"
    hit = kb.retrieve(HANDBOOK_Q, k=1)[0]
    assert (hit.source, hit.title) == (str(renamed), "b")


def test_store_written_before_titles_were_tracked_still_follows_renames(kb_settings, embedder, tmp_path):
    old = write(tmp_path / "docs" / "old.txt", TRAVEL)
    kb = KnowledgeBase(settings=kb_settings, embedder=embedder)
    kb.add(old)
    kb.close()
    # Turn the catalogue back into a schema-1 one (no record of where titles come from).
    db = sqlite3.connect(Path(kb_settings.store.dir) / "catalog.sqlite3")
    db.execute("ALTER TABLE documents DROP COLUMN named_title")
    unversion_catalogue(db)  # written before the migrations
    db.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    db.commit()
    db.close()

    kb = KnowledgeBase(settings=kb_settings, embedder=embedder)
    assert kb.store._meta("schema_version") == str(SCHEMA_VERSION)
    new = old.with_name("new.txt")
    old.rename(new)
    assert kb.add(new).removed == 1
    doc = kb.store.document(doc_id_of(TRAVEL))
    assert doc.sources == [str(new)] and doc.title == "new"
    assert kb.retrieve(TRAVEL_Q, k=1)[0].title == "new"

"""python -m rag ask / retrieve / summarize."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers_rag import long_chinese_text, make_kb, write_docs

from rag import cli
from rag.testing import fake_loaded_model

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def kb(tmp_path_factory):
    return make_kb(tmp_path_factory.mktemp("cli"))


@pytest.fixture
def fake_model(monkeypatch):
    model = fake_loaded_model(600, 64, notice="fake model answering")
    monkeypatch.setattr("rag.models.loader.load_chat_model", lambda settings: model)
    return model


def test_models_subcommand_still_registered(capsys):
    from rag.models.registry import list_models

    assert cli.main(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["key"] for r in rows] == [m.key for m in list_models()]
    assert len(rows) == 14 and "chinese-alpaca-2-7b-64k" in [r["key"] for r in rows]


def test_retrieve_jsonl_in_a_subprocess(kb, tmp_path):
    questions = tmp_path / "q.jsonl"
    questions.write_text(
        '{"id": "a", "question": "大熊猫吃什么？"}\n\n{"id": 7, "question": "Who created Python?"}\n', encoding="utf-8"
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    out = subprocess.run(
        [sys.executable, "-m", "rag", "retrieve", "--kb", str(kb.store.dir), "--questions", str(questions), "--k", "2", "--json",
         "--threshold", "0"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env=env,
    )
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["id"] for r in lines] == ["a", 7]
    assert all(len(r["hits"]) == 2 for r in lines)
    hit = lines[0]["hits"][0]
    assert set(hit) == {"doc_id", "source", "page", "chunk", "score", "text"}
    assert hit["source"].endswith("panda.md") and 0 <= hit["score"] <= 1
    assert lines[1]["hits"][0]["source"].endswith("python.txt")


def test_retrieve_one_question(kb, capsys):
    assert cli.main(["retrieve", "大熊猫吃什么？", "--kb", str(kb.store.dir), "--k", "1", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["hits"][0]["source"].endswith("panda.md")
    assert cli.main(["retrieve", "大熊猫吃什么？", "--kb", str(kb.store.dir), "--k", "2"]) == 0
    assert "panda.md" in capsys.readouterr().out


def test_ask_json_and_stream(kb, fake_model, capsys):
    assert cli.main(["ask", "中国的首都是哪座城市？", "--kb", str(kb.store.dir), "--json", "--k", "2",
                     "--answer-mode", "generate"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert "[1]" in result["answer"] and result["sources"][0]["source"].endswith("beijing.txt")
    assert result["notice"] == "fake model answering"
    assert cli.main(["ask", "中国的首都是哪座城市？", "--kb", str(kb.store.dir), "--stream", "--json",
                     "--answer-mode", "generate"]) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [e["type"] for e in events[:2]] == ["sources", "token"] and events[-1]["type"] == "final"


def test_model_option_overrides_settings(kb, monkeypatch, capsys):
    seen = {}

    def loader(settings):
        seen["name"] = settings.model.name
        return fake_loaded_model(4096, 32)

    monkeypatch.setattr("rag.models.loader.load_chat_model", loader)
    assert cli.main(["ask", "大熊猫吃什么？", "--kb", str(kb.store.dir), "--model", "chinese-alpaca-2-7b"]) == 0
    assert seen["name"] == "chinese-alpaca-2-7b"
    assert "[1]" in capsys.readouterr().out


def test_summarize_batch_resumable_with_failures(tmp_path, fake_model, capsys):
    folder = write_docs(tmp_path / "in", {"short.txt": "龙井茶产于杭州西湖。", "long.md": long_chinese_text(30)})
    (folder / "sub").mkdir()
    (folder / "sub" / "empty.txt").write_text("   \n", encoding="utf-8")
    out = tmp_path / "out"
    code = cli.main(["summarize", str(folder), "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert code == 1  # the empty file failed
    assert "empty.txt" in err and "failed 1" in err
    mds = sorted(p.name for p in out.glob("*.md"))
    assert len(mds) == 2 and any(n.startswith("short-") for n in mds) and any(n.startswith("long-") for n in mds)
    long_md = next(out.glob("long-*.md")).read_text(encoding="utf-8")
    assert "strategy: map_reduce" in long_md  # 30 sections do not fit a 600-token window
    calls = len(fake_model.chat_model.calls)

    # a second run skips what is done (only the failed file is tried again)
    code = cli.main(["summarize", str(folder), "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert code == 1 and "2 file(s) already summarised" in err
    assert len(fake_model.chat_model.calls) == calls

    # a changed file is summarised again; --force redoes everything
    (folder / "short.txt").write_text("大熊猫吃竹子。", encoding="utf-8")
    (folder / "sub" / "empty.txt").unlink()
    assert cli.main(["summarize", str(folder), "--out", str(out), "--quiet"]) == 0
    assert len(fake_model.chat_model.calls) == calls + 1
    assert cli.main(["summarize", str(folder), "--out", str(out), "--quiet", "--force", "--format", "jsonl"]) == 0
    records = [json.loads(line) for line in (out / "summaries.jsonl").read_text(encoding="utf-8").splitlines()]
    assert {Path(r["path"]).name for r in records} == {"short.txt", "long.md"}
    assert all(r["summary"].startswith("FAKE:") for r in records)


def test_summarize_missing_path_is_reported(tmp_path, fake_model, capsys):
    code = cli.main(["summarize", str(tmp_path / "nope.txt"), "--out", str(tmp_path / "o"), "--quiet"])
    assert code == 1 and "no such file" in capsys.readouterr().err


def test_backend_that_cannot_load_the_model_is_a_clear_error_not_a_traceback(kb, tmp_path, monkeypatch, capsys):
    """The stand-in (a GGUF) with the transformers backend, and a GGUF file named for it: exit
    code 3 and one explanation, in process and as a user runs it."""
    monkeypatch.setenv("DOCQA_MODEL__BACKEND", "transformers")
    assert cli.main(["ask", "大熊猫吃什么？", "--kb", str(kb.store.dir), "--answer-mode", "generate"]) == 3
    err = capsys.readouterr().err
    assert "only the llamacpp backend" in err and "transformers" in err
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")
    out = subprocess.run(
        [sys.executable, "-m", "rag", "ask", "大熊猫吃什么？", "--kb", str(kb.store.dir), "--model", str(gguf),
         "--answer-mode", "generate"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "DOCQA_MODEL__BACKEND": "transformers"},
    )
    assert out.returncode == 3 and "Traceback" not in out.stderr, out.stderr
    assert "is a GGUF file, which the transformers backend cannot load" in out.stderr


def test_context_budget_option(tmp_path, monkeypatch, capsys):
    long_kb = make_kb(tmp_path, docs={"report.txt": long_chinese_text(45, seed=2)})
    model = fake_loaded_model(16384, 64)
    monkeypatch.setattr("rag.models.loader.load_chat_model", lambda settings: model)
    base = ["ask", "第十二节讨论的工作投入了多少资金？", "--kb", str(long_kb.store.dir), "--json", "--k", "2",
            "--answer-mode", "generate"]
    assert cli.main(base + ["--context-budget", "600"]) == 0
    small = json.loads(capsys.readouterr().out)
    assert cli.main(base + ["--context-budget", "window"]) == 0
    whole = json.loads(capsys.readouterr().out)
    assert small["context_budget"] == 600 and whole["context_budget"] is None
    assert small["prompt_tokens"] < 1200 < whole["prompt_tokens"]
    with pytest.raises(SystemExit):
        cli.main(base + ["--context-budget", "lots"])

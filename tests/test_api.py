"""KnowledgeBase: the facade's contract as the UI and users call it."""

from __future__ import annotations

import pytest

from tests.helpers_rag import DOCS, make_kb, write_docs

from rag.api import KnowledgeBase
from rag.retrieval import Hit
from rag.summarize import SummaryResult
from rag.testing import fake_loaded_model


@pytest.fixture(scope="module")
def kb(tmp_path_factory):
    return make_kb(tmp_path_factory.mktemp("api"))


def test_lazy_package_exports():
    import subprocess
    import sys

    code = "import sys, rag.settings; assert 'rag.api' not in sys.modules and 'langchain_core' not in sys.modules; " \
           "import rag; rag.KnowledgeBase; assert 'rag.api' in sys.modules; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "ok", out.stderr


def test_documents_add_remove(kb, tmp_path):
    names = sorted(n for d in kb.documents() for n in d.file_names)
    assert names == sorted(DOCS)
    write_docs(tmp_path / "extra", {"extra.txt": "额外的文档：杭州西湖有十景。"})
    report = kb.add(tmp_path / "extra")  # a single path works too
    assert report.added == 1
    assert kb.retrieve("西湖有几景？", k=1)[0].file_name == "extra.txt"
    assert kb.remove("extra.txt") is True
    assert kb.remove("extra.txt") is False
    assert all(h.file_name != "extra.txt" for h in kb.retrieve("西湖有几景？", k=5))


def test_retrieve_returns_hits(kb):
    hits = kb.retrieve("大熊猫吃什么？", k=2)
    assert len(hits) == 2 and all(isinstance(h, Hit) for h in hits)
    h = hits[0]
    assert (h.file_name, h.chunk, h.page, h.title) == ("panda.md", 0, None, "大熊猫")
    assert h.source.endswith("panda.md") and h.chunk_id.startswith(h.doc_id)


def test_model_is_lazy_and_settable(tmp_path):
    kb = KnowledgeBase(tmp_path / "kb", model=None)
    assert kb._model is None  # nothing loaded yet
    fake = fake_loaded_model(2048, 32)
    kb.model = fake
    assert kb.model is fake
    assert kb.documents() == []
    result = kb.ask("空的知识库里有什么？")
    assert result["sources"] == [] and fake.chat_model.calls == []


def test_ask_stream_and_chains(kb):
    kb.model = fake_loaded_model(4096, 64)
    result = kb.ask("中国的首都是哪座城市？", k=2)
    assert result["sources"][0]["file_name"] == "beijing.txt" and "[1]" in result["answer"]
    events = list(kb.stream_ask("中国的首都是哪座城市？", k=2))
    assert events[-1]["type"] == "final" and events[-1]["answer"] == result["answer"]
    tea = next(d.doc_id for d in kb.documents() if "tea.txt" in d.file_names)
    assert {s["doc_id"] for s in kb.ask("中国的首都是哪座城市？", doc_ids=[tea])["sources"]} == {tea}
    chain = kb.qa_chain(k=1)
    assert chain.invoke({"question": "Who created Python?", "history": []})["sources"][0]["file_name"] == "python.txt"


def test_summaries(kb):
    kb.model = fake_loaded_model(4096, 64)
    events = []
    whole = kb.summarize(progress=events.append)
    assert isinstance(whole, SummaryResult) and whole.strategy == "stuff" and events
    assert sorted(whole.doc_ids) == sorted(d.doc_id for d in kb.documents())
    panda = next(d.doc_id for d in kb.documents() if "panda.md" in d.file_names)
    one = kb.summarize([panda], strategy="map_reduce")
    assert one.doc_ids == [panda] and one.strategy == "map_reduce"
    assert "大熊猫是中国特有的熊科动物" in kb.model.chat_model.calls[-1].user_text
    # the document text is rebuilt from its chunks
    assert kb.document_texts([panda])[0].text.replace("# 大熊猫\n\n", "").startswith("大熊猫是中国特有")
    out = kb.summary_chain().invoke({"doc_ids": [panda]})
    assert out["doc_ids"] == [panda] and out["text"].startswith("FAKE:")

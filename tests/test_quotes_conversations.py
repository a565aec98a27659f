"""Quote mode (rag.quotes) on a real knowledge base with the offline embedder, and the
conversation store (rag.conversations)."""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers_rag import make_kb

from ingest.splitter import sentence_spans
from rag.conversations import ConversationStore
from rag.quotes import QuoteChain
from rag.testing import fake_loaded_model

ROOT = Path(__file__).resolve().parents[1]

DOCS = {
    "panda.md": (
        "# 大熊猫\n\n大熊猫是中国特有的熊科动物。它们主要栖息在四川、陕西和甘肃的山区。"
        "大熊猫的食物几乎全部是竹子，一只成年大熊猫每天要吃十几公斤竹子。"
        "野生大熊猫的数量约为一千八百只。大熊猫的寿命在野外约为二十年。"
    ),
    "rail.txt": (
        "京沪高速铁路于二〇一一年六月通车。全线长一千三百一十八公里，设二十四个车站。"
        "列车最高运营时速为三百五十公里。从北京南站到上海虹桥站最快约需四小时十八分钟。"
    ),
    "python.txt": (
        "Python is a programming language. It was created by Guido van Rossum and first released in 1991. "
        "Its design emphasizes code readability with significant indentation."
    ),
}


@pytest.fixture(scope="module")
def kb(tmp_path_factory):
    return make_kb(tmp_path_factory.mktemp("quotes"), docs=DOCS, model=fake_loaded_model())


def test_sentence_spans_split_chinese_and_english():
    text = "第一句。第二句！“第三句？”\n没有句号的一行\nIt is 3.5 m long. Next one?"
    assert [text[s:e] for s, e in sentence_spans(text)] == [
        "第一句。", "第二句！", "“第三句？”", "没有句号的一行", "It is 3.5 m long.", "Next one?"]


@pytest.mark.parametrize(
    ("question", "answer", "file"),
    [
        ("大熊猫每天吃多少竹子？", "每天要吃十几公斤竹子", "panda.md"),
        ("野生大熊猫有多少只？", "一千八百只", "panda.md"),
        ("京沪高铁全长多少公里？", "一千三百一十八公里", "rail.txt"),
        ("Who created Python?", "Guido van Rossum", "python.txt"),
    ],
)
def test_quote_answer_holds_the_answer_sentence_with_its_citation(kb, question, answer, file):
    result = kb.ask(question, mode="quote", k=3)
    assert result["mode"] == "quote" and result["found"]
    quoted = result["answer"].split("\n\n")
    assert len(quoted) == 2  # settings.answer.quote_sentences
    line = next(q for q in quoted if answer in q)
    n = int(line.rsplit("[", 1)[1].rstrip("]"))
    source = result["sources"][n - 1]
    assert source["file_name"] == file and n in result["cited"]
    # the quote is the passage's own text, and its place in the passage is given for highlighting
    start, end = next(span for span in source["quotes"] if answer in source["text"][span[0]:span[1]])
    assert line == source["text"][start:end] + f"[{n}]"
    assert "no model wrote them" in result["notice"]


def test_quotes_come_in_document_order(kb):
    chain = QuoteChain(kb.retriever, kb.embedder, sentences=3)
    result = chain.invoke({"question": "大熊猫吃什么，数量有多少，寿命多长？"})
    order = [(int(q.rsplit("[", 1)[1].rstrip("]")), result["answer"].index(q)) for q in result["answer"].split("\n\n")]
    positions = []
    for line in result["answer"].split("\n\n"):
        n = int(line.rsplit("[", 1)[1].rstrip("]"))
        text = line[: line.rindex("[")]
        positions.append((n, result["sources"][n - 1]["text"].index(text)))
    assert positions == sorted(positions) and len(order) == 3


def test_quote_mode_needs_no_chat_model(tmp_path):
    from rag.api import KnowledgeBase
    from rag.settings import Settings

    files = tmp_path / "files"
    files.mkdir()
    (files / "panda.md").write_text(DOCS["panda.md"], encoding="utf-8")
    settings = Settings(model={"name": str(tmp_path / "no-such-model.gguf")}, answer={"mode": "quote"})
    kb = KnowledgeBase(tmp_path / "kb", settings)
    kb.add([files])
    result = kb.ask("大熊猫每天吃多少竹子？")
    assert "十几公斤" in result["answer"] and kb._model is None  # nothing was loaded


def test_auto_mode_quotes_for_the_stand_in_and_generates_for_a_real_model(kb):
    from rag.api import KnowledgeBase

    kb.model = fake_loaded_model()
    assert kb.answer_mode() == "generate"
    kb.model = fake_loaded_model()
    kb._model.is_stand_in = True
    assert kb.answer_mode() == "quote" and kb.answer_mode("generate") == "generate"
    fresh = KnowledgeBase.__new__(KnowledgeBase)
    fresh.settings, fresh._model = kb.settings, None  # not loaded: decided from the settings
    assert fresh.answer_mode() == "quote"
    kb.model = fake_loaded_model()


def test_cli_answers_in_quote_mode_without_loading_a_model(kb):
    out = subprocess.run(
        [sys.executable, "-m", "rag", "ask", "京沪高铁全长多少公里？", "--kb", str(kb.store.dir), "--k", "2",
         "--answer-mode", "quote"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**__import__("os").environ, "HF_HUB_OFFLINE": "1", "DOCQA_MODEL__NAME": "/nonexistent.gguf"},
    )
    assert out.returncode == 0, out.stderr
    assert "一千三百一十八公里" in out.stdout and "Quote mode" in out.stderr


# --- conversations ----------------------------------------------------------------------------------


def test_conversations_are_kept_in_order_with_titles(tmp_path):
    store = ConversationStore.for_kb(tmp_path)
    first = store.create()
    store.append(first, {"role": "user", "content": "北京的人口是多少？"})
    store.append(first, {"role": "assistant", "content": "约两千一百万[1]。", "sources": [{"n": 1, "page": 2}]})
    second = store.create()
    assert [c.id for c in store.list()] == [first]  # an empty conversation is not listed
    store.append(second, {"role": "user", "content": "  上海  在哪里？ " * 20})
    listed = store.list()
    assert [c.id for c in listed] == [second, first]
    assert listed[1].title == "北京的人口是多少？" and listed[1].turns == 1
    assert len(listed[0].title) == 80 and "  " not in listed[0].title
    again = ConversationStore.for_kb(tmp_path)  # another process or a restart: the same content
    assert again.messages(first) == [
        {"role": "user", "content": "北京的人口是多少？"},
        {"role": "assistant", "content": "约两千一百万[1]。", "sources": [{"n": 1, "page": 2}]},
    ]
    assert again.delete(first) and not again.delete(first)
    assert [c.id for c in again.list()] == [second] and again.messages(first) == []
    with pytest.raises(KeyError):
        again.append(first, {"role": "user", "content": "x"})
    with pytest.raises(ValueError):
        again.append(second, {"role": "system", "content": "x"})


def _append_many(path: str, cid: str, who: int) -> None:
    store = ConversationStore(path)
    for i in range(60):
        store.append(cid, {"role": "user", "content": f"{who}-{i}"})


def test_two_processes_append_to_one_conversation(tmp_path):
    store = ConversationStore.for_kb(tmp_path)
    cid = store.create()
    ctx = multiprocessing.get_context("spawn")
    writers = (1, 2, 3, 4)
    procs = [ctx.Process(target=_append_many, args=(str(store.path), cid, w)) for w in writers]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert all(p.exitcode == 0 for p in procs)
    contents = [m["content"] for m in store.messages(cid)]
    assert sorted(contents) == sorted(f"{w}-{i}" for w in writers for i in range(60))
    for w in writers:  # each writer's messages in its own order
        mine = [c for c in contents if c.startswith(f"{w}-")]
        assert mine == [f"{w}-{i}" for i in range(60)]


def test_extractive_summary_outline_and_central_sentences_in_reading_order(tmp_path):
    doc = (
        "# 城市交通报告\n\n## 地铁\n\n"
        "本市地铁网络在过去十年迅速扩张。地铁线路总长度达到八百公里。地铁每天运送乘客一千万人次。"
        "地铁网络在过去十年迅速扩张。\n\n## 公交\n\n"
        "公交线路覆盖了全部城区。公交车队全部换成了电动车。\n\n## 天气\n\n"
        "今天下午有小雨。"
    )
    kb = make_kb(tmp_path, docs={"交通.md": doc}, model=fake_loaded_model())
    summary = kb.extractive_summary(sentences=3)
    assert [h for _, h, _ in summary.outline] == ["地铁", "公交", "天气"]
    texts = [s.text for s in summary.sentences]
    assert len(texts) == 3 and all(t in doc for t in texts)
    assert [doc.index(t) for t in texts] == sorted(doc.index(t) for t in texts)  # reading order
    assert "今天下午有小雨。" not in texts  # the off-topic sentence is the least central
    assert not {"本市地铁网络在过去十年迅速扩张。", "地铁网络在过去十年迅速扩张。"} <= set(texts)  # no near-repeat
    markdown = summary.to_markdown("交通")
    assert markdown.startswith("# 交通") and "## Outline" in markdown and "(交通.md)" in markdown


def test_quote_mode_with_hostile_questions_and_documents(tmp_path):
    docs = {
        "table.md": "| 城市 | 人口 |\n|---|---|\n| 北京 | 两千一百万 |\n| 上海 | 两千四百万 |",
        "tiny.txt": "甲。乙。丙。是。否。好的。",
        "rail.txt": DOCS["rail.txt"],
    }
    kb = make_kb(tmp_path, docs=docs, model=fake_loaded_model())
    for question in ("？？？。。！", "?!...,;", "🙂🙂"):
        with pytest.raises(ValueError, match="no words"):
            kb.ask(question, mode="quote")
    with pytest.raises(ValueError, match="k must be at least 1"):
        kb.ask("北京人口多少？", mode="quote", k=-1)
    result = kb.ask("上海人口多少？\ud800", mode="quote")  # a lone surrogate is replaced, not fatal
    assert all(_word_count(line) >= 2 for line in result["answer"].split("\n\n"))  # never a |---| row
    assert "两千四百万" in result["answer"]
    tiny = kb.ask("甲乙丙是什么？", mode="quote", doc_ids=[d.doc_id for d in kb.documents() if "tiny.txt" in d.file_names])
    assert tiny["found"] and tiny["answer"].startswith("甲。乙。丙。")  # a passage of tiny sentences, whole


def _word_count(text: str) -> int:
    import re

    return len(re.findall(r"[^\W_]", text.split("[")[0]))


def test_quote_mode_follow_up_also_searches_with_the_previous_question(kb):
    history = [("京沪高铁什么时候通车？", "二〇一一年六月[1]。")]
    result = kb.ask("它全长多少公里？", history=history, mode="quote", k=2)
    assert result["searched_for"] == ["它全长多少公里？", "京沪高铁什么时候通车？ 它全长多少公里？"]
    assert "一千三百一十八公里" in result["answer"]


def test_conversation_store_keeps_odd_text_exactly_and_refuses_what_is_not_json(tmp_path):
    store = ConversationStore.for_kb(tmp_path)
    cid = store.create()
    odd = {"role": "user", "content": "emoji 🙂 NUL \x00 surrogate \ud800 长文" + "字" * 100_000,
           "extra": {"nested": [1, 2.5, None, {"deep": True}]}}
    store.append(cid, odd)
    assert store.messages(cid) == [odd]
    title = store.list()[0].title
    assert "\x00" not in title and title.isprintable() and title.startswith("emoji 🙂 NUL")
    for bad in ({"role": "assistant", "content": object()}, {"role": "assistant", "content": float("nan")}):
        with pytest.raises(ValueError, match="plain JSON"):
            store.append(cid, bad)
    assert store.messages(cid) == [odd]  # nothing half-written


def test_a_heading_line_is_not_quoted_as_a_sentence():
    from rag.quotes import passage_sentences

    text = "广茂铁路\n广茂铁路全长364.6公里，于2004年开通。\n# 线路概况\n| 型号 | 重量 |\n| ZX-1 | 5 kg |"
    quoted = [s.text for s in passage_sentences(1, text)]
    assert "广茂铁路" not in quoted and "# 线路概况" not in quoted
    assert "广茂铁路全长364.6公里，于2004年开通。" in quoted
    assert any("ZX-1" in q for q in quoted)  # a table row may answer

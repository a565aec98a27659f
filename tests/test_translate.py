"""Questions in another language than the documents (rag.translate): searched as asked and as
translated by the chat model, cached; without one, word by word (rag.dictionary)."""

from __future__ import annotations

import json

import pytest

from rag.retrieval import Hit, fuse_hit_lists
from rag.testing import fake_loaded_model
from rag.dictionary import english_to_chinese_words
from rag.translate import (
    DICTIONARY_NOTE,
    NO_TRANSLATION_NOTE,
    QuestionTranslator,
    TranslationCache,
    clean_translation,
    language_to_search,
    stand_in_note,
)
from tests.helpers_rag import DOCS, make_kb

PANDA_EN = "How much bamboo does a giant panda eat every day?"
PANDA_ZH = "大熊猫每天吃多少竹子？"


@pytest.fixture(scope="module")
def kb(tmp_path_factory):
    return make_kb(tmp_path_factory.mktemp("translate"), relevance_threshold="auto")


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """Each test its own translation cache (the real one lives in ~/.cache)."""
    path = tmp_path / "translations.sqlite"
    monkeypatch.setattr("rag.translate.cache_file", lambda: path)
    return path


def translating(reply: str = PANDA_ZH):
    """A fake model that answers translation requests with ``reply`` and questions with an answer."""
    def respond(messages):
        text = str(messages[-1].content)
        if "<question>" in text:
            return f"译文：“{reply}”"
        return "每天吃十几公斤竹子[1]。"
    return respond


def hit(chunk_id: str, score: float) -> Hit:
    return Hit(chunk_id=chunk_id, doc_id=chunk_id, source="", file_name="", title="", page=None, chunk=0,
               text=chunk_id, score=score)


def test_fusion_keeps_every_lists_first_hit_and_orders_by_score():
    asked = [hit("a1", 0.30), hit("a2", 0.20)]
    other = [hit("b1", 0.90), hit("b2", 0.80), hit("b3", 0.70)]
    fused = fuse_hit_lists([asked, other], 2)
    assert [h.chunk_id for h in fused] == ["b1", "a1"]  # a1 is kept though b2 scores higher
    assert [h.chunk_id for h in fuse_hit_lists([asked, other], 4)] == ["b1", "b2", "b3", "a1"]
    # a chunk found by both keeps its better score
    assert fuse_hit_lists([[hit("x", 0.2)], [hit("x", 0.6)]], 3)[0].score == 0.6


def test_the_documents_language_decides_whether_to_translate(kb, tmp_path):
    assert kb.retriever.bm25_index().chinese_share() > 0.75  # five Chinese documents
    assert language_to_search(kb.retriever, PANDA_EN) == "zh"
    assert language_to_search(kb.retriever, PANDA_ZH) is None
    english = make_kb(tmp_path, docs={"guide.txt": "The printer driver is installed from the settings page. "
                                                   "Restart the computer after the installation finishes."})
    assert english.retriever.bm25_index().chinese_share() == 0.0
    assert language_to_search(english.retriever, "打印机驱动怎么安装？") == "en"
    assert language_to_search(english.retriever, "How is the driver installed?") is None


def test_a_translation_costs_one_call_then_comes_from_the_cache(own_cache):
    model = fake_loaded_model(4096, 64, responder=translating())
    assert QuestionTranslator(model).translate(PANDA_EN, "zh") == PANDA_ZH  # label and quotes removed
    assert len(model.chat_model.calls) == 1
    assert "<question>" in model.chat_model.calls[0].user_text and "Chinese" in model.chat_model.calls[0].user_text
    again = QuestionTranslator(model, cache=TranslationCache(own_cache))  # a new process, same cache file
    assert again.translate(PANDA_EN, "zh") == PANDA_ZH
    assert len(model.chat_model.calls) == 1


def test_a_reply_that_is_no_translation_is_not_used(own_cache):
    model = fake_loaded_model(4096, 64, responder=translating(reply="Sure! Pandas eat bamboo."))
    translator = QuestionTranslator(model)
    assert translator.translate(PANDA_EN, "zh") is None  # English when Chinese was asked for
    assert translator.translate(PANDA_EN, "zh") is None
    assert len(model.chat_model.calls) == 1  # the useless reply is remembered too


def test_clean_translation():
    assert clean_translation("译文：大熊猫吃什么？\n（这是翻译）") == "大熊猫吃什么？"
    assert clean_translation("<question>What do pandas eat?</question>") == "What do pandas eat?"
    assert clean_translation("Translation: \"What do pandas eat?\"") == "What do pandas eat?"


def test_an_english_question_about_chinese_documents_searches_its_translation(kb):
    kb.model = fake_loaded_model(4096, 64, responder=translating())
    result = kb.ask(PANDA_EN, mode="generate")
    assert result["searched_for"] == [PANDA_EN, PANDA_ZH]
    assert result["translation"] == {"target": "zh", "text": PANDA_ZH, "note": None, "by": "model"}
    assert result["sources"][0]["file_name"] == "panda.md"
    assert len(kb.model.chat_model.calls) == 2  # one translation, one answer
    # a Chinese question about Chinese documents: nothing to translate
    kb.model = fake_loaded_model(4096, 64, responder=translating())
    result = kb.ask(PANDA_ZH, mode="generate")
    assert result["searched_for"] == [PANDA_ZH] and result["translation"] is None
    assert len(kb.model.chat_model.calls) == 1


def test_the_translation_scores_the_answer_as_a_chinese_question_would(kb):
    """Across languages the dense part alone judges the English question (0.24 here, near the
    threshold); its translation matches the passage in words and meaning."""
    asked = kb.retriever.search(PANDA_EN)
    kb.model = fake_loaded_model(4096, 64, responder=translating())
    hits = kb.retrieve(PANDA_EN, translate=True)
    assert hits and hits[0].file_name == "panda.md"
    assert hits[0].score == pytest.approx(kb.retrieve(PANDA_ZH)[0].score)
    assert hits[0].score > max((h.score for h in asked), default=0.0) + 0.2


def test_the_stand_in_is_not_asked_to_translate_the_dictionary_is(kb):
    stand_in = fake_loaded_model(4096, 64, responder=translating())
    stand_in.is_stand_in = True
    kb.model = stand_in
    result = kb.ask(PANDA_EN, mode="generate")
    words = english_to_chinese_words(PANDA_EN)
    assert result["translation"] == {"target": "zh", "text": words, "note": DICTIONARY_NOTE, "by": "dictionary"}
    assert result["searched_for"] == [PANDA_EN, words]
    assert result["sources"][0]["file_name"] == "panda.md"
    assert not any("<question>" in c.user_text for c in stand_in.chat_model.calls)
    quoted = kb.ask(PANDA_EN, mode="quote")  # quote mode loads no model: the dictionary too
    assert quoted["translation"]["by"] == "dictionary" and quoted["sources"][0]["file_name"] == "panda.md"
    # nothing the dictionary can render: the note says no model could translate
    bare = kb.ask("What is Zyxwv Qwrtp?", mode="quote")
    assert bare["translation"] == {"target": "zh", "text": None, "note": stand_in_note("zh"), "by": "model"}


def test_translation_can_be_switched_off(tmp_path):
    from rag.settings import Settings

    kb = make_kb(tmp_path, docs={"panda.md": DOCS["panda.md"]},
                 settings=Settings(retrieval={"translate_questions": False}))
    kb.model = fake_loaded_model(4096, 64, responder=translating())
    result = kb.ask(PANDA_EN, mode="generate")
    assert result["translation"] is None and result["searched_for"] == [PANDA_EN]
    assert not any("<question>" in c.user_text for c in kb.model.chat_model.calls)


def test_a_failing_model_leaves_the_question_as_asked(kb):
    def broken(messages):
        if "<question>" in str(messages[-1].content):
            raise RuntimeError("model crashed")
        return "回答[1]"
    kb.model = fake_loaded_model(4096, 64, responder=broken)
    result = kb.ask("What is Zyxwv Qwrtp?", mode="generate")  # nothing a dictionary renders either
    assert result["translation"]["note"] == NO_TRANSLATION_NOTE and result["searched_for"] == ["What is Zyxwv Qwrtp?"]
    result = kb.ask(PANDA_EN, mode="generate")  # the dictionary stands in for the failed model
    assert result["translation"]["by"] == "dictionary" and result["sources"][0]["file_name"] == "panda.md"


def test_cli_retrieve_translate(kb, monkeypatch, capsys, tmp_path):
    from rag import cli

    fake = fake_loaded_model(4096, 64, responder=translating())
    monkeypatch.setattr("rag.models.loader.load_chat_model", lambda settings: fake)
    questions = tmp_path / "q.jsonl"
    questions.write_text(json.dumps({"id": "p", "question": PANDA_EN}) + "\n", encoding="utf-8")
    assert cli.main(["retrieve", "--kb", str(kb.store.dir), "--questions", str(questions), "--json",
                     "--translate"]) == 0
    record = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert record["translation"]["text"] == PANDA_ZH
    assert record["hits"][0]["source"].endswith("panda.md")
    assert cli.main(["retrieve", "--kb", str(kb.store.dir), PANDA_EN]) == 0  # without the flag: no model
    out = capsys.readouterr().out
    assert PANDA_ZH not in out and len(fake.chat_model.calls) == 1

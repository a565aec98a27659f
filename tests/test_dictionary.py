"""English questions about Chinese documents without a translating model (rag.dictionary): the
question's words rendered through CC-CEDICT are searched beside it, and their hits are scored
on the calibrated scale (rag.translate.DICTIONARY_SCORE_SCALE)."""

from __future__ import annotations

import pytest

from rag.dictionary import english_to_chinese_words, english_word_groups
from rag.testing import fake_loaded_model
from rag.translate import DICTIONARY_NOTE, DICTIONARY_SCORE_SCALE, QuestionTranslator, Translation, search_translation
from tests.helpers_rag import make_kb

PANDA_EN = "How much bamboo does a giant panda eat every day?"


@pytest.fixture(scope="module")
def kb(tmp_path_factory):
    return make_kb(tmp_path_factory.mktemp("dictionary"), relevance_threshold="auto")


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setattr("rag.translate.cache_file", lambda: tmp_path / "translations.sqlite")


def test_words_phrases_names_and_numbers_are_rendered():
    groups = english_word_groups("When did the Longkou–Yantai railway open in 2017?")
    flat = [w for g in groups for w in g]
    assert ["龙口"] in groups and ["烟台"] in groups  # place names written in pinyin
    assert "铁路" in flat and "2017" in flat
    assert not any(w in flat for w in ("When", "did", "the"))  # function words are dropped
    # an English phrase is one entry, inflected words find their stem
    assert "总统选举" in english_to_chinese_words("the presidential election")
    assert "铁路" in english_to_chinese_words("railways")
    # a word the dictionary lacks stays as written, beside the rendered ones
    assert english_to_chinese_words("Is Zyxwv tea green?").split()[:1] == ["Zyxwv"]


def test_nothing_to_render_gives_none():
    assert english_to_chinese_words("what is it?") is None  # no phrase made of function words
    assert english_to_chinese_words("asdkjh qwezx") is None
    assert english_to_chinese_words("大熊猫吃什么？") is None


def test_without_a_translating_model_the_words_are_searched(kb):
    asked = kb.retriever.search(PANDA_EN)
    translation = QuestionTranslator(None).for_search(kb.retriever, PANDA_EN)
    assert translation.by == "dictionary" and translation.note == DICTIONARY_NOTE
    assert {"竹子", "大熊猫", "每天"} <= set(translation.text.split())
    hits = kb.retrieve(PANDA_EN)  # no model loaded: the dictionary
    assert hits and hits[0].file_name == "panda.md"
    assert hits[0].score > max((h.score for h in asked), default=0.0)


def test_the_dictionary_hits_are_scaled_then_thresholded(kb):
    words = Translation("zh", "竹子 大熊猫 每天", by="dictionary")
    raw = kb.retriever.search(words.text, k=5, relevance_threshold=0.0)
    scaled = search_translation(kb.retriever, words, 5, relevance_threshold=0.0)
    assert [h.chunk_id for h in scaled] == [h.chunk_id for h in raw]
    assert [h.score for h in scaled] == pytest.approx([min(1.0, h.score * DICTIONARY_SCORE_SCALE) for h in raw])
    between = (raw[0].score * DICTIONARY_SCORE_SCALE + raw[0].score) / 2  # above the raw score, below the scaled
    kept = search_translation(kb.retriever, words, 5, relevance_threshold=min(between, 0.99))
    assert kept and kept[0].chunk_id == raw[0].chunk_id
    # a model's translation is a sentence: searched as it is, no scaling
    sentence = Translation("zh", "大熊猫每天吃多少竹子？")
    assert [h.score for h in search_translation(kb.retriever, sentence, 5, relevance_threshold=0.0)] == \
        [h.score for h in kb.retriever.search(sentence.text, k=5, relevance_threshold=0.0)]


def test_a_chinese_question_about_english_documents_gets_no_dictionary(tmp_path):
    from tests.helpers_rag import DOCS

    english = make_kb(tmp_path, docs={"python.txt": DOCS["python.txt"]})
    stand_in = fake_loaded_model(4096, 64)
    stand_in.is_stand_in = True
    translation = QuestionTranslator(stand_in).for_search(english.retriever, "Python 是谁创造的？")
    assert translation.target == "en" and translation.text is None and translation.by == "model"

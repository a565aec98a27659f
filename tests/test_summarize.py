"""Summaries: strategy choice, window safety of every step, recursive reduce, refine, languages."""

from __future__ import annotations

import pytest

from tests.helpers_rag import long_chinese_text

from rag.qa import ContextTooSmall
from rag.summarize import SourceText, SummaryChain, Summarizer
from rag.testing import fake_loaded_model

ENGLISH = " ".join(
    f"Section {i} describes how the city improved its water supply in year {2000 + i}, "
    f"spending {i * 7 + 3} million on pipes and treatment plants." for i in range(60)
)


def summarizer(window: int, reserve: int, **kw) -> tuple[Summarizer, object]:
    model = fake_loaded_model(window, reserve, **kw)  # strict: any overflowing step raises
    return Summarizer(model, max_concurrency=3), model.chat_model


def test_short_text_is_stuffed_in_one_call():
    s, fake = summarizer(4096, 128)
    result = s.summarize([SourceText("a.txt", "北京是中国的首都。北京有三千多年的建城史。")])
    assert result.strategy == "stuff" and result.steps == 1 and len(fake.calls) == 1
    assert "请用中文为下面 <document> 与 </document> 之间的文档写一份简明的摘要" in fake.calls[0].user_text
    assert result.text.startswith("FAKE: 北京是中国的首都") and result.language == "zh"


def test_long_text_goes_map_reduce_and_no_step_overflows():
    s, fake = summarizer(512, 64)
    text = long_chinese_text(60)
    events = []
    result = s.summarize([SourceText("long.txt", text)], progress=events.append)
    assert result.strategy == "map_reduce"
    assert result.steps == len(fake.calls) > 3
    assert all(c.prompt_tokens + c.max_new_tokens <= 512 for c in fake.calls)
    maps = [c for c in fake.calls if "较长文档的一部分" in c.user_text]
    reduces = [c for c in fake.calls if "合并成一份" in c.user_text]
    assert len(maps) == result.parts and reduces
    # every part of the text was read by some map step
    for sentence in ("第1节讨论水利", "第30节讨论金融", "第60节讨论金融"):
        assert any(sentence in c.user_text for c in maps), sentence
    # one progress event per model call, counting up
    assert [e.done for e in events] == list(range(1, len(fake.calls) + 1))
    assert {e.phase for e in events} == {"map", "reduce"}
    assert events[-1].done == events[-1].total


def test_partial_summaries_that_do_not_fit_are_reduced_recursively():
    # answers as long as allowed: the partial summaries of many parts cannot share one prompt
    s, fake = summarizer(400, 100, responder=lambda m: "要点" * 200)
    events = []
    result = s.summarize([SourceText("long.txt", long_chinese_text(80))], progress=events.append)
    assert result.strategy == "map_reduce"
    assert max(e.level for e in events) >= 2, "more than one reduce round"
    assert all(c.prompt_tokens + c.max_new_tokens <= 400 for c in fake.calls)


def test_refine_runs_sequentially_through_the_parts():
    s, fake = summarizer(600, 64)
    events = []
    result = s.summarize([SourceText("long.txt", long_chinese_text(30))], strategy="refine", progress=events.append)
    assert result.strategy == "refine" and result.steps == len(fake.calls) > 2
    assert "已有的摘要" in fake.calls[1].user_text
    assert fake.calls[0].answer in fake.calls[1].user_text  # the running summary is carried on
    assert all(c.prompt_tokens + c.max_new_tokens <= 600 for c in fake.calls)
    assert [e.phase for e in events] == ["refine"] * len(fake.calls)


def test_several_documents_and_forced_strategies():
    docs = [SourceText("a.txt", "龙井茶产于杭州西湖。", "id-a"), SourceText("b.txt", "大熊猫吃竹子。", "id-b")]
    s, fake = summarizer(4096, 64)
    assert s.summarize(docs).strategy == "stuff"
    assert "龙井茶" in fake.calls[-1].user_text and "大熊猫" in fake.calls[-1].user_text
    forced = s.summarize(docs, strategy="map_reduce")
    assert forced.strategy == "map_reduce" and forced.steps == 3 and forced.doc_ids == ["id-a", "id-b"]
    # forcing "stuff" on text that cannot fit falls back to map_reduce instead of dropping text
    small, _ = summarizer(400, 64)
    assert small.summarize([SourceText("x", long_chinese_text(30))], strategy="stuff").strategy == "map_reduce"


def test_english_text_gets_english_prompts():
    s, fake = summarizer(700, 64)
    result = s.summarize([SourceText("water.txt", ENGLISH)])
    assert result.language == "en" and result.strategy == "map_reduce"
    assert all("摘要" not in c.user_text and "要点" not in c.user_text for c in fake.calls)
    assert "Summarize the key points of this part" in fake.calls[0].user_text


def test_map_steps_go_through_batch_with_max_concurrency():
    s, fake = summarizer(512, 64)
    seen = []
    original = s.generate.batch_as_completed

    def spy(inputs, config=None, **kw):
        seen.append((len(inputs), (config or {}).get("max_concurrency")))
        return original(inputs, config, **kw)

    object.__setattr__(s, "generate", s.generate)
    s.generate = type("Spy", (), {"batch_as_completed": staticmethod(spy), "invoke": s.generate.invoke})()
    s.summarize([SourceText("long.txt", long_chinese_text(40))])
    assert seen and seen[0][0] > 2 and seen[0][1] == 3


def test_in_process_backends_run_map_steps_one_at_a_time():
    model = fake_loaded_model(512, 64)
    model.backend = "llamacpp"  # one llama.cpp model must not be called from several threads
    assert Summarizer(model, max_concurrency=4).max_concurrency == 1
    model.backend = "openai"
    assert Summarizer(model, max_concurrency=4).max_concurrency == 4


def test_too_small_window_is_an_error():
    s, _ = summarizer(150, 64)
    with pytest.raises(ContextTooSmall):
        s.summarize([SourceText("long.txt", long_chinese_text(20))])


def test_summary_chain_runnable():
    s, _ = summarizer(4096, 64)
    chain = SummaryChain(s)
    out = chain.invoke("大熊猫是中国特有的熊科动物。")
    assert out["strategy"] == "stuff" and out["text"].startswith("FAKE:")
    assert len(chain.batch(["一段文字。", {"texts": ["另一段。"], "strategy": "map_reduce"}])) == 2


@pytest.mark.parametrize("strategy, window", [("stuff", 4096), ("map_reduce", 512), ("refine", 512)])
def test_the_final_summary_streams_as_it_is_written(strategy, window):
    s, fake = summarizer(window, 64)
    text = "北京是中国的首都。北京有三千多年的建城史。" if strategy == "stuff" else long_chinese_text(40)
    pieces: list[str] = []
    result = s.summarize([SourceText("doc.txt", text)], strategy=strategy, on_text=pieces.append)
    assert result.strategy == strategy and result.steps > (0 if strategy == "stuff" else 2)
    assert len(pieces) > 1  # in pieces, as written
    # only the call that writes the final summary is streamed, none of the map or earlier steps
    assert "".join(pieces).strip() == fake.calls[-1].answer.strip() == result.text

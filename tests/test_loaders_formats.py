"""Text that used to be damaged while loading: BOM-less UTF-16/UTF-32 files, HTML pages (hard
wraps in Chinese, table cells with blocks inside, navigation and footers), and PDF text layers
(ligature characters, headings glued to the next line).

Every test writes a real file in tmp_path and checks the exact text that
``ingest.loaders.load_document`` stores.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ingest.loaders import decode_bytes, load_document
from tests.docmaker import make_chinese_pdf, make_html

# --------------------------------------------------------------------------------------------
# BOM-less UTF-16 and UTF-32

ONE_LINE = "年度体检安排在十一月，请各部门于10月31日前报名，地点：市第一医院。"
# No ASCII and no CJK code unit with a zero byte: its UTF-16 holds no NUL byte at all.
NO_NUL = "年度体检安排在十月进行，请各部门提前做好准备。"
MIXED_LINE = "Annual check-up 年度体检: November 11, room 301 (二楼东侧)."
TWENTY_LINES = "\n".join(f"第{i}条：年度体检安排在十一月，每人费用{300 + i}元。" for i in range(1, 21))
TWENTY_MIXED = "\n".join(
    f"Item {i}: 体检项目第{i}项，请空腹。" if i % 2 else f"第{i}项 blood test 血常规检查。"
    for i in range(1, 21)
)


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be"])
@pytest.mark.parametrize(
    "text",
    [ONE_LINE, NO_NUL, MIXED_LINE, TWENTY_LINES, TWENTY_MIXED],
    ids=["one-line", "no-nul", "mixed-line", "twenty-lines", "twenty-mixed"],
)
def test_bomless_utf16_is_read_exactly(tmp_path, encoding, text):
    data = text.encode(encoding)
    assert not data.startswith((b"\xff\xfe", b"\xfe\xff"))
    path = tmp_path / "notice.txt"
    path.write_bytes(data)
    doc = load_document(path)
    assert doc.text == text
    assert decode_bytes(data) == (text, encoding)


def test_the_utf16_samples_are_the_hard_cases():
    """What the samples above exercise: UTF-16 with no NUL at all, with a few NULs (which used
    to be removed as "stray"), and with many (which used to refuse the file as binary)."""
    assert NO_NUL.encode("utf-16-le").count(0) == 0
    assert 0 < ONE_LINE.encode("utf-16-le").count(0) <= 8
    assert TWENTY_LINES.encode("utf-16-be").count(0) > 8
    # Too few NULs for the every-other-byte pattern of ASCII text in UTF-16.
    data = TWENTY_LINES.encode("utf-16-le")
    assert data[1::2].count(0) < 0.4 * (len(data) // 2)


def test_bomless_utf16_with_crlf_and_markdown_heading(tmp_path):
    text = "# 体检通知\r\n\r\n年度体检安排在十一月。\r\n请提前报名。\r\n"
    path = tmp_path / "notice.md"
    path.write_bytes(text.encode("utf-16-le"))
    doc = load_document(path)
    assert doc.title == "体检通知"
    assert doc.text == "# 体检通知\n\n年度体检安排在十一月。\n请提前报名。\n"


@pytest.mark.parametrize("encoding", ["utf-32-le", "utf-32-be"])
@pytest.mark.parametrize("text", [ONE_LINE, MIXED_LINE, TWENTY_LINES], ids=["one-line", "mixed-line", "twenty-lines"])
def test_bomless_utf32_is_read_exactly(tmp_path, encoding, text):
    path = tmp_path / "wide.txt"
    path.write_bytes(text.encode(encoding))
    assert load_document(path).text == text
    assert decode_bytes(text.encode(encoding)) == (text, encoding)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        # Even-length legacy text must not be taken for UTF-16.
        ("第一章总则".encode("gbk"), ("第一章总则", "gb18030")),
        ("年度体检安排".encode("gbk"), ("年度体检安排", "gb18030")),
        ("資料庫".encode("big5"), ("資料庫", "cp950")),
        ("臺灣資料".encode("big5"), ("臺灣資料", "cp950")),
        (b"caf\xe9 au lait", ("café au lait", "cp1252")),
        # A few stray NULs in ASCII or UTF-8 text are still removed, not read as UTF-16.
        (b"end\x00 of\x00 texts", ("end of texts", "utf-8")),
        (b"ab\x00cd\x00", ("abcd", "utf-8")),
        ("正常的中文".encode() + b"\x00" + "文本。".encode() + b"\x00", ("正常的中文文本。", "utf-8")),
    ],
)
def test_legacy_and_nul_padded_text_is_not_taken_for_utf16(data, expected):
    assert len(data) % 2 == 0
    assert decode_bytes(data) == expected


# --------------------------------------------------------------------------------------------
# HTML


def _lines(text: str) -> list[str]:
    return [line for line in text.split("\n") if line.strip()]


CMS_PAGE = """<!DOCTYPE html>
<html lang="zh-CN">
<head>
  <meta charset="utf-8">
  <title>关于调整差旅费标准的通知 - 某某公司</title>
</head>
<body>
<header class="site-header">
  <div class="logo"><a href="/">某某公司</a></div>
  <nav>
    <ul>
      <li><a href="/">首页</a></li>
      <li><a href="/news/">新闻中心</a></li>
      <li><a href="/notice/">通知公告</a></li>
      <li><a href="/about/">关于我们</a></li>
    </ul>
  </nav>
</header>
<div class="breadcrumb">当前位置：<a href="/">首页</a> &gt; <a href="/notice/">通知公告</a> &gt; 正文</div>
<main>
  <article>
    <h1>关于调整差旅费
      标准的通知</h1>
    <p>各部门：</p>
    <p>为规范差旅费管理，经公司研究决定，自2024年1月1日起调整差旅费标准。住宿费
      据实报
      销，伙食补助每天八十元
      包干使用。</p>
    <table>
      <tr><th>项目</th><th>标准</th></tr>
      <tr><td><p>住宿费</p></td><td><p>一线城市每晚500元</p><p>其他城市每晚350元</p></td></tr>
      <tr><td>伙食补助</td><td>每天80元<br>包干使用</td></tr>
    </table>
    <p>Staff must keep the receipts
      and file claims monthly.</p>
    <footer><p>发布日期：2024年1月1日</p></footer>
  </article>
  <aside>
    <h3>相关文章</h3>
    <ul>
      <li><a href="/n/1.html">关于会议费管理的通知</a></li>
      <li><a href="/n/2.html">关于培训费管理的通知</a></li>
    </ul>
  </aside>
  <div class="pager">上一篇：<a href="/n/3.html">关于年休假的通知</a>
    下一篇：<a href="/n/4.html">关于体检的通知</a></div>
</main>
<footer class="site-footer">
  <p>版权所有 © 2024 某某公司 京ICP备12345678号</p>
  <p><a href="/contact/">联系我们</a> | <a href="/sitemap/">网站地图</a></p>
</footer>
</body>
</html>
"""


def test_cms_page_keeps_the_article_only(tmp_path):
    path = tmp_path / "notice.html"
    path.write_text(CMS_PAGE, encoding="utf-8")
    doc = load_document(path)
    assert doc.title == "关于调整差旅费标准的通知 - 某某公司"
    assert doc.text == (
        "# 关于调整差旅费标准的通知\n\n"
        "各部门：\n\n"
        "为规范差旅费管理，经公司研究决定，自2024年1月1日起调整差旅费标准。"
        "住宿费据实报销，伙食补助每天八十元包干使用。\n\n"
        "项目 | 标准\n\n"
        "住宿费 | 一线城市每晚500元 其他城市每晚350元\n\n"
        "伙食补助 | 每天80元 包干使用\n\n"
        "Staff must keep the receipts and file claims monthly.\n\n"
        "发布日期：2024年1月1日"
    )


def test_html_hard_wraps_between_cjk_characters_are_not_spaces(tmp_path):
    body = """<p>差旅费用据实报
       销，伙食补助每天八十元
       包干使用。</p>
    <p>Receipts must be kept
       for five years.</p>
    <p>请使用
    Python 3.11 或更高版本，<b>不要</b>
    <b>使用</b>旧版本。</p>
    <p>第一章 总则</p>
    <h2>第二章
        设备维护</h2>
    """
    doc = load_document(make_html(tmp_path / "wrap.html", body))
    assert doc.text == (
        "差旅费用据实报销，伙食补助每天八十元包干使用。\n\n"
        "Receipts must be kept for five years.\n\n"
        "请使用 Python 3.11 或更高版本，不要使用旧版本。\n\n"
        "第一章 总则\n\n"  # a space typed between CJK characters is shown, and kept
        "## 第二章设备维护"
    )


def test_html_table_row_stays_on_one_line_whatever_the_cells_hold(tmp_path):
    body = """<table>
      <thead><tr><th>项目</th><th>标准</th><th>说明</th></tr></thead>
      <tbody>
        <tr>
          <td><p>住宿费</p></td>
          <td><p>一线城市每晚500元</p><p>其他城市每晚350元</p></td>
          <td><div>凭发票</div><div>据实报销</div></td>
        </tr>
        <tr>
          <td>伙食补助</td>
          <td>每天80元<br>包干使用</td>
          <td><ul><li>出差当天起算</li><li>不含周末</li></ul></td>
        </tr>
        <tr><td><h4>合计</h4></td><td colspan="2"><pre>按实际
天数计算</pre></td></tr>
      </tbody>
    </table>
    <p>表后说明。</p>"""
    doc = load_document(make_html(tmp_path / "table.html", body))
    assert _lines(doc.text) == [
        "项目 | 标准 | 说明",
        "住宿费 | 一线城市每晚500元 其他城市每晚350元 | 凭发票 据实报销",
        "伙食补助 | 每天80元 包干使用 | 出差当天起算 不含周末",
        "合计 | 按实际 天数计算",
        "表后说明。",
    ]


def test_html_roles_asides_and_link_blocks_are_left_out(tmp_path):
    body = """
    <div role="banner"><a href="/">某某大学</a> <a href="/en/">English</a></div>
    <div id="nav"><a href="/">首页</a> | <a href="/x/">学院概况</a> | <a href="/y/">招生就业</a></div>
    <div class="container">
      <article>
        <header><h1>实验室安全守则</h1><p>发布单位：设备处</p></header>
        <p>进入实验室必须穿戴防护用品。</p>
        <aside><p>注：本守则自发布之日起施行。</p></aside>
        <p>详情请参阅<a href="/r1">《危险化学品管理办法》</a>和<a href="/r2">《实验室准入制度》</a>。</p>
      </article>
      <aside class="side"><h3>热门文章</h3><ul><li><a href="/1">关于放假的通知</a></li><li><a href="/2">图书馆开放时间</a></li></ul></aside>
      <div class="links">友情链接：<a href="/a">教育部</a> <a href="/b">科技部</a> <a href="/c">财政部</a></div>
    </div>
    <div role="contentinfo">地址：某市某路1号 电话：12345678</div>
    """
    doc = load_document(make_html(tmp_path / "rules.html", body))
    assert doc.title == "实验室安全守则"  # no <title>: the kept <h1>
    assert doc.text == (
        "# 实验室安全守则\n\n"
        "发布单位：设备处\n\n"  # the article's own header stays
        "进入实验室必须穿戴防护用品。\n\n"
        "注：本守则自发布之日起施行。\n\n"  # an aside inside the article stays
        "详情请参阅《危险化学品管理办法》和《实验室准入制度》。"  # links in a sentence stay
    )


def test_html_page_of_links_only_falls_back_to_the_whole_page(tmp_path):
    body = """<nav><h1>网站地图</h1>
    <ul><li><a href="/">首页</a></li><li><a href="/news/">新闻中心</a></li><li><a href="/c/">联系我们</a></li></ul>
    </nav>"""
    doc = load_document(make_html(tmp_path / "sitemap.html", body))
    assert _lines(doc.text) == ["# 网站地图", "首页", "新闻中心", "联系我们"]


def test_html_link_pruning_that_leaves_too_little_is_undone(tmp_path):
    body = """<div><a href="/1">第一章 总则</a><br><a href="/2">第二章 报销范围</a><br>
    <a href="/3">第三章 报销标准</a><br><a href="/4">第四章 附则</a></div>
    <p>目录</p>"""
    doc = load_document(make_html(tmp_path / "toc.html", body))
    assert _lines(doc.text) == ["第一章 总则", "第二章 报销范围", "第三章 报销标准", "第四章 附则", "目录"]


# --------------------------------------------------------------------------------------------
# PDF

# Glyph names of the Latin ligatures, as a font's /Differences array lists them (TeX's fonts do).
_LIGATURE_GLYPHS = {
    "\ufb00": "ff", "\ufb01": "fi", "\ufb02": "fl", "\ufb03": "ffi", "\ufb04": "ffl",
    "\ufb05": "uniFB05", "\ufb06": "uniFB06",
}


def _ligature_pdf(path: Path, lines: list[str]) -> Path:
    """A one-page PDF written by hand: Helvetica re-encoded so that codes 128-134 are the
    ligature glyphs, one text line per string. Its text layer holds U+FB00-FB06 as such."""
    codes = {ch: 128 + i for i, ch in enumerate(_LIGATURE_GLYPHS)}
    ops = []
    for n, line in enumerate(lines):
        raw = bytearray()
        for ch in line:
            if ch in "()\\":
                raw += b"\\"
            raw.append(codes.get(ch, ord(ch)))
        ops.append(b"BT /F1 12 Tf 50 %d Td (%s) Tj ET" % (780 - 20 * n, bytes(raw)))
    content = b"\n".join(ops)
    names = " ".join("/" + name for name in _LIGATURE_GLYPHS.values()).encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] "
        b"/Resources << /Font << /F1 5 0 R >> >> /Contents 4 0 R >>",
        b"<< /Length %d >>\nstream\n%s\nendstream" % (len(content), content),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding << /Type /Encoding "
        b"/BaseEncoding /WinAnsiEncoding /Differences [128 %s] >> >>" % names,
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    path.write_bytes(bytes(out))
    return path


def test_pdf_ligatures_are_spelled_out(tmp_path):
    lines = ["The o\ufb03ce \ufb01les \ufb02ow to the sta\ufb00.", "Ba\ufb04ing \ufb05 and \ufb06 forms (all seven)."]
    path = _ligature_pdf(tmp_path / "lig.pdf", lines)
    from pypdf import PdfReader

    raw = PdfReader(str(path)).pages[0].extract_text()
    assert all(ch in raw for ch in _LIGATURE_GLYPHS)  # the text layer really holds them
    doc = load_document(path)
    assert doc.text == "The office files flow to the staff.\nBaffling st and st forms (all seven)."


def test_pdf_headings_keep_their_own_line(tmp_path):
    lines = [
        "第二章 维护",
        # 43 characters: wrapped after 30, and the wrap is joined
        "机械密封每运行五百小时应检查一次，发现泄漏时应立即停机并更换密封件，不得带病运行设备。",
        "（一）日常检查",
        # no sentence punctuation at the end, and followed by a numbered heading
        "操作人员每班检查轴承温度与振动情况并记入运行记录表",
        "二、定期保养",
        "设备保养要点",  # short, no punctuation: a heading without a number
        "每季度更换一次润滑油。",
        "1.2 润滑油牌号",
        "按说明书选用。",
    ]
    doc = load_document(make_chinese_pdf(tmp_path / "manual.pdf", ["\n".join(lines)], line_chars=30))
    assert doc.pages[0].text == "\n".join(
        [
            "第二章 维护",  # a space between words stays; letter spacing (北 京) would go
            "机械密封每运行五百小时应检查一次，发现泄漏时应立即停机并更换密封件，不得带病运行设备。",
            "（一）日常检查",
            "操作人员每班检查轴承温度与振动情况并记入运行记录表",
            "二、定期保养",
            "设备保养要点",
            "每季度更换一次润滑油。",
            "1.2 润滑油牌号",  # spaces go only between two CJK characters
            "按说明书选用。",
        ]
    )


def test_pdf_wrapped_paragraph_lines_are_still_joined(tmp_path):
    text = (
        "第一章 总则\n"
        "为加强设备管理提高设备完好率保证生产安全顺利进行根据国家有关规定结合本公司实际情况"
        "制定本办法并由设备管理部门负责解释"
    )
    doc = load_document(make_chinese_pdf(tmp_path / "rules.pdf", [text], line_chars=20))
    assert doc.pages[0].text == (
        "第一章 总则\n"
        "为加强设备管理提高设备完好率保证生产安全顺利进行根据国家有关规定结合本公司实际情况"
        "制定本办法并由设备管理部门负责解释"
    )


def test_pdf_table_rows_headers_and_letter_spacing(tmp_path):
    """As LibreOffice exports them: a page header, a table whose cells pypdf separates with
    spaces, and a letter-spaced title. Cells keep a space between them and each row its line;
    the header is not glued to the next line; letter spacing between single characters goes."""
    lines = [
        "文号：沪府办〔2031〕12号",
        "北 京 市 数 据 管 理 办 法",
        "区域 样本数 占比",
        "浦东新区 一千二百零三 百分之五十",
        "黄浦区 一千二百零三 百分之五十",
        "项目 负责部门 完成时限",
        "数据普查 市大数据中心 六月底前",
        "为规范公共数据管理，促进数据依法有序流动，保障数据安全，推动数字经济发展，制定本办法。",
        "上海市人民政府办公厅印发",
    ]
    doc = load_document(make_chinese_pdf(tmp_path / "table.pdf", ["\n".join(lines)], line_chars=40))
    assert doc.pages[0].text.split("\n") == [
        "文号：沪府办〔2031〕12号",
        "北京市数据管理办法",
        *lines[2:],
    ]


def test_html_ordered_lists_keep_the_numbers_a_browser_draws(tmp_path):
    page = tmp_path / "rules.html"
    page.write_text(
        "<html><body><article><h1>办法</h1><ol><li><p>坚持依法治理。</p></li><li>坚持安全可控。</li></ol>"
        "<ol start='4'><li>第四项。</li><li>第五项。</li></ol>"
        "<ol type='a'><li>甲。</li><li>乙。</li></ol><ol type='I'><li>总则。</li><li>附则。</li></ol>"
        "<ul><li>要点。</li></ul></article></body></html>", encoding="utf-8")
    lines = [line for line in load_document(page).text.splitlines() if line]
    assert lines == ["# 办法", "1. 坚持依法治理。", "2. 坚持安全可控。", "4. 第四项。", "5. 第五项。",
                     "a. 甲。", "b. 乙。", "I. 总则。", "II. 附则。", "要点。"]

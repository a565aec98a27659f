"""DOCX loader: text boxes, list numbering, headers/footers, notes and tracked changes reach the
stored text exactly once, in reading order.

The files are real packages: python-docx writes the skeleton (styles, settings, content types)
and the tests put in WordprocessingML parts shaped the way Word and WPS write them.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from ingest.loaders import load_document

W_NS = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"

# The namespace declarations Word puts on the root of every WordprocessingML part.
ROOT_NS = (
    'xmlns:wpc="http://schemas.microsoft.com/office/word/2010/wordprocessingCanvas" '
    'xmlns:mc="http://schemas.openxmlformats.org/markup-compatibility/2006" '
    'xmlns:o="urn:schemas-microsoft-com:office:office" '
    'xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships" '
    'xmlns:m="http://schemas.openxmlformats.org/officeDocument/2006/math" '
    'xmlns:v="urn:schemas-microsoft-com:vml" '
    'xmlns:wp14="http://schemas.microsoft.com/office/word/2010/wordprocessingDrawing" '
    'xmlns:wp="http://schemas.openxmlformats.org/drawingml/2006/wordprocessingDrawing" '
    'xmlns:w10="urn:schemas-microsoft-com:office:word" '
    f'xmlns:w="{W_NS}" '
    'xmlns:w14="http://schemas.microsoft.com/office/word/2010/wordml" '
    'xmlns:wpg="http://schemas.microsoft.com/office/word/2010/wordprocessingGroup" '
    'xmlns:wps="http://schemas.microsoft.com/office/word/2010/wordprocessingShape" '
    'mc:Ignorable="w14 wp14"'
)
XML_DECL = '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
SECT_PR = (
    '<w:sectPr><w:pgSz w:w="11906" w:h="16838"/><w:pgMar w:top="1440" w:right="1800" '
    'w:bottom="1440" w:left="1800" w:header="851" w:footer="992" w:gutter="0"/>'
    '<w:cols w:space="425"/><w:docGrid w:type="lines" w:linePitch="312"/></w:sectPr>'
)
CONTENT_TYPES = {
    "header": "application/vnd.openxmlformats-officedocument.wordprocessingml.header+xml",
    "footer": "application/vnd.openxmlformats-officedocument.wordprocessingml.footer+xml",
    "footnotes": "application/vnd.openxmlformats-officedocument.wordprocessingml.footnotes+xml",
    "endnotes": "application/vnd.openxmlformats-officedocument.wordprocessingml.endnotes+xml",
    "comments": "application/vnd.openxmlformats-officedocument.wordprocessingml.comments+xml",
}
REL_BASE = "http://schemas.openxmlformats.org/officeDocument/2006/relationships/"


def write_docx(
    path: Path,
    body: str,
    *,
    numbering: str | None = None,
    parts: list[tuple[str, str, str, str]] = (),
    base=None,
) -> Path:
    """A .docx whose body is ``body`` (WordprocessingML inside ``<w:body>``, sectPr included).

    ``numbering``: the content of ``<w:numbering>`` (replaces the template's numbering part).
    ``parts``: ``(relationship id, kind, file name under word/, root element XML)`` for headers,
    footers, footnotes, endnotes and comments. ``base``: a python-docx Document whose styles and
    settings to keep (default: python-docx's template)."""
    import docx

    skeleton = io.BytesIO()
    (base or docx.Document()).save(skeleton)
    replaced = {
        "word/document.xml": f"{XML_DECL}<w:document {ROOT_NS}><w:body>{body}</w:body></w:document>",
    }
    if numbering is not None:
        replaced["word/numbering.xml"] = f"{XML_DECL}<w:numbering {ROOT_NS}>{numbering}</w:numbering>"
    for _, _, name, xml in parts:
        replaced[f"word/{name}"] = XML_DECL + xml
    with zipfile.ZipFile(skeleton) as src, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as dst:
        for item in src.infolist():
            data = src.read(item.filename).decode("utf-8") if item.filename.endswith((".xml", ".rels")) else None
            if item.filename in replaced:
                data = replaced.pop(item.filename)
            elif item.filename == "word/_rels/document.xml.rels":
                rels = "".join(
                    f'<Relationship Id="{rid}" Type="{REL_BASE}{kind}" Target="{name}"/>'
                    for rid, kind, name, _ in parts
                )
                data = data.replace("</Relationships>", rels + "</Relationships>")
            elif item.filename == "[Content_Types].xml":
                overrides = "".join(
                    f'<Override PartName="/word/{name}" ContentType="{CONTENT_TYPES[kind]}"/>'
                    for _, kind, name, _ in parts
                )
                data = data.replace("</Types>", overrides + "</Types>")
            dst.writestr(item.filename, data.encode("utf-8") if data is not None else src.read(item.filename))
        for name, data in replaced.items():
            dst.writestr(name, data.encode("utf-8"))
    return path


def run(text: str, props: str = "") -> str:
    rpr = f"<w:rPr>{props}</w:rPr>" if props else ""
    return f'<w:r>{rpr}<w:t xml:space="preserve">{text}</w:t></w:r>'


def para(content: str = "", style: str | None = None, num: tuple[int, int] | None = None, ppr: str = "") -> str:
    """A paragraph; ``content`` is plain text (one run) unless it already holds markup."""
    inner = content if content.startswith("<") else (run(content) if content else "")
    props = f'<w:pStyle w:val="{style}"/>' if style else ""
    if num is not None:
        props += f'<w:numPr><w:ilvl w:val="{num[1]}"/><w:numId w:val="{num[0]}"/></w:numPr>'
    props += ppr
    return f"<w:p><w:pPr>{props}</w:pPr>{inner}</w:p>" if props else f"<w:p>{inner}</w:p>"


def level(ilvl: int, fmt: str, text: str, start: int = 1, suff: str | None = None, extra: str = "") -> str:
    suffix = f'<w:suff w:val="{suff}"/>' if suff else ""
    return (
        f'<w:lvl w:ilvl="{ilvl}"><w:start w:val="{start}"/><w:numFmt w:val="{fmt}"/>{extra}{suffix}'
        f'<w:lvlText w:val="{text}"/><w:lvlJc w:val="left"/>'
        f'<w:pPr><w:ind w:left="{420 * (ilvl + 1)}" w:hanging="420"/></w:pPr></w:lvl>'
    )


def abstract(abstract_id: int, *levels: str, multilevel: bool = False) -> str:
    kind = "multilevel" if multilevel else "hybridMultilevel"
    return (
        f'<w:abstractNum w:abstractNumId="{abstract_id}"><w:nsid w:val="1A2B3C{abstract_id:02d}"/>'
        f'<w:multiLevelType w:val="{kind}"/>{"".join(levels)}</w:abstractNum>'
    )


def num(num_id: int, abstract_id: int, overrides: str = "") -> str:
    return f'<w:num w:numId="{num_id}"><w:abstractNumId w:val="{abstract_id}"/>{overrides}</w:num>'


def text_of(path: Path) -> str:
    return load_document(path).text


# --------------------------------------------------------------------------------------------
# Text boxes


def drawingml_text_box(text: str, shape_id: int) -> str:
    """A floating text box as Word 2010+ and WPS write it: DrawingML for new readers, the same
    text again as a VML shape for old ones."""
    content = f"<w:txbxContent>{para(text)}</w:txbxContent>"
    return (
        "<w:r><mc:AlternateContent><mc:Choice Requires=\"wps\"><w:drawing>"
        '<wp:anchor distT="45720" distB="45720" distL="114300" distR="114300" simplePos="0" '
        'relativeHeight="251659264" behindDoc="0" locked="0" layoutInCell="1" allowOverlap="1">'
        '<wp:simplePos x="0" y="0"/><wp:positionH relativeFrom="column"><wp:posOffset>3429000'
        '</wp:posOffset></wp:positionH><wp:positionV relativeFrom="paragraph"><wp:posOffset>0'
        '</wp:posOffset></wp:positionV><wp:extent cx="2360930" cy="1404620"/>'
        '<wp:effectExtent l="0" t="0" r="22860" b="11430"/><wp:wrapSquare wrapText="bothSides"/>'
        f'<wp:docPr id="{shape_id}" name="文本框 {shape_id}"/><wp:cNvGraphicFramePr>'
        '<a:graphicFrameLocks xmlns:a="http://schemas.openxmlformats.org/drawingml/2006/main"/>'
        '</wp:cNvGraphicFramePr><a:graphic xmlns:a="http://schemas.openxmlformats.org/drawingml/2006/main">'
        '<a:graphicData uri="http://schemas.microsoft.com/office/word/2010/wordprocessingShape">'
        '<wps:wsp><wps:cNvSpPr txBox="1"><a:spLocks noChangeArrowheads="1"/></wps:cNvSpPr>'
        '<wps:spPr bwMode="auto"><a:xfrm><a:off x="0" y="0"/><a:ext cx="2360930" cy="1404620"/>'
        '</a:xfrm><a:prstGeom prst="rect"><a:avLst/></a:prstGeom><a:solidFill><a:srgbClr val="FFFFFF"/>'
        '</a:solidFill></wps:spPr>'
        f"<wps:txbx>{content}</wps:txbx>"
        '<wps:bodyPr rot="0" vert="horz" wrap="square" lIns="91440" tIns="45720" rIns="91440" '
        'bIns="45720" anchor="t" anchorCtr="0"><a:spAutoFit/></wps:bodyPr></wps:wsp>'
        "</a:graphicData></a:graphic></wp:anchor></w:drawing></mc:Choice>"
        f"<mc:Fallback>{vml_pict(text, shape_id)}</mc:Fallback></mc:AlternateContent></w:r>"
    )


def vml_pict(text: str, shape_id: int) -> str:
    """A VML text box (``w:pict``), as Word 2007 writes it and as the fallback of newer files."""
    return (
        '<w:pict><v:shapetype id="_x0000_t202" coordsize="21600,21600" o:spt="202" '
        'path="m,l,21600r21600,l21600,xe"><v:stroke joinstyle="miter"/>'
        '<v:path gradientshapeok="t" o:connecttype="rect"/></v:shapetype>'
        f'<v:shape id="文本框 {shape_id}" o:spid="_x0000_s10{shape_id:02d}" type="#_x0000_t202" '
        'style="position:absolute;margin-left:270pt;margin-top:0;width:185.9pt;height:110.6pt;'
        'z-index:251659264;mso-wrap-style:square" strokeweight=".5pt">'
        f'<v:textbox style="mso-fit-shape-to-text:t"><w:txbxContent>{para(text)}</w:txbxContent>'
        '</v:textbox><w10:wrap type="square"/></v:shape></w:pict>'
    )


def test_text_boxes_are_read_once_next_to_their_anchor(tmp_path):
    body = (
        para("停水通知", style="Heading1")
        + para(run("因供水管道检修，本小区将于下周二全天停水。") + drawingml_text_box("紧急联系电话：400-800-1234", 1))
        + para("请各位居民提前做好储水准备。")
        # an empty paragraph that only anchors an old-style (VML only) text box
        + para(f"<w:r>{vml_pict('意见反馈截止日期：2031年3月15日', 2)}</w:r>")
        + para("物业服务中心")
        + SECT_PR
    )
    path = write_docx(tmp_path / "通知.docx", body)
    text = text_of(path)
    assert text == (
        "# 停水通知\n\n"
        "因供水管道检修，本小区将于下周二全天停水。\n\n"
        "紧急联系电话：400-800-1234\n\n"
        "请各位居民提前做好储水准备。\n\n"
        "意见反馈截止日期：2031年3月15日\n\n"
        "物业服务中心"
    )
    assert text.count("400-800-1234") == 1 and text.count("2031年3月15日") == 1


# --------------------------------------------------------------------------------------------
# List numbering


CLAUSES = [
    "甲方将位于幸福路8号的住房一套出租给乙方居住使用。",
    "租赁期限为两年，自2031年1月1日起至2032年12月31日止。",
    "乙方应当于每月五日前向甲方支付当月租金人民币三千五百元。",
    "租赁期间房屋的日常维修由甲方负责，因乙方使用不当造成的损坏由乙方赔偿。",
    "任何一方提前解除合同的，应当提前三十日书面通知对方。",
]


def contract_docx(path: Path) -> Path:
    numbering = abstract(0, level(0, "chineseCounting", "第%1条", suff="space")) + num(1, 0)
    body = para("房屋租赁合同", style="Title") + "".join(para(c, num=(1, 0)) for c in CLAUSES)
    return write_docx(path, body + para("（以下无正文）") + SECT_PR, numbering=numbering)


def test_contract_clauses_carry_their_chinese_numbers(tmp_path):
    text = text_of(contract_docx(tmp_path / "租赁合同.docx"))
    assert text == "\n\n".join(
        ["# 房屋租赁合同"]
        + [f"第{n}条 {c}" for n, c in zip("一二三四五", CLAUSES)]
        + ["（以下无正文）"]
    )


def test_list_number_and_bullet_styles_from_the_template(tmp_path):
    """python-docx's (and Word's) "List Number" / "List Bullet" styles carry the numbering in the
    style; the paragraphs have no numPr of their own."""
    import docx

    document = docx.Document()
    document.add_paragraph("操作步骤：")
    for step in ["打开电源开关。", "等待指示灯变绿。", "按下启动按钮。"]:
        document.add_paragraph(step, style="List Number")
    document.add_paragraph("注意事项：")
    document.add_paragraph("不要在潮湿环境中使用。", style="List Bullet")
    path = tmp_path / "说明书.docx"
    document.save(str(path))
    assert text_of(path) == (
        "操作步骤：\n\n1. 打开电源开关。\n\n2. 等待指示灯变绿。\n\n3. 按下启动按钮。\n\n"
        "注意事项：\n\n• 不要在潮湿环境中使用。"
    )


def test_multilevel_numbers_restart_below_a_higher_level(tmp_path):
    numbering = abstract(
        0,
        level(0, "decimal", "%1."),
        level(1, "decimal", "%1.%2"),
        level(2, "decimal", "%1.%2.%3"),
        multilevel=True,
    ) + num(1, 0)
    items = [("总则", 0), ("目的", 1), ("范围", 1), ("适用对象", 2), ("职责", 0), ("部门职责", 1), ("岗位职责", 2)]
    body = "".join(para(t, num=(1, lvl)) for t, lvl in items) + SECT_PR
    text = text_of(write_docx(tmp_path / "制度.docx", body, numbering=numbering))
    assert text.split("\n\n") == [
        "1. 总则", "1.1 目的", "1.2 范围", "1.2.1 适用对象", "2. 职责", "2.1 部门职责", "2.1.1 岗位职责",
    ]


@pytest.mark.parametrize(
    "fmt, lvl_text, start, labels",
    [
        ("ideographTraditional", "%1、", 1, ["甲、", "乙、", "丙、", "丁、"]),
        ("upperRoman", "%1.", 1, ["I.", "II.", "III.", "IV."]),
        ("lowerRoman", "(%1)", 8, ["(viii)", "(ix)", "(x)", "(xi)"]),
        ("chineseCounting", "%1、", 9, ["九、", "十、", "十一、", "十二、"]),
        ("chineseCounting", "（%1）", 19, ["（十九）", "（二十）", "（二十一）", "（二十二）"]),
        ("chineseCountingThousand", "%1.", 99, ["九十九.", "一百.", "一百零一.", "一百零二."]),
        ("lowerLetter", "%1)", 25, ["y)", "z)", "aa)", "bb)"]),
        ("upperLetter", "%1.", 1, ["A.", "B.", "C.", "D."]),
        ("decimalZero", "%1.", 8, ["08.", "09.", "10.", "11."]),
        ("chineseLegalSimplified", "%1、", 10, ["壹拾、", "壹拾壹、", "壹拾贰、", "壹拾叁、"]),
        ("decimalEnclosedCircle", "%1", 1, ["①", "②", "③", "④"]),
    ],
)
def test_number_formats_as_word_shows_them(tmp_path, fmt, lvl_text, start, labels):
    numbering = abstract(0, level(0, fmt, lvl_text, start=start)) + num(1, 0)
    body = "".join(para(f"事项{i}", num=(1, 0)) for i in range(len(labels))) + SECT_PR
    text = text_of(write_docx(tmp_path / "list.docx", body, numbering=numbering))
    assert text.split("\n\n") == [f"{label} 事项{i}" for i, label in enumerate(labels)]


def test_list_instances_share_the_count_and_start_override_restarts_it(tmp_path):
    """Word keeps the count on the abstract definition: a second w:num over the same one continues
    it unless it carries a startOverride; the level suffix "nothing" leaves no space."""
    numbering = (
        abstract(0, level(0, "decimal", "%1)", suff="nothing"))
        + num(1, 0)
        + num(2, 0, '<w:lvlOverride w:ilvl="0"><w:startOverride w:val="1"/></w:lvlOverride>')
        + num(3, 0)
    )
    body = (
        para("甲", num=(1, 0)) + para("乙", num=(1, 0))
        + para("丙", num=(2, 0)) + para("丁", num=(2, 0))
        + para("戊", num=(3, 0)) + para("己", num=(1, 0))
        + para("不编号", num=(0, 0))
        + SECT_PR
    )
    text = text_of(write_docx(tmp_path / "lists.docx", body, numbering=numbering))
    assert text.split("\n\n") == ["1)甲", "2)乙", "1)丙", "2)丁", "3)戊", "4)己", "不编号"]


def test_chapter_numbers_from_a_heading_style_and_clauses_running_through(tmp_path):
    """Chinese regulations: the chapter style is linked to level 0 of one list (w:pStyle in the
    level, w:numPr in the style), articles are numbered through all chapters by another list."""
    import docx
    from docx.enum.style import WD_STYLE_TYPE
    from docx.oxml import parse_xml

    base = docx.Document()
    chapter = base.styles.add_style("标题 1", WD_STYLE_TYPE.PARAGRAPH)
    chapter.style_id = "ChapterTitle"
    chapter.element.get_or_add_pPr().append(
        parse_xml(f'<w:numPr xmlns:w="{W_NS}"><w:numId w:val="1"/></w:numPr>')
    )
    numbering = (
        abstract(0, level(0, "chineseCounting", "第%1章", suff="space", extra='<w:pStyle w:val="ChapterTitle"/>'))
        + abstract(1, level(0, "chineseCounting", "第%1条", suff="space"))
        + num(1, 0)
        + num(2, 1)
    )
    body = (
        para("总则", style="ChapterTitle")
        + para("为规范档案管理，制定本办法。", num=(2, 0))
        + para("本办法适用于本公司各部门。", num=(2, 0))
        + para("附则", style="ChapterTitle")
        + para("本办法自发布之日起施行。", num=(2, 0))
        + SECT_PR
    )
    text = text_of(write_docx(tmp_path / "办法.docx", body, numbering=numbering, base=base))
    assert text == (
        "# 第一章 总则\n\n第一条 为规范档案管理，制定本办法。\n\n第二条 本办法适用于本公司各部门。\n\n"
        "# 第二章 附则\n\n第三条 本办法自发布之日起施行。"
    )
    assert load_document(tmp_path / "办法.docx").title == "第一章 总则"


# --------------------------------------------------------------------------------------------
# Headers, footers, notes


def story_part(root: str, *paragraphs: str) -> str:
    return f"<w:{root} {ROOT_NS}>{''.join(paragraphs)}</w:{root}>"


def page_field() -> str:
    return (
        '<w:r><w:fldChar w:fldCharType="begin"/></w:r><w:r><w:instrText xml:space="preserve"> PAGE '
        '</w:instrText></w:r><w:r><w:fldChar w:fldCharType="separate"/></w:r>'
        '<w:r><w:t>2</w:t></w:r><w:r><w:fldChar w:fldCharType="end"/></w:r>'
    )


def test_header_and_footer_once_for_two_sections(tmp_path):
    header = story_part("hdr", para("文件编号：BG-2031-017", style="Header"))
    parts = [
        ("rId101", "header", "header1.xml", header),
        # WPS gives each section its own copy of an unchanged header
        ("rId102", "header", "header2.xml", header),
        # a first-page header, not shown: the sections have no w:titlePg
        ("rId103", "header", "header3.xml", story_part("hdr", para("封面专用页眉", style="Header"))),
        ("rId104", "footer", "footer1.xml", story_part("ftr", para("本报告仅供内部使用", style="Footer"))),
        # a footer with nothing but the page number
        ("rId105", "footer", "footer2.xml", story_part("ftr", para(page_field(), style="Footer"))),
    ]
    first_section = (
        '<w:sectPr><w:headerReference w:type="first" r:id="rId103"/>'
        '<w:headerReference w:type="default" r:id="rId101"/>'
        '<w:footerReference w:type="default" r:id="rId104"/>'
        '<w:type w:val="nextPage"/><w:pgSz w:w="11906" w:h="16838"/></w:sectPr>'
    )
    last_section = (
        '<w:sectPr><w:headerReference w:type="default" r:id="rId102"/>'
        '<w:footerReference w:type="default" r:id="rId105"/>'
        '<w:footerReference w:type="even" r:id="rId104"/><w:pgSz w:w="11906" w:h="16838"/></w:sectPr>'
    )
    body = (
        para("年度用户调查报告", style="Heading1")
        + para("第一部分：调查方法。", ppr=first_section)
        + para("第二部分：调查结果。")
        + last_section
    )
    text = text_of(write_docx(tmp_path / "报告.docx", body, parts=parts))
    assert text == (
        "页眉：文件编号：BG-2031-017\n\n# 年度用户调查报告\n\n第一部分：调查方法。\n\n第二部分：调查结果。\n\n"
        "页脚：本报告仅供内部使用"
    )


def test_english_document_gets_english_labels(tmp_path):
    parts = [
        ("rId101", "header", "header1.xml", story_part("hdr", para("ACME Corp. Internal Memo No. 42"))),
        ("rId102", "footer", "footer1.xml", story_part("ftr", para("Confidential"))),
    ]
    sect = (
        '<w:sectPr><w:headerReference w:type="default" r:id="rId101"/>'
        '<w:footerReference w:type="default" r:id="rId102"/></w:sectPr>'
    )
    text = text_of(write_docx(tmp_path / "memo.docx", para("The meeting moves to Friday.") + sect, parts=parts))
    assert text == "Header: ACME Corp. Internal Memo No. 42\n\nThe meeting moves to Friday.\n\nFooter: Confidential"


def note_part(root: str, kind: str, notes: dict[int, str]) -> str:
    """footnotes.xml / endnotes.xml as Word writes them: two separator pseudo-notes, then notes
    whose first run is the note's own reference mark."""
    ref = "footnoteRef" if kind == "footnote" else "endnoteRef"
    style = "FootnoteText" if kind == "footnote" else "EndnoteText"
    parts = [
        f'<w:{kind} w:type="separator" w:id="-1"><w:p><w:r><w:separator/></w:r></w:p></w:{kind}>',
        (
            f'<w:{kind} w:type="continuationSeparator" w:id="0"><w:p><w:r><w:continuationSeparator/>'
            f"</w:r></w:p></w:{kind}>"
        ),
    ]
    for note_id, text in notes.items():
        parts.append(
            f'<w:{kind} w:id="{note_id}"><w:p><w:pPr><w:pStyle w:val="{style}"/></w:pPr>'
            f'<w:r><w:rPr><w:rStyle w:val="{style[:-4]}Reference"/></w:rPr><w:{ref}/></w:r>'
            f"{run(' ' + text)}</w:p></w:{kind}>"
        )
    return f"<w:{root} {ROOT_NS}>{''.join(parts)}</w:{root}>"


def note_reference(kind: str, note_id: int) -> str:
    style = "FootnoteReference" if kind == "footnote" else "EndnoteReference"
    return f'<w:r><w:rPr><w:rStyle w:val="{style}"/></w:rPr><w:{kind}Reference w:id="{note_id}"/></w:r>'


def test_footnotes_and_endnotes_follow_the_citing_paragraph(tmp_path):
    parts = [
        ("rId201", "footnotes", "footnotes.xml", note_part("footnotes", "footnote", {
            1: "有效样本量为2406份，抽样误差为正负2个百分点。",
            2: "调查时间为2030年9月。",
        })),
        ("rId202", "endnotes", "endnotes.xml", note_part("endnotes", "endnote", {1: "数据来源：国家统计局抽样调查。"})),
    ]
    body = (
        para(run("本次调查覆盖全国31个省份") + note_reference("footnote", 1) + run("，回收问卷2500份。"))
        + para(run("受访者以城市居民为主。") + note_reference("footnote", 2))
        + para(run("结论见第三章。") + note_reference("endnote", 1))
        + SECT_PR
    )
    text = text_of(write_docx(tmp_path / "调查.docx", body, parts=parts))
    assert text == (
        "本次调查覆盖全国31个省份[^1]，回收问卷2500份。\n\n"
        "[^1]: 有效样本量为2406份，抽样误差为正负2个百分点。\n\n"
        "受访者以城市居民为主。[^2]\n\n"
        "[^2]: 调查时间为2030年9月。\n\n"
        "结论见第三章。[^i]\n\n"
        "[^i]: 数据来源：国家统计局抽样调查。"
    )


# --------------------------------------------------------------------------------------------
# Tracked changes and comments


def test_tracked_changes_accepted_and_comments_left_out(tmp_path):
    by = 'w:author="张三" w:date="2031-01-05T10:00:00Z"'
    comments = (
        f'<w:comments {ROOT_NS}><w:comment w:id="0" w:author="李四" w:date="2031-01-06T09:00:00Z" '
        'w:initials="LS"><w:p><w:r><w:annotationRef/></w:r><w:r><w:t>请财务部门核实这个金额</w:t></w:r>'
        "</w:p></w:comment></w:comments>"
    )
    body = (
        para(
            '<w:commentRangeStart w:id="0"/>'
            + run("合同总金额为人民币")
            + f'<w:del w:id="1" {by}><w:r><w:delText>五十万</w:delText></w:r></w:del>'
            + f'<w:ins w:id="2" {by}>{run("八十万")}</w:ins>'
            + run("元。")
            + '<w:commentRangeEnd w:id="0"/><w:r><w:rPr><w:rStyle w:val="CommentReference"/></w:rPr>'
            '<w:commentReference w:id="0"/></w:r>'
        )
        # a paragraph deleted as a whole: its text and its paragraph mark are tracked deletions
        + f'<w:p><w:pPr><w:rPr><w:del w:id="3" {by}/></w:rPr></w:pPr><w:del w:id="4" {by}>'
        "<w:r><w:delText>逾期付款按日加收千分之五的违约金。</w:delText></w:r></w:del></w:p>"
        # a moved sentence: gone from here ...
        + f'<w:p><w:pPr><w:rPr><w:moveFrom w:id="5" {by}/></w:rPr></w:pPr>'
        f'<w:moveFromRangeStart w:id="6" w:name="move1" {by}/><w:moveFrom w:id="7" {by}>'
        f'{run("付款方式为银行转账。")}</w:moveFrom><w:moveFromRangeEnd w:id="6"/></w:p>'
        + para("乙方应在签约后十日内付款。")
        # ... and arriving here
        + f'<w:p><w:moveToRangeStart w:id="8" w:name="move1" {by}/><w:moveTo w:id="9" {by}>'
        f'{run("付款方式为银行转账。")}</w:moveTo><w:moveToRangeEnd w:id="8"/></w:p>'
        # a deleted line break: the two paragraphs become one
        + f'<w:p><w:pPr><w:rPr><w:del w:id="10" {by}/></w:rPr></w:pPr>{run("甲方：北京某某")}</w:p>'
        + para("科技有限公司")
        + SECT_PR
    )
    path = write_docx(tmp_path / "修订.docx", body, parts=[("rId301", "comments", "comments.xml", comments)])
    assert text_of(path) == (
        "合同总金额为人民币八十万元。\n\n乙方应在签约后十日内付款。\n\n付款方式为银行转账。\n\n"
        "甲方：北京某某科技有限公司"
    )


def test_deleted_clause_renumbers_the_rest(tmp_path):
    numbering = abstract(0, level(0, "chineseCounting", "第%1条")) + num(1, 0)
    deleted = (
        '<w:p><w:pPr><w:numPr><w:ilvl w:val="0"/><w:numId w:val="1"/></w:numPr>'
        '<w:rPr><w:del w:id="1" w:author="王五" w:date="2031-02-01T08:00:00Z"/></w:rPr></w:pPr>'
        '<w:del w:id="2" w:author="王五" w:date="2031-02-01T08:00:00Z"><w:r><w:delText>旧的第二条。'
        "</w:delText></w:r></w:del></w:p>"
    )
    body = para("第一项约定。", num=(1, 0)) + deleted + para("第二项约定。", num=(1, 0)) + SECT_PR
    text = text_of(write_docx(tmp_path / "renumber.docx", body, numbering=numbering))
    assert text == "第一条 第一项约定。\n\n第二条 第二项约定。"


def test_table_rows_with_merged_cells_and_a_deleted_row(tmp_path):
    def cell(text: str, props: str = "") -> str:
        return f"<w:tc><w:tcPr>{props}</w:tcPr>{para(text)}</w:tc>"

    restart, merged, span2 = '<w:vMerge w:val="restart"/>', "<w:vMerge/>", '<w:gridSpan w:val="2"/>'
    table = (
        '<w:tbl><w:tblPr><w:tblW w:w="0" w:type="auto"/></w:tblPr><w:tblGrid><w:gridCol w:w="2000"/>'
        '<w:gridCol w:w="2000"/><w:gridCol w:w="2000"/></w:tblGrid>'
        f'<w:tr>{cell("部门")}{cell("季度")}{cell("金额")}</w:tr>'
        f'<w:tr>{cell("销售部", restart)}{cell("一季度")}{cell("100")}</w:tr>'
        f'<w:tr>{cell("", merged)}{cell("二季度")}{cell("120")}</w:tr>'
        '<w:tr><w:trPr><w:del w:id="1" w:author="A" w:date="2031-01-01T00:00:00Z"/></w:trPr>'
        f'{cell("旧部门")}{cell("三季度")}{cell("0")}</w:tr>'
        f'<w:tr>{cell("合计", span2)}{cell("220")}</w:tr>'
        "</w:tbl>"
    )
    text = text_of(write_docx(tmp_path / "表格.docx", para("销售统计") + table + para("表后说明。") + SECT_PR))
    assert text == (
        "销售统计\n\n部门 | 季度 | 金额\n销售部 | 一季度 | 100\n销售部 | 二季度 | 120\n合计 | 220\n\n表后说明。"
    )


# --------------------------------------------------------------------------------------------
# End to end: the clause number is what finds the clause


def test_question_about_the_third_clause_finds_it(tmp_path, embedder, kb_settings):
    from rag.api import KnowledgeBase
    from rag.testing import fake_loaded_model

    files = tmp_path / "files"
    files.mkdir()
    contract_docx(files / "租赁合同.docx")
    (files / "茶.txt").write_text("龙井茶产于浙江省杭州市西湖一带，属于绿茶。", encoding="utf-8")
    # small chunks, so that each clause is a passage of its own
    settings = kb_settings.model_copy(update={"chunking": kb_settings.chunking.model_copy(
        update={"chunk_tokens": 48, "overlap_tokens": 0})})
    kb = KnowledgeBase(settings=settings, embedder=embedder, model=fake_loaded_model(4096, 64))
    report = kb.add([files])
    assert report.ok, report.failed
    hits = kb.retrieve("合同第三条规定了什么？", k=3)
    assert hits[0].file_name == "租赁合同.docx"
    assert hits[0].text.startswith("第三条 乙方应当于每月五日前")
    assert "第二条" not in hits[0].text and "第四条" not in hits[0].text


def test_hidden_text_is_not_indexed(tmp_path):
    """Runs formatted as hidden (w:vanish), as LibreOffice and Word write them, are not shown by
    Word and must not reach the index; a paragraph of hidden runs disappears."""
    import docx

    from ingest.loaders import load_document

    document = docx.Document()
    p = document.add_paragraph("公开内容。")
    p.add_run("内部备注：不得公开的隐藏文字。").font.hidden = True
    p.add_run("后续公开内容。")
    document.add_paragraph().add_run("整段隐藏：密级信息。").font.hidden = True
    shown = document.add_paragraph()
    shown.add_run("不隐藏。").font.hidden = False  # w:vanish w:val="0"
    path = tmp_path / "hidden.docx"
    document.save(path)
    text = load_document(path).text
    assert [line for line in text.splitlines() if line] == ["公开内容。后续公开内容。", "不隐藏。"]

"""Citations that open the highlighted page: a chunk's boxes on its PDF pages
(ingest.passage_boxes) and the page rendered with them marked (rag.page_image)."""

from __future__ import annotations

import io

import pytest

from ingest.loaders.pdf_layout import read_layout
from ingest.passage_boxes import passage_boxes
from rag.page_image import PageUnavailable, render_page
from tests.docmaker import make_chinese_pdf

PAGE_ONE = ("大熊猫是中国特有的熊科动物，主要栖息在四川、陕西和甘肃的山区。"
            "大熊猫的食物几乎全部是竹子，一只成年大熊猫每天要吃十几公斤竹子。")
PAGE_TWO = ("野生大熊猫的数量约为一千八百只，保护区的建立让它们的栖息地逐渐恢复。"
            "研究人员通过红外相机记录大熊猫的活动。")


@pytest.fixture(scope="module")
def pdf(tmp_path_factory):
    path = make_chinese_pdf(tmp_path_factory.mktemp("pages") / "panda.pdf", [PAGE_ONE, PAGE_TWO], line_chars=20)
    return path, read_layout(path)


def test_a_passage_is_found_on_its_page_line_by_line(pdf):
    path, layouts = pdf
    text = "大熊猫的食物几乎全部是竹子，一只成年大熊猫每天要吃十几公斤竹子。"
    boxes = passage_boxes(layouts, 1, text)
    assert boxes and {page for page, _ in boxes} == {1}
    # the passage starts mid-line: its first box starts right of the page margin
    lines = layouts[0].lines
    assert len(boxes) >= 2 and boxes[0][1][0] > lines[0].box[0] + 5
    tops = [b[1] for _, b in boxes]
    assert tops == sorted(tops)  # line after line, top to bottom
    for _, (x0, top, x1, bottom) in boxes:
        assert 0 <= x0 < x1 <= layouts[0].width and 0 <= top < bottom <= layouts[0].height


def test_a_passage_over_a_page_break_gets_boxes_on_both_pages(pdf):
    _, layouts = pdf
    text = "每天要吃十几公斤竹子。\n野生大熊猫的数量约为一千八百只，"
    pages = [page for page, _ in passage_boxes(layouts, 1, text)]
    assert pages[0] == 1 and pages[-1] == 2


def test_text_not_on_the_page_gets_no_boxes(pdf):
    _, layouts = pdf
    assert passage_boxes(layouts, 1, "这段文字不在这个文件里面，完全没有出现过。") == []
    assert passage_boxes(layouts, None, PAGE_ONE) == []


def test_the_page_is_rendered_with_the_passage_marked(pdf):
    from PIL import Image

    path, layouts = pdf
    boxes = passage_boxes(layouts, 1, "一只成年大熊猫每天要吃十几公斤竹子")
    plain = Image.open(io.BytesIO(render_page(path, 1))).convert("RGB")
    marked = Image.open(io.BytesIO(render_page(path, 1, boxes))).convert("RGB")
    assert plain.size == marked.size and plain.size[0] > 800  # A4 at 1.5 px per point
    page, (x0, top, x1, bottom) = boxes[-1]
    # a point inside the box but between glyphs turns yellow; far from it nothing changes
    inside = (int((x1 - 1) * 1.5), int((top + 1) * 1.5))
    r, g, b = marked.getpixel(inside)
    assert r > 200 and g > 180 and b < 200, (r, g, b)
    assert marked.getpixel((5, marked.size[1] - 5)) == plain.getpixel((5, plain.size[1] - 5))
    # boxes of another page are not drawn on this one
    other = Image.open(io.BytesIO(render_page(path, 2, boxes))).convert("RGB")
    assert other.tobytes() == Image.open(io.BytesIO(render_page(path, 2))).convert("RGB").tobytes()


def test_a_missing_file_or_page_is_a_clear_error(pdf, tmp_path):
    path, _ = pdf
    with pytest.raises(PageUnavailable, match="no page 9"):
        render_page(path, 9)
    with pytest.raises(PageUnavailable, match="gone.pdf"):
        render_page(tmp_path / "gone.pdf", 1)


def test_a_scanned_page_is_highlighted_from_its_ocr_lines(tmp_path):
    """A page that is only an image: OCR gives its lines, and a cited passage gets their boxes."""
    pytest.importorskip("rapidocr")
    from PIL import Image

    from ingest.loaders import load_document

    text_pdf = make_chinese_pdf(tmp_path / "text.pdf", [PAGE_ONE], line_chars=20)
    import pypdfium2 as pdfium

    pdf = pdfium.PdfDocument(str(text_pdf))
    image = pdf[0].render(scale=200 / 72).to_pil().convert("RGB")
    pdf.close()
    scanned = tmp_path / "scan.pdf"
    image.save(scanned, "PDF", resolution=200)
    loaded = load_document(scanned)
    page = loaded.pages[0]
    assert page.ocr and page.layout is not None
    boxes = passage_boxes([page.layout], 1, "一只成年大熊猫每天要吃十几公斤竹子")
    assert boxes and all(p == 1 for p, _ in boxes)
    # the same lines as on the text version, within a few points
    text_layout = read_layout(text_pdf)[0]
    expected = passage_boxes([text_layout], 1, "一只成年大熊猫每天要吃十几公斤竹子")
    assert len(boxes) == len(expected)
    for (_, got), (_, want) in zip(boxes, expected):
        assert abs(got[1] - want[1]) < 6 and abs(got[3] - want[3]) < 6, (got, want)
    assert isinstance(Image.open(io.BytesIO(render_page(scanned, 1, boxes))), Image.Image)


def test_hits_and_answers_carry_page_boxes_and_the_ocr_mark(tmp_path, capsys):
    """Ingested for real: a text PDF, a scanned PDF and a text file; the CLI's JSON hits and the
    answer's sources give a PDF passage's page and boxes, and say which text came from OCR."""
    pytest.importorskip("rapidocr")
    import json

    import pypdfium2 as pdfium

    from rag import cli
    from tests.helpers_rag import make_kb

    folder = tmp_path / "files"
    folder.mkdir()
    make_chinese_pdf(folder / "panda.pdf", [PAGE_ONE, PAGE_TWO], line_chars=20)
    source = pdfium.PdfDocument(str(make_chinese_pdf(tmp_path / "rail.pdf", [
        "京沪高速铁路全长一千三百一十八公里，设计时速三百五十公里，二〇一一年六月三十日正式开通运营。"], line_chars=20)))
    source[0].render(scale=200 / 72).to_pil().convert("RGB").save(folder / "rail_scan.pdf", "PDF", resolution=200)
    source.close()
    kb = make_kb(tmp_path / "kb", docs={"note.txt": "龙井茶产于浙江杭州西湖一带，是中国十大名茶之一。"})
    assert kb.add([folder]).ok

    hit = kb.retrieve("一只成年大熊猫每天要吃多少竹子？", k=1)[0]
    assert hit.file_name == "panda.pdf" and hit.page == 1 and hit.boxes and not hit.ocr
    scanned = kb.retrieve("京沪高速铁路全长多少公里？", k=1)[0]
    assert scanned.file_name == "rail_scan.pdf" and scanned.ocr and scanned.boxes
    note = kb.retrieve("龙井茶产于哪里？", k=1)[0]
    assert note.file_name == "note.txt" and note.boxes == [] and "boxes" not in note.to_dict()

    capsys.readouterr()
    assert cli.main(["retrieve", "--kb", str(kb.store.dir), "京沪高速铁路全长多少公里？", "--k", "1", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out.splitlines()[-1])["hits"][0]
    assert printed["ocr"] is True and printed["page"] == 1
    assert printed["boxes"] == [[page, *box] for page, box in scanned.boxes]
    result = kb.ask("一只成年大熊猫每天要吃多少竹子？", mode="quote")
    src = result["sources"][0]
    assert src["file_name"] == "panda.pdf" and src["boxes"] and all(len(b) == 5 for b in src["boxes"])
    assert src["boxes"][0][0] == src["page"] and src["ocr"] is False
    json.dumps(result, ensure_ascii=False)  # plain JSON, as `rag ask --json` prints it

"""ingest.ocr: reading order (pure), and real recognition of generated pages with known text.

The recognition tests draw small pages with reportlab (a CJK TrueType font from the machine,
embedded), render them with pypdfium2 and OCR them with the real engine; they are skipped when
rapidocr (or pypdfium2, reportlab, a CJK font) is missing.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ingest import ocr
from ingest.ocr import OcrLine, OcrUnavailable, order_lines

PAGE_W, PAGE_H = 420.0, 320.0  # points; small pages keep each recognition near a second
MARGIN = 30.0

ONE_COLUMN_TITLE = "光学字符识别测试"
ONE_COLUMN_LINES = [
    "扫描页面没有文字层，需要先识别文字。",
    "繁體中文：機器學習與自然語言處理。",
    "English line: Offline OCR of 42 pages.",
    "混合 mixed 中英文 text，2024年5月。",
]
TWO_COLUMN_TITLE = "两栏版面的阅读顺序"
LEFT_LINES = ["第一段：北京的秋天很美", "第二段：上海的夜景迷人", "第三段：广州的早茶有名"]
RIGHT_LINES = ["第四段：成都的火锅很辣", "第五段：西安的古城墙长", "第六段：杭州的西湖秀丽"]


# ---------------------------------------------------------------------------------------------
# Helpers.


def levenshtein(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def char_accuracy(hypothesis: str, reference: str) -> float:
    hyp, ref = re.sub(r"\s+", "", hypothesis), re.sub(r"\s+", "", reference)
    return 1.0 - levenshtein(hyp, ref) / len(ref)


def line(text: str, x0: float, y0: float, x1: float, y1: float) -> OcrLine:
    return OcrLine(text=text, box=(x0, y0, x1, y1), confidence=1.0)


def texts(lines: list[OcrLine]) -> list[str]:
    return [ln.text for ln in lines]


# ---------------------------------------------------------------------------------------------
# Reading order, on boxes alone (no engine needed).


def test_single_column_is_read_top_to_bottom():
    rows = [line(f"row{i}", 50, 100 + 20 * i, 500 - (i % 3) * 60, 114 + 20 * i) for i in range(8)]
    shuffled = [rows[i] for i in (5, 2, 7, 0, 3, 6, 1, 4)]
    assert texts(order_lines(shuffled)) == [f"row{i}" for i in range(8)]


def test_a_line_cut_in_two_boxes_is_read_left_to_right():
    lines = [
        line("b-right", 300, 101, 500, 115),  # a little higher than its left half: a skewed scan
        line("a-left", 50, 102, 280, 116),
        line("c-next", 50, 130, 500, 144),
    ]
    assert texts(order_lines(lines)) == ["a-left", "b-right", "c-next"]


def test_ragged_single_column_is_not_taken_for_columns():
    # Short list items and long lines, all from the left margin: no gutter.
    widths = [440, 120, 90, 300, 150, 440, 60, 200]
    lines = [line(f"item{i}", 50, 100 + 20 * i, 50 + w, 114 + 20 * i) for i, w in enumerate(widths)]
    assert texts(order_lines(lines[::-1])) == [f"item{i}" for i in range(8)]


def test_two_columns_left_before_right_with_crossing_lines_in_place():
    def column(prefix: str, x0: float, x1: float, top: float) -> list[OcrLine]:
        return [line(f"{prefix}{i}", x0, top + 20 * i, x1, top + 20 * i + 14) for i in range(3)]

    title = line("title", 50, 40, 545, 60)
    left_a, right_a = column("La", 50, 285, 80), column("Ra", 310, 545, 80)
    heading = line("heading", 230, 150, 365, 166)  # centred, crosses the gutter
    left_b, right_b = column("Lb", 50, 285, 180), column("Rb", 310, 545, 180)
    footer = line("footer", 280, 800, 315, 812)  # page number under the gutter
    everything = [footer, *right_b, heading, *left_a, title, *left_b, *right_a]
    expected = ["title", "La0", "La1", "La2", "Ra0", "Ra1", "Ra2", "heading",
                "Lb0", "Lb1", "Lb2", "Rb0", "Rb1", "Rb2", "footer"]
    assert texts(order_lines(everything)) == expected


def test_a_box_poking_into_the_gap_stays_in_its_column():
    # Seen with PP-OCRv4's detector: a right-column line whose box starts in the gap, just past
    # its middle (a comma of the line beside it taken in). It must not cut the page in two.
    left = [line(f"L{i}", 50, 100 + 20 * i, 285, 114 + 20 * i) for i in range(6)]
    right = [line(f"R{i}", 310, 100 + 20 * i, 545, 114 + 20 * i) for i in range(6)]
    right[3] = line("R3", 293, 160, 545, 174)
    expected = [f"L{i}" for i in range(6)] + [f"R{i}" for i in range(6)]
    assert texts(order_lines(right + left)) == expected


def test_three_columns():
    lines = [
        line(f"{name}{i}", x0, 100 + 20 * i, x0 + 150, 114 + 20 * i)
        for name, x0 in (("c", 390), ("a", 50), ("b", 220))
        for i in range(3)
    ]
    assert texts(order_lines(lines)) == ["a0", "a1", "a2", "b0", "b1", "b2", "c0", "c1", "c2"]


def test_order_of_few_lines_and_none():
    assert order_lines([]) == []
    one = line("x", 0, 0, 10, 10)
    assert order_lines([one]) == [one]


# ---------------------------------------------------------------------------------------------
# Engine availability.


def test_ocr_unavailable_when_the_engine_cannot_be_imported(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "rapidocr", None)  # makes `import rapidocr` raise ImportError
    ocr.reset_engine()
    try:
        with pytest.raises(OcrUnavailable, match="pip install"):
            ocr.load_engine()
        with pytest.raises(OcrUnavailable):
            ocr.recognize_image(np.full((40, 40), 255, dtype=np.uint8))
        with pytest.raises(OcrUnavailable):
            ocr.ocr_pdf_page(tmp_path / "any.pdf", 0)
    finally:
        ocr.reset_engine()  # the next test loads the real engine again


# ---------------------------------------------------------------------------------------------
# Real recognition.


def _cjk_font() -> str:
    """Registers a CJK TrueType font for reportlab and returns its name (skips when none)."""
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFError, TTFont

    name = "OcrTestCJK"
    try:
        pdfmetrics.getFont(name)
        return name
    except KeyError:
        pass
    candidates = [
        "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",  # fonts-wqy-microhei, installed by .ci/run
        "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
        "/usr/share/fonts/truetype/arphic/uming.ttc",
        "/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf",
    ]
    if shutil.which("fc-list"):
        listed = subprocess.run(
            ["fc-list", ":lang=zh", "file"], capture_output=True, text=True, check=False
        ).stdout
        candidates += [entry.split(":")[0].strip() for entry in listed.splitlines()]
    for path in candidates:
        if not Path(path).is_file():
            continue
        try:  # reportlab embeds TrueType outlines only (not the CFF outlines of Noto CJK)
            pdfmetrics.registerFont(TTFont(name, path, subfontIndex=0))
            return name
        except (TTFError, OSError):
            continue
    pytest.skip("no CJK TrueType font on this machine (apt-get install fonts-wqy-microhei)")


@pytest.fixture(scope="module")
def engine():
    pytest.importorskip("rapidocr")
    pytest.importorskip("pypdfium2")
    pytest.importorskip("reportlab")
    ocr.reset_engine()
    return ocr.load_engine()


def _draw_page(path: Path, draw) -> Path:
    from reportlab.pdfgen import canvas

    font = _cjk_font()
    c = canvas.Canvas(str(path), pagesize=(PAGE_W, PAGE_H))
    draw(c, font)
    c.save()
    return path


# Baselines (reportlab's y, from the bottom) of the one-column page's title and lines.
TITLE_BASELINE = PAGE_H - MARGIN - 16
LINE_BASELINES = [TITLE_BASELINE - 40 - 30 * i for i in range(len(ONE_COLUMN_LINES))]


@pytest.fixture(scope="module")
def one_column_pdf(tmp_path_factory) -> Path:
    def draw(c, font):
        c.setFont(font, 16)
        c.drawString(MARGIN, TITLE_BASELINE, ONE_COLUMN_TITLE)
        c.setFont(font, 13)
        for text, baseline in zip(ONE_COLUMN_LINES, LINE_BASELINES):
            c.drawString(MARGIN, baseline, text)

    return _draw_page(tmp_path_factory.mktemp("ocr") / "one-column.pdf", draw)


@pytest.fixture(scope="module")
def two_column_pdf(tmp_path_factory) -> Path:
    def draw(c, font):
        c.setFont(font, 16)
        c.drawString(MARGIN, PAGE_H - MARGIN - 16, TWO_COLUMN_TITLE)
        c.setFont(font, 13)
        for i, (left, right) in enumerate(zip(LEFT_LINES, RIGHT_LINES)):
            baseline = PAGE_H - MARGIN - 60 - 30 * i
            c.drawString(MARGIN, baseline, left)  # same baselines: rows alone would interleave
            c.drawString(PAGE_W / 2 + 15, baseline, right)

    return _draw_page(tmp_path_factory.mktemp("ocr") / "two-column.pdf", draw)


def _render(pdf: Path, dpi: float):
    import pypdfium2 as pdfium

    doc = pdfium.PdfDocument(str(pdf))
    try:
        return doc[0].render(scale=dpi / 72.0).to_pil()
    finally:
        doc.close()


@pytest.mark.slow
def test_known_text_comes_back(engine, one_column_pdf):
    lines = ocr.ocr_pdf_page(one_column_pdf, 0)
    got = ocr.lines_text(lines)
    expected = "\n".join([ONE_COLUMN_TITLE, *ONE_COLUMN_LINES])
    assert char_accuracy(got, expected) >= 0.9, got
    assert "Offline" in got and "機器學習" in got and "识别" in got
    assert all(0.0 < ln.confidence <= 1.0 for ln in lines)


@pytest.mark.slow
def test_boxes_are_points_on_the_page_top_to_bottom(engine, one_column_pdf):
    lines = ocr.ocr_pdf_page(one_column_pdf, 0, dpi=150)
    assert len(lines) == 1 + len(ONE_COLUMN_LINES)
    for ln in lines:
        x0, y0, x1, y1 = ln.box
        assert 0 <= x0 < x1 <= PAGE_W and 0 <= y0 < y1 <= PAGE_H, ln
    centres = [(ln.box[1] + ln.box[3]) / 2 for ln in lines]
    assert centres == sorted(centres)
    # Each line's box stands where it was drawn: in points, origin top-left (reportlab's y is
    # from the bottom, so the baseline lies PAGE_H - baseline from the top).
    for ln, baseline in zip(lines, [TITLE_BASELINE, *LINE_BASELINES]):
        top_down = PAGE_H - baseline
        assert ln.box[1] < top_down < ln.box[3] + 2, (ln, top_down)
        assert abs(ln.box[0] - MARGIN) < 6, ln
        assert 8 < ln.height < 30, ln


@pytest.mark.slow
def test_two_columns_are_read_left_column_first(engine, two_column_pdf):
    lines = ocr.ocr_pdf_page(two_column_pdf, 0)
    expected = [TWO_COLUMN_TITLE, *LEFT_LINES, *RIGHT_LINES]
    assert char_accuracy(ocr.lines_text(lines), "\n".join(expected)) >= 0.9, texts(lines)
    # Each recognised line matched to the drawn line it is closest to: in drawn order.
    matched = [min(range(len(expected)), key=lambda k: levenshtein(ln.text, expected[k])) for ln in lines]
    assert matched == list(range(len(expected))), texts(lines)
    right_lefts = [ln.box[0] for ln in lines[1 + len(LEFT_LINES):]]
    assert all(x > PAGE_W / 2 for x in right_lefts)


@pytest.mark.slow
def test_image_inputs_agree_and_dpi_scales_boxes(engine, one_column_pdf):
    image = _render(one_column_pdf, dpi=144)
    from_pil = ocr.recognize_image(image, dpi=144)
    from_rgb = ocr.recognize_image(np.asarray(image), dpi=144)
    from_grey = ocr.recognize_image(np.asarray(image.convert("L")), dpi=144)
    in_pixels = ocr.recognize_image(image, dpi=72)
    assert texts(from_pil) == texts(from_rgb)
    assert char_accuracy(ocr.lines_text(from_grey), ocr.lines_text(from_pil)) >= 0.95
    assert len(in_pixels) == len(from_pil)
    for px, pt in zip(in_pixels, from_pil):
        assert px.box == pytest.approx(tuple(2 * v for v in pt.box), abs=1e-6)


@pytest.mark.slow
def test_blank_page_gives_no_lines(engine):
    assert ocr.recognize_image(np.full((600, 400, 3), 255, dtype=np.uint8), dpi=100) == []


def test_page_out_of_range(engine, one_column_pdf):
    with pytest.raises(IndexError):
        ocr.ocr_pdf_page(one_column_pdf, 1)


def test_engine_is_loaded_once_per_process(engine):
    first = ocr.load_engine()
    assert ocr.load_engine() is first
    assert ocr.load_engine(threads=1) is first  # threads only count when loading


@pytest.mark.slow
def test_models_come_from_the_package_never_the_network(engine, monkeypatch, one_column_pdf):
    from rapidocr.utils.download_file import DownloadFile

    def no_download(*args, **kwargs):
        raise AssertionError("rapidocr tried to download a model")

    def no_network(*args, **kwargs):
        raise AssertionError("network access during OCR")

    monkeypatch.setattr(DownloadFile, "run", no_download)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    ocr.reset_engine()
    try:
        lines = ocr.ocr_pdf_page(one_column_pdf, 0, dpi=120)
        assert any("Offline" in ln.text for ln in lines)
    finally:
        ocr.reset_engine()


def test_missing_bundled_model_is_unavailable_not_downloaded(engine, monkeypatch):
    from rapidocr.utils.download_file import DownloadFile

    monkeypatch.setattr(DownloadFile, "run", lambda *a, **k: pytest.fail("download attempted"))
    monkeypatch.setattr(ocr, "_REC_MODEL", "no-such-model.onnx")
    ocr.reset_engine()
    try:
        with pytest.raises(OcrUnavailable, match="no-such-model.onnx"):
            ocr.load_engine()
    finally:
        ocr.reset_engine()

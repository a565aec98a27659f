"""Offline OCR of page images and scanned PDF pages (Chinese Simplified, Traditional, English).

The engine is RapidOCR (``rapidocr``, Apache-2.0) on onnxruntime, with the PP-OCRv6 *small*
detection and recognition models (Apache-2.0) that ship inside the ``rapidocr`` wheel. One
multilingual recognition model reads Simplified and Traditional Chinese and English, so nothing
has to guess a page's language first. The models are always opened from the installed package by
path; nothing is ever downloaded (see :func:`_bundled_models`).

Install: ``pip install 'rapidocr>=3.10,<4'`` (a dependency of this project); onnxruntime runs
the models and pypdfium2 renders PDF pages.

Usage::

    from ingest.ocr import ocr_pdf_page, recognize_image, lines_text

    lines = ocr_pdf_page("scan.pdf", 0)           # first page, rendered at 200 dpi
    for line in lines:
        print(line.box, round(line.confidence, 2), line.text)
    print(lines_text(lines))                     # one line of text per recognised line

    from PIL import Image
    lines = recognize_image(Image.open("page.png"), dpi=300)

Coordinates: every :class:`OcrLine` box is ``(x0, y0, x1, y1)`` in PDF points (1/72 inch) with
the origin at the **top-left** corner of the page as displayed (after the page's /Rotate, within
its crop box), x to the right and y downwards; ``x0 < x1`` and ``y0 < y1``. For a plain image the
points are ``pixels * 72 / dpi``: pass ``dpi=72`` to get pixels.

Reading order: top to bottom; on a page with columns, each column top to bottom, columns left
to right; a line that crosses the gap between columns (a title, a centred heading, a full-width
paragraph) is read where it stands between the column blocks above and below it
(:func:`order_lines`).

Limits: a page scanned upside down or sideways is not turned first; vertical text (竖排) is
untested, and its columns would be ordered left to right; one A4 page at 200 dpi takes about
1 GB of memory and 5 s on two cores.

The engine is loaded on first use, once per process (a forked worker loads its own, since an
onnxruntime session does not survive ``fork``). Calls from several threads take turns: one page
already uses every core, and RapidOCR keeps per-call settings on the engine object.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from statistics import median
from typing import Any

import numpy as np

__all__ = [
    "DEFAULT_DPI",
    "OcrLine",
    "OcrUnavailable",
    "engine_info",
    "lines_text",
    "load_engine",
    "ocr_pdf_page",
    "order_lines",
    "recognize_image",
    "reset_engine",
]

# Measured with bench/ocr.py (7 A4 pages, 10.5-pt Chinese, 2 cores): character accuracy 0.9949
# at 150 dpi, 0.9966 at 200, 0.9965 at 300; 300 dpi took 1.5 times as long as 200.
DEFAULT_DPI = 200

# The model files inside the rapidocr wheel (rapidocr 3.10). Named here, not left to rapidocr's
# defaults: with defaults rapidocr looks them up in a table and, if a file is missing or its
# checksum differs, downloads it from the internet on first use.
_DET_MODEL = "PP-OCRv6_det_small.onnx"
_REC_MODEL = "PP-OCRv6_rec_small.onnx"
_CLS_MODEL = "ch_ppocr_mobile_v2.0_cls_mobile.onnx"

# RapidOCR shrinks any image whose longer side is above this before detection, and cuts the
# lines for recognition out of the shrunken image. rapidocr's default, 2000, shrinks an A4 page
# at 200 dpi (2339 px) to 171 dpi; keeping it whole cut the errors by a quarter on the bench
# (accuracy 0.9953 -> 0.9966) for 4 % more time.
_MAX_SIDE_LEN = 3000

_INSTALL_HINT = "install it with: pip install 'rapidocr>=3.10,<4' (a dependency of alpaca-docqa)"


class OcrUnavailable(RuntimeError):
    """The OCR engine cannot be used here: ``rapidocr`` or onnxruntime is not installed, or the
    models that ship inside the package are missing. The message says what to install."""


@dataclass(frozen=True)
class OcrLine:
    """One recognised line of text.

    ``box`` is ``(x0, y0, x1, y1)`` in PDF points, origin top-left, y downwards (see the module
    docstring); ``confidence`` is the recogniser's score in [0, 1].
    """

    text: str
    box: tuple[float, float, float, float]
    confidence: float

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]


# ---------------------------------------------------------------------------------------------
# The engine: loaded lazily, once per process.

_lock = threading.Lock()
_run_lock = threading.Lock()
_engine: Any = None
_engine_pid: int | None = None
_engine_threads: int | None = None


def _cpu_count() -> int:
    # The CPUs this process may run on (a container or taskset limits them), not the host's.
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _bundled_models(package_dir: Path) -> dict[str, Path]:
    models = {
        "det": package_dir / "models" / _DET_MODEL,
        "rec": package_dir / "models" / _REC_MODEL,
        "cls": package_dir / "models" / _CLS_MODEL,
    }
    missing = [str(p) for p in models.values() if not p.is_file()]
    if missing:
        raise OcrUnavailable(
            "the OCR models that ship inside the rapidocr package are missing "
            f"({', '.join(missing)}); this needs rapidocr 3.10 or later 3.x: {_INSTALL_HINT}"
        )
    return models


def _load_engine(threads: int) -> Any:
    try:
        import onnxruntime  # noqa: F401  (rapidocr itself only fails later, on first use)
        import rapidocr
        from rapidocr import EngineType, RapidOCR
    except ImportError as exc:
        raise OcrUnavailable(f"the OCR engine is not installed ({exc}); {_INSTALL_HINT}") from exc

    models = _bundled_models(Path(rapidocr.__file__).parent)
    params = {
        "Global.log_level": "warning",
        "Global.max_side_len": _MAX_SIDE_LEN,
        # No per-line 180-degree classifier: on upright bench pages it flipped whole lines of
        # ordinary Chinese text, which then came back empty and were lost (3 of 42 lines on one
        # page). Pages are scanned upright or turned as a whole; lines upside down alone are rare.
        "Global.use_cls": False,
        "Det.engine_type": EngineType.ONNXRUNTIME,
        "Rec.engine_type": EngineType.ONNXRUNTIME,
        "Cls.engine_type": EngineType.ONNXRUNTIME,
        "Det.model_path": str(models["det"]),
        "Rec.model_path": str(models["rec"]),
        "Cls.model_path": str(models["cls"]),  # unused (use_cls off), but never downloaded
        # All cores for one page's matrix work; the three models run one after the other, so
        # more than one inter-op thread only adds idle spinning threads.
        "EngineConfig.onnxruntime.intra_op_num_threads": threads,
        "EngineConfig.onnxruntime.inter_op_num_threads": 1,
    }
    try:
        engine = RapidOCR(params=params)
        # RapidOCR opens its models on first use; open them now, so that a broken install or
        # model file fails here, as OcrUnavailable, and not in the middle of an ingest.
        for opener in ("_load_det_model", "_load_rec_model"):
            getattr(engine, opener, lambda: None)()
    except Exception as exc:  # a broken or incompatible install: say so in one error type
        raise OcrUnavailable(f"the OCR engine could not start ({exc!r}); {_INSTALL_HINT}") from exc
    return engine


def load_engine(threads: int | None = None) -> Any:
    """Loads the engine now (otherwise the first recognition does) and returns it.

    ``threads``: onnxruntime intra-op threads, default the CPUs this process may use; it counts
    only when this call is the one that loads the engine in this process (see
    :func:`reset_engine`). Raises :class:`OcrUnavailable`.
    """
    global _engine, _engine_pid, _engine_threads
    pid = os.getpid()
    if _engine is not None and _engine_pid == pid:
        return _engine
    with _lock:
        if _engine is None or _engine_pid != pid:
            n = threads or _cpu_count()
            _engine = _load_engine(n)
            _engine_pid = pid
            _engine_threads = n
    return _engine


def reset_engine() -> None:
    """Drops this process's engine; the next use loads it again (with new ``threads``)."""
    global _engine, _engine_pid, _engine_threads
    with _lock:
        _engine = _engine_pid = _engine_threads = None


def engine_info() -> dict[str, Any]:
    """Names and versions of the engine and models (loads the engine). For logs and benchmarks."""
    load_engine()
    from importlib.metadata import version

    import onnxruntime

    return {
        "engine": "rapidocr",
        "rapidocr": version("rapidocr"),
        "onnxruntime": onnxruntime.__version__,
        "models": [_DET_MODEL, _REC_MODEL],
        "threads": _engine_threads,
    }


# ---------------------------------------------------------------------------------------------
# Recognition.


def _to_bgr(image: Any) -> np.ndarray:
    """A PIL image or an RGB / grey / RGBA array as the BGR uint8 array that RapidOCR reads
    (it treats any array as OpenCV's BGR order)."""
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow comes with the engine
        Image = None  # type: ignore[assignment]
    if Image is not None and isinstance(image, Image.Image):
        transparent = image.mode in ("RGBA", "LA", "PA")
        if transparent or (image.mode == "P" and "transparency" in image.info):
            # Transparent parts of a scan are paper: flatten onto white, not black.
            rgba = image.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            image = Image.alpha_composite(background, rgba)
        array = np.asarray(image.convert("RGB"))
    elif isinstance(image, np.ndarray):
        array = image
    else:
        raise TypeError(f"expected a PIL image or a numpy array, got {type(image).__name__}")

    if array.dtype != np.uint8:
        if np.issubdtype(array.dtype, np.floating) and array.size and array.max() <= 1.0:
            array = array * 255.0
        array = np.clip(array, 0, 255).astype(np.uint8)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    elif array.ndim == 3 and array.shape[2] == 4:
        alpha = array[:, :, 3:4].astype(np.float32) / 255.0
        array = (array[:, :, :3] * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
    elif not (array.ndim == 3 and array.shape[2] == 3):
        raise ValueError(f"expected an image array (h, w), (h, w, 3) or (h, w, 4), got {array.shape}")
    return np.ascontiguousarray(array[:, :, ::-1])


def recognize_image(image: Any, *, dpi: float | None = None) -> list[OcrLine]:
    """Recognises the text of one page image and returns its lines in reading order.

    ``image``: a PIL image (any mode) or a numpy array, RGB (as PIL gives), grey or RGBA.
    ``dpi``: the image's resolution, to express boxes in PDF points (``pixels * 72 / dpi``);
    default: the PIL image's own ``dpi`` info if it has one, else 72 (boxes in pixels).

    >>> from PIL import Image
    >>> lines = recognize_image(Image.open("scan.png"), dpi=300)   # doctest: +SKIP
    >>> lines[0].text, lines[0].box                                # doctest: +SKIP
    ('第一章 总则', (72.1, 70.8, 190.4, 88.0))

    Raises :class:`OcrUnavailable` when the engine is not installed.
    """
    if dpi is None:
        info_dpi = getattr(image, "info", {}).get("dpi") if hasattr(image, "info") else None
        dpi = float(info_dpi[0]) if info_dpi and info_dpi[0] else 72.0
    if dpi <= 0:
        raise ValueError(f"dpi must be positive, got {dpi}")
    bgr = _to_bgr(image)
    engine = load_engine()
    with _run_lock:
        result = engine(bgr)
    if result is None or getattr(result, "boxes", None) is None or not result.txts:
        return []

    height, width = bgr.shape[:2]
    scale = 72.0 / dpi
    lines: list[OcrLine] = []
    for quad, text, score in zip(result.boxes, result.txts, result.scores):
        text = str(text).strip()
        if not text:
            continue
        quad = np.asarray(quad, dtype=np.float64).reshape(-1, 2)
        # The detector's polygon is expanded a little ("unclip") and may poke past the image.
        x0, y0 = np.clip(quad.min(axis=0), 0, (width, height))
        x1, y1 = np.clip(quad.max(axis=0), 0, (width, height))
        if x1 <= x0 or y1 <= y0:
            continue
        box = (float(x0 * scale), float(y0 * scale), float(x1 * scale), float(y1 * scale))
        lines.append(OcrLine(text=text, box=box, confidence=float(score)))
    return order_lines(lines)


def ocr_pdf_page(path: str | Path, page_index: int, dpi: float = DEFAULT_DPI) -> list[OcrLine]:
    """Renders page ``page_index`` (0-based) of the PDF at ``path`` at ``dpi`` and recognises it.

    Boxes are in PDF points, origin top-left of the page as displayed.

    >>> lines = ocr_pdf_page("scan.pdf", 0)                   # doctest: +SKIP
    >>> print(lines_text(lines))                              # doctest: +SKIP

    Raises :class:`OcrUnavailable` when the engine (or pypdfium2) is not installed,
    ``IndexError`` for a page that does not exist, and pypdfium2's ``PdfiumError`` for a file
    that is not a readable PDF.
    """
    try:
        import pypdfium2 as pdfium
    except ImportError as exc:
        raise OcrUnavailable(f"pypdfium2 is not installed ({exc}); pip install pypdfium2") from exc
    load_engine()  # fail before rendering when the engine is missing

    pdf = pdfium.PdfDocument(str(path))
    try:
        count = len(pdf)
        if not 0 <= page_index < count:
            raise IndexError(f"{path}: no page index {page_index} (the PDF has {count} pages)")
        page = pdf[page_index]
        try:
            # Rendered as displayed (crop box, /Rotate applied), form fields included, on white.
            bitmap = page.render(scale=dpi / 72.0, may_draw_forms=True)
            image = bitmap.to_pil()
        finally:
            page.close()
    finally:
        pdf.close()
    return recognize_image(image, dpi=dpi)


def lines_text(lines: Sequence[OcrLine]) -> str:
    """The lines' text, one line each, in the given order."""
    return "\n".join(line.text for line in lines)


# ---------------------------------------------------------------------------------------------
# Reading order.

# A line wider than this share of the text block cannot be one column of a multi-column layout:
# left out when looking for the gaps between columns.
_WIDE_LINE = 0.55
# A gap between columns may be crossed by up to this share of the (narrow) lines, as long as
# fewer lines cross it than stand on either side: titles, centred headings, a page number.
_CROSSING_SHARE = 1 / 3
_BINS = 1024


def _rows(lines: Sequence[OcrLine]) -> list[OcrLine]:
    """Top to bottom; boxes that share a row (overlap vertically by half the smaller height:
    a line the detector cut in two) left to right."""
    ordered: list[OcrLine] = []
    row: list[OcrLine] = []
    row_top = row_bottom = 0.0
    for line in sorted(lines, key=lambda ln: (ln.box[1] + ln.box[3], ln.box[0])):
        if row:
            overlap = min(row_bottom, line.box[3]) - max(row_top, line.box[1])
            if overlap >= 0.5 * min(row_bottom - row_top, line.height):
                row.append(line)
                continue
            ordered.extend(sorted(row, key=lambda ln: ln.box[0]))
        row = [line]
        row_top, row_bottom = line.box[1], line.box[3]
    ordered.extend(sorted(row, key=lambda ln: ln.box[0]))
    return ordered


def _gutters(lines: Sequence[OcrLine]) -> list[tuple[float, float]]:
    """The vertical gaps between text columns, as (x_start, x_end), left to right."""
    left = min(ln.box[0] for ln in lines)
    right = max(ln.box[2] for ln in lines)
    block = right - left
    if block <= 0:
        return []
    narrow = [ln for ln in lines if ln.width <= _WIDE_LINE * block]
    if len(narrow) < 4:
        return []
    line_height = median(ln.height for ln in lines)
    # A gap between columns is at least most of a line high wide; narrower gaps are word spaces
    # the detector split a line at.
    min_gap = max(0.8 * line_height, 0.02 * block)

    step = block / _BINS
    coverage = np.zeros(_BINS, dtype=np.int32)
    for ln in narrow:
        a = int((ln.box[0] - left) / step)
        b = int(np.ceil((ln.box[2] - left) / step))
        coverage[max(a, 0) : min(b, _BINS)] += 1
    allowed = int(_CROSSING_SHARE * len(narrow))

    gutters: list[tuple[float, float]] = []
    # Gaps crossed by no line first, then by one, two, ...: each gap is found at the count of
    # lines that really cross it, bounded by the column lines on both sides; a wider stretch
    # found at a higher count around a gap already taken is that gap again, or a ragged edge.
    for allowed in range(int(_CROSSING_SHARE * len(narrow)) + 1):
        for i, j in _runs(coverage <= allowed):
            g0, g1 = left + i * step, left + j * step
            if g1 - g0 < min_gap or g0 <= left or g1 >= right:
                continue  # too narrow, or the margin outside the text
            if any(g0 < b and a < g1 for a, b in gutters):
                continue
            # A real column has lines of its own on both sides of the gap, more than cross it;
            # a ragged right edge (short lines of a single column) has none starting right of it.
            on_left = sum(1 for ln in narrow if ln.box[2] <= g0 + step)
            on_right = sum(1 for ln in narrow if ln.box[0] >= g1 - step)
            crossing = sum(1 for ln in lines if _crosses(ln, (g0, g1), line_height))
            if min(on_left, on_right) >= 2 and crossing < min(on_left, on_right):
                gutters.append((g0, g1))
    return sorted(gutters)


def _crosses(line: OcrLine, gutter: tuple[float, float], line_height: float) -> bool:
    """Whether a line belongs to neither column: it reaches a line height or more into both
    sides of the gap's middle (a title, a centred heading), or it stands in the gap (a page
    number). A detector box that only pokes into the gap (a punctuation mark taken into a
    column's line) stays with its column: it must not cut the page into blocks."""
    g0, g1 = gutter
    x0, x1 = line.box[0], line.box[2]
    if g0 <= (x0 + x1) / 2 <= g1:
        return True
    mid = (g0 + g1) / 2
    return min(mid - x0, x1 - mid) >= line_height


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """The [start, stop) index ranges where ``mask`` is true."""
    padded = np.concatenate(([False], mask, [False])).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return list(zip(edges[0::2].tolist(), edges[1::2].tolist()))


def order_lines(lines: Sequence[OcrLine]) -> list[OcrLine]:
    """Puts recognised lines in reading order.

    Single column: top to bottom (boxes on one row left to right). With columns (found as vertical
    gaps that at most a few lines cross): the page is cut into blocks at each line that crosses a
    gap (a title, a centred heading, a full-width paragraph); within a block the columns are read
    left to right, each top to bottom; the crossing lines are read between the blocks.
    Works in any unit, as long as all boxes share it.
    """
    lines = list(lines)
    if len(lines) < 2:
        return lines
    gutters = _gutters(lines)
    if not gutters:
        return _rows(lines)

    line_height = median(ln.height for ln in lines)
    mids = [(g0 + g1) / 2 for g0, g1 in gutters]
    spanning = [ln for ln in lines if any(_crosses(ln, g, line_height) for g in gutters)]
    spanning_ids = {id(ln) for ln in spanning}
    spanning = _rows(spanning)

    # Blocks: lines between one crossing line and the next (by vertical centre).
    cuts = [(ln.box[1] + ln.box[3]) / 2 for ln in spanning]
    blocks: list[list[OcrLine]] = [[] for _ in range(len(spanning) + 1)]
    for ln in lines:
        if id(ln) in spanning_ids:
            continue
        centre = (ln.box[1] + ln.box[3]) / 2
        blocks[sum(1 for c in cuts if c < centre)].append(ln)

    ordered: list[OcrLine] = []
    for index, block in enumerate(blocks):
        columns: list[list[OcrLine]] = [[] for _ in range(len(mids) + 1)]
        for ln in block:
            centre_x = (ln.box[0] + ln.box[2]) / 2
            columns[sum(1 for m in mids if m < centre_x)].append(ln)
        for column in columns:
            ordered.extend(_rows(column))
        if index < len(spanning):
            ordered.append(spanning[index])
    return ordered

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
(:func:`order_lines`, by the same rules as a PDF's text layer: ``pdf_layout.order_boxes``).

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
from typing import Any

import numpy as np

__all__ = [
    "DEFAULT_DPI",
    "OcrLine",
    "OcrUnavailable",
    "engine_info",
    "is_blank",
    "lines_text",
    "load_engine",
    "ocr_pdf_page",
    "order_lines",
    "recognize_image",
    "render_pdf_page",
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


# The detector finds the lines of a page that holds little (a title page, a chapter's last lines)
# unreliably: on an A4 page at 200 dpi with one short line of 12-pt Chinese it found nothing at
# all (box scores 0.3-0.5, under the 0.5 threshold) on 2 of 3 pages, while the same line cut out
# with half an inch of paper around it was read every time. So the image is cut to its ink (what
# is darker than _INK) plus a margin of _INK_MARGIN of its shorter side first; a full page of
# text loses only the paper around it.
_INK = 200
_INK_MARGIN = 0.05


def _ink_box(bgr: np.ndarray) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) in pixels: the image's ink with a margin, or the whole image."""
    height, width = bgr.shape[:2]
    ink = bgr.min(axis=2) < _INK
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    if not rows.size:
        return 0, 0, width, height
    margin = max(32, round(_INK_MARGIN * min(height, width)))
    return (max(0, int(cols[0]) - margin), max(0, int(rows[0]) - margin),
            min(width, int(cols[-1]) + 1 + margin), min(height, int(rows[-1]) + 1 + margin))


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
    height, width = bgr.shape[:2]
    left, top, right, bottom = _ink_box(bgr)
    with _run_lock:
        result = engine(np.ascontiguousarray(bgr[top:bottom, left:right]))
    if result is None or getattr(result, "boxes", None) is None or not result.txts:
        return []

    scale = 72.0 / dpi
    lines: list[OcrLine] = []
    for quad, text, score in zip(result.boxes, result.txts, result.scores):
        text = str(text).strip()
        if not text:
            continue
        quad = np.asarray(quad, dtype=np.float64).reshape(-1, 2) + (left, top)
        # The detector's polygon is expanded a little ("unclip") and may poke past the image.
        x0, y0 = np.clip(quad.min(axis=0), 0, (width, height))
        x1, y1 = np.clip(quad.max(axis=0), 0, (width, height))
        if x1 <= x0 or y1 <= y0:
            continue
        box = (float(x0 * scale), float(y0 * scale), float(x1 * scale), float(y1 * scale))
        lines.append(OcrLine(text=text, box=box, confidence=float(score)))
    return order_lines(lines)


def render_pdf_page(pdf: Any, page_index: int, dpi: float = DEFAULT_DPI) -> Any:
    """Page ``page_index`` (0-based) of a PDF rendered at ``dpi`` as an RGB PIL image, as
    displayed (crop box, /Rotate applied), form fields included, on white. ``pdf``: a path, or a
    ``pypdfium2.PdfDocument`` already open (left open). Raises ``IndexError`` for a page that
    does not exist, pypdfium2's ``PdfiumError`` for a file that is not a readable PDF."""
    import pypdfium2 as pdfium

    owned = not isinstance(pdf, pdfium.PdfDocument)
    doc = pdfium.PdfDocument(str(pdf)) if owned else pdf
    try:
        count = len(doc)
        if not 0 <= page_index < count:
            raise IndexError(f"{pdf}: no page index {page_index} (the PDF has {count} pages)")
        page = doc[page_index]
        try:
            bitmap = page.render(scale=dpi / 72.0, may_draw_forms=True)
            return bitmap.to_pil()
        finally:
            page.close()
    finally:
        if owned:
            doc.close()


def is_blank(image: Any, tolerance: int = 8) -> bool:
    """Whether a page image is empty: every pixel within ``tolerance`` of one grey level (all
    white, say). Such a page needs no recognition."""
    grey = np.asarray(image.convert("L") if hasattr(image, "convert") else image)
    return grey.size == 0 or int(grey.max()) - int(grey.min()) <= tolerance


def ocr_pdf_page(path: str | Path | Any, page_index: int, dpi: float = DEFAULT_DPI) -> list[OcrLine]:
    """Renders page ``page_index`` (0-based) of the PDF at ``path`` (or of a
    ``pypdfium2.PdfDocument`` already open) at ``dpi`` and recognises it.

    Boxes are in PDF points, origin top-left of the page as displayed.

    >>> lines = ocr_pdf_page("scan.pdf", 0)                   # doctest: +SKIP
    >>> print(lines_text(lines))                              # doctest: +SKIP

    Raises :class:`OcrUnavailable` when the engine (or pypdfium2) is not installed,
    ``IndexError`` for a page that does not exist, and pypdfium2's ``PdfiumError`` for a file
    that is not a readable PDF.
    """
    try:
        import pypdfium2  # noqa: F401
    except ImportError as exc:
        raise OcrUnavailable(f"pypdfium2 is not installed ({exc}); pip install pypdfium2") from exc
    load_engine()  # fail before rendering when the engine is missing
    image = render_pdf_page(path, page_index, dpi)
    return recognize_image(image, dpi=dpi)


def lines_text(lines: Sequence[OcrLine]) -> str:
    """The lines' text, one line each, in the given order."""
    return "\n".join(line.text for line in lines)


# ---------------------------------------------------------------------------------------------
# Reading order.


def order_lines(lines: Sequence[OcrLine]) -> list[OcrLine]:
    """Puts recognised lines in reading order, by the same column rules as the lines of a PDF's
    text layer (:func:`ingest.loaders.pdf_layout.order_boxes`: one implementation of both).

    Single column: top to bottom (boxes on one row, a line the detector cut in two, left to
    right). With columns (a vertical gutter that few lines cross, full columns on both sides):
    the left column wholly before the right one; a line that crosses the gutter (a title, a
    centred heading, a full-width paragraph, a page number) is read in its place between the
    column blocks above and below it. Works in any unit, as long as all boxes share it.
    """
    from ingest.loaders.pdf_layout import order_boxes

    lines = list(lines)
    return [lines[i] for i in order_boxes([ln.box for ln in lines])]

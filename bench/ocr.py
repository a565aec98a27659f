"""OCR accuracy and speed on rendered PDF pages, against each page's own text layer.

    python bench/ocr.py                         # generated pages, every engine installed
    python bench/ocr.py a.pdf b.pdf --max-pages 3
    python bench/ocr.py --engines rapidocr --threads 1 --dpi 150

Each page is rendered with pypdfium2 (as ingest.ocr does) and recognised by each engine; the
page's text layer, read with pypdfium2, is the reference. Pages without a text layer are skipped.

Engines (each run only when installed):
- ``rapidocr``: ingest.ocr, the project's OCR (RapidOCR 3, PP-OCRv6 small, onnxruntime);
- ``rapidocr-onnxruntime``: the older RapidOCR 1.4 package (PP-OCRv4 mobile models), run as
  ingest.ocr runs (no line-direction classifier, the same reading order); it conflicts with rapidocr's OpenCV wheel, so install it
  apart: ``pip install --no-deps --target DIR rapidocr-onnxruntime`` and run with
  ``PYTHONPATH=DIR``;
- ``tesseract``: the tesseract command (Debian: tesseract-ocr tesseract-ocr-chi-sim
  tesseract-ocr-chi-tra), languages chi_sim+chi_tra+eng, its own page layout analysis.

Figures: character accuracy = 1 - edit distance / reference length, whitespace removed on both
sides (it can drop below 0 when the output is much longer than the reference); ``acc_nfkc`` is
the same after NFKC folding (full-width ：，（） and half-width :,() count as equal). The edit
distance compares the whole page in order, so text read in the wrong order (columns
interleaved) costs accuracy too. Time per page is render + recognition, after a warm-up page
(model loading is reported apart as ``load_s``): wall seconds, and CPU seconds (all threads and
child processes together; less disturbed by other work on the machine).

Default pages (generated with reportlab into a temporary folder, A4):
zh-Hans 1 column (WenQuanYi Micro Hei, embedded) and 2 columns (STSong-Light, a CID font that is
not embedded: pdfium draws it with a system CJK font), zh-Hant 1 column (MSung-Light, CID) and 2
columns (WenQuanYi), English 1 column (Times-Roman); and when LibreOffice is installed a page
written as .docx (python-docx) and converted by ``soffice --headless`` (Noto CJK fonts, mixed
Chinese and English). Chinese text: CMRC 2018 dev passages (Cui et al. 2019, CC BY-SA 4.0,
../shared/data/cmrc2018/), Traditional through OpenCC; English: the hand-written English
questions of bench/data/. A short built-in text stands in when those files are missing.

The last line printed is a JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import unicodedata
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from ingest import ocr  # noqa: E402

CMRC_PATH = REPO.parent / "shared" / "data" / "cmrc2018" / "cmrc2018_dev.json"
ENGLISH_SOURCES = [REPO / "bench" / "data" / "crosslang_en.jsonl", REPO / "bench" / "data" / "offtopic.jsonl"]
WQY_FONT = Path("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc")

FALLBACK_ZH = (
    "本系统在本地回答关于中文和英文文档的问题，文档、向量和模型都留在用户自己的电脑上。"
    "扫描得到的PDF页面没有文字层，需要先经过光学字符识别，才能切分、嵌入并建立索引。"
    "识别结果按阅读顺序排列：从上到下，两栏的页面先读左栏，再读右栏。"
    "每一行都带有它在页面上的位置和置信度，以便在引用时指出原文所在之处。"
)
FALLBACK_EN = (
    "Scanned pages carry no text layer, so they are recognised before they are split and "
    "indexed. Each line keeps its position on the page and a confidence score. The engine runs "
    "offline on the CPU, with models that ship inside the installed package."
)


# ---------------------------------------------------------------------------------------------
# Scoring.


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance, one numpy row at a time (insertions by a running minimum)."""
    if not a:
        return len(b)
    if not b:
        return len(a)
    bb = np.frombuffer(b.encode("utf-32-le"), dtype=np.uint32)
    ar = np.arange(len(b) + 1, dtype=np.int64)
    prev = ar.copy()
    for i, ch in enumerate(a.encode("utf-32-le").decode("utf-32-le"), start=1):
        cost = (bb != ord(ch)).astype(np.int64)
        t = np.empty_like(prev)
        t[0] = i
        t[1:] = np.minimum(prev[1:] + 1, prev[:-1] + cost)
        prev = np.minimum.accumulate(t - ar) + ar
    return int(prev[-1])


_SPACE = re.compile(r"\s+")


def char_accuracy(hypothesis: str, reference: str, nfkc: bool = False) -> tuple[float, int, int]:
    """(accuracy, edit distance, reference length), whitespace ignored."""
    if nfkc:
        hypothesis = unicodedata.normalize("NFKC", hypothesis)
        reference = unicodedata.normalize("NFKC", reference)
    hyp = _SPACE.sub("", hypothesis)
    ref = _SPACE.sub("", reference)
    dist = edit_distance(hyp, ref)
    return (1.0 - dist / len(ref) if ref else 0.0), dist, len(ref)


# ---------------------------------------------------------------------------------------------
# Test pages.


def _chinese_passages() -> list[str]:
    try:
        data = json.loads(CMRC_PATH.read_text(encoding="utf-8"))["data"]
        return [d["paragraphs"][0]["context"].strip() for d in data]
    except (OSError, KeyError, ValueError):
        return [FALLBACK_ZH] * 40


def _english_paragraphs() -> list[str]:
    sentences: list[str] = []
    for path in ENGLISH_SOURCES:
        try:
            for row in path.read_text(encoding="utf-8").splitlines():
                item = json.loads(row)
                if item.get("lang") == "en" and len(item.get("question", "")) > 25:
                    sentences.append(item["question"])
        except (OSError, ValueError):
            pass
    if not sentences:
        return [FALLBACK_EN] * 20
    return [" ".join(sentences[i : i + 5]) for i in range(0, len(sentences), 5)]


def _to_traditional(texts: list[str]) -> list[str]:
    try:
        from opencc import OpenCC

        cc = OpenCC("s2t")
        return [cc.convert(t) for t in texts]
    except ImportError:
        return texts


_TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9'’.,;:!?%)\-]*|\s+|.", re.DOTALL)


def _wrap(text: str, font: str, size: float, width: float, first_width: float | None = None) -> list[str]:
    """Greedy line breaking: CJK after any character, Latin between words."""
    from reportlab.pdfbase.pdfmetrics import stringWidth

    lines: list[str] = []
    current = ""
    for token in _TOKEN.findall(text):
        limit = first_width if (first_width is not None and not lines) else width
        trial = current + token
        if current and stringWidth(trial, font, size) > limit:
            lines.append(current.rstrip())
            current = token.lstrip()
        else:
            current = trial
    if current.strip():
        lines.append(current.rstrip())
    return lines


def _register_fonts() -> dict[str, str]:
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.cidfonts import UnicodeCIDFont
    from reportlab.pdfbase.ttfonts import TTFont

    fonts = {}
    for name in ("STSong-Light", "MSung-Light"):
        pdfmetrics.registerFont(UnicodeCIDFont(name))
        fonts[name] = name
    if WQY_FONT.is_file():
        pdfmetrics.registerFont(TTFont("WQYMicroHei", str(WQY_FONT), subfontIndex=0))
        fonts["wqy"] = "WQYMicroHei"
    else:  # the CID fonts still give CJK pages
        fonts["wqy"] = "STSong-Light"
    return fonts


def make_page(
    path: Path,
    title: str,
    paragraphs: list[str],
    font: str,
    *,
    columns: int = 1,
    size: float = 10.5,
    indent_chars: int = 2,
) -> Path:
    """One A4 page: a full-width title, then paragraphs in ``columns`` columns until the page is
    full. Drawn in reading order, so the text layer is in reading order too."""
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfbase.pdfmetrics import stringWidth
    from reportlab.pdfgen import canvas

    page_w, page_h = A4
    margin, gutter, leading = 56.0, 24.0, size * 1.55
    col_w = (page_w - 2 * margin - gutter * (columns - 1)) / columns
    c = canvas.Canvas(str(path), pagesize=A4)
    c.setFont(font, 16)
    c.drawString(margin, page_h - margin - 16, title)
    top = page_h - margin - 16 - 24
    bottom = margin
    column, y = 0, top
    indent = stringWidth("中" * indent_chars, font, size) if indent_chars else 0.0
    c.setFont(font, size)
    for para in paragraphs:
        wrapped = _wrap(para, font, size, col_w, first_width=col_w - indent)
        for number, line in enumerate(wrapped):
            dx = indent if number == 0 else 0.0
            if y < bottom:
                column += 1
                y = top
                if column >= columns:
                    c.save()
                    return path
            c.drawString(margin + column * (col_w + gutter) + dx, y, line)
            y -= leading
        y -= leading * 0.4
    c.save()
    return path


def make_docx_page(folder: Path, zh: list[str], en: list[str]) -> Path | None:
    """A page written by a real editor: .docx (python-docx) converted by LibreOffice."""
    soffice = shutil.which("soffice") or shutil.which("libreoffice")
    if soffice is None:
        return None
    try:
        import docx
        from docx.oxml.ns import qn
        from docx.shared import Pt
    except ImportError:
        return None
    document = docx.Document()
    style = document.styles["Normal"]
    style.font.name = "Noto Serif CJK SC"
    style.font.size = Pt(11)
    style.element.rPr.rFonts.set(qn("w:eastAsia"), "Noto Sans CJK SC")
    document.add_heading("办公文档 Office document：扫描件识别测试", level=1)
    for i in range(4):
        document.add_paragraph(zh[i][:260])
        document.add_paragraph(en[i % len(en)])
    source = folder / "docx-mixed.docx"
    document.save(str(source))
    profile = folder / "lo-profile"
    cmd = [
        soffice, f"-env:UserInstallation=file://{profile}", "--headless",
        "--convert-to", "pdf", "--outdir", str(folder), str(source),
    ]
    try:
        subprocess.run(cmd, check=True, capture_output=True, timeout=180)
    except (subprocess.SubprocessError, OSError) as exc:
        print(f"LibreOffice conversion failed, page left out: {exc}", file=sys.stderr)
        return None
    pdf = folder / "docx-mixed.pdf"
    return pdf if pdf.is_file() else None


def default_pdfs(folder: Path) -> list[Path]:
    fonts = _register_fonts()
    zh = _chinese_passages()
    zh_t = _to_traditional(zh[100:140])
    en = _english_paragraphs()
    pages = [
        make_page(folder / "zh-Hans-1col.pdf", "第一章 战国无双与光荣公司的游戏", zh[0:20], fonts["wqy"]),
        make_page(folder / "zh-Hans-2col.pdf", "第二章 铁路、城市与人物（两栏）", zh[20:60], fonts["STSong-Light"],
                  columns=2),
        make_page(folder / "zh-Hant-1col.pdf", "第三章 歷史與地理（繁體）", zh_t[0:20], fonts["MSung-Light"]),
        make_page(folder / "zh-Hant-2col.pdf", "第四章 人物與事件（繁體兩欄）", zh_t[20:40], fonts["wqy"], columns=2),
        make_page(folder / "en-1col.pdf", "Chapter 5: Questions about the passages", en, "Times-Roman",
                  size=11, indent_chars=0),
    ]
    docx_pdf = make_docx_page(folder, zh[200:210], en)
    if docx_pdf is not None:
        pages.append(docx_pdf)
    return pages


# ---------------------------------------------------------------------------------------------
# Engines: each takes (PIL image, dpi) and returns the page's text in reading order.


def _engine_rapidocr(threads: int) -> tuple[Callable, dict]:
    ocr.reset_engine()
    ocr.load_engine(threads=threads)
    info = ocr.engine_info()
    return (lambda image, dpi: ocr.lines_text(ocr.recognize_image(image, dpi=dpi))), info


def _engine_rapidocr_v1(threads: int) -> tuple[Callable, dict]:
    import rapidocr_onnxruntime
    from rapidocr_onnxruntime import RapidOCR

    engine = RapidOCR(intra_op_num_threads=threads, inter_op_num_threads=1)

    def run(image, dpi):
        # Without the line-direction classifier, as ingest.ocr runs (it drops upright lines).
        bgr = np.ascontiguousarray(np.asarray(image.convert("RGB"))[:, :, ::-1])
        result, _ = engine(bgr, use_cls=False)
        lines = []
        for quad, text, score in result or []:
            q = np.asarray(quad, dtype=float)
            box = (q[:, 0].min(), q[:, 1].min(), q[:, 0].max(), q[:, 1].max())
            lines.append(ocr.OcrLine(text=text, box=tuple(v * 72 / dpi for v in box), confidence=float(score)))
        return ocr.lines_text(ocr.order_lines(lines))

    version = getattr(rapidocr_onnxruntime, "__version__", None)
    if version is None:
        from importlib.metadata import version as dist_version

        version = dist_version("rapidocr-onnxruntime")
    return run, {"engine": "rapidocr-onnxruntime", "version": version, "models": "PP-OCRv4 mobile", "threads": threads}


def _engine_tesseract(threads: int, langs: str) -> tuple[Callable, dict]:
    exe = shutil.which("tesseract")
    if exe is None:
        raise FileNotFoundError("tesseract")
    env = dict(os.environ, OMP_THREAD_LIMIT=str(threads))
    version = subprocess.run([exe, "--version"], capture_output=True, text=True, check=True).stdout.split("\n")[0]
    listed = subprocess.run([exe, "--list-langs"], capture_output=True, text=True, check=True).stdout
    missing = set(langs.split("+")) - set(listed.split())
    if missing:
        raise FileNotFoundError(f"tesseract languages {sorted(missing)}")

    def run(image, dpi):
        with tempfile.NamedTemporaryFile(suffix=".png") as tmp:
            image.save(tmp.name)
            out = subprocess.run(
                [exe, tmp.name, "stdout", "-l", langs, "--dpi", str(int(dpi))],
                capture_output=True, text=True, env=env, check=True,
            )
        return out.stdout

    return run, {"engine": "tesseract", "version": version, "langs": langs, "threads": threads}


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (tesseract runs as a child): a
    figure that another busy process on the machine disturbs less than wall time."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def render(path: Path, index: int, dpi: float):
    import pypdfium2 as pdfium

    pdf = pdfium.PdfDocument(str(path))
    try:
        page = pdf[index]
        image = page.render(scale=dpi / 72.0, may_draw_forms=True).to_pil()
        text = page.get_textpage().get_text_range()
        return image, text
    finally:
        pdf.close()


def page_count(path: Path) -> int:
    import pypdfium2 as pdfium

    pdf = pdfium.PdfDocument(str(path))
    try:
        return len(pdf)
    finally:
        pdf.close()


# ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pdfs", nargs="*", type=Path, help="PDFs with a text layer (default: generated pages)")
    parser.add_argument("--engines", default="rapidocr,rapidocr-onnxruntime,tesseract")
    parser.add_argument("--dpi", type=float, default=ocr.DEFAULT_DPI)
    parser.add_argument("--threads", type=int, default=None, help="default: the CPUs this process may use")
    parser.add_argument("--max-pages", type=int, default=3, help="pages per given PDF")
    parser.add_argument("--tesseract-langs", default="chi_sim+chi_tra+eng")
    parser.add_argument("--keep", type=Path, default=None, help="write the generated PDFs and OCR text here")
    parser.add_argument("--show-text", action="store_true", help="print each engine's text")
    args = parser.parse_args(argv)

    threads = args.threads or ocr._cpu_count()
    workdir = Path(tempfile.mkdtemp(prefix="ocr-bench-"))
    try:
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
        pdfs = args.pdfs or default_pdfs(args.keep or workdir)
        pages = []
        for pdf in pdfs:
            for index in range(min(page_count(pdf), args.max_pages)):
                image, reference = render(pdf, index, args.dpi)
                if not _SPACE.sub("", reference):
                    print(f"{pdf.name} p{index + 1}: no text layer, skipped", file=sys.stderr)
                    continue
                pages.append((f"{pdf.stem}#{index + 1}", pdf, index, reference))

        makers = {
            "rapidocr": lambda: _engine_rapidocr(threads),
            "rapidocr-onnxruntime": lambda: _engine_rapidocr_v1(threads),
            "tesseract": lambda: _engine_tesseract(threads, args.tesseract_langs),
        }
        results: dict[str, dict] = {}
        skipped: dict[str, str] = {}
        for name in [e.strip() for e in args.engines.split(",") if e.strip()]:
            if name not in makers:
                parser.error(f"unknown engine {name!r}; choose from {', '.join(makers)}")
            t0 = time.perf_counter()
            try:
                run, info = makers[name]()
                warm_image, _ = render(pages[0][1], pages[0][2], args.dpi)
                run(warm_image, args.dpi)  # warm-up: sessions, thread pools, lazy model parts
            except (ImportError, FileNotFoundError, ocr.OcrUnavailable) as exc:
                skipped[name] = f"unavailable: {exc}"
                print(f"{name}: skipped ({skipped[name]})", file=sys.stderr)
                continue
            load_s = time.perf_counter() - t0
            per_page, total_s, total_cpu = {}, 0.0, 0.0
            total_dist = total_len = total_dist_n = total_len_n = 0
            for label, pdf, index, reference in pages:
                t, cpu = time.perf_counter(), _cpu_seconds()
                image, _ = render(pdf, index, args.dpi)
                text = run(image, args.dpi)
                seconds = time.perf_counter() - t
                cpu_seconds = _cpu_seconds() - cpu
                acc, dist, length = char_accuracy(text, reference)
                acc_n, dist_n, length_n = char_accuracy(text, reference, nfkc=True)
                per_page[label] = {"acc": round(acc, 4), "acc_nfkc": round(acc_n, 4), "s": round(seconds, 3),
                                   "cpu_s": round(cpu_seconds, 3), "ref_chars": length}
                total_s += seconds
                total_cpu += cpu_seconds
                total_dist += dist
                total_len += length
                total_dist_n += dist_n
                total_len_n += length_n
                if args.show_text:
                    print(f"--- {name} {label}\n{text}\n")
                if args.keep:
                    (args.keep / f"{label.replace('#', '-p')}.{name}.txt").write_text(text, encoding="utf-8")
            results[name] = {
                "info": info,
                "char_accuracy": round(1 - total_dist / total_len, 4),
                "char_accuracy_nfkc": round(1 - total_dist_n / total_len_n, 4),
                "min_page_accuracy": round(min(p["acc"] for p in per_page.values()), 4),
                "s_per_page": round(total_s / len(pages), 3),
                "cpu_s_per_page": round(total_cpu / len(pages), 3),
                "pages_per_s": round(len(pages) / total_s, 3),
                "load_s": round(load_s, 2),
                "pages": per_page,
            }

        labels = [p[0] for p in pages]
        width = max(len(label) for label in labels + ["page"])
        names = list(results)
        print(f"\nOCR bench: {len(pages)} pages at {args.dpi:g} dpi, {threads} thread(s), {os.cpu_count()} CPUs")
        header = f"{'page':<{width}} {'chars':>6} " + " ".join(f"{n[:22]:>22}" for n in names)
        print(header)
        print(f"{'':<{width}} {'':>6} " + " ".join(f"{'acc / nfkc / s':>22}" for _ in names))
        for label, _, _, _ in pages:
            cells = []
            for n in names:
                p = results[n]["pages"][label]
                cells.append(f"{p['acc']:.3f} / {p['acc_nfkc']:.3f} / {p['s']:5.2f}".rjust(22))
            ref_chars = results[names[0]]["pages"][label]["ref_chars"] if names else 0
            print(f"{label:<{width}} {ref_chars:>6} " + " ".join(cells))
        for key, fmt in (("char_accuracy", "{:.4f}"), ("char_accuracy_nfkc", "{:.4f}"), ("s_per_page", "{:.2f}"),
                         ("cpu_s_per_page", "{:.2f}"), ("pages_per_s", "{:.3f}"), ("load_s", "{:.2f}")):
            print(f"{key:<{width + 7}} " + " ".join(f"{fmt.format(results[n][key]):>22}" for n in names))
        for n, why in skipped.items():
            print(f"{n}: {why}")
        summary = {
            "bench": "ocr",
            "dpi": args.dpi,
            "threads": threads,
            "cpus": os.cpu_count(),
            "pages": labels,
            "engines": results,
            "skipped": skipped,
        }
        print(json.dumps(summary, ensure_ascii=False))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Scanned papers: does a Chinese paper without a text layer find the right page as often as its
text version?

    .venv/bin/python bench/scanned.py              # build (once), ingest (once), ask, print
    .venv/bin/python bench/scanned.py --rebuild    # write the documents again (and re-OCR them)
    .venv/bin/python bench/scanned.py --distractors 400   # harder: 400 other passages in both KBs

Goal: a scanned Chinese paper (every page an image, no text layer), ingested offline, finds the
right page nearly as often as its text version: scanned page hit@5 within 5 points of the text
version's, on our own questions.

Documents (cached under bench/out/scanned/docs/): no real paper can be downloaded here, so four
paper-like Chinese documents are written with a real editor. Each holds 10 CMRC 2018 dev passages
(the first 40 passages that have a question in bench/data/paraphrase_zh.jsonl, in file order): a
title, an author line, an abstract and key words (naming no passage), one numbered section per passage (its CMRC
title as the heading), a running head with a rule under it and ``第 N 页`` in the footer (a PAGE
field). Papers 2 and 4 set their sections in two columns (10.5 pt, a ``w:cols w:num="2"``
section after the single-column title block); papers 1 and 3 in one column (12 pt, 1.5 lines);
paper 1 ends with a GB/T 7714 reference list. python-docx writes .docx, LibreOffice
(``soffice --headless --convert-to pdf``) makes the text PDF, and the scanned PDF is every page
of it rendered at 200 dpi by pypdfium2 and saved by Pillow as an image-only PDF (JPEG pages;
checked to have no text layer). The files are only written when missing (or with
``--rebuild``), so the knowledge bases below are not rebuilt: ingestion knows a file by its
content hash, and a new LibreOffice export differs in its time stamps.

Questions: every CMRC question of the passages used (each is about its own passage), and the
paraphrased questions of bench/data/paraphrase_zh.jsonl about them. The gold pages of a question
are the pages of the TEXT PDF its passage lies on (from the page where the passage's first 30
characters are found by ``pdf_layout.read_layout`` + ``PageLayout.find`` to the page of its last
30; a passage across a page break has two, and either counts). The scan has the same pages.
Halves: by passage, as bench/data/README.md sets them (``dev`` when the passage's position in
cmrc2018_dev.json // 10 is even, else ``test``); the paraphrased questions carry that split.
Nothing here is tuned; both halves are reported.

Knowledge bases (bench/out/scanned/kb_text, kb_scan): the product's own (``rag.api.KnowledgeBase``,
default settings but for the store folder and relevance threshold 0, so no question is refused
and every one is ranked). With four papers alone the questions nearly always find their page
(the figures saturate); ``--distractors N`` also puts the first N CMRC dev passages not in the
papers, as .txt files, into both (kb_text_dN, kb_scan_dN; the papers go in first and alone are
timed), so that the questions have something to be confused with. Ingestion is timed; OCR of the scans (ingest.ocr, ~3-5 s a page on 2
cores) dominates. A re-run finds the files unchanged and skips them; the times printed are then
those of the run that ingested them (bench/out/scanned/ingest_times.json).

Measured, per question set and half, text vs scanned:
* page hit@1 / hit@5: a hit of ``retriever.search(q, k=10)`` from the passage's document on a
  gold page at rank <= 1 / <= 5, counting every hit (chunks, not distinct documents); and the
  difference scanned - text in points (the goal: hit@5 difference >= -5);
* answer@5: a hit from the passage's document among the first 5 that holds the answer span
  (NFKC, whitespace ignored): the page can be found while OCR has garbled the answer itself;
* OCR character accuracy of each document: the scanned knowledge base's text (its chunks put
  together again, as ``KnowledgeBase.document_texts`` does) against the text knowledge base's,
  1 - edit distance / length with whitespace removed (bench/ocr.py's measure; ``nfkc``: after
  NFKC folding, so half-width and full-width punctuation count as equal); pages below 0.95 are
  listed;
* ingestion seconds per page of each knowledge base;
* checks of the text PDF as the layout reader sees it: pages whose footer ``第 N 页`` was not
  set aside as a page number or says another N; and scanned pages whose indexed text still holds
  the running head (OCR'd furniture left in).

A table is printed; the last line is one JSON object with all figures.

Data: CMRC 2018 (Cui et al., 2019, CC BY-SA 4.0), ../shared/data/cmrc2018/; the documents made
from it are under the same licence.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import unicodedata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.ocr import char_accuracy
from bench.retrieval import DATA

OUT = ROOT / "bench" / "out" / "scanned"
DOCS = OUT / "docs"
PARAPHRASE = ROOT / "bench" / "data" / "paraphrase_zh.jsonl"
SCAN_DPI = 200
GOAL_POINTS = 5.0  # scanned hit@5 may be at most this many points below the text version's
SNIPPET = 30  # characters of a passage's start / end looked up to find its pages
PASSAGES_PER_PAPER = 10
# Bump when the documents' content or layout changes, so that cached files are written again.
LAYOUT_VERSION = 2

# (file stem, title, columns, GB/T 7714 reference list at the end)
PAPERS = [
    ("paper1", "中文百科段落选编（一）：铁路、湖泊与卫星", 1, True),
    ("paper2", "中文百科段落选编（二）：庙宇、化学与舰船", 2, False),
    ("paper3", "中文百科段落选编（三）：历史、生物与城市", 1, False),
    ("paper4", "中文百科段落选编（四）：足球、车站与艺人", 2, False),
]
REFERENCES = [  # real works, written in GB/T 7714-2015 style
    ("[1] CUI Y, LIU T, CHE W, et al. A span-extraction dataset for Chinese machine reading "
     "comprehension[C]//Proceedings of EMNLP-IJCNLP 2019. Hong Kong, China: Association for "
     "Computational Linguistics, 2019: 5883-5889."),
    ("[2] RAJPURKAR P, ZHANG J, LOPYREV K, et al. SQuAD: 100,000+ questions for machine "
     "comprehension of text[C]//Proceedings of EMNLP 2016. Austin, Texas: Association for "
     "Computational Linguistics, 2016: 2383-2392."),
    ("[3] DEVLIN J, CHANG M W, LEE K, et al. BERT: pre-training of deep bidirectional transformers "
     "for language understanding[C]//Proceedings of NAACL-HLT 2019. Minneapolis, Minnesota: "
     "Association for Computational Linguistics, 2019: 4171-4186."),
    "[4] 车万翔, 郭江, 崔一鸣. 自然语言处理：基于预训练模型的方法[M]. 北京: 电子工业出版社, 2021.",
    ("[5] 全国信息与文献标准化技术委员会. 信息与文献 参考文献著录规则: GB/T 7714—2015[S]. 北京: "
     "中国标准出版社, 2015."),
]
SERIF, SANS = "Noto Serif CJK SC", "Noto Sans CJK SC"
RUNNING_HEAD = re.compile(r"中文百科段落选编\W?第\d篇|alpaca-docqa扫描件检索基准")  # NFKC, no spaces


def log(*a) -> None:
    print(*a, file=sys.stderr, flush=True)


# -- passages and questions ---------------------------------------------------------------------


def split_of(position: int) -> str:
    """bench/data/README.md's rule: a passage is in the same half in every set."""
    return "dev" if (position // 10) % 2 == 0 else "test"


def chosen_passages() -> list[list[dict]]:
    """The passages of each paper: the first 40 with a paraphrased question, in file order (so
    that the second question set covers them all; positions 3, 13, 23, ...: dev and test
    alternate), ten a paper."""
    data = json.loads(DATA.read_text(encoding="utf-8"))["data"]
    position = {a["paragraphs"][0]["id"]: i for i, a in enumerate(data)}
    with_paraphrase = sorted({position[json.loads(line)["passage_id"]]
                              for line in PARAPHRASE.read_text(encoding="utf-8").splitlines() if line})
    used = with_paraphrase[: PASSAGES_PER_PAPER * len(PAPERS)]
    passages = []
    for p in used:
        para = data[p]["paragraphs"][0]
        passages.append({"position": p, "id": para["id"], "title": data[p]["title"],
                         "context": para["context"].strip(), "qas": para["qas"]})
    n = PASSAGES_PER_PAPER
    return [passages[i * n:(i + 1) * n] for i in range(len(PAPERS))]


# -- writing the documents ----------------------------------------------------------------------


def _font(target, name: str, size: float | None = None, bold: bool | None = None) -> None:
    """Set a style's or run's font for Latin and East Asian text alike (python-docx sets the
    Latin one only, and the default template's theme fonts would win over it in LibreOffice)."""
    from docx.oxml.ns import qn
    from docx.shared import Pt, RGBColor

    target.font.name = name
    if size:
        target.font.size = Pt(size)
    if bold is not None:
        target.font.bold = bold
    target.font.color.rgb = RGBColor(0, 0, 0)
    rpr = target.element.get_or_add_rPr()
    fonts = rpr.get_or_add_rFonts()
    for attr in ("w:asciiTheme", "w:hAnsiTheme", "w:eastAsiaTheme", "w:cstheme"):
        fonts.attrib.pop(qn(attr), None)
    fonts.set(qn("w:eastAsia"), name)


def _page_field(paragraph) -> None:
    """A PAGE field (begin / instruction / separate / shown value / end), as Word writes it."""
    from docx.oxml import OxmlElement
    from docx.oxml.ns import qn

    def char(kind: str) -> None:
        el = OxmlElement("w:fldChar")
        el.set(qn("w:fldCharType"), kind)
        paragraph.add_run()._r.append(el)

    char("begin")
    instr = OxmlElement("w:instrText")
    instr.set(qn("xml:space"), "preserve")
    instr.text = " PAGE "
    paragraph.add_run()._r.append(instr)
    char("separate")
    paragraph.add_run("1")
    char("end")


def _rule_below(paragraph) -> None:
    """A thin line under the running head, as journals print it."""
    from docx.oxml import OxmlElement
    from docx.oxml.ns import qn

    borders = OxmlElement("w:pBdr")
    bottom = OxmlElement("w:bottom")
    for k, v in (("w:val", "single"), ("w:sz", "6"), ("w:space", "1"), ("w:color", "000000")):
        bottom.set(qn(k), v)
    borders.append(bottom)
    paragraph._p.get_or_add_pPr().append(borders)


def write_docx(path: Path, number: int, title: str, columns: int, references: bool,
               passages: list[dict]) -> None:
    import docx
    from docx.enum.section import WD_SECTION
    from docx.enum.text import WD_ALIGN_PARAGRAPH
    from docx.oxml import OxmlElement
    from docx.oxml.ns import qn
    from docx.shared import Mm, Pt

    body_pt = 10.5 if columns == 2 else 12.0  # 五号 in two columns, 小四 in one, as journals do
    document = docx.Document()
    document.core_properties.title = title
    document.core_properties.author = "alpaca-docqa bench/scanned.py"
    styles = document.styles
    _font(styles["Normal"], SERIF, body_pt)
    for name, size in (("Title", 18), ("Heading 1", 14 if columns == 1 else 12)):
        _font(styles[name], SANS, size, bold=True)
    styles["Normal"].paragraph_format.line_spacing = 1.5 if columns == 1 else 1.15
    section = document.sections[0]
    section.page_width, section.page_height = Mm(210), Mm(297)
    section.top_margin = section.bottom_margin = Mm(25)
    section.left_margin = section.right_margin = Mm(25 if columns == 2 else 30)

    head = section.header.paragraphs[0]
    head.text = f"中文百科段落选编 · 第 {number} 篇                    alpaca-docqa 扫描件检索基准"
    head.alignment = WD_ALIGN_PARAGRAPH.CENTER
    _font(head.runs[0], SERIF, 9)
    _rule_below(head)
    foot = section.footer.paragraphs[0]
    foot.alignment = WD_ALIGN_PARAGRAPH.CENTER
    foot.add_run("第 ")
    _page_field(foot)
    foot.add_run(" 页")
    for run in foot.runs:
        _font(run, SERIF, 9)

    # Title block: one column across the page, as on a paper's first page.
    t = document.add_paragraph(title, style="Title")
    t.alignment = WD_ALIGN_PARAGRAPH.CENTER
    a = document.add_paragraph("alpaca-docqa 基准测试组\n（据 CMRC 2018 开发集段落排版，CC BY-SA 4.0）")
    a.alignment = WD_ALIGN_PARAGRAPH.CENTER
    abstract = document.add_paragraph()
    _font(abstract.add_run("摘　要："), SANS, 10.5, bold=True)
    _font(abstract.add_run(
        # No passage titles here: a question about a passage must not find page 1 by the abstract.
        f"本文按论文格式排版了 CMRC 2018 中文机器阅读理解开发集中的 {len(passages)} 篇百科段落，"
        "每节一篇，正文照录原段落，用于检验扫描件经光学字符识别入库之后能否检索到正确的页面。"),
        SERIF, 10.5)
    keywords = document.add_paragraph()
    _font(keywords.add_run("关键词："), SANS, 10.5, bold=True)
    _font(keywords.add_run("扫描件；光学字符识别；文档检索；百科段落"), SERIF, 10.5)

    if columns == 2:
        # A continuous section break; the new (last) section's sectPr gets two columns.
        body = document.add_section(WD_SECTION.CONTINUOUS)
        cols = body._sectPr.find(qn("w:cols"))
        if cols is None:
            cols = OxmlElement("w:cols")
            body._sectPr.append(cols)
        cols.set(qn("w:num"), "2")
        cols.set(qn("w:space"), "425")  # 0.75 cm between the columns (twips)

    for i, p in enumerate(passages, start=1):
        document.add_paragraph(f"{i} {p['title']}", style="Heading 1")
        para = document.add_paragraph(p["context"])
        para.paragraph_format.first_line_indent = Pt(2 * body_pt)  # two characters, Chinese style
        para.alignment = WD_ALIGN_PARAGRAPH.JUSTIFY
    if references:
        document.add_paragraph("参考文献", style="Heading 1")
        for entry in REFERENCES:
            ref = document.add_paragraph()
            _font(ref.add_run(entry), SERIF, 9)
            ref.paragraph_format.line_spacing = 1.15
            ref.paragraph_format.left_indent = Pt(18)
            ref.paragraph_format.first_line_indent = Pt(-18)  # hanging indent for [n]
    document.save(str(path))


def to_pdf(source: Path, outdir: Path) -> Path:
    soffice = shutil.which("soffice") or shutil.which("libreoffice")
    if soffice is None:
        sys.exit("LibreOffice (soffice) is needed to write the documents")
    with tempfile.TemporaryDirectory() as profile:  # its own profile: no clash with a running one
        subprocess.run([soffice, f"-env:UserInstallation=file://{profile}", "--headless",
                        "--convert-to", "pdf", "--outdir", str(outdir), str(source)],
                       check=True, capture_output=True, timeout=300)
    pdf = outdir / (source.stem + ".pdf")
    if not pdf.is_file():
        sys.exit(f"LibreOffice wrote no PDF for {source}")
    return pdf


def scan(pdf: Path, out: Path) -> None:
    """Every page drawn at SCAN_DPI and saved as an image-only PDF (Pillow stores each page as a
    JPEG, much as a scanner's PDF does)."""
    import pypdfium2 as pdfium

    doc = pdfium.PdfDocument(str(pdf))
    try:
        images = [page.render(scale=SCAN_DPI / 72).to_pil().convert("RGB") for page in doc]
    finally:
        doc.close()
    images[0].save(str(out), "PDF", resolution=float(SCAN_DPI), save_all=True, append_images=images[1:])


def text_chars(pdf: Path) -> int:
    """Characters in the PDF's text layer, all pages (0 for a true scan)."""
    import pypdfium2 as pdfium

    doc = pdfium.PdfDocument(str(pdf))
    try:
        total = 0
        for page in doc:
            tp = page.get_textpage()
            total += tp.count_chars()
            tp.close()
        return total
    finally:
        doc.close()


def build_documents(papers: list[list[dict]], rebuild: bool) -> None:
    """docs/text/paperN.pdf and docs/scan/paperN.pdf, written when missing or stale."""
    stamp = hashlib.sha256(json.dumps([LAYOUT_VERSION, PAPERS, REFERENCES, SCAN_DPI,
                                       [[p["id"] for p in ps] for ps in papers]],
                                      ensure_ascii=False).encode()).hexdigest()[:16]
    stamp_file = DOCS / "stamp"
    expected = [DOCS / kind / f"{stem}.pdf" for stem, *_ in PAPERS for kind in ("text", "scan")]
    if not rebuild and stamp_file.exists() and stamp_file.read_text() == stamp and all(p.exists() for p in expected):
        return
    for kind in ("docx", "text", "scan"):
        (DOCS / kind).mkdir(parents=True, exist_ok=True)
    for n, ((stem, title, columns, refs), passages) in enumerate(zip(PAPERS, papers), start=1):
        source = DOCS / "docx" / f"{stem}.docx"
        write_docx(source, n, title, columns, refs, passages)
        pdf = to_pdf(source, DOCS / "text")
        scan(pdf, DOCS / "scan" / f"{stem}.pdf")
        chars = text_chars(DOCS / "scan" / f"{stem}.pdf")
        if chars:
            sys.exit(f"the scanned {stem}.pdf has a text layer ({chars} characters)")
        log(f"  wrote {stem}: text PDF + scan")
    stamp_file.write_text(stamp)


# -- gold pages from the text PDF ------------------------------------------------------------------


def locate(layouts, snippet: str) -> int | None:
    """1-based page of the first page layout holding ``snippet`` (whitespace ignored)."""
    for layout in layouts:
        if layout.find(snippet) is not None:
            return layout.page_index + 1
    return None


def gold_pages(pdf: Path, passages: list[dict]) -> tuple[dict[str, list[int]], list[str]]:
    """Pages of each passage in the text PDF, and passages whose start or end was not found."""
    from ingest.loaders.pdf_layout import read_layout

    layouts = read_layout(pdf)
    pages, missing = {}, []
    for p in passages:
        text = "".join(p["context"].split())
        first = locate(layouts, text[:SNIPPET]) or locate(layouts, text[: SNIPPET // 2])
        last = locate(layouts, text[-SNIPPET:]) or locate(layouts, text[-SNIPPET // 2:])
        if first is None or last is None:
            missing.append(f"{pdf.stem}:{p['id']}")
        found = [x for x in (first, last) if x is not None]
        pages[p["id"]] = list(range(min(found), max(found) + 1)) if found else []
    return pages, missing


def footer_check(pdf: Path) -> list[str]:
    """Pages of the text PDF whose footer ``第 N 页`` the layout reader did not set aside, or
    where N is not the PDF's own page number (so a hit's page and the printed one would differ)."""
    from ingest.loaders.pdf_layout import read_layout

    problems = []
    for layout in read_layout(pdf):
        n = layout.page_index + 1
        printed = [m.group(1) for ln in layout.header_footer_lines
                   if (m := re.fullmatch(r"第\s*(\d+)\s*页", "".join(ln.text.split())))]
        if not printed:
            problems.append(f"{pdf.stem} p{n}: footer not set aside")
        elif printed[0] != str(n):
            problems.append(f"{pdf.stem} p{n}: footer says {printed[0]}")
    return problems


def questions(papers: list[list[dict]], gold: dict[str, dict[str, list[int]]]) -> list[dict]:
    out = []
    by_id = {}
    for (stem, *_), passages in zip(PAPERS, papers):
        for p in passages:
            by_id[p["id"]] = (stem, p)
            for qa in p["qas"]:
                out.append({"set": "cmrc", "split": split_of(p["position"]), "text": qa["question"],
                            "answer": qa["answers"][0]["text"], "doc": stem, "pages": gold[stem][p["id"]]})
    for line in PARAPHRASE.read_text(encoding="utf-8").splitlines():
        q = json.loads(line) if line else None
        if q and q["passage_id"] in by_id:
            stem, p = by_id[q["passage_id"]]
            out.append({"set": "paraphrase", "split": q["split"], "text": q["question"], "answer": q["answer"],
                        "doc": stem, "pages": gold[stem][p["id"]]})
    return out


# -- knowledge bases ----------------------------------------------------------------------------


def distractor_files(papers: list[list[dict]], n: int) -> list[Path]:
    """The first ``n`` CMRC dev passages not in the papers, one .txt file each (the same files
    in both knowledge bases): other documents for the questions to be confused with."""
    if n <= 0:
        return []
    used = {p["position"] for ps in papers for p in ps}
    data = json.loads(DATA.read_text(encoding="utf-8"))["data"]
    folder = OUT / "distractors"
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for i, article in enumerate(data):
        if i in used:
            continue
        if len(files) == n:
            break
        f = folder / f"p{i:04d}.txt"
        body = article["paragraphs"][0]["context"]
        if not f.exists() or f.read_text(encoding="utf-8") != body:
            f.write_text(body, encoding="utf-8")
        files.append(f)
    return files


def ingest(name: str, files: list[Path], pages: int, distractors: list[Path]) -> tuple[object, dict]:
    """The knowledge base ``name``, and the time its papers took to ingest (this run's, or the
    cached one of the run that ingested them: unchanged files are skipped). Distractors go in
    after the papers, untimed."""
    from rag.api import KnowledgeBase
    from rag.settings import Settings

    kb = KnowledgeBase(settings=Settings(store={"dir": OUT / name}, retrieval={"relevance_threshold": 0.0}))
    times_file = OUT / "ingest_times.json"
    times = json.loads(times_file.read_text()) if times_file.exists() else {}
    started = time.perf_counter()
    report = kb.add(files, progress=lambda p: log(f"  {name}: {Path(p.path).name} {p.status}") if p.finished else None)
    seconds = time.perf_counter() - started
    if report.failed:
        sys.exit(f"ingesting the PDFs of {name} failed: {report.failed}")
    if distractors:
        extra = kb.add(distractors, progress=lambda p: log(f"  {name}: {p.done}/{p.total} distractors")
                       if p.finished and p.done % 100 == 0 else None)
        if extra.failed:
            sys.exit(f"ingesting the distractors of {name} failed: {extra.failed}")
    if report.added or report.updated:
        times[name] = {"seconds": round(seconds, 1), "pages": pages,
                       "s_per_page": round(seconds / pages, 2), "chunks": report.chunks}
        times_file.write_text(json.dumps(times, indent=1))
        return kb, {**times[name], "cached": False}
    if name not in times:
        return kb, {"seconds": None, "pages": pages, "s_per_page": None, "cached": True}
    return kb, {**times[name], "cached": True}


def page_texts(kb, doc_id: str) -> dict[int, str]:
    """A document's indexed text page by page: its chunks with the repeated overlaps dropped."""
    from rag.qa import merge_overlapping

    out: dict[int, str] = {}
    for chunk in kb.store.document_chunks(doc_id):
        out[chunk.page] = merge_overlapping(out[chunk.page], chunk.text) if chunk.page in out else chunk.text
    return out


def page_rank(hits, doc_id: str, pages: list[int]) -> int | None:
    """1-based rank of the first hit from ``doc_id`` on one of ``pages`` (every hit counts)."""
    for rank, h in enumerate(hits, start=1):
        if h.doc_id == doc_id and h.page in pages:
            return rank
    return None


def _fold(text: str) -> str:
    return "".join(unicodedata.normalize("NFKC", text).split())


def answer_rank(hits, doc_id: str, answer: str) -> int | None:
    """1-based rank of the first hit from ``doc_id`` whose text holds the answer span (NFKC,
    whitespace ignored): what a reader model would need, and what an OCR error in the span
    breaks even when the page is found."""
    for rank, h in enumerate(hits, start=1):
        if h.doc_id == doc_id and _fold(answer) in _fold(h.text):
            return rank
    return None


# -- main -----------------------------------------------------------------------------------------


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rebuild", action="store_true", help="write the documents again (forces re-OCR)")
    ap.add_argument("--distractors", type=int, default=0, metavar="N",
                    help="also put N other CMRC passages (.txt) in both knowledge bases (kb_*_dN)")
    args = ap.parse_args(argv)
    began = time.perf_counter()

    papers = chosen_passages()
    build_documents(papers, args.rebuild)
    stems = [stem for stem, *_ in PAPERS]
    text_pdfs = [DOCS / "text" / f"{s}.pdf" for s in stems]
    scan_pdfs = [DOCS / "scan" / f"{s}.pdf" for s in stems]

    import pypdfium2 as pdfium

    page_count = {}
    for s, t, c in zip(stems, text_pdfs, scan_pdfs):
        nt, nc = len(pdfium.PdfDocument(str(t))), len(pdfium.PdfDocument(str(c)))
        if nt != nc:
            sys.exit(f"{s}: the scan has {nc} pages, the text PDF {nt}")
        page_count[s] = nt
    total_pages = sum(page_count.values())

    gold, missing, footers = {}, [], []
    for s, pdf, passages in zip(stems, text_pdfs, papers):
        gold[s], lost = gold_pages(pdf, passages)
        missing += lost
        footers += footer_check(pdf)
    asked = questions(papers, gold)
    asked = [q for q in asked if q["pages"]]  # a passage not found in the PDF cannot be scored
    log(f"{len(PAPERS)} papers, {total_pages} pages, {len(asked)} questions")

    kbs, ingestion = {}, {}
    distractors = distractor_files(papers, args.distractors)
    suffix = f"_d{args.distractors}" if args.distractors > 0 else ""
    for kind, files in (("text", text_pdfs), ("scan", scan_pdfs)):
        kbs[kind], ingestion[kind] = ingest(f"kb_{kind}{suffix}", files, total_pages, distractors)
    doc_ids = {kind: {s: kb.store.doc_for_source(str(f.resolve())) for s, f in zip(stems, files)}
               for (kind, kb), files in zip(kbs.items(), (text_pdfs, scan_pdfs))}

    for q in asked:
        for kind, kb in kbs.items():
            hits = kb.retriever.search(q["text"], k=10, relevance_threshold=0.0)
            q.setdefault("rank", {})[kind] = page_rank(hits, doc_ids[kind][q["doc"]], q["pages"])
            q.setdefault("answer_rank", {})[kind] = answer_rank(hits, doc_ids[kind][q["doc"]], q["answer"])

    # Retrieval, per set and half.
    figures: dict = {"papers": len(PAPERS), "pages": total_pages, "questions": len(asked),
                     "distractors": len(distractors), "sets": {}}
    print(f"page hit@k, text vs scanned{f' (+{len(distractors)} distractor passages)' if distractors else ''}; "
          "ans@5: a hit from the paper holding the answer span among the first 5")
    print(f"{'set/half':<18}{'n':>4}  {'text@1':>7}{'scan@1':>7}{'Δ@1':>7}  {'text@5':>7}{'scan@5':>7}{'Δ@5':>7}"
          f"  goal  {'ans@5 text':>10}{'scan':>6}")
    for name in ("cmrc", "paraphrase"):
        for split in ("dev", "test", "all"):
            group = [q for q in asked if q["set"] == name and (split == "all" or q["split"] == split)]
            if not group:
                continue
            row: dict = {"questions": len(group)}
            for kind in ("text", "scan"):
                ranks = [q["rank"][kind] for q in group]
                row[f"{kind}_hit@1"] = round(sum(r == 1 for r in ranks) / len(group), 3)
                row[f"{kind}_hit@5"] = round(sum(r is not None and r <= 5 for r in ranks) / len(group), 3)
            row["diff@1_points"] = round(100 * (row["scan_hit@1"] - row["text_hit@1"]), 1)
            row["diff@5_points"] = round(100 * (row["scan_hit@5"] - row["text_hit@5"]), 1)
            row["goal_met"] = row["diff@5_points"] >= -GOAL_POINTS
            for kind in ("text", "scan"):
                ranks = [q["answer_rank"][kind] for q in group]
                row[f"{kind}_answer@5"] = round(sum(r is not None and r <= 5 for r in ranks) / len(group), 3)
            figures["sets"][f"{name}/{split}"] = row
            print(f"{name + '/' + split:<18}{len(group):>4}  {row['text_hit@1']:>7.3f}{row['scan_hit@1']:>7.3f}"
                  f"{row['diff@1_points']:>+7.1f}  {row['text_hit@5']:>7.3f}{row['scan_hit@5']:>7.3f}"
                  f"{row['diff@5_points']:>+7.1f}  {'yes' if row['goal_met'] else 'NO ':<4}"
                  f"{row['text_answer@5']:>10.3f}{row['scan_answer@5']:>6.3f}")

    # OCR character accuracy, per document and per page (the text KB's text is the reference).
    figures["documents"], bad_pages, heads_left = {}, [], []
    print(f"\n{'document':<10}{'pages':>6}{'cols':>5}{'chars':>7}{'ocr acc':>9}{'nfkc':>8}")
    for (s, _, columns, _), passages in zip(PAPERS, papers):
        ref_pages = page_texts(kbs["text"], doc_ids["text"][s])
        ocr_pages = page_texts(kbs["scan"], doc_ids["scan"][s])
        ref = "\n".join(ref_pages[p] for p in sorted(ref_pages))
        hyp = "\n".join(ocr_pages[p] for p in sorted(ocr_pages))
        acc, _, length = char_accuracy(hyp, ref)
        acc_nfkc, _, _ = char_accuracy(hyp, ref, nfkc=True)
        figures["documents"][s] = {"pages": page_count[s], "columns": columns, "chars": length,
                                   "ocr_acc": round(acc, 4), "ocr_acc_nfkc": round(acc_nfkc, 4)}
        print(f"{s:<10}{page_count[s]:>6}{columns:>5}{length:>7}{acc:>9.4f}{acc_nfkc:>8.4f}")
        for p in range(1, page_count[s] + 1):
            page_acc = char_accuracy(ocr_pages.get(p, ""), ref_pages.get(p, ""), nfkc=True)[0]
            if page_acc < 0.95:
                bad_pages.append(f"{s} p{p}: {page_acc:.3f}")
            # OCR'd running heads should be set aside as the text layer's are (either half of it)
            if RUNNING_HEAD.search(_fold(ocr_pages.get(p, ""))):
                heads_left.append(f"{s} p{p}")

    print(f"\ningestion: text {ingestion['text']['seconds']} s ({ingestion['text']['s_per_page']} s/page), "
          f"scanned {ingestion['scan']['seconds']} s ({ingestion['scan']['s_per_page']} s/page) "
          f"for {total_pages} pages" + (" [times of the run that ingested them]" if ingestion["scan"]["cached"] else ""))
    print(f"OCR pages below 0.95 (nfkc): {bad_pages or 'none'}")
    print(f"scanned pages with (part of) the running head left in: {len(heads_left)} of {total_pages}"
          + (f" ({', '.join(heads_left)})" if heads_left else ""))
    print(f"text PDF footers: {footers or 'all set aside, numbers match'}; passages not found: {missing or 'none'}")
    figures.update({"ingestion": ingestion, "ocr_pages_below_0.95": bad_pages, "scan_running_head_left": heads_left,
                    "footer_problems": footers, "passages_not_found": missing, "goal_points": GOAL_POINTS,
                    "run_s": round(time.perf_counter() - began, 1)})
    print(json.dumps(figures, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

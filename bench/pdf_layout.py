"""Layout-aware PDF reading (ingest/loaders/pdf_layout.py, PDFium) against pypdf's text
extraction (what the PDF loader used before it moved to the layout reader): speed, and reading
order on two-column pages.

    .venv/bin/python bench/pdf_layout.py                  # the generated samples only
    .venv/bin/python bench/pdf_layout.py a.pdf b.pdf      # and these files
    .venv/bin/python bench/pdf_layout.py --repeat 5 /usr/share/doc/libtasn1-doc/libtasn1.pdf

Samples (made by tests/test_pdf_layout.py's makers, in a temporary folder): a 3-page reportlab
PDF with two columns written in a hostile content order (row by row across the columns), a title
and abstract spanning both columns, a running head and page numbers; and, when LibreOffice is
installed, a real two-column LibreOffice PDF (40 paragraphs P01..P40, header, page numbers).

For every PDF, pages per second (best of ``--repeat`` runs, one process, warm caches) of
  pypdf     ``page.extract_text()`` on every page (the old loader's reading),
  loader    ``load_pdf`` (the layout reader plus the loader's tidying; OCR only for scans),
  layout    ``read_layout`` (characters, lines, columns, running heads, boxes).
Order checks: on the reportlab sample, whether every page reads its left column wholly before
its right one and keeps the running head out of the body; on the LibreOffice sample, whether
the paragraph markers come out as P01..P40 in order. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def best_time(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def pypdf_pages(path: Path) -> list[str]:
    from pypdf import PdfReader

    return [page.extract_text() or "" for page in PdfReader(str(path), strict=False).pages]


def measure(path: Path, repeat: int) -> dict:
    from ingest.loaders.pdf import load_pdf
    from ingest.loaders.pdf_layout import read_layout

    size = path.stat().st_size
    pages = len(read_layout(path))
    row = {"file": str(path), "pages": pages}
    for name, fn in (
        ("pypdf", lambda: pypdf_pages(path)),
        ("loader", lambda: load_pdf(path, size)),
        ("layout", lambda: read_layout(path)),
    ):
        seconds = best_time(fn, repeat)
        row[f"{name}_pages_per_s"] = round(pages / seconds, 1) if seconds > 0 else None
    if row["layout_pages_per_s"] and row["pypdf_pages_per_s"]:
        row["layout_vs_pypdf"] = round(row["layout_pages_per_s"] / row["pypdf_pages_per_s"], 2)
    return row


def column_order_ok(text: str, page_no: int, rows: int) -> bool:
    """Left column wholly before the right one, each top to bottom (markers L1.00 / R1.00)."""
    def where(marker: str) -> int:
        return text.find(marker)

    left = [where(f"L{page_no}.{r:02d}") for r in range(rows)]
    right = [where(f"R{page_no}.{r:02d}") for r in range(rows)]
    if min(left + right) < 0:
        return False
    return left == sorted(left) and right == sorted(right) and max(left) < min(right)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pdfs", nargs="*", type=Path, help="more PDFs to time")
    parser.add_argument("--repeat", type=int, default=3, help="runs per reader (best is kept)")
    args = parser.parse_args()

    from ingest.loaders.pdf_layout import read_layout
    from tests.test_pdf_layout import (
        LO_PARAGRAPHS,
        ROWS,
        RUNNING_HEAD,
        make_libreoffice_pdf,
        make_two_column_pdf,
    )

    summary: dict = {"files": []}
    with tempfile.TemporaryDirectory(prefix="pdf-layout-bench-") as tmp:
        tmp_path = Path(tmp)
        two = make_two_column_pdf(tmp_path / "two_column_reportlab.pdf")
        lo = make_libreoffice_pdf(tmp_path / "lo")

        # Reading order, two columns in hostile content order.
        layout_pages = read_layout(two)
        pypdf_texts = pypdf_pages(two)
        summary["two_column_order"] = {
            "pypdf": all(column_order_ok(t, n, ROWS) for n, t in enumerate(pypdf_texts, 1)),
            "layout": all(column_order_ok(p.text, n, ROWS) for n, p in enumerate(layout_pages, 1)),
        }
        summary["running_head_in_body"] = {
            "pypdf": sum(RUNNING_HEAD in t for t in pypdf_texts),
            "layout": sum(RUNNING_HEAD in p.text for p in layout_pages),
        }
        print(f"two-column sample ({len(layout_pages)} pages, {ROWS} rows a column):")
        print(f"  left column wholly before right: pypdf {summary['two_column_order']['pypdf']}, "
              f"layout {summary['two_column_order']['layout']}")
        print(f"  pages with the running head in the body text: pypdf "
              f"{summary['running_head_in_body']['pypdf']}, layout "
              f"{summary['running_head_in_body']['layout']}")
        print("  pypdf's first lines of page 1: "
              + " | ".join(pypdf_texts[0].split("\n")[2:6]))
        print("  layout's first lines of page 1: "
              + " | ".join(line.text for line in layout_pages[0].lines[3:7]))

        if lo is not None:
            expected = list(range(1, LO_PARAGRAPHS + 1))

            def markers(text: str) -> list[int]:
                return [int(m) for m in re.findall(r"\bP(\d\d)\b", text)]

            lo_layout = read_layout(lo)
            lo_pypdf = pypdf_pages(lo)
            summary["libreoffice_order"] = {
                "pypdf": markers("\n".join(lo_pypdf)) == expected,
                "layout": markers("\n".join(p.text for p in lo_layout)) == expected,
                "layout_columns": [p.columns for p in lo_layout],
                "layout_set_aside": sum(len(p.header_footer_lines) for p in lo_layout),
            }
            print(f"LibreOffice two-column sample ({len(lo_layout)} pages): paragraphs in order: "
                  f"pypdf {summary['libreoffice_order']['pypdf']}, layout "
                  f"{summary['libreoffice_order']['layout']}; columns per page "
                  f"{summary['libreoffice_order']['layout_columns']}; lines set aside "
                  f"{summary['libreoffice_order']['layout_set_aside']}")
        else:
            summary["libreoffice_order"] = None
            print("LibreOffice sample: skipped (soffice not installed)")

        files = [two] + ([lo] if lo is not None else []) + list(args.pdfs)
        print(f"\nspeed (pages/s, best of {args.repeat}):")
        print(f"  {'file':48} {'pages':>5} {'pypdf':>8} {'loader':>8} {'layout':>8} {'ratio':>6}")
        for path in files:
            if not path.exists():
                print(f"  {path!s:48} missing, skipped")
                continue
            row = measure(path, args.repeat)
            name = row["file"] if path in args.pdfs else path.name
            row["file"] = name
            summary["files"].append(row)
            print(f"  {name[-48:]:48} {row['pages']:>5} {row['pypdf_pages_per_s']:>8} "
                  f"{row['loader_pages_per_s']:>8} {row['layout_pages_per_s']:>8} "
                  f"{row.get('layout_vs_pypdf', ''):>6}")
        total_pages = sum(r["pages"] for r in summary["files"])
        if total_pages:
            def total_rate(key: str) -> float:
                seconds = sum(r["pages"] / r[key] for r in summary["files"] if r[key])
                return round(total_pages / seconds, 1)

            summary["all_files"] = {
                "pages": total_pages,
                "pypdf_pages_per_s": total_rate("pypdf_pages_per_s"),
                "loader_pages_per_s": total_rate("loader_pages_per_s"),
                "layout_pages_per_s": total_rate("layout_pages_per_s"),
            }
            print(f"  {'all':48} {total_pages:>5} {summary['all_files']['pypdf_pages_per_s']:>8} "
                  f"{summary['all_files']['loader_pages_per_s']:>8} "
                  f"{summary['all_files']['layout_pages_per_s']:>8}")
    print(json.dumps(summary, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

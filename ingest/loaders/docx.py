"""Word (``.docx``, python-docx): paragraphs and tables in document order, heading styles as
Markdown headings."""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

from ingest.errors import UnreadableFile
from ingest.loaders.document import LoadedDocument, Page, clean_text

# Guards against decompression bombs in DOCX (a zip of XML).
MAX_DOCX_XML_BYTES = 256 * 1024 * 1024

_HEADING_STYLE = re.compile(r"^(?:heading|标题|título|titre|überschrift)\s*([1-9])$", re.IGNORECASE)


def _heading_level(paragraph) -> int | None:
    style = None
    try:
        style = paragraph.style
    except Exception:
        style = None
    depth = 0
    while style is not None and depth < 8:
        name = (style.name or "").strip()
        m = _HEADING_STYLE.match(name)
        if m:
            return min(int(m.group(1)), 6)
        if name.lower() in ("title", "标题"):
            return 1
        try:
            style = style.base_style
        except Exception:
            style = None
        depth += 1
    # Direct outline level on the paragraph (w:pPr/w:outlineLvl, 0-based; 9 means body text).
    try:
        values = paragraph._p.xpath("./w:pPr/w:outlineLvl/@w:val")
        if values and int(values[0]) < 6:
            return int(values[0]) + 1
    except Exception:
        pass
    return None


def _docx_table_lines(table) -> list[str]:
    lines: list[str] = []
    try:
        for row in table.rows:
            cells: list[str] = []
            seen: set[int] = set()
            for cell in row.cells:
                key = id(cell._tc)
                if key in seen:  # a merged cell is reported once per grid column it spans
                    continue
                seen.add(key)
                cells.append(" ".join(cell.text.split()))
            if any(cells):
                lines.append(" | ".join(cells))
    except Exception:
        # Malformed table grid: fall back to the raw text runs, one row per line.
        lines = []
        for tr in table._tbl.iterchildren():
            if tr.tag.endswith("}tr"):
                texts = [t.text or "" for t in tr.iter() if t.tag.endswith("}t")]
                line = " ".join("".join(texts).split())
                if line:
                    lines.append(line)
    return lines


def load_docx(path: Path, size: int) -> LoadedDocument:
    if size == 0:
        raise UnreadableFile(path, "the file is empty (0 bytes), not a valid DOCX")
    with path.open("rb") as fh:
        magic = fh.read(8)
    if magic.startswith(b"\xd0\xcf\x11\xe0"):
        raise UnreadableFile(
            path,
            "this is an old-style .doc or a password-protected Office file, not a DOCX; "
            "save it as .docx without a password",
        )
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
            if "word/document.xml" not in names:
                raise UnreadableFile(path, "not a Word document (no word/document.xml inside)")
            total = sum(i.file_size for i in zf.infolist() if i.filename.endswith(".xml"))
            if total > MAX_DOCX_XML_BYTES:
                raise UnreadableFile(path, "the document's XML is unreasonably large (zip bomb?)")
    except zipfile.BadZipFile:
        raise UnreadableFile(path, "damaged or not a DOCX file (not a valid zip archive)") from None

    import docx
    from docx.table import Table

    document = docx.Document(str(path))
    lines: list[str] = []
    first_heading: str | None = None
    for block in document.iter_inner_content():
        if isinstance(block, Table):
            table_lines = _docx_table_lines(block)
            if table_lines:
                lines.append("\n".join(table_lines))
            continue
        text = clean_text(block.text).strip()
        if not text:
            continue
        level = _heading_level(block)
        if level:
            text = " ".join(text.split())
            if first_heading is None:
                first_heading = text
            lines.append("#" * level + " " + text)
        else:
            lines.append(text)
    body = "\n\n".join(lines)

    title = ""
    try:
        title = (document.core_properties.title or "").strip()
    except Exception:
        title = ""
    title = title or first_heading or path.stem
    return LoadedDocument(path=path, file_type="docx", title=title, pages=[Page(None, body)])

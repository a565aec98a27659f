"""HTML (BeautifulSoup + lxml): visible text, headings as Markdown headings, table rows as lines."""

from __future__ import annotations

import codecs
import re
from pathlib import Path

from ingest.errors import EmptyDocument, UnreadableFile
from ingest.loaders.document import LoadedDocument, Page, clean_text
from ingest.loaders.text import BOMS, bad_char_ratio, decode_bytes

_META_CHARSET = re.compile(rb"""<meta[^>]{0,200}?charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]{1,40})""", re.I)
_HTML_ALIASES = {
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "x-gbk": "gb18030",
    "big5": "cp950",
    "iso-8859-1": "cp1252",
    "latin1": "cp1252",
    "us-ascii": "cp1252",
    "ascii": "cp1252",
}

_DROP_TAGS = frozenset(
    {"script", "style", "noscript", "template", "head", "svg", "canvas", "iframe", "object",
     "embed", "select", "datalist", "math", "audio", "video", "picture", "map"}
)
_BLOCK_TAGS = frozenset(
    {"address", "article", "aside", "blockquote", "body", "caption", "center", "dd", "details",
     "dialog", "div", "dl", "dt", "fieldset", "figcaption", "figure", "footer", "form", "header",
     "hgroup", "hr", "html", "li", "main", "menu", "nav", "ol", "p", "pre", "section", "summary",
     "table", "tbody", "tfoot", "thead", "tr", "ul", "legend", "option"}
)
_HEADING_TAGS = {f"h{i}": i for i in range(1, 7)}
_HIDDEN_STYLE = re.compile(r"display\s*:\s*none|visibility\s*:\s*hidden", re.I)


def _decode_html(data: bytes) -> str:
    for bom, encoding in BOMS:
        if data.startswith(bom):
            try:
                return data.decode(encoding)
            except UnicodeDecodeError:
                break
    m = _META_CHARSET.search(data[:4096])
    if m:
        name = m.group(1).decode("ascii", "replace").lower()
        name = _HTML_ALIASES.get(name, name)
        try:
            codecs.lookup(name)
            text = data.decode(name)
            if bad_char_ratio(text) <= 0.05:
                return text
        except (LookupError, UnicodeDecodeError):
            pass  # the page lies about its encoding: detect instead
    text, _ = decode_bytes(data)
    return text


def _is_hidden(tag) -> bool:
    attrs = tag.attrs or {}
    if "hidden" in attrs:
        return True
    style = attrs.get("style")
    if isinstance(style, list):
        style = " ".join(style)
    if style and _HIDDEN_STYLE.search(style):
        return True
    if tag.name == "input" and str(attrs.get("type", "")).lower() == "hidden":
        return True
    return False


def _html_text(root) -> str:
    from bs4 import CData, NavigableString, Tag

    parts: list[str] = []
    pre_depth = 0
    # Iterative walk: deeply nested pages must not hit the recursion limit.
    stack: list[object] = [root]
    while stack:
        node = stack.pop()
        if isinstance(node, tuple):  # ("close", name)
            name = node[1]
            if name == "pre":
                pre_depth -= 1
            if name in _BLOCK_TAGS or name == "pre":
                parts.append("\n")
            continue
        if isinstance(node, NavigableString):
            if type(node) is not NavigableString and not isinstance(node, CData):
                continue  # comments, doctype, processing instructions
            s = str(node)
            parts.append(s if pre_depth else re.sub(r"\s+", " ", s))
            continue
        if not isinstance(node, Tag):
            continue
        name = (node.name or "").lower()
        if name in _DROP_TAGS or _is_hidden(node):
            continue
        if name in _HEADING_TAGS:
            text = " ".join(_html_text_flat(node).split())
            if text:
                parts.append(f"\n\n{'#' * _HEADING_TAGS[name]} {text}\n\n")
            continue
        if name == "br":
            parts.append("\n")
            continue
        if name in ("td", "th"):
            prev = node.find_previous_sibling(["td", "th"])
            if prev is not None:
                parts.append(" | ")
        if name == "pre":
            pre_depth += 1
        if name in _BLOCK_TAGS or name == "pre":
            parts.append("\n")
        stack.append(("close", name))
        stack.extend(reversed(list(node.children)))
    text = "".join(parts)
    lines = [line.strip() for line in clean_text(text).split("\n")]
    text = "\n".join(lines)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def _html_text_flat(tag) -> str:
    """Visible text under ``tag`` (used for headings), skipping hidden and dropped elements."""
    from bs4 import NavigableString, Tag

    out: list[str] = []
    stack = [tag]
    while stack:
        node = stack.pop()
        if isinstance(node, NavigableString):
            if type(node) is NavigableString:
                out.append(str(node))
            continue
        if isinstance(node, Tag):
            if node is not tag and ((node.name or "").lower() in _DROP_TAGS or _is_hidden(node)):
                continue
            if node.name == "br":
                out.append(" ")
                continue
            stack.extend(reversed(list(node.children)))
    return "".join(out)


def load_html(path: Path) -> LoadedDocument:
    data = path.read_bytes()
    if not data.strip():
        raise EmptyDocument(path, "the file is empty" if not data else "the file holds only whitespace")
    try:
        markup = _decode_html(data)
    except ValueError as exc:
        raise UnreadableFile(path, str(exc)) from None
    markup = clean_text(markup)
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(markup, "lxml")
    title = ""
    if soup.title is not None:
        title = " ".join(soup.title.get_text(" ").split())
    body_text = _html_text(soup)
    if not title:
        h1 = soup.find("h1")
        if h1 is not None:
            title = " ".join(_html_text_flat(h1).split())
    return LoadedDocument(
        path=path, file_type="html", title=title or path.stem, pages=[Page(None, body_text)]
    )

"""HTML (BeautifulSoup + lxml): the visible text of the page's main content, headings as Markdown
headings, each table row as one line (cells joined with " | ").

Whitespace is collapsed as a browser does, except that a line break of the page source between
two CJK characters is dropped (hard-wrapped Chinese paragraphs). Navigation, the page's header
and footer, sidebars and link-dense blocks are left out (see "Main content" below)."""

from __future__ import annotations

import codecs
import re
from pathlib import Path

from ingest.errors import EmptyDocument, UnreadableFile
from ingest.loaders.document import CJK, LoadedDocument, Page, clean_text
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


# Markers used while the text is put together; both are whitespace to ``\s`` and str.strip().
_SOFT_BREAK = "\x1d"
"""A block boundary inside a table cell: shown as a space, so that a row stays on one line."""
_SOURCE_BREAK = "\x1f"
"""Whitespace of the page source that held a line break: nothing between two CJK characters (a
hard-wrapped Chinese paragraph; CSS drops such a segment break), a space anywhere else."""
_WHITESPACE = re.compile(r"\s+")
_CJK_SOURCE_BREAK = re.compile(
    rf"(?<=[{CJK}])[ {_SOURCE_BREAK}]*{_SOURCE_BREAK}[ {_SOURCE_BREAK}]*(?=[{CJK}])"
)
_MARKS = _SOFT_BREAK + _SOURCE_BREAK
_MARKERS = re.compile(rf"[ {_MARKS}]*[{_MARKS}][ {_MARKS}]*")  # with the spaces around them


def _collapse(s: str) -> str:
    """Whitespace of one text run of the source, collapsed as a browser does."""
    return _WHITESPACE.sub(lambda m: _SOURCE_BREAK if "\n" in m.group() else " ", s)


def _resolve_markers(text: str) -> str:
    text = _CJK_SOURCE_BREAK.sub("", text)
    return _MARKERS.sub(" ", text)


def _html_text(root, skip: frozenset[int] = frozenset()) -> str:
    """Visible text under ``root``; elements whose id() is in ``skip`` are left out."""
    from bs4 import CData, NavigableString, Tag

    parts: list[str] = []
    pre_depth = 0
    cell_depth = 0  # inside a table cell, block breaks become spaces
    label = ""  # an ordered list item's number, waiting for the item's text
    # Iterative walk: deeply nested pages must not hit the recursion limit.
    stack: list[object] = [root]
    while stack:
        node = stack.pop()
        if isinstance(node, tuple):  # ("close", name)
            name = node[1]
            if name == "pre":
                pre_depth -= 1
            if name in ("td", "th"):
                cell_depth -= 1
            if name in _BLOCK_TAGS or name == "pre":
                parts.append(_SOFT_BREAK if cell_depth else "\n")
            continue
        if isinstance(node, NavigableString):
            if type(node) is not NavigableString and not isinstance(node, CData):
                continue  # comments, doctype, processing instructions
            s = str(node)
            if label and s.strip():
                parts.append(label)
                label = ""
            if pre_depth:
                s = s.replace(_SOFT_BREAK, " ").replace(_SOURCE_BREAK, " ")
                parts.append(s.replace("\n", _SOFT_BREAK) if cell_depth else s)
            else:
                parts.append(_collapse(s))
            continue
        if not isinstance(node, Tag) or id(node) in skip:
            continue
        name = (node.name or "").lower()
        if name in _DROP_TAGS or _is_hidden(node):
            continue
        if name in _HEADING_TAGS:
            text = _heading_text(node)
            if text and cell_depth:
                parts.append(f"{_SOFT_BREAK}{text}{_SOFT_BREAK}")
            elif text:
                parts.append(f"\n\n{'#' * _HEADING_TAGS[name]} {text}\n\n")
            continue
        if name == "br":
            parts.append(_SOFT_BREAK if cell_depth else "\n")
            continue
        if name in ("td", "th"):
            prev = node.find_previous_sibling(["td", "th"])
            if prev is not None:
                parts.append(" | ")
            cell_depth += 1
        if name == "pre":
            pre_depth += 1
        if name in _BLOCK_TAGS or name == "pre":
            parts.append(_SOFT_BREAK if cell_depth else "\n")
        if name == "li":
            label = _list_label(node)  # written before the item's first text (often inside a <p>)
        stack.append(("close", name))
        stack.extend(reversed(list(node.children)))
    text = _resolve_markers("".join(parts))
    lines = [line.strip() for line in clean_text(text).split("\n")]
    text = "\n".join(lines)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def _list_label(item) -> str:
    """The number a browser draws before an item of an ordered list (``1. ``, ``b. ``, ``iv. ``),
    with the list's ``start`` and ``type``; nothing for other lists."""
    parent = item.parent
    if parent is None or (parent.name or "").lower() != "ol":
        return ""
    try:
        n = int(str(item.get("value") or "").strip())
    except ValueError:
        try:
            n = int(str(parent.get("start") or "1").strip())
        except ValueError:
            n = 1
        n += sum(1 for sibling in item.find_previous_siblings("li"))
    kind = str(parent.get("type") or "1")
    if kind in ("a", "A") and n > 0:
        label = ""
        while n > 0:
            n, rest = divmod(n - 1, 26)
            label = chr(ord("a") + rest) + label
        label = label.upper() if kind == "A" else label
    elif kind in ("i", "I") and 0 < n < 4000:
        label = _roman(n).lower() if kind == "i" else _roman(n)
    else:
        label = str(n)
    return f"{label}. "


def _roman(n: int) -> str:
    out = ""
    for value, numeral in ((1000, "M"), (900, "CM"), (500, "D"), (400, "CD"), (100, "C"), (90, "XC"),
                           (50, "L"), (40, "XL"), (10, "X"), (9, "IX"), (5, "V"), (4, "IV"), (1, "I")):
        while n >= value:
            out += numeral
            n -= value
    return out


def _heading_text(tag) -> str:
    return " ".join(_resolve_markers(_collapse(_html_text_flat(tag))).split())


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


# --------------------------------------------------------------------------------------------
# Main content: what a reader of the page reads, without the site's navigation and footer.
#
# Stage 1 leaves out what the page marks as not being content: <nav>; <header> and <footer> of
# the page itself (one inside an <article>, <section> or other sectioning element is kept);
# <aside> outside an <article>; ARIA roles navigation, banner, contentinfo and search (and
# complementary, like <aside>); and, outside <article>, <main> and sectioning elements, elements
# whose id or one of whose classes is a usual name for such parts ("nav", "footer", "sidebar",
# "breadcrumb", ...). When nothing is left, the whole page is used.
# Stage 2 leaves out link-dense blocks (menus, "related articles", breadcrumbs, pagination): at
# least two links, links at least half of the text, no sentence punctuation outside the links,
# and not much other text (under 40 characters or under a quarter of the block, separators such
# as "|" and ">" not counted). When that leaves less than 30% of stage 1's text, stage 1's text
# is used.

_SECTIONING = frozenset(
    {"article", "section", "aside", "nav", "blockquote", "details", "fieldset", "figure", "td",
     "th", "dialog"}
)
_DROP_ROLES = frozenset({"navigation", "banner", "contentinfo", "search"})
_BOILERPLATE_NAMES = frozenset(
    {"nav", "navbar", "navigation", "topnav", "menu", "mainmenu", "main-menu", "breadcrumb",
     "breadcrumbs", "crumbs", "header", "site-header", "footer", "site-footer", "sidebar",
     "side-bar", "copyright", "topbar", "top-bar", "skip-link", "skiplink", "share", "social"}
)
_NEVER_DROPPED = frozenset({"html", "body", "main", "article"})
_LINK_BLOCK_TAGS = frozenset(
    {"div", "section", "ul", "ol", "menu", "dl", "table", "p", "li", "form", "center", "header",
     "footer", "aside", "nav"}
)
_SENTENCE_END = re.compile(r"[。！？；!?;…]|\.(?:\s|$)")
_SEPARATORS = re.compile(r"[\s|/\\·•»«>›‹<\-–—:：,，、()（）\[\]【】]+")
_MIN_KEPT = 0.3


def _names(tag) -> set[str]:
    attrs = tag.attrs or {}
    classes = attrs.get("class") or []
    if isinstance(classes, str):
        classes = classes.split()
    names = {c.lower() for c in classes}
    if isinstance(attrs.get("id"), str):
        names.add(attrs["id"].lower())
    return names


def _role(tag) -> str:
    role = (tag.attrs or {}).get("role") or ""
    if isinstance(role, list):
        role = " ".join(role)
    return role.strip().lower()


def _semantic_boilerplate(root) -> set[int]:
    """id() of the elements stage 1 leaves out."""
    from bs4 import Tag

    skip: set[int] = set()
    # (tag, inside an <article>, inside an <article> or <main>, inside a sectioning element)
    stack: list[tuple[object, bool, bool, bool]] = [(root, False, False, False)]
    while stack:
        node, in_article, in_main, scoped = stack.pop()
        name = (node.name or "").lower()
        role = _role(node)
        drop = False
        if name not in _NEVER_DROPPED:
            if name == "nav" or role in _DROP_ROLES:
                drop = True
            elif name == "aside" or role == "complementary":
                drop = not in_article
            elif name in ("header", "footer"):
                drop = not scoped
            elif not (in_main or scoped) and _names(node) & _BOILERPLATE_NAMES:
                drop = True
        if drop:
            skip.add(id(node))
            continue
        child_article = in_article or name == "article"
        child_main = in_main or name in ("article", "main") or role == "main"
        child_scoped = scoped or name in _SECTIONING
        for child in node.children:
            if isinstance(child, Tag):
                stack.append((child, child_article, child_main, child_scoped))
    return skip


def _link_blocks(root, skip: set[int]) -> set[int]:
    """id() of the link-dense blocks stage 2 leaves out (within what stage 1 kept)."""
    from bs4 import CData, NavigableString, Tag

    order = []  # visible elements, parents before children
    stack = [root]
    while stack:
        node = stack.pop()
        order.append(node)
        for child in node.children:
            if (
                isinstance(child, Tag)
                and id(child) not in skip
                and (child.name or "").lower() not in _DROP_TAGS
                and not _is_hidden(child)
            ):
                stack.append(child)
    # Per element: characters of text, of link text, links, characters outside links that are
    # not separators, and whether the text outside links has sentence punctuation.
    stats: dict[int, tuple[int, int, int, int, bool]] = {}
    for node in reversed(order):
        chars = link = links = plain = 0
        sentence = False
        for child in node.children:
            if isinstance(child, NavigableString):
                if type(child) is not NavigableString and not isinstance(child, CData):
                    continue
                text = str(child)
                chars += len("".join(text.split()))
                plain += len(_SEPARATORS.sub("", text))
                sentence = sentence or bool(_SENTENCE_END.search(text))
            elif id(child) in stats:
                c, l, n, p, s = stats[id(child)]
                chars, link, links, plain = chars + c, link + l, links + n, plain + p
                sentence = sentence or s
        if (node.name or "").lower() == "a":
            link, links, plain, sentence = chars, 1 if chars else 0, 0, False
        stats[id(node)] = (chars, link, links, plain, sentence)

    dropped: set[int] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        name = (node.name or "").lower()
        chars, link, links, plain, sentence = stats[id(node)]
        if (
            name in _LINK_BLOCK_TAGS
            and links >= 2
            and link >= 0.5 * chars
            and not sentence
            and not (plain >= 40 and plain >= 0.25 * chars)  # e.g. a data table with links
        ):
            dropped.add(id(node))
            continue
        for child in node.children:
            if isinstance(child, Tag) and id(child) in stats:
                stack.append(child)
    return dropped


def _visible_chars(text: str) -> int:
    return len("".join(text.split()))


def _main_text(body) -> tuple[str, frozenset[int]]:
    """The main content's text and the id() of the elements left out (see above)."""
    left_out = frozenset(_semantic_boilerplate(body))
    stage1 = _html_text(body, left_out)
    if left_out and not _visible_chars(stage1):
        left_out = frozenset()
        stage1 = _html_text(body)
    links = _link_blocks(body, set(left_out))
    if not links:
        return stage1, left_out
    stage2 = _html_text(body, left_out | links)
    if _visible_chars(stage2) < _MIN_KEPT * _visible_chars(stage1):
        return stage1, left_out
    return stage2, left_out | links


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
    body_text, left_out = _main_text(soup)
    if not title:
        h1s = soup.find_all("h1")
        kept = [h for h in h1s if not any(id(t) in left_out for t in (h, *h.parents))]
        if kept or h1s:
            title = _heading_text((kept or h1s)[0])
    return LoadedDocument(
        path=path, file_type="html", title=title or path.stem, pages=[Page(None, body_text)]
    )

"""Word (``.docx``): the text Word shows on the page, in reading order.

The package is opened with python-docx (parts, relationships, core properties), but the text is
taken by walking the WordprocessingML ourselves, because ``paragraph.text`` leaves out text boxes,
list numbers, content controls and notes. What comes out, blocks separated by blank lines:

* Paragraphs and tables in document order (a table is one line per row, cells joined by
  ``" | "``; a vertically merged cell repeats its text in every row it spans). Paragraph styles
  named Heading n / 标题 n / Title, or an outline level, become Markdown headings (``# 标题``).
  Block-level content controls are looked into; a control still showing its placeholder is not.
* Automatic list numbers (``word/numbering.xml``), whether the paragraph has its own ``w:numPr``
  or inherits one from its style, rendered the way Word shows them and put before the text:
  ``第三条 乙方应当…``, ``1.2 范围``, ``甲、…``, ``IV. …``. Counters belong to the abstract list
  definition, as in Word (list instances sharing one continue each other's count); an instance's
  ``w:startOverride`` restarts the count where that instance is first used; a level restarts
  when a higher level advances (``w:lvlRestart`` is honoured); ``w:isLgl`` gives decimal numbers.
  The level suffix (``w:suff``) tab or space becomes one space, ``nothing`` no space.
  **Bullets** are written as ``•`` whatever glyph the document names (usually a private-use
  Symbol/Wingdings code point that means nothing as text). A numbered paragraph without text is
  counted but not written.
* Text boxes, DrawingML (``wps:txbx``) and VML (``v:textbox``), as their own paragraphs right after
  the paragraph that anchors them. Of an ``mc:AlternateContent`` only one branch is read: the first
  ``mc:Choice``, or the ``mc:Fallback`` when the choice holds no text. Word and WPS store every
  text box twice that way, so it is read once.
* Footnotes and endnotes, in Markdown footnote syntax (the same in every language): the reference
  mark becomes ``[^1]`` in the paragraph, and the note follows that paragraph as a paragraph of
  its own, ``[^1]: text``. Footnotes count 1, 2, 3 and endnotes i, ii, iii (Word's defaults)
  unless the document sets another number format. Separator pseudo-notes are never read.
* Headers and footers once per document: each distinct text once, however many sections show it;
  headers before the body, footers after it, each on a line of its own starting with ``页眉：`` /
  ``页脚：`` when the document's text contains Chinese or Japanese characters and ``Header: `` /
  ``Footer: `` otherwise (so a reader sees what the line is, in the document's language). Only
  those Word displays count: a first-page header or footer needs ``w:titlePg``, even-page ones
  need ``w:evenAndOddHeaders``. Ones without a letter (a bare page number) are left out.

Decisions:

* **Tracked changes**: the text as if every change had been accepted. Insertions (``w:ins``) and
  moved-to text are kept; deletions (``w:del``/``w:delText``), moved-from text and deleted table
  rows are dropped; a paragraph whose paragraph mark was deleted runs on into the next paragraph.
  That is what the document says once the review is done, and indexing both versions of a
  sentence would let the assistant quote a figure the authors have already struck out.
* **Comments are not indexed**: they are reviewers' remarks about the text ("请核实金额"), not its
  content; retrieved as passages they would be quoted as if the document said them.
* Not read: SmartArt and chart text (kept in other parts), VML WordArt text paths, field codes
  (the field results Word displays are read), phonetic guides (ruby text).
"""

from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from ingest.errors import UnreadableFile
from ingest.loaders.document import CJK, LoadedDocument, Page, clean_text

# Guards against decompression bombs in DOCX (a zip of XML).
MAX_DOCX_XML_BYTES = 256 * 1024 * 1024
# python-docx reads every part (pictures too) into memory; images are already compressed, so a
# real document never expands to anything near this.
MAX_DOCX_TOTAL_BYTES = 1024 * 1024 * 1024

_HEADING_STYLE = re.compile(r"^(?:heading|标题|título|titre|überschrift)\s*([1-9])$", re.IGNORECASE)
_HAS_CJK = re.compile(f"[{CJK}]")

_W = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
_MC = "http://schemas.openxmlformats.org/markup-compatibility/2006"
_M = "http://schemas.openxmlformats.org/officeDocument/2006/math"
_R = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"


def _w(name: str) -> str:
    return f"{{{_W}}}{name}"


W_P, W_TBL, W_TR, W_TC, W_R = _w("p"), _w("tbl"), _w("tr"), _w("tc"), _w("r")
W_T, W_TAB, W_PTAB, W_BR, W_CR = _w("t"), _w("tab"), _w("ptab"), _w("br"), _w("cr")
W_NO_BREAK_HYPHEN, W_SOFT_HYPHEN = _w("noBreakHyphen"), _w("softHyphen")
W_SDT, W_SDT_CONTENT, W_SDT_PR = _w("sdt"), _w("sdtContent"), _w("sdtPr")
W_TXBX_CONTENT = _w("txbxContent")
W_FOOTNOTE_REF, W_ENDNOTE_REF = _w("footnoteReference"), _w("endnoteReference")
W_VAL, W_TYPE, W_ID = _w("val"), _w("type"), _w("id")
M_T = f"{{{_M}}}t"
MC_ALTERNATE, MC_CHOICE, MC_FALLBACK = (f"{{{_MC}}}{n}" for n in ("AlternateContent", "Choice", "Fallback"))
R_ID = f"{{{_R}}}id"

# Inline elements whose content is not shown text: properties, deleted and moved-away text, field
# codes, ruby text, and the note marks inside the notes themselves.
_SKIP_INLINE = frozenset(
    _w(n)
    for n in (
        "pPr", "rPr", "del", "moveFrom", "delText", "instrText", "delInstrText", "rt", "rubyPr",
        "sdtPr", "sdtEndPr", "fldData", "footnoteRef", "endnoteRef", "separator",
        "continuationSeparator", "commentReference", "annotationRef", "sectPr", "tblPr", "trPr",
        "tcPr", "tblGrid", "sym",
    )
)
# Block-level wrappers whose children are paragraphs and tables again.
_BLOCK_WRAPPERS = frozenset(_w(n) for n in ("customXml", "ins", "moveTo", "smartTag"))


def _on(el) -> bool:
    """A WordprocessingML on/off property element (``<w:titlePg/>``, ``w:val="false"``...)."""
    if el is None:
        return False
    return (el.get(W_VAL) or "true").lower() not in ("false", "0", "off")


def _hidden_run(run) -> bool:
    """A run formatted as hidden text (``w:rPr/w:vanish``), which Word does not display."""
    rpr = run.find(_w("rPr"))
    return rpr is not None and _on(rpr.find(_w("vanish")))


def _int(value, default: int | None = None) -> int | None:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return default


def _tag(el) -> str:
    tag = el.tag
    return tag if isinstance(tag, str) else ""  # comments and processing instructions


# --------------------------------------------------------------------------------------------
# Number formats


_ROMAN = ((1000, "M"), (900, "CM"), (500, "D"), (400, "CD"), (100, "C"), (90, "XC"),
          (50, "L"), (40, "XL"), (10, "X"), (9, "IX"), (5, "V"), (4, "IV"), (1, "I"))


def _roman(n: int) -> str:
    if n <= 0 or n >= 4000:
        return str(n)
    out = []
    for value, letters in _ROMAN:
        while n >= value:
            out.append(letters)
            n -= value
    return "".join(out)


def _letters(n: int) -> str:
    """Word's alphabetic numbers: a..z, then aa..zz, aaa.. (the letter repeated)."""
    if n <= 0 or n > 26 * 50:  # (a start value of a billion would be a very long string)
        return str(n)
    return chr(ord("a") + (n - 1) % 26) * ((n - 1) // 26 + 1)


@dataclass(frozen=True)
class _Numerals:
    digits: str  # 0..9
    units: str  # ones, tens, hundreds, thousands (ones unit is empty: a space placeholder)
    groups: str  # 10^0, 10^4, 10^8 (first is a space placeholder)
    zero: str
    bare_ten: bool  # 10..19 written 十, 十一 rather than 一十, 一十一


_ZH = _Numerals("〇一二三四五六七八九", " 十百千", " 万亿", "零", True)
_ZH_TW = _Numerals("〇一二三四五六七八九", " 十百千", " 萬億", "零", True)
_ZH_LEGAL = _Numerals("零壹贰叁肆伍陆柒捌玖", " 拾佰仟", " 万亿", "零", False)
_ZH_TW_LEGAL = _Numerals("零壹貳參肆伍陸柒捌玖", " 拾佰仟", " 萬億", "零", False)


def _cjk_group(n: int, num: _Numerals) -> str:
    out: list[str] = []
    zero_pending = False
    for position in (3, 2, 1, 0):
        digit = n // 10**position % 10
        if digit == 0:
            zero_pending = bool(out)
            continue
        if zero_pending:
            out.append(num.zero)
            zero_pending = False
        out.append(num.digits[digit] + num.units[position].strip())
    return "".join(out)


def _cjk_counting(n: int, num: _Numerals) -> str:
    """Counting numerals: 十一, 二十, 一百零一, 一千零五十, 一万零一十..."""
    if n == 0:
        return num.digits[0]
    if n < 0 or n >= 10**12:
        return str(n)
    groups = []
    while n:
        groups.append(n % 10000)
        n //= 10000
    out = ""
    for index in range(len(groups) - 1, -1, -1):
        group = groups[index]
        if group == 0:
            continue
        if out and (group < 1000 or groups[index + 1] == 0):
            out += num.zero
        out += _cjk_group(group, num) + num.groups[index].strip()
    if num.bare_ten and out.startswith(num.digits[1] + num.units[1]):
        out = out[1:]
    return out


def _cjk_digits(n: int) -> str:
    return "".join("〇一二三四五六七八九"[int(d)] for d in str(n)) if n >= 0 else str(n)


_STEMS = "甲乙丙丁戊己庚辛壬癸"
_BRANCHES = "子丑寅卯辰巳午未申酉戌亥"
_CIRCLED = "①②③④⑤⑥⑦⑧⑨⑩⑪⑫⑬⑭⑮⑯⑰⑱⑲⑳"


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def format_number(n: int, fmt: str) -> str:
    """``n`` in the WordprocessingML number format ``fmt`` (``w:numFmt``); unknown formats give
    decimal digits, as Word does for formats it cannot show."""
    if fmt == "none":
        return ""
    if fmt == "decimalZero":
        return f"{n:02d}" if 0 <= n < 10 else str(n)
    if fmt in ("lowerLetter", "upperLetter"):
        text = _letters(n)
        return text.upper() if fmt == "upperLetter" else text
    if fmt in ("lowerRoman", "upperRoman"):
        text = _roman(n)
        return text.lower() if fmt == "lowerRoman" else text
    if fmt in ("chineseCounting", "chineseCountingThousand", "japaneseCounting", "koreanDigital2"):
        return _cjk_counting(n, _ZH)
    if fmt in ("taiwaneseCounting", "taiwaneseCountingThousand"):
        return _cjk_counting(n, _ZH_TW)
    if fmt == "chineseLegalSimplified":
        return _cjk_counting(n, _ZH_LEGAL)
    if fmt == "ideographLegalTraditional":
        return _cjk_counting(n, _ZH_TW_LEGAL)
    if fmt in ("ideographDigital", "taiwaneseDigital", "japaneseDigitalTenThousand"):
        return _cjk_digits(n)
    if n >= 1 and fmt == "ideographTraditional":
        return _STEMS[(n - 1) % 10]
    if n >= 1 and fmt == "ideographZodiac":
        return _BRANCHES[(n - 1) % 12]
    if n >= 1 and fmt == "ideographZodiacTraditional":
        return _STEMS[(n - 1) % 10] + _BRANCHES[(n - 1) % 12]
    if 1 <= n <= 20 and fmt in ("decimalEnclosedCircle", "decimalEnclosedCircleChinese"):
        return _CIRCLED[n - 1]
    if 1 <= n <= 20 and fmt == "decimalEnclosedFullstop":
        return chr(0x2487 + n)
    if 1 <= n <= 20 and fmt == "decimalEnclosedParen":
        return chr(0x2473 + n)
    if 1 <= n <= 10 and fmt == "ideographEnclosedCircle":
        return chr(0x321F + n)
    if fmt in ("decimalFullWidth", "decimalFullWidth2"):
        return "".join(chr(ord(c) + 0xFEE0) if c.isdigit() else c for c in str(n))
    if fmt == "ordinal":
        return _ordinal(n)
    return str(n)


# --------------------------------------------------------------------------------------------
# Styles and numbering definitions


@dataclass
class _Style:
    name: str
    based_on: str | None
    num_id: str | None
    ilvl: int | None
    outline: int | None


class _Styles:
    """Paragraph styles by id: names (for headings), inherited numbering and outline levels."""

    def __init__(self, root) -> None:
        self.by_id: dict[str, _Style] = {}
        self.default: str | None = None
        if root is None:
            return
        for style in root.iterchildren(_w("style")):
            if style.get(W_TYPE, "paragraph") not in ("paragraph", "numbering"):
                continue
            style_id = style.get(_w("styleId"))
            if not style_id:
                continue
            name = style.find(_w("name"))
            based = style.find(_w("basedOn"))
            ppr = style.find(_w("pPr"))
            num_pr = ppr.find(_w("numPr")) if ppr is not None else None
            num_el = num_pr.find(_w("numId")) if num_pr is not None else None
            ilvl_el = num_pr.find(_w("ilvl")) if num_pr is not None else None
            outline = ppr.find(_w("outlineLvl")) if ppr is not None else None
            self.by_id[style_id] = _Style(
                name=(name.get(W_VAL) or "").strip() if name is not None else "",
                based_on=based.get(W_VAL) if based is not None else None,
                num_id=num_el.get(W_VAL) if num_el is not None else None,
                ilvl=_int(ilvl_el.get(W_VAL)) if ilvl_el is not None else None,
                outline=_int(outline.get(W_VAL)) if outline is not None else None,
            )
            if style.get(W_TYPE, "paragraph") == "paragraph" and style.get(_w("default")) in ("1", "true", "on"):
                self.default = style_id

    def chain(self, style_id: str | None):
        """The style and its ``basedOn`` ancestors (the paragraph default when ``style_id`` is
        None or unknown)."""
        if style_id not in self.by_id:
            style_id = self.default
        seen: set[str] = set()
        while style_id and style_id in self.by_id and style_id not in seen and len(seen) < 16:
            seen.add(style_id)
            yield style_id, self.by_id[style_id]
            style_id = self.by_id[style_id].based_on

    def heading_level(self, style_id: str | None, direct_outline: int | None) -> int | None:
        for _, style in self.chain(style_id):
            m = _HEADING_STYLE.match(style.name)
            if m:
                return min(int(m.group(1)), 6)
            if style.name.lower() in ("title", "标题"):
                return 1
        if direct_outline is not None:
            return direct_outline + 1 if 0 <= direct_outline < 6 else None
        for _, style in self.chain(style_id):
            if style.outline is not None:
                return style.outline + 1 if 0 <= style.outline < 6 else None
        return None

    def numbering(self, style_id: str | None) -> tuple[str | None, int | None]:
        """(numId, ilvl) a style gives its paragraphs, each from the nearest style that sets it."""
        num_id: str | None = None
        ilvl: int | None = None
        for _, style in self.chain(style_id):
            if num_id is None and style.num_id is not None:
                num_id = style.num_id
            if ilvl is None and style.ilvl is not None:
                ilvl = style.ilvl
        return num_id, ilvl


@dataclass
class _Level:
    start: int = 1
    fmt: str = "decimal"
    text: str | None = None
    suffix: str = "tab"
    legal: bool = False
    restart: int | None = None
    style: str | None = None


def _read_level(lvl) -> _Level:
    level = _Level()
    start = lvl.find(_w("start"))
    if start is not None:
        level.start = _int(start.get(W_VAL), 1)
    fmt = lvl.find(_w("numFmt"))
    if fmt is None:  # Word 2010's custom formats: <mc:AlternateContent> with a w14 choice
        alternate = lvl.find(MC_ALTERNATE)
        if alternate is not None:
            for branch in alternate:
                candidate = branch.find(_w("numFmt"))
                if candidate is None:
                    continue
                if candidate.get(W_VAL) == "custom":
                    first = (candidate.get(_w("format")) or "").split(",")[0].strip()
                    if first.isdigit():  # "001, 002, 003, ..." -> zero padded decimal
                        level.fmt = f"zeroPadded{len(first)}"
                        break
                    continue
                fmt = candidate
                break
    if fmt is not None:
        level.fmt = fmt.get(W_VAL) or "decimal"
    text = lvl.find(_w("lvlText"))
    if text is not None:
        level.text = text.get(W_VAL) or ""
    suffix = lvl.find(_w("suff"))
    if suffix is not None:
        level.suffix = suffix.get(W_VAL) or "tab"
    level.legal = _on(lvl.find(_w("isLgl")))
    restart = lvl.find(_w("lvlRestart"))
    if restart is not None:
        level.restart = _int(restart.get(W_VAL))
    style = lvl.find(_w("pStyle"))
    if style is not None:
        level.style = style.get(W_VAL)
    return level


def _levels_of(parent) -> dict[int, _Level]:
    levels: dict[int, _Level] = {}
    for lvl in parent.iterchildren(_w("lvl")):
        ilvl = _int(lvl.get(_w("ilvl")))
        if ilvl is not None and 0 <= ilvl < 10:
            levels[ilvl] = _read_level(lvl)
    return levels


@dataclass
class _Num:
    abstract: str
    starts: dict[int, int] = field(default_factory=dict)  # w:lvlOverride/w:startOverride
    levels: dict[int, _Level] = field(default_factory=dict)  # w:lvlOverride/w:lvl


class _Numbering:
    """List definitions (``word/numbering.xml``) and the running counters of one story."""

    def __init__(self, root, styles: _Styles) -> None:
        self.abstracts: dict[str, dict[int, _Level]] = {}
        self.style_links: dict[str, str] = {}  # abstractNumId -> numbering style it points to
        self.nums: dict[str, _Num] = {}
        self.styles = styles
        self.reset()
        if root is None:
            return
        for abstract in root.iterchildren(_w("abstractNum")):
            abstract_id = abstract.get(_w("abstractNumId"))
            if abstract_id is None:
                continue
            self.abstracts[abstract_id] = _levels_of(abstract)
            link = abstract.find(_w("numStyleLink"))
            if link is not None and link.get(W_VAL):
                self.style_links[abstract_id] = link.get(W_VAL)
        for num in root.iterchildren(_w("num")):
            num_id = num.get(_w("numId"))
            abstract = num.find(_w("abstractNumId"))
            if num_id is None or abstract is None:
                continue
            entry = _Num(abstract=abstract.get(W_VAL) or "")
            for override in num.iterchildren(_w("lvlOverride")):
                ilvl = _int(override.get(_w("ilvl")))
                if ilvl is None:
                    continue
                start = override.find(_w("startOverride"))
                if start is not None and _int(start.get(W_VAL)) is not None:
                    entry.starts[ilvl] = _int(start.get(W_VAL))
                lvl = override.find(_w("lvl"))
                if lvl is not None:
                    entry.levels[ilvl] = _read_level(lvl)
            self.nums[num_id] = entry

    def reset(self) -> None:
        self.counters: dict[str, dict[int, int]] = {}
        self.seen: set[tuple[str, int]] = set()

    def _abstract_of(self, num_id: str) -> str | None:
        """The abstract definition of a list instance, following ``w:numStyleLink``."""
        abstract = self.nums[num_id].abstract
        for _ in range(4):
            style_id = self.style_links.get(abstract)
            if style_id is None:
                break
            linked_num = self.styles.by_id.get(style_id).num_id if style_id in self.styles.by_id else None
            if linked_num is None or linked_num not in self.nums:
                break
            abstract = self.nums[linked_num].abstract
        return abstract if abstract in self.abstracts else None

    def resolve(self, num_id: str | None, ilvl: int | None, style_id: str | None, from_style: bool):
        """(numId, ilvl) with the level a style is linked to when the style gave no ``w:ilvl``."""
        if num_id is None or num_id == "0" or num_id not in self.nums:  # 0: numbering removed
            return None
        if ilvl is None:
            ilvl = 0
            if from_style and style_id:
                abstract = self._abstract_of(num_id)
                for index, level in (self.abstracts.get(abstract) or {}).items():
                    if level.style == style_id:
                        ilvl = index
                        break
        return num_id, ilvl

    def label(self, num_id: str, ilvl: int) -> str:
        """Advance the counters for one paragraph of list ``num_id`` at level ``ilvl``; return
        the number as Word shows it, with its suffix (or "" for no number)."""
        abstract = self._abstract_of(num_id)
        if abstract is None:
            return ""
        num = self.nums[num_id]
        levels = dict(self.abstracts[abstract])
        levels.update(num.levels)
        level = levels.get(ilvl)
        if level is None:
            return ""
        counters = self.counters.setdefault(abstract, {})
        if (num_id, ilvl) not in self.seen and ilvl in num.starts:
            counters[ilvl] = num.starts[ilvl]
        elif ilvl in counters:
            counters[ilvl] += 1
        else:
            counters[ilvl] = level.start
        self.seen.add((num_id, ilvl))
        for deeper in [d for d in counters if d > ilvl]:
            restart = levels[deeper].restart if deeper in levels else None
            if restart is None or (restart != 0 and ilvl < restart):
                del counters[deeper]

        if level.fmt == "bullet":
            text = "•"
        elif level.text is None:
            text = ""
        else:
            def number(match: re.Match) -> str:
                index = int(match.group(1)) - 1
                shown = levels.get(index, _Level())
                value = counters.get(index, shown.start)
                fmt = "decimal" if level.legal and shown.fmt != "none" else shown.fmt
                if fmt.startswith("zeroPadded"):
                    return str(value).zfill(_int(fmt[len("zeroPadded"):], 1))
                return format_number(value, fmt)

            text = re.sub(r"%([1-9])", number, level.text).strip()
        if not text:
            return ""
        return text + ("" if level.suffix == "nothing" else " ")


# --------------------------------------------------------------------------------------------
# Walking the XML


@dataclass
class _Notes:
    """Footnotes or endnotes: the note elements by id and the numbers given out so far."""

    notes: dict[str, object]
    fmt: str
    start: int
    numbers: dict[str, str] = field(default_factory=dict)


class _Reader:
    def __init__(self, styles: _Styles, numbering: _Numbering, notes: dict[str, _Notes]) -> None:
        self.styles = styles
        self.numbering = numbering
        self.notes = notes
        self.story = "body"
        self.first_heading: str | None = None
        self.depth = 0

    # -- blocks --------------------------------------------------------------------------------

    def blocks(self, container, extras: list[str] | None = None, plain: bool = False) -> list[str]:
        """The paragraphs and tables of ``container`` as text blocks. Text boxes and notes of a
        paragraph follow it, or go to ``extras`` when given (table cells collect them for the row).
        ``plain``: no Markdown heading marks (inside table cells)."""
        self.depth += 1
        if self.depth > 64:  # text boxes in text boxes in ...: stop rather than recurse forever
            self.depth -= 1
            return []
        lines: list[str] = []
        carried: tuple[str, list[str]] | None = None
        try:
            for child in self._block_children(container):
                if _tag(child) == W_TBL:
                    if carried:
                        lines.extend(self._emit_carried(carried, extras))
                        carried = None
                    lines.extend(self.table(child, extras))
                    continue
                carried = self.paragraph(child, carried, lines, extras, plain)
            if carried:
                lines.extend(self._emit_carried(carried, extras))
        finally:
            self.depth -= 1
        return lines

    def _emit_carried(self, carried: tuple[str, list[str]], extras: list[str] | None) -> list[str]:
        text, notes = carried
        out = [text] if text.strip() else []
        if extras is not None:
            extras.extend(notes)
            return out
        return out + notes

    def _block_children(self, container):
        """Paragraphs and tables of ``container`` in order, looking through content controls,
        custom XML, tracked insertions and alternate content."""
        for child in container:
            tag = _tag(child)
            if tag in (W_P, W_TBL):
                yield child
            elif tag == W_SDT:
                if self._placeholder(child):
                    continue
                content = child.find(W_SDT_CONTENT)
                if content is not None:
                    yield from self._block_children(content)
            elif tag in _BLOCK_WRAPPERS:
                yield from self._block_children(child)
            elif tag == MC_ALTERNATE:
                branch = self._choose(child, lambda b: any(True for _ in b.iter(W_T)))
                if branch is not None:
                    yield from self._block_children(branch)

    @staticmethod
    def _placeholder(sdt) -> bool:
        props = sdt.find(W_SDT_PR)
        return props is not None and _on(props.find(_w("showingPlcHdr")))

    @staticmethod
    def _choose(alternate, has_text):
        """The branch of an ``mc:AlternateContent`` to read: the first choice, unless it holds no
        text and the fallback does."""
        choice = next((b for b in alternate if _tag(b) == MC_CHOICE), None)
        fallback = next((b for b in alternate if _tag(b) == MC_FALLBACK), None)
        if choice is not None and (fallback is None or has_text(choice)):
            return choice
        return fallback

    # -- paragraphs ----------------------------------------------------------------------------

    def paragraph(self, p, carried, lines: list[str], extras: list[str] | None, plain: bool):
        """Append paragraph ``p`` to ``lines``; returns what runs on into the next paragraph when
        the paragraph mark is a tracked deletion (or move away), else None."""
        parts: list[str] = []
        after: list[str] = []
        if carried:
            parts.append(carried[0])
            after.extend(carried[1])
        self.inline(p, parts, after)
        text = clean_text("".join(parts))

        ppr = p.find(_w("pPr"))
        mark = ppr.find(_w("rPr")) if ppr is not None else None
        if mark is not None and (mark.find(_w("del")) is not None or mark.find(_w("moveFrom")) is not None):
            return text, after

        style_id = None
        num_id = ilvl = None
        direct_outline = None
        if ppr is not None:
            style = ppr.find(_w("pStyle"))
            style_id = style.get(W_VAL) if style is not None else None
            num_pr = ppr.find(_w("numPr"))
            if num_pr is not None:
                num_el, ilvl_el = num_pr.find(_w("numId")), num_pr.find(_w("ilvl"))
                num_id = num_el.get(W_VAL) if num_el is not None else None
                ilvl = _int(ilvl_el.get(W_VAL)) if ilvl_el is not None else None
            outline = ppr.find(_w("outlineLvl"))
            direct_outline = _int(outline.get(W_VAL)) if outline is not None else None
        from_style = num_id is None
        if from_style:
            style_num, style_ilvl = self.styles.numbering(style_id)
            num_id = style_num
            ilvl = ilvl if ilvl is not None else style_ilvl
        label = ""
        target = self.numbering.resolve(num_id, ilvl, style_id, from_style)
        if target is not None:
            label = self.numbering.label(*target)

        text = text.strip()
        if text:
            level = None if plain else self.styles.heading_level(style_id, direct_outline)
            if level:
                text = " ".join((label + text).split())
                if self.first_heading is None and self.story == "body":
                    self.first_heading = text
                lines.append("#" * level + " " + text)
            else:
                lines.append(label + text)
        if extras is not None:
            extras.extend(after)
        else:
            lines.extend(after)
        return None

    def inline(self, el, out: list[str], after: list[str]) -> None:
        """Collect the shown text under ``el`` into ``out``; text boxes and notes found on the way
        go to ``after`` as blocks of their own."""
        for child in el:
            tag = _tag(child)
            if not tag or tag in _SKIP_INLINE:
                continue
            if tag == W_R and _hidden_run(child):  # w:vanish: Word does not show it, nor do we
                continue
            if tag == W_T or tag == M_T:
                out.append(child.text or "")
            elif tag in (W_TAB, W_PTAB):
                out.append("\t")
            elif tag in (W_BR, W_CR):
                out.append("\n")
            elif tag == W_NO_BREAK_HYPHEN:
                out.append("-")
            elif tag == W_SOFT_HYPHEN:
                continue
            elif tag in (W_FOOTNOTE_REF, W_ENDNOTE_REF):
                self._note(child, "footnote" if tag == W_FOOTNOTE_REF else "endnote", out, after)
            elif tag == W_TXBX_CONTENT:
                after.extend(self.blocks(child))
            elif tag in (W_P, W_TBL):  # block content where runs were expected: read it as blocks
                wrapper_lines: list[str] = []
                if tag == W_TBL:
                    wrapper_lines = self.table(child, None)
                else:
                    self.paragraph(child, None, wrapper_lines, None, False)
                after.extend(wrapper_lines)
            elif tag == W_SDT:
                if not self._placeholder(child):
                    content = child.find(W_SDT_CONTENT)
                    if content is not None:
                        self.inline(content, out, after)
            elif tag == MC_ALTERNATE:
                branch = self._choose(child, self._has_text)
                if branch is not None:
                    self.inline(branch, out, after)
            else:  # runs, hyperlinks, insertions, fields, drawings, VML shapes, math ...
                self.inline(child, out, after)

    @staticmethod
    def _has_text(el) -> bool:
        return any((t.text or "").strip() for t in el.iter(W_T, M_T))

    def _note(self, ref, kind: str, out: list[str], after: list[str]) -> None:
        notes = self.notes.get(kind)
        note_id = ref.get(W_ID)
        if notes is None or note_id is None or note_id not in notes.notes:
            return
        if note_id in notes.numbers:  # the same note cited twice: mark it, write it once
            out.append(f"[^{notes.numbers[note_id]}]")
            return
        custom = (ref.get(_w("customMarkFollows")) or "0").lower()
        if custom not in ("0", "false", "off"):
            mark = "*"  # the author's own mark is in the text that follows
        else:
            mark = format_number(notes.start + sum(1 for m in notes.numbers.values() if m != "*"), notes.fmt)
            out.append(f"[^{mark}]")
        notes.numbers[note_id] = mark
        story, self.story = self.story, "note"
        counters = self.numbering.counters, self.numbering.seen
        self.numbering.reset()
        try:
            note_lines = self.blocks(notes.notes[note_id], plain=True)
        finally:
            self.story = story
            self.numbering.counters, self.numbering.seen = counters
        text = " ".join(" ".join(line.split()) for line in note_lines if line.strip())
        if text:
            after.append(f"[^{mark}]: {text}")

    # -- tables --------------------------------------------------------------------------------

    def table(self, tbl, extras: list[str] | None) -> list[str]:
        """One line per row, cells joined by " | "; text boxes and notes in a row follow it."""
        lines: list[str] = []
        merged_above: dict[int, str] = {}
        for tr in self._children(tbl, W_TR):
            trpr = tr.find(_w("trPr"))
            if trpr is not None and trpr.find(_w("del")) is not None:
                continue  # a row deleted with change tracking on
            row_extras: list[str] = []
            cells: list[str] = []
            column = 0
            if trpr is not None:
                before = trpr.find(_w("gridBefore"))
                column = _int(before.get(W_VAL), 0) if before is not None else 0
            for tc in self._children(tr, W_TC):
                tcpr = tc.find(_w("tcPr"))
                span, vmerge = 1, None
                if tcpr is not None:
                    span_el = tcpr.find(_w("gridSpan"))
                    span = max(1, _int(span_el.get(W_VAL), 1)) if span_el is not None else 1
                    vmerge_el = tcpr.find(_w("vMerge"))
                    if vmerge_el is not None:
                        vmerge = vmerge_el.get(W_VAL) or "continue"
                if vmerge == "continue":
                    text = merged_above.get(column, "")
                else:
                    cell_lines = self.blocks(tc, extras=row_extras, plain=True)
                    text = " ".join(" ".join(cell_lines).split())
                    if vmerge == "restart":
                        merged_above[column] = text
                    else:
                        merged_above.pop(column, None)
                cells.append(text)
                column += span
            if any(cells):
                lines.append(" | ".join(cells))
            if extras is not None:
                extras.extend(row_extras)
            else:
                lines.extend(row_extras)
        return ["\n".join(lines)] if lines else []

    def _children(self, parent, tag: str):
        """Children ``tag`` of ``parent``, looking through row- and cell-level content controls
        and custom XML."""
        for child in parent:
            child_tag = _tag(child)
            if child_tag == tag:
                yield child
            elif child_tag == W_SDT:
                content = child.find(W_SDT_CONTENT)
                if content is not None:
                    yield from self._children(content, tag)
            elif child_tag in _BLOCK_WRAPPERS:
                yield from self._children(child, tag)


# --------------------------------------------------------------------------------------------
# Parts


def _xml_of(part):
    """The root element of a package part, parsed without entities or network access."""
    element = getattr(part, "element", None)
    if element is not None:
        return element
    from lxml import etree

    parser = etree.XMLParser(resolve_entities=False, no_network=True, remove_comments=True)
    return etree.fromstring(part.blob, parser=parser)


def _related(part, kind: str) -> list:
    """Parts that ``part`` relates to with a relationship type ending in ``/kind``."""
    found = []
    for rel in part.rels.values():
        if rel.is_external or not rel.reltype.endswith("/" + kind):
            continue
        found.append(rel.target_part)
    return found


def _first_xml(part, kind: str):
    parts = _related(part, kind)
    return _xml_of(parts[0]) if parts else None


def _note_format(kind: str, settings, last_sect_pr) -> tuple[str, int]:
    """Number format and start of footnotes or endnotes: the document's choice, else Word's."""
    fmt, start = ("decimal" if kind == "footnote" else "lowerRoman"), 1
    for holder in (settings, last_sect_pr):
        if holder is None:
            continue
        props = holder.find(_w(f"{kind}Pr"))
        if props is None:
            continue
        fmt_el, start_el = props.find(_w("numFmt")), props.find(_w("numStart"))
        if fmt_el is not None and fmt_el.get(W_VAL):
            fmt = fmt_el.get(W_VAL)
        if start_el is not None:
            start = _int(start_el.get(W_VAL), start)
    return fmt, start


def _load_notes(doc_part, kind: str, settings, last_sect_pr) -> _Notes | None:
    root = _first_xml(doc_part, f"{kind}s")
    if root is None:
        return None
    notes = {}
    for note in root.iterchildren(_w(kind)):
        if note.get(W_TYPE, "normal") != "normal":  # separator, continuationSeparator, ...
            continue
        if note.get(W_ID) is not None:
            notes[note.get(W_ID)] = note
    fmt, start = _note_format(kind, settings, last_sect_pr)
    return _Notes(notes=notes, fmt=fmt, start=start)


_HEADER_ORDER = {"first": 0, "default": 1, "even": 2}


def _header_footer_texts(reader: _Reader, doc_part, body, settings) -> tuple[list[str], list[str]]:
    """Distinct texts of the headers and footers Word displays, in section order."""
    even_pages = settings is not None and _on(settings.find(_w("evenAndOddHeaders")))
    sect_prs = [  # the body's own and the section breaks', not old ones kept by change tracking
        s for s in body.iter(_w("sectPr"))
        if s.getparent() is body
        or (_tag(s.getparent()) == _w("pPr") and _tag(s.getparent().getparent()) == W_P)
    ]
    texts: dict[str, list[str]] = {"header": [], "footer": []}
    done: set[str] = set()
    for sect_pr in sect_prs:
        title_page = _on(sect_pr.find(_w("titlePg")))
        for kind in ("header", "footer"):
            refs = sorted(
                sect_pr.iterchildren(_w(f"{kind}Reference")),
                key=lambda r: _HEADER_ORDER.get(r.get(W_TYPE, "default"), 1),
            )
            for ref in refs:
                kind_of_page = ref.get(W_TYPE, "default")
                if (kind_of_page == "first" and not title_page) or (kind_of_page == "even" and not even_pages):
                    continue
                rel_id = ref.get(R_ID)
                if rel_id in done or rel_id not in doc_part.rels:
                    continue
                done.add(rel_id)
                rel = doc_part.rels[rel_id]
                if rel.is_external:
                    continue
                root = _xml_of(rel.target_part)
                counters = reader.numbering.counters, reader.numbering.seen
                reader.numbering.reset()
                reader.story = kind
                try:
                    lines = reader.blocks(root, plain=True)
                finally:
                    reader.story = "body"
                    reader.numbering.counters, reader.numbering.seen = counters
                text = " ".join(" ".join(line.split()) for line in lines if line.strip())
                if any(ch.isalpha() for ch in text) and text not in texts[kind]:
                    texts[kind].append(text)
    return texts["header"], texts["footer"]


# --------------------------------------------------------------------------------------------
# Loader


def _check_zip(path: Path) -> None:
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            names = {i.filename for i in infos}
            if "word/document.xml" not in names:
                raise UnreadableFile(path, "not a Word document (no word/document.xml inside)")
            xml_total = sum(i.file_size for i in infos if i.filename.endswith((".xml", ".rels")))
            if xml_total > MAX_DOCX_XML_BYTES or sum(i.file_size for i in infos) > MAX_DOCX_TOTAL_BYTES:
                raise UnreadableFile(path, "the document's XML is unreasonably large (zip bomb?)")
    except zipfile.BadZipFile:
        raise UnreadableFile(path, "damaged or not a DOCX file (not a valid zip archive)") from None


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
    _check_zip(path)

    import docx

    document = docx.Document(str(path))
    doc_part = document.part
    body = document.element.find(_w("body"))
    if body is None:
        raise UnreadableFile(path, "not a Word document (word/document.xml has no body)")

    styles = _Styles(_first_xml(doc_part, "styles"))
    numbering = _Numbering(_first_xml(doc_part, "numbering"), styles)
    settings = _first_xml(doc_part, "settings")
    last_sect_pr = body.find(_w("sectPr"))
    notes = {}
    for kind in ("footnote", "endnote"):
        loaded = _load_notes(doc_part, kind, settings, last_sect_pr)
        if loaded is not None:
            notes[kind] = loaded

    reader = _Reader(styles, numbering, notes)
    lines = reader.blocks(body)
    headers, footers = _header_footer_texts(reader, doc_part, body, settings)
    body_text = "\n\n".join(lines)
    chinese = bool(_HAS_CJK.search(body_text or " ".join(headers + footers)))
    header_label, footer_label = ("页眉：", "页脚：") if chinese else ("Header: ", "Footer: ")
    blocks = [header_label + h for h in headers] + lines + [footer_label + f for f in footers]
    text = clean_text("\n\n".join(blocks))

    title = ""
    try:
        title = (document.core_properties.title or "").strip()
    except Exception:
        title = ""
    title = title or reader.first_heading or path.stem
    return LoadedDocument(path=path, file_type="docx", title=title, pages=[Page(None, text)])

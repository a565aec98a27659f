"""Layout-aware PDF text: each page's lines in reading order, with their boxes on the page.

``read_layout(source) -> list[PageLayout]`` reads every character of a page with PDFium
(pypdfium2's text page: each character's code, box, origin and angle) and then

* groups characters into lines: characters whose boxes overlap vertically by half a line and
  whose baselines agree, sorted left to right (a smaller superscript or subscript joins the line
  it stands beside). One space is written between Latin words (a space character in the PDF, or
  a gap wider than the line's usual letter gap by 0.15 of a line), and none next to a CJK
  character unless the PDF has a space character there (between words, table cells, or letters
  spaced out with spaces, which the PDF loader tidies away) or the gap is half a character or
  more (a table cell, an ideographic space);
* finds text columns: a vertical strip that (almost) no line crosses, with lines on both sides
  that run side by side, each side filling at least 40 % of the height where both run, the
  right side's lines mostly starting at one left edge. Lines that cross the strip (a title, an
  abstract, a wide caption) are read in their place from top to bottom, and between two of them
  the left column is read wholly before the right one. The search recurses into each side, so
  three columns are found too;
* sets aside running heads, running footers and page numbers (``header_footer_lines``): a line
  in the top or bottom 12 % of the page, set off from the body by a gap (one of the at most three
  lines before the first gap of 0.8 line from the page's edge), whose text, with every run of
  digits written as ``#``, appears there on at least 40 % of the pages (and on two or more), or
  that stands where such lines stand on 40 % of the pages and body lines (almost) never do and
  is no taller than the page's usual line (a running head naming each chapter, not the title of
  each slide of a deck; counted on pages with body lines only, so that pages of one line each
  keep it), or a line there that is a bare page number (``7``,
  ``- 7 -``, ``Page 7 of 9``, ``7/9``, ``第7页``, ``vii``).

Coordinates: every :class:`Box` is in PDF points (1/72 inch) with the origin at the **top-left**
corner of the page **as displayed** (the crop box, turned by the page's ``/Rotate``), x growing to
the right and y growing downwards: the frame a renderer draws in. To draw a box on an image
rendered at ``scale`` pixels per point (pypdfium2 ``page.render(scale=...)``), multiply it by
``scale``. ``PageLayout.width`` / ``height`` are the displayed page's size in points.

Text written in another direction than most of the page (a vertical arXiv stamp in the margin, a
table turned on its side) is laid out in its own direction, and its lines follow the page's other
lines. Pages turned by ``/Rotate`` are read as displayed.

For highlighting: ``PageLayout.text`` is the body lines joined with ``"\\n"``;
``boxes_for(start, end)`` gives the boxes covering a character range of it (whole lines, or the
covered part of a line from its character boxes), and ``find(snippet)`` finds a passage in it
ignoring whitespace.

Limits: a table is read row by row, except that one filling a good part of a page with cells in
left-aligned columns can be taken for text columns (and read column by column); vertical CJK text
(竖排: upright characters in top-to-bottom columns) is read across, not down its columns; a page
without a text layer (a scan) has no lines. Errors (an encrypted PDF without its password, a
damaged file) are pypdfium2's own ``PdfiumError``, raised as it comes.
"""

from __future__ import annotations

import bisect
import ctypes
import math
import re
import statistics
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import NamedTuple

from ingest.loaders.document import CJK

__all__ = ["Box", "CharBoxes", "PageLayout", "TextLine", "order_boxes", "read_layout"]


class Box(NamedTuple):
    """A rectangle on the displayed page in PDF points, origin top-left, y downwards."""

    x0: float
    top: float
    x1: float
    bottom: float

    @property
    def width(self) -> float:
        return self.x1 - self.x0

    @property
    def height(self) -> float:
        return self.bottom - self.top

    @staticmethod
    def union(boxes: Iterable[Sequence[float]]) -> Box:
        """The smallest box holding all of ``boxes`` (Boxes or ``(x0, top, x1, bottom)``)."""
        boxes = list(boxes)
        return Box(
            min(b[0] for b in boxes),
            min(b[1] for b in boxes),
            max(b[2] for b in boxes),
            max(b[3] for b in boxes),
        )


_NO_BOX = (math.nan,) * 4


class CharBoxes(Sequence):
    """One entry per character of a line's text: that character's :class:`Box`, or None for a
    space this reader wrote between two words or segments. Stored as packed floats (32 bytes a
    character), since a document's layout holds one per character."""

    __slots__ = ("_data",)

    def __init__(self, boxes: Iterable[Sequence[float] | None] = ()):
        data = array("d")
        for box in boxes:
            data.extend(_NO_BOX if box is None else box)
        self._data = data

    @classmethod
    def _packed(cls, data: array) -> CharBoxes:
        new = cls.__new__(cls)
        new._data = data
        return new

    def __len__(self) -> int:
        return len(self._data) // 4

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError("character index out of range")
        x0, top, x1, bottom = self._data[4 * index : 4 * index + 4]
        return None if math.isnan(x0) else Box(x0, top, x1, bottom)

    def __repr__(self) -> str:
        return f"CharBoxes(<{len(self)} characters>)"


@dataclass
class TextLine:
    """One line of text on a page: its text, its box, the 0-based index of its page, and the
    box of each character of ``text`` (:class:`CharBoxes`)."""

    text: str
    box: Box
    page_index: int
    char_boxes: CharBoxes = field(default_factory=CharBoxes, repr=False, compare=False)


@dataclass
class PageLayout:
    """One page: body ``lines`` in reading order, and the running heads, footers and page
    numbers set aside in ``header_footer_lines`` (top to bottom). ``page_index`` is 0-based;
    ``width`` / ``height`` are the displayed page's size in points; ``columns`` is the most text
    columns found side by side on the page (1 when none); ``rotation`` the page's ``/Rotate``."""

    page_index: int
    width: float
    height: float
    lines: list[TextLine]
    header_footer_lines: list[TextLine] = field(default_factory=list)
    columns: int = 1
    rotation: int = 0

    @cached_property
    def text(self) -> str:
        """The body lines in reading order, joined with ``"\\n"``."""
        return "\n".join(line.text for line in self.lines)

    @cached_property
    def _starts(self) -> list[int]:
        starts, pos = [], 0
        for line in self.lines:
            starts.append(pos)
            pos += len(line.text) + 1
        return starts

    def boxes_for(self, start: int, end: int) -> list[Box]:
        """The boxes covering ``self.text[start:end]``, in reading order: a line's box where the
        range covers the whole line, else the union of the covered characters' boxes."""
        out: list[Box] = []
        first = max(0, bisect.bisect_right(self._starts, start) - 1)
        for line, ls in zip(self.lines[first:], self._starts[first:]):
            if ls >= end:
                break
            le = ls + len(line.text)
            s, e = max(start, ls), min(end, le)
            if s >= e:
                continue
            if s == ls and e == le:
                out.append(line.box)
            else:
                covered = [b for b in line.char_boxes[s - ls : e - ls] if b is not None]
                if covered:
                    out.append(Box.union(covered))
        return out

    @cached_property
    def _compact(self) -> tuple[str, list[int]]:
        index = [i for i, ch in enumerate(self.text) if not ch.isspace()]
        return "".join(self.text[i] for i in index), index

    def find(self, snippet: str, start: int = 0) -> tuple[int, int] | None:
        """Where ``snippet`` occurs in :attr:`text` at or after offset ``start``, ignoring all
        whitespace on both sides (line breaks, spaces a loader added or removed): ``(start,
        end)`` offsets into :attr:`text`, or None."""
        needle = "".join(snippet.split())
        if not needle:
            return None
        compact, index = self._compact
        k = compact.find(needle, bisect.bisect_left(index, start))
        if k < 0:
            return None
        return index[k], index[k + len(needle) - 1] + 1


# ---------------------------------------------------------------------------------------------
# Reading characters

_SPACES = frozenset((0x20, 0x09, 0x0A, 0x0D, 0xA0, 0x3000, 0x2002, 0x2003, 0x2009, 0x200A,
                     0x202F, 0x205F))
_DROPPED = frozenset((0xFFFE, 0xFFFF, 0xFEFF, 0xAD))
_LIGATURES = {"\ufb00": "ff", "\ufb01": "fi", "\ufb02": "fl", "\ufb03": "ffi", "\ufb04": "ffl",
              "\ufb05": "st", "\ufb06": "st"}
_CJK_CHAR = re.compile(rf"[{CJK}]")


class _Char(NamedTuple):
    text: str  # one character, or a ligature spelled out
    box: tuple[float, float, float, float]  # on the displayed page (x0, top, x1, bottom)
    f: tuple[float, float, float, float]  # the same box in the reading frame
    seq: int  # order among the kept characters of the page
    space_before: int  # just before: 2 a space character of the PDF, 1 one PDFium inferred, 0 none
    baseline: float  # the frame y of the character's origin
    cjk: bool  # a CJK character (no spaces between two of them)


@dataclass
class _Seg:
    """Characters of one row with no wide gap between them."""

    chars: list[_Char]
    x0: float
    top: float
    x1: float
    bottom: float
    row: int  # index of the row (in the page's main direction; -1 in others)


def _frame_transform(direction: int):
    """A map of displayed-page points into a frame in which text of ``direction`` (0: left to
    right, 1: downwards, 2: right to left (upside down), 3: upwards) reads left to right and its
    lines follow each other downwards. A rotation, so boxes stay boxes."""
    return {
        0: lambda x, y: (x, y),
        1: lambda x, y: (y, -x),
        2: lambda x, y: (-x, -y),
        3: lambda x, y: (-y, x),
    }[direction]


def _page_chars(page, width: float, height: float) -> list[tuple]:
    """The page's characters as (text, display box, direction, space before, origin x, y)."""
    import pypdfium2.raw as pdfium_c

    # The page -> display map, read from PDFium itself (crop box, /Rotate); 64 device units a
    # point keep its integer output precise to 1/64 pt.
    sx, sy = max(1, round(width * 64)), max(1, round(height * 64))
    dx, dy = ctypes.c_int(), ctypes.c_int()

    def device(x: float, y: float) -> tuple[float, float]:
        pdfium_c.FPDF_PageToDevice(page.raw, 0, 0, sx, sy, 0, x, y, dx, dy)
        return dx.value / 64.0, dy.value / 64.0

    ox, oy = device(0.0, 0.0)
    ax, ay = device(1000.0, 0.0)
    bx, by = device(0.0, 1000.0)
    a, b = (ax - ox) / 1000.0, (ay - oy) / 1000.0  # display offset per page-x unit
    c, d = (bx - ox) / 1000.0, (by - oy) / 1000.0  # per page-y unit

    textpage = page.get_textpage()
    try:
        tp = textpage.raw
        count = max(0, pdfium_c.FPDFText_CountChars(tp))
        # The text in one call: one character per entry of PDFium's character list in all but
        # rare cases, which are read character by character instead.
        bulk = textpage.get_text_range(0, count) if count else ""
        if len(bulk) != count:
            bulk = None
        rect = pdfium_c.FS_RECTF()
        get_unicode = pdfium_c.FPDFText_GetUnicode
        is_generated = pdfium_c.FPDFText_IsGenerated
        loose_box = pdfium_c.FPDFText_GetLooseCharBox
        get_angle = pdfium_c.FPDFText_GetCharAngle
        get_origin = pdfium_c.FPDFText_GetCharOrigin
        gx_, gy_ = ctypes.c_double(), ctypes.c_double()
        directions: dict[float, int] = {}
        out: list[tuple] = []
        space = 0
        pending_high = 0
        for i in range(count):
            code = ord(bulk[i]) if bulk is not None else get_unicode(tp, i)
            if code in _SPACES or (code < 0x10000 and chr(code).isspace()):
                # PDFium infers spaces (and line ends) from gaps; trusted less than the PDF's own.
                space = max(space, 1 if is_generated(tp, i) else 2)
                continue
            if 0xD800 <= code < 0xDC00:  # a UTF-16 high surrogate: joined with the next one
                pending_high = code
                continue
            if 0xDC00 <= code < 0xE000:
                if not pending_high:
                    continue
                code = 0x10000 + ((pending_high - 0xD800) << 10) + (code - 0xDC00)
            pending_high = 0
            if code < 0x20 or 0x7F <= code < 0xA0 or code in _DROPPED:
                continue  # control characters, byte-order marks, soft hyphens
            if not loose_box(tp, i, rect):
                continue
            # Display box: the map turns by a multiple of 90 degrees, so two corners suffice.
            left, bottom, right, top = rect.left, rect.bottom, rect.right, rect.top
            x0, y0 = ox + a * left + c * bottom, oy + b * left + d * bottom
            x1, y1 = ox + a * right + c * top, oy + b * right + d * top
            if x0 > x1:
                x0, x1 = x1, x0
            if y0 > y1:
                y0, y1 = y1, y0
            if x0 >= width or y0 >= height or x1 <= 0 or y1 <= 0:
                space = 0
                continue  # wholly outside the displayed page
            box = (max(0.0, x0), max(0.0, y0), min(width, x1), min(height, y1))
            # Direction of writing on the displayed page. PDFium's angle turns clockwise in PDF
            # space (y up), where the advance is (cos t, -sin t).
            t = get_angle(tp, i)
            direction = directions.get(t)
            if direction is None:
                px, py = (1.0, 0.0) if t < 0 else (math.cos(t), -math.sin(t))
                vx, vy = a * px + c * py, b * px + d * py
                if abs(vx) >= abs(vy):
                    direction = 0 if vx > 0 else 2
                else:
                    direction = 1 if vy > 0 else 3
                directions[t] = direction
            if get_origin(tp, i, gx_, gy_):
                gx, gy = ox + a * gx_.value + c * gy_.value, oy + b * gx_.value + d * gy_.value
            else:
                gx, gy = box[0], box[3]
            ch = chr(code)
            if ch == "t" and out and out[-1][0] == "\u017f" and out[-1][1] == box and not space:
                # PDFium spells the ligature U+FB05 (ﬅ) out as long s + t in one box: "st"
                out[-1] = ("s", *out[-1][1:])
            out.append((_LIGATURES.get(ch, ch), box, direction, space, gx, gy))
            space = 0
        return out
    finally:
        textpage.close()


def _frame_chars(raw: list[tuple], direction: int, width: float, height: float) -> list[_Char]:
    """The characters of one direction, with their boxes in that direction's reading frame."""
    cjk = _CJK_CHAR.match
    if direction == 0:  # upright: the frame is the displayed page
        return [
            _Char(text, box, box, seq, space_before, gy, cjk(text) is not None)
            for seq, (text, box, dirn, space_before, gx, gy) in enumerate(raw)
            if dirn == 0
        ]
    tf = _frame_transform(direction)
    corners = [tf(0.0, 0.0), tf(width, height)]
    fx, fy = min(p[0] for p in corners), min(p[1] for p in corners)
    chars = []
    for seq, (text, box, dirn, space_before, gx, gy) in enumerate(raw):
        if dirn != direction:
            continue
        p, q = tf(box[0], box[1]), tf(box[2], box[3])
        f = (min(p[0], q[0]) - fx, min(p[1], q[1]) - fy, max(p[0], q[0]) - fx,
             max(p[1], q[1]) - fy)
        chars.append(_Char(text, box, f, seq, space_before, tf(gx, gy)[1] - fy,
                           cjk(text) is not None))
    return chars


# ---------------------------------------------------------------------------------------------
# Lines

SEGMENT_GAP = 0.5
"""A gap wider than this share of the line's height splits a row into segments (word spaces
are narrower; column gutters, even LaTeX's 10 pt, are wider)."""
WORD_GAP = 0.15
"""A gap between Latin characters wider than the line's usual letter gap by this share of its
height is a word space."""
CJK_GAP = 0.5
"""A gap next to a CJK character wider than this share of the line's height is written as a
space."""
BASELINE_TOLERANCE = 0.2
"""Characters whose baselines differ by more than this share of the taller one's height are on
different lines (unless one is a smaller superscript or subscript beside the other)."""


def _rows(chars: list[_Char]) -> list[list[_Char]]:
    """Characters grouped into rows (each sorted left to right), top to bottom.

    A character joins a recent row when it overlaps the row's tallest character vertically by at
    least half the smaller height and their baselines agree (:data:`BASELINE_TOLERANCE`); then a
    row of smaller characters (a superscript, a subscript, a footnote mark) that overlaps a taller
    row by half its height and lies within it horizontally joins it."""
    rows: list[list] = []  # [top, bottom, height, baseline, chars], from the row's tallest char
    last = None
    for ch in sorted(chars, key=lambda c: c.f[1] + c.f[3]):
        top, bottom = ch.f[1], ch.f[3]
        height = max(bottom - top, 0.1)
        if (
            last is not None
            and ch.baseline == last[3]
            and height <= last[2]
            and min(last[1], bottom) - max(last[0], top) >= 0.5 * height
        ):
            last[4].append(ch)  # the same baseline as the row just used: no nearer row exists
            continue
        target, distance = None, math.inf
        for row in rows[-8:]:
            overlap = min(bottom, row[1]) - max(top, row[0])
            shift = abs(ch.baseline - row[3])
            if (
                overlap >= 0.5 * min(height, row[2])
                and shift <= BASELINE_TOLERANCE * max(height, row[2])
                and shift < distance
            ):
                target, distance = row, shift
        if target is None:
            target = [top, bottom, height, ch.baseline, [ch]]
            rows.append(target)
        else:
            target[4].append(ch)
            if height > target[2]:
                target[0], target[1], target[2], target[3] = top, bottom, height, ch.baseline
        last = target
    # Scripts: a smaller row overlapping a taller one (by half its height), within its x-range.
    rows.sort(key=lambda r: r[0])
    tops = [r[0] for r in rows]
    tallest = max((r[2] for r in rows), default=0.0)
    spans = [(min(c.f[0] for c in r[4]), max(c.f[2] for c in r[4])) for r in rows]
    merged_into: dict[int, int] = {}
    for i, small in enumerate(rows):
        best, best_overlap = None, 0.0
        for j in range(bisect.bisect_left(tops, small[0] - tallest), len(rows)):
            big = rows[j]
            if big[0] >= small[1]:
                break
            if j == i or big[2] < 1.1 * small[2]:
                continue
            overlap = min(small[1], big[1]) - max(small[0], big[0])
            margin = 0.5 * big[2]
            if (
                overlap >= 0.5 * small[2]
                and overlap > best_overlap
                and spans[j][0] - margin <= spans[i][0]
                and spans[i][1] <= spans[j][1] + margin
            ):
                best, best_overlap = j, overlap
        if best is not None:
            merged_into[i] = best
    for i, j in merged_into.items():
        while j in merged_into:  # into the row that is kept (heights grow along the way)
            j = merged_into[j]
        rows[j][4].extend(rows[i][4])
    out = [r[4] for i, r in enumerate(rows) if i not in merged_into]
    for row_chars in out:
        row_chars.sort(key=lambda c: (c.f[0], c.seq))
    return out


def _segments(row_chars: list[_Char], row: int) -> list[_Seg]:
    """A row's characters (sorted left to right) cut at wide gaps; a glyph drawn twice in the
    same place (simulated bold, a shadow) is kept once, while the letters of one ligature glyph
    that PDFium spells out (ﬀ as "f", "f": one after the other, in one box) all stay."""
    height = max(c.f[3] - c.f[1] for c in row_chars)
    segments: list[_Seg] = []
    previous = None
    for ch in row_chars:
        if previous is not None:
            if (
                ch.text == previous.text
                and abs(ch.f[0] - previous.f[0]) < 0.1 * height
                and abs(ch.f[1] - previous.f[1]) < 0.1 * height
                and not (ch.seq == previous.seq + 1 and ch.box == previous.box)
            ):
                continue
            if ch.f[0] - previous.f[2] > SEGMENT_GAP * height:
                previous = None
        if previous is None:
            seg = _Seg([ch], *ch.f, row)
            segments.append(seg)
        else:
            seg.chars.append(ch)
            f = ch.f
            seg.x1 = max(seg.x1, f[2])
            seg.top = min(seg.top, f[1])
            seg.bottom = max(seg.bottom, f[3])
        previous = ch
    return segments


def _make_line(segments: Sequence[_Seg], page_index: int) -> TextLine:
    """One line from segments of a row, with spaces between words: always between segments;
    between Latin characters after a space (the PDF's own or one PDFium inferred) or across a gap
    wider than the line's usual letter gap plus :data:`WORD_GAP` of its height (so letter-spaced
    text stays one word); next to a CJK character only after a space character of the PDF or
    across a gap of :data:`CJK_GAP` of a line or more (letter spacing without space characters
    is no space, nor is the quarter-em "autospace" typesetters put between CJK and Latin)."""
    segments = sorted(segments, key=lambda s: s.x0)
    height = max(s.bottom - s.top for s in segments)
    gaps = [b.f[0] - a.f[2] for seg in segments for a, b in zip(seg.chars, seg.chars[1:])]
    letter_gap = max(0.0, statistics.median(gaps)) if gaps else 0.0
    parts: list[str] = []
    boxes = array("d")
    previous: _Char | None = None
    for k, seg in enumerate(segments):
        for ch in seg.chars:
            if previous is not None:
                gap = ch.f[0] - previous.f[2]
                if k > 0 and ch is seg.chars[0]:
                    spaced = True
                elif previous.cjk or ch.cjk:
                    hinted = ch.space_before == 2 and ch.seq == previous.seq + 1
                    spaced = hinted or gap > CJK_GAP * height
                else:
                    hinted = ch.space_before and ch.seq == previous.seq + 1
                    spaced = hinted or gap > letter_gap + WORD_GAP * height
                if spaced:
                    parts.append(" ")
                    boxes.extend(_NO_BOX)
            parts.append(ch.text)
            for _ in ch.text:
                boxes.extend(ch.box)
            previous = ch
    box = Box.union(c.box for s in segments for c in s.chars)
    return TextLine("".join(parts), box, page_index, CharBoxes._packed(boxes))


# ---------------------------------------------------------------------------------------------
# Columns and reading order

MIN_COLUMN_LINES = 2
COLUMN_DENSITY = 0.4
"""Where two columns run side by side, each one's lines fill at least this share of the height."""


def _top(piece: list[_Seg]) -> float:
    return min(s.top for s in piece)


def _x0(piece: list[_Seg]) -> float:
    return min(s.x0 for s in piece)


def _gutter(
    pieces: list[list[_Seg]],
    skip: frozenset[int] = frozenset(),
    min_rows: int = 2 * MIN_COLUMN_LINES,
) -> tuple[float, float] | None:
    """The x-interval of a column gutter among ``pieces`` (lists of segments, one list per row;
    those of the rows in ``skip``, possible running heads and page numbers, left out), or None.
    The gutter is the widest strip in the middle 80 % of the text's width that the fewest
    segments cross (at most 40 % of the rows), with rows wholly on each side: at least
    two each, side by side vertically, each filling at least :data:`COLUMN_DENSITY` of the
    height where both run, and the right side's rows mostly starting at one left edge (a few may
    start left of it, in the gutter). Fewer than ``min_rows`` rows have no columns."""
    if skip:
        pieces = [p for p in pieces if p[0].row not in skip]
    segs = [s for p in pieces for s in p]
    if len(pieces) < max(min_rows, MIN_COLUMN_LINES) or not segs:
        return None
    bx0, bx1 = min(s.x0 for s in segs), max(s.x1 for s in segs)
    width = bx1 - bx0
    if width <= 0:
        return None
    lo, hi = bx0 + 0.1 * width, bx1 - 0.1 * width
    heights = sorted(s.bottom - s.top for s in segs)
    min_gap = max(2.0, 0.4 * heights[len(heights) // 2])
    # Coverage: how many segments cross each stretch between neighbouring segment edges
    # (a sweep over the edges); neighbouring stretches of equal coverage are joined.
    events = sorted([(s.x0, 1) for s in segs] + [(s.x1, -1) for s in segs])
    merged: list[list[float]] = []  # [start, end, coverage]
    cover, k = 0, 0
    x = lo
    while k < len(events) and events[k][0] <= lo:
        cover += events[k][1]
        k += 1
    while x < hi:
        nxt = min(events[k][0], hi) if k < len(events) else hi
        if nxt > x:
            if merged and merged[-1][2] == cover:
                merged[-1][1] = nxt
            else:
                merged.append([x, nxt, cover])
            x = nxt
        while k < len(events) and events[k][0] <= x:
            cover += events[k][1]
            k += 1
    best = None  # (coverage, -width, start, end)
    for g0, g1, cover in merged:
        if g1 - g0 < min_gap:
            continue
        key = (cover, -(g1 - g0), g0, g1)
        if best is None or key < best:
            best = key
    if best is None or best[0] > 0.4 * len(pieces):
        return None
    g0, g1 = best[2], best[3]
    left = [p for p in pieces if any(s.x1 <= g0 for s in p)]
    right = [[s for s in p if s.x0 >= g1] for p in pieces]
    right = [r for r in right if r]
    if len(left) < MIN_COLUMN_LINES or len(right) < MIN_COLUMN_LINES:
        return None
    l_top = min(_top(p) for p in left)
    l_bottom = max(s.bottom for p in left for s in p)
    r_top = min(_top(p) for p in right)
    r_bottom = max(s.bottom for p in right for s in p)
    overlap = min(l_bottom, r_bottom) - max(l_top, r_top)
    if overlap < 0.5 * min(l_bottom - l_top, r_bottom - r_top):
        return None
    # Side by side, both sides are full of lines (a lone page number or a few labels at the
    # right margin of a single column are not a column).
    zone_top, zone_bottom = max(l_top, r_top), min(l_bottom, r_bottom)
    for side in (left, right):
        filled = 0.0
        for p in side:
            top, bottom = _top(p), max(s.bottom for s in p)
            filled += max(0.0, min(bottom, zone_bottom) - max(top, zone_top))
        if filled < COLUMN_DENSITY * max(overlap, 1e-6):
            return None
    # One left edge where most right-side rows start (the densest, so that one row starting a
    # little left of it, in the gutter, does not hide it).
    tolerance = max(2.0, min_gap / 2)
    starts = sorted(_x0(p) for p in right)
    aligned = max(bisect.bisect_right(starts, x + tolerance) - k for k, x in enumerate(starts))
    if aligned < 0.5 * len(right):
        return None
    return g0, g1


def _order(
    pieces: list[list[_Seg]],
    skip: frozenset[int] = frozenset(),
    depth: int = 0,
    min_rows: int = 2 * MIN_COLUMN_LINES,
) -> tuple[list[list[_Seg]], int]:
    """Pieces in reading order, and the most columns found side by side. Rows in ``skip`` (see
    :func:`_gutter`) take no part in finding columns but are ordered with the rest."""
    gutter = _gutter(pieces, skip, min_rows) if depth < 6 else None
    if gutter is None:
        return sorted(pieces, key=lambda p: (_top(p), _x0(p))), 1
    g0, g1 = gutter
    out: list[list[_Seg]] = []
    columns = 1
    left: list[list[_Seg]] = []
    right: list[list[_Seg]] = []

    def flush() -> None:
        nonlocal columns, left, right
        ordered_left, n_left = _order(left, skip, depth + 1, min_rows) if left else ([], 0)
        ordered_right, n_right = _order(right, skip, depth + 1, min_rows) if right else ([], 0)
        out.extend(ordered_left)
        out.extend(ordered_right)
        columns = max(columns, n_left + n_right)
        left, right = [], []

    for piece in sorted(pieces, key=lambda p: (_top(p), _x0(p))):
        if any(s.x0 < g1 and s.x1 > g0 for s in piece):
            flush()
            out.append(piece)
        else:
            lpart = [s for s in piece if s.x1 <= g0]
            rpart = [s for s in piece if s.x0 >= g1]
            if lpart:
                left.append(lpart)
            if rpart:
                right.append(rpart)
    flush()
    return out, columns


def order_boxes(boxes: Sequence[Sequence[float]]) -> list[int]:
    """Reading order of free-standing line boxes ``(x0, top, x1, bottom)`` (lines found in an
    image by OCR, say; any unit, y downwards): the indices of ``boxes`` in reading order, by the
    same column rules as a page's text lines (:func:`_order`).

    Boxes that overlap vertically by half the smaller height share a row (a line the detector
    cut in two) and are read left to right; rows go top to bottom, except that where a column
    gutter is found the left column is read wholly before the right one, and a box crossing the
    gutter (a title, a centred heading, a page number) is read in its place between them."""
    if len(boxes) < 2:
        return list(range(len(boxes)))
    rows: list[list[_Seg]] = []
    index: dict[int, int] = {}
    row_top = row_bottom = 0.0
    for i in sorted(range(len(boxes)), key=lambda i: (boxes[i][1] + boxes[i][3], boxes[i][0])):
        x0, top, x1, bottom = (float(v) for v in boxes[i][:4])
        seg = _Seg([], x0, top, x1, bottom, 0)
        index[id(seg)] = i
        if rows:
            overlap = min(row_bottom, bottom) - max(row_top, top)
            if overlap >= 0.5 * min(row_bottom - row_top, bottom - top):
                seg.row = len(rows) - 1
                rows[-1].append(seg)
                continue
        seg.row = len(rows)
        rows.append([seg])
        row_top, row_bottom = top, bottom
    # Each box is a whole detected line, so two rows of boxes side by side (two on each side of
    # a gutter) already make columns; a text layer's page needs twice as many rows.
    ordered, _ = _order(rows, min_rows=MIN_COLUMN_LINES)
    return [index[id(s)] for piece in ordered for s in sorted(piece, key=lambda s: s.x0)]


# ---------------------------------------------------------------------------------------------
# Pages

BAND = 0.12
"""Running heads and footers sit in the top or bottom 12 % of the page..."""
OUTERMOST = 3
"""...among the three rows nearest the page's edge there..."""
FURNITURE_GAP = 0.8
"""...set off from the body by a gap of at least 0.8 of a line's height..."""
REPEAT_SHARE = 0.4
"""...and recur (digits aside) on at least 40 % of the pages, or stand where such lines stand
on 40 % of the pages and body lines (almost) never do, or are a bare page number."""
SAME_PLACE = 1.5
"""Rows whose top (top band) or bottom (bottom band) edges are this close sit at the same place."""
SMALL_ROW = 1.15
"""A row found by its place alone is no taller than this many times the page's median row."""


@dataclass
class _Candidate:
    """A row that may be a running head, a footer or a page number."""

    row: int
    band: str  # "top" or "bottom"
    edge: float  # its top (top band) or bottom (bottom band) edge
    line: TextLine  # the whole row as one line
    small: bool  # no taller than the page's usual line (running heads are; slide titles not)


@dataclass
class _PageResult:
    layout: PageLayout  # with every row still among the lines
    line_rows: list[int]  # the row of each line (-1: text in another direction)
    candidates: list[_Candidate]
    tops: list[float]  # top edge of every row (main direction), sorted
    bottoms: list[float]  # bottom edge of every row, sorted


def _candidates(rows: list[list[_Seg]], height: float, page_index: int) -> list[_Candidate]:
    """The rows that may be running heads or footers: from each edge of the page, the rows
    before the first gap of :data:`FURNITURE_GAP` lines, if there are at most
    :data:`OUTERMOST` of them, that lie in the :data:`BAND`."""
    boxes = [(min(s.top for s in r), max(s.bottom for s in r)) for r in rows]
    order = sorted(range(len(boxes)), key=lambda i: boxes[i][0])
    edge_rows: dict[str, list[int]] = {"top": [], "bottom": []}
    if len(order) == 1:
        edge_rows = {"top": order, "bottom": order}
    elif order:
        heights = sorted(b - t for t, b in boxes)
        gap_min = FURNITURE_GAP * heights[len(heights) // 2]
        for band, seq in (("top", order), ("bottom", order[::-1])):
            for k in range(min(OUTERMOST, len(seq) - 1)):
                a, b = boxes[seq[k]], boxes[seq[k + 1]]
                gap = b[0] - a[1] if band == "top" else a[0] - b[1]
                if gap >= gap_min:
                    edge_rows[band] = seq[: k + 1]
                    break
    if not order:
        return []
    usual = sorted(b - t for t, b in boxes)[len(boxes) // 2]

    def candidate(i: int, band: str, edge: float) -> _Candidate:
        small = boxes[i][1] - boxes[i][0] <= SMALL_ROW * usual
        return _Candidate(i, band, edge, _make_line(rows[i], page_index), small)

    out = [candidate(i, "top", boxes[i][0]) for i in edge_rows["top"] if boxes[i][1] <= BAND * height]
    taken = {c.row for c in out}
    out += [
        candidate(i, "bottom", boxes[i][1])
        for i in edge_rows["bottom"]
        if boxes[i][0] >= (1 - BAND) * height and i not in taken
    ]
    return out


def _read_page(doc, index: int) -> _PageResult:
    """One page laid out with all its rows among the lines, and what the search for running
    heads across pages needs."""
    page = doc[index]
    try:
        width, height = page.get_size()
        rotation = page.get_rotation()
        raw = _page_chars(page, width, height)
    finally:
        page.close()
    counts = [0, 0, 0, 0]
    for item in raw:
        counts[item[2]] += 1
    directions = sorted((k for k in range(4) if counts[k]), key=lambda k: -counts[k])
    lines: list[TextLine] = []
    line_rows: list[int] = []
    candidates: list[_Candidate] = []
    tops: list[float] = []
    bottoms: list[float] = []
    columns = 1
    for g, direction in enumerate(directions):
        frame_height = height if direction in (0, 2) else width
        rows = _rows(_frame_chars(raw, direction, width, height))
        pieces = [_segments(r, i if g == 0 else -1) for i, r in enumerate(rows)]
        if g == 0:
            candidates = _candidates(pieces, frame_height, index)
            tops = sorted(min(s.top for s in p) for p in pieces)
            bottoms = sorted(max(s.bottom for s in p) for p in pieces)
        skip = frozenset(c.row for c in candidates) if g == 0 else frozenset()
        ordered, n = _order(pieces, skip)
        if g == 0:
            columns = n
        for piece in ordered:
            lines.append(_make_line(piece, index))
            line_rows.append(piece[0].row)
    layout = PageLayout(index, width, height, lines, [], columns, rotation)
    return _PageResult(layout, line_rows, candidates, tops, bottoms)


_NUM = "0-9０-９一二三四五六七八九十百千零〇"
_PAGE_NUMBER = re.compile(
    rf"^[\W_]*(?:"
    rf"\d{{1,4}}(?:\s*(?:/|of|von|de)\s*\d{{1,4}})?"
    rf"|(?:page|p\.|pg\.?|seite|página)\s*\d{{1,4}}(?:\s*(?:/|of|von|de)\s*\d{{1,4}})?"
    rf"|[ivxlcdm]{{1,7}}"
    rf"|第\s*[{_NUM}]+\s*[页頁](?:\s*[,，/]?\s*共\s*[{_NUM}]+\s*[页頁])?"
    rf"|[{_NUM}]+\s*/\s*[{_NUM}]+"
    rf")[\W_]*$",
    re.IGNORECASE,
)
_DIGITS = re.compile(r"[0-9０-９]+")


def furniture_key(text: str) -> str:
    return _DIGITS.sub("#", "".join(text.split()).lower())


def is_page_number(text: str) -> bool:
    text = text.strip()
    if len(text) > 24:
        return False
    if re.fullmatch(r"[\W_]*[ivxlcdm]{1,7}[\W_]*", text, re.IGNORECASE) and text != text.lower():
        return False  # only lower-case roman numerals: "I" or "CV" may be body text
    return bool(_PAGE_NUMBER.match(text))


def _pages_near(edges: list[tuple[float, int]], y: float) -> set[int]:
    """The pages of the (edge, page) pairs (sorted) with an edge within SAME_PLACE of y."""
    lo = bisect.bisect_left(edges, (y - SAME_PLACE, -1))
    hi = bisect.bisect_right(edges, (y + SAME_PLACE, math.inf))
    return {page for _, page in edges[lo:hi]}


def _find_furniture(results: list[_PageResult]) -> dict[int, set[int]]:
    """Per page index, the rows (of its main direction) that are running heads, footers or page
    numbers: candidates whose text recurs with digits as ``#``, or that stand at a place where
    candidates stand on :data:`REPEAT_SHARE` of the pages and (almost) nothing else ever does and
    are no taller than the page's usual line (a running head naming each chapter; not a slide's
    title), on pages with body rows besides (not pages of one line each), or that are bare page
    numbers."""
    with_text = [r for r in results if r.layout.lines]
    need = max(2, math.ceil(REPEAT_SHARE * len(with_text)))
    seen: dict[tuple[str, str], set[int]] = {}
    places: dict[str, list[tuple[float, int]]] = {"top": [], "bottom": []}
    everything: dict[str, list[tuple[float, int]]] = {"top": [], "bottom": []}
    # A page whose every row is a candidate (a one-line page) gives no evidence of where its
    # running heads stand apart from its body: only pages with body rows count for places.
    bodied = {r.layout.page_index for r in with_text if len(r.tops) > len(r.candidates)}
    for r in with_text:
        index = r.layout.page_index
        for c in r.candidates:
            seen.setdefault((c.band, furniture_key(c.line.text)), set()).add(index)
            if index in bodied:
                places[c.band].append((c.edge, index))
        everything["top"].extend((y, index) for y in r.tops)
        everything["bottom"].extend((y, index) for y in r.bottoms)
    for edges in (*places.values(), *everything.values()):
        edges.sort()

    def same_place(c: _Candidate, index: int) -> bool:
        if not c.small or index not in bodied:
            return False
        there = _pages_near(places[c.band], c.edge)
        return len(there) >= need and len(there) >= 0.8 * len(_pages_near(everything[c.band], c.edge))

    out: dict[int, set[int]] = {}
    for r in with_text:
        for c in r.candidates:
            if (
                len(seen[(c.band, furniture_key(c.line.text))]) >= need
                or is_page_number(c.line.text)
                or same_place(c, r.layout.page_index)
            ):
                out.setdefault(r.layout.page_index, set()).add(c.row)
    return out


def layout_from_lines(lines: Sequence[tuple[str, Sequence[float]]], page_index: int, width: float,
                      height: float) -> PageLayout:
    """A :class:`PageLayout` of lines known only by their text and box, in reading order (OCR
    output): each character gets an equal share of its line's width, so a passage starting or
    ending mid-line is still highlighted about where it stands."""
    out = []
    for text, box in lines:
        x0, top, x1, bottom = (float(v) for v in box)
        step = (x1 - x0) / max(1, len(text))
        chars = CharBoxes(None if ch.isspace() else (x0 + i * step, top, x0 + (i + 1) * step, bottom)
                          for i, ch in enumerate(text))
        out.append(TextLine(text, Box(x0, top, x1, bottom), page_index, chars))
    return PageLayout(page_index, width, height, out)


def read_layout(source, password: str | None = None) -> list[PageLayout]:
    """Every page of a PDF (a path, the file's bytes, or a ``pypdfium2.PdfDocument`` already
    open, which is left open) as a :class:`PageLayout`, in order.

    Raises what pypdfium2 raises for a file it cannot open (``pypdfium2.PdfiumError``: an
    encrypted PDF without the right ``password``, a damaged or non-PDF file)."""
    import pypdfium2 as pdfium

    if isinstance(source, pdfium.PdfDocument):
        doc, owned = source, False
    else:
        if isinstance(source, Path):
            source = str(source)
        doc, owned = pdfium.PdfDocument(source, password=password), True
    try:
        results = [_read_page(doc, i) for i in range(len(doc))]
    finally:
        if owned:
            doc.close()
    furniture = _find_furniture(results)
    pages = []
    for r in results:
        layout = r.layout
        aside_rows = furniture.get(layout.page_index, set())
        if aside_rows:
            layout.lines = [l for l, row in zip(layout.lines, r.line_rows) if row not in aside_rows]
            layout.header_footer_lines = sorted(
                (c.line for c in r.candidates if c.row in aside_rows),
                key=lambda line: (line.box.top, line.box.x0),
            )
        pages.append(layout)
    return pages

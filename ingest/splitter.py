"""Cut loaded documents into chunks measured in the embedder's tokens.

``split_document(doc, count_tokens, chunk_tokens, overlap_tokens, max_tokens) -> list[ChunkDraft]``

How a cut is chosen
-------------------
Each page is split separately (a chunk never spans two PDF pages) and each page into *sections*
at Markdown heading lines (``# ...``, outside fenced code blocks); a heading with nothing under it
is merged into the next section. A section is cut once more where its language changes for at
least :data:`LANGUAGE_RUN_UNITS` Chinese characters or English words (the English title and
abstract of a Chinese paper, a Chinese summary in an English report): a chunk in one language is
embedded, matched by BM25 and marked (ingest.chunk_kinds) as what it is. Within a section, candidate
cut points are marked with a strength:

0. paragraph break (a blank line),
1. sentence end: ``。！？；!?;…`` / ``……`` / ``...``, or ``.`` followed by whitespace, always
   together with any closing quotes and brackets that follow (``”’」』）)】》`` ...),
2. line break,
3. clause end: ``，、：,:``,
4. whitespace between words.

A cut never falls inside a *word-like token*: a number or amount (``10,092,213.74``, ``3.5%``,
``¥1,200``), a time or date (``09:45``, ``2024-01-15``, ``2024年1月15日``), a version
(``v2.3.1``), a URL or e-mail address, a model number (``ZX-300P``) or a Latin word; a comma or
colon between two digits is part of the number, not a clause end, and a ``?`` inside a URL is not
a sentence end. Candidates inside such tokens are dropped, and a cut by characters (below) is
moved back to the token's start. Only a token longer than a whole chunk is ever cut.

From the current start the splitter finds, by an interpolating search on character positions, the
furthest end whose text still fits (``count_tokens(text) <= limit``). It then cuts at the strongest
candidate in the second half of that reach (the latest one among equals); if there is none there,
at the last candidate before it, provided the piece after it fits in a chunk of its own; otherwise
(a run with no punctuation or spaces longer than a chunk) at the reach itself, moved so that it
does not separate a combining mark, variation selector or ZWJ sequence from its base, nor fall
inside a word-like token.

Tables
------
A table is a Markdown table (header row, ``|---|`` delimiter row, rows) or what the DOCX and
HTML loaders emit for one: at least three lines whose cells are joined by ``" | "`` (HTML rows
may have blank lines between them). A table is split on its own, by rows, without overlap: every
chunk of it carries the table's header row (and delimiter row) and its caption, so that a row is
never read without the names of its columns. The caption is the short line just above the table
(a ``<caption>``, "表1 ...", "下表列出..."), or, without one, the section's heading lines. The
table's first chunk is the text as written from the caption (or from the section's heading, when
only that stands before the table) through the first rows; each later chunk is
``caption + "\n" + header row(s) + "\n" + rows``. Text before and after a table is split as
usual, in chunks of its own. (A section that fits in one chunk stays one chunk, tables and
all.)

``count_tokens`` is treated as opaque (it may add special tokens, it need not be additive): every
chunk's own text is measured before it is emitted. The number of calls is a small constant per
chunk (typically 3-8 for the search, one check, a few for the overlap), each on about one chunk of
text, so the work is linear in the length of the document.

What is guaranteed (``split_spans`` exposes the character offsets)
----------------------------------------------------------------
* every chunk is an exact slice ``text[start:end]`` of its section, starts and ends with a
  non-whitespace character, and ``count_tokens(chunk) <= min(chunk_tokens, max_tokens)``
  (in documents, the later chunks of a table are its caption and header followed by such a
  slice; the limit holds for the whole chunk);
* no chunk starts or ends inside a word-like token shorter than a chunk;
* starts and ends strictly increase from chunk to chunk; consecutive chunks overlap only
  within a section (``next.start < previous.end``), by whole sentences or clauses whose tokens
  fit in ``min(overlap_tokens, limit // 2)``, and have no overlap when no such unit exists;
* the spans cover every non-whitespace character of the text, so nothing is dropped or truncated:
  concatenating each chunk's part after the previous chunk's end reproduces the text except
  for whitespace between chunks;
* no chunk is only whitespace; a chunk consists only of a heading only when the text after the
  heading cannot start in the same chunk.

A :class:`ValueError` is raised when the limit cannot be met at all (``count_tokens("")`` is
already at the limit, or a single character counts more than the limit).
"""

from __future__ import annotations

import re
import unicodedata
from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from typing import Callable

from ingest.loaders import LoadedDocument

__all__ = ["ChunkDraft", "split_document", "split_spans", "split_text"]

CountTokens = Callable[[str], int]

PARAGRAPH, SENTENCE, LINE, CLAUSE, WORD = range(5)
LANGUAGE_RUN_UNITS = 40
"""Chinese characters plus English words a run of lines in the other language needs to be cut
from the text around it (a quoted English title or a term list inside Chinese text is not)."""
_CJK_CHAR = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_LATIN_WORD = re.compile(r"[A-Za-z]{2,}")

_CLOSERS = "”’」』）)】》〉\"'］]｝}〕〗"
_SENTENCE_END = re.compile(
    rf"(?:[。！？；｡…]+|[!?;]+|\.{{3,}}|\.(?=[{re.escape(_CLOSERS)}]*(?:\s|$)))"
    rf"[{re.escape(_CLOSERS)}]*"
)
_CLAUSE_END = re.compile(rf"[，、：,:﹐﹑]+[{re.escape(_CLOSERS)}]*")
_WHITESPACE = re.compile(r"\s+")
_HEADING_LINE = re.compile(r"^ {0,3}(#{1,6})[ \t]+(\S.*?)[ \t#]*$")
_FENCE = re.compile(r"^ {0,3}(```|~~~)")

# Word-like tokens a cut must not fall inside (see the module docstring).
_ALNUM = (
    "0-9A-Za-z\u00aa\u00b2\u00b3\u00b5\u00b9\u00ba\u00bc-\u00be\u00c0-\u00d6\u00d8-\u00f6"
    "\u00f8-\u02af\u0370-\u03ff\u0400-\u052f\u1e00-\u1fff\uff10-\uff19\uff21-\uff3a\uff41-\uff5a"
)
_DIGIT = "0-9\uff10-\uff19"
_PIECE = f"[{_ALNUM}][{_ALNUM}\u0300-\u036f]*"
_JOINER = (
    "(?:[-._/'\u2019@&+\uff0d\uff0e\uff0f\uff3f]"  # ZX-300P v2.3.1 TCP/IP don't a@b.c R&D
    f"|(?<=[{_DIGIT}])[,:\uff1a](?=[{_DIGIT}])"  # 10,092,213.74 09:45 3:1
    f"|(?<=[{_DIGIT}])\uff0c(?=[{_DIGIT}]{{3}}(?![{_DIGIT}])))"  # 10，092 (full-width thousands)
)
_URL = r"(?:[A-Za-z][A-Za-z0-9+.\-]*://|www\.)[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]+"
_CHINESE_DATE = (
    f"[{_DIGIT}]{{1,4}}年[{_DIGIT}]{{1,2}}月(?:[{_DIGIT}]{{1,2}}[日号])?"
    f"|[{_DIGIT}]{{1,2}}月[{_DIGIT}]{{1,2}}[日号]"
    f"|[{_DIGIT}]{{1,2}}[时点][{_DIGIT}]{{1,2}}分(?:[{_DIGIT}]{{1,2}}秒)?"
)
_WORD_TOKEN = re.compile(
    f"{_URL}|{_CHINESE_DATE}|[$¥￥€£]?{_PIECE}(?:{_JOINER}{_PIECE})*[%‰％]?"
)
_URL_TRAILER = ".,;:!?'\""

# Tables (see the module docstring).
_DELIMITER_ROW = re.compile(r"^\s*\|?\s*:?-+:?\s*(?:\|\s*:?-+:?\s*)+\|?\s*$")
_CELL_SPLIT = re.compile(r"(?<!\\)\|")
CAPTION_CHARS = 80
"""A line above a table counts as its caption when it is at most this long (and does not end a
sentence: ``表1 主要参数`` or ``下表列出各型号的参数：`` do, ``本季度收入增长。`` does not)."""
_SENTENCE_STOPS = tuple("。！？.!?…")


@dataclass
class ChunkDraft:
    """One chunk before embedding. ``index`` counts 0..n-1 over the whole document."""

    text: str
    page: int | None
    heading: str
    index: int


# --------------------------------------------------------------------------------------------
# Public functions


def split_document(
    doc: LoadedDocument,
    count_tokens: CountTokens,
    chunk_tokens: int = 256,
    overlap_tokens: int = 32,
    max_tokens: int | None = None,
) -> list[ChunkDraft]:
    """Cut ``doc`` into chunks; see the module docstring for how and what is guaranteed."""
    limit = _limit(chunk_tokens, max_tokens, overlap_tokens)
    counter = _Counter(count_tokens, limit)
    chunks: list[ChunkDraft] = []
    heading = doc.title
    for page in doc.pages:
        text = page.text
        for start, end, section_heading, heading_end in _sections(text):
            if section_heading is not None:
                heading = section_heading
            section = text[start:end]
            for run_start, run_end, run_heading_end in _language_runs(section, heading_end):
                for chunk in _section_chunks(section[run_start:run_end], counter, overlap_tokens, run_heading_end):
                    chunks.append(ChunkDraft(chunk, page.number, heading, len(chunks)))
    return chunks


def _line_language(line: str) -> str | None:
    """``zh``, ``en`` or None (too little text to tell: a number, a short label, a table row)."""
    if "|" in line:
        return None
    chinese, english = len(_CJK_CHAR.findall(line)), len(_LATIN_WORD.findall(line))
    if chinese + english < 3:
        return None
    return "zh" if chinese >= 0.2 * (chinese + english) else "en"


def _language_runs(section: str, heading_end: int) -> list[tuple[int, int, int]]:
    """``(start, end, heading_end)`` of the parts of ``section`` in one language each: runs of
    lines (outside code fences) of at least :data:`LANGUAGE_RUN_UNITS`, shorter runs joined to
    the run before them. Lines too short to tell (a number, "1 结果") go with the run after
    them; only the first part keeps the section's heading."""
    runs: list[list] = []  # [language, start, end, units]
    pending: int | None = None  # start of the lines too short to tell, not yet in a run
    offset = 0
    in_fence = False
    for line in section.splitlines(keepends=True):
        if _FENCE.match(line):
            in_fence = not in_fence
        language = None if in_fence or offset < heading_end else _line_language(line)
        units = len(_CJK_CHAR.findall(line)) + len(_LATIN_WORD.findall(line))
        end = offset + len(line)
        if language is None and runs:
            pending = offset if pending is None else pending
            runs[-1][3] += units
        elif runs and (language == runs[-1][0] or runs[-1][0] is None):
            runs[-1][0], runs[-1][2], runs[-1][3] = language or runs[-1][0], end, runs[-1][3] + units
            pending = None
        else:
            if runs and pending is not None:
                runs[-1][2] = pending
            runs.append([language, pending if runs and pending is not None else offset, end, units])
            pending = None
        offset = end
    if runs:
        runs[-1][2] = len(section)
    merged: list[list] = []
    for run in runs:  # a short run is part of the text before it
        if merged and (run[3] < LANGUAGE_RUN_UNITS or run[0] == merged[-1][0]):
            merged[-1][2], merged[-1][3] = run[2], merged[-1][3] + run[3]
        else:
            merged.append(run)
    if len(merged) > 1 and merged[0][3] < LANGUAGE_RUN_UNITS:  # a short opening goes with what follows
        merged[1][1], merged[1][3] = merged[0][1], merged[1][3] + merged[0][3]
        merged.pop(0)
    parts = [(start, end) for _, start, end, _ in merged if section[start:end].strip()] or [(0, len(section))]
    return [(start, end, heading_end if i == 0 else 0) for i, (start, end) in enumerate(parts)]


def split_text(
    text: str,
    count_tokens: CountTokens,
    chunk_tokens: int = 256,
    overlap_tokens: int = 32,
    max_tokens: int | None = None,
) -> list[str]:
    """Cut plain ``text`` (one section: no heading handling) into chunk strings."""
    return [text[s:e] for s, e in split_spans(text, count_tokens, chunk_tokens, overlap_tokens, max_tokens)]


def split_spans(
    text: str,
    count_tokens: CountTokens,
    chunk_tokens: int = 256,
    overlap_tokens: int = 32,
    max_tokens: int | None = None,
) -> list[tuple[int, int]]:
    """Like :func:`split_text`, but returns ``(start, end)`` character offsets into ``text``."""
    counter = _Counter(count_tokens, _limit(chunk_tokens, max_tokens, overlap_tokens))
    return _split_section(text, counter, overlap_tokens, 0)


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """``(start, end)`` of each sentence of ``text`` (ends: 。！？；… and . ! ? ; with closing
    quotes and brackets kept; line breaks end a sentence too), leading and trailing space
    excluded, empty ones skipped."""
    spans: list[tuple[int, int]] = []
    for line in re.finditer(r"[^\n]+", text):
        start = line.start()
        ends = [m.end() for m in _SENTENCE_END.finditer(text, line.start(), line.end())]
        for end in ends + [line.end()]:
            s, e = start, end
            while s < e and text[s].isspace():
                s += 1
            while e > s and text[e - 1].isspace():
                e -= 1
            if e > s:
                spans.append((s, e))
            start = end
    return spans


# --------------------------------------------------------------------------------------------
# Internals


def _limit(chunk_tokens: int, max_tokens: int | None, overlap_tokens: int) -> int:
    if overlap_tokens < 0:
        raise ValueError(f"overlap_tokens must not be negative, not {overlap_tokens}")
    if chunk_tokens < 1:
        raise ValueError(f"chunk_tokens must be at least 1, not {chunk_tokens}")
    if max_tokens is not None and max_tokens < 1:
        raise ValueError(f"max_tokens must be at least 1, not {max_tokens}")
    return chunk_tokens if max_tokens is None else min(chunk_tokens, max_tokens)


class _Counter:
    """``count_tokens`` plus what the search needs to know about it."""

    def __init__(self, count_tokens: CountTokens, limit: int, prefix: str = "") -> None:
        # ``prefix``: text every chunk measured with this counter will be emitted after.
        self.count = (lambda text: count_tokens(prefix + text)) if prefix else count_tokens
        self.limit = limit
        self.base = count_tokens("")  # special tokens every text pays for
        if self.base >= limit:
            raise ValueError(
                f"the token limit {limit} leaves no room for text: an empty text already counts "
                f"{self.base} tokens"
            )
        self.chars_per_token = 1.0  # learned from the chunks made so far


def _sections(text: str) -> list[tuple[int, int, str | None, int]]:
    """``(start, end, heading, heading_end)`` per section of a page.

    ``heading`` is the section's heading text (None for text before the first heading) and
    ``heading_end`` the offset, within the section, just after its heading line(s) (0 if none,
    or if nothing follows the heading).
    """
    headings: list[tuple[int, int, str]] = []  # (line start, line end without newline, text)
    offset = 0
    in_fence = False
    for line in text.splitlines(keepends=True):
        stripped = line.rstrip("\r\n")
        if _FENCE.match(stripped):
            in_fence = not in_fence
        elif not in_fence:
            m = _HEADING_LINE.match(stripped)
            if m:
                headings.append((offset, offset + len(stripped.rstrip()), m.group(2).strip()))
        offset += len(line)

    sections: list[tuple[int, int, str | None, int]] = []
    first = headings[0][0] if headings else len(text)
    if text[:first].strip():
        sections.append((0, first, None, 0))
    block_start: int | None = None  # start of a run of headings with nothing between them
    for i, (line_start, line_end, title) in enumerate(headings):
        end = headings[i + 1][0] if i + 1 < len(headings) else len(text)
        start = line_start if block_start is None else block_start
        if not text[line_end:end].strip() and i + 1 < len(headings):
            block_start = start  # empty section: carried into the next one
            continue
        block_start = None
        body_follows = bool(text[line_end:end].strip())
        sections.append((start, end, title, (line_end - start) if body_follows else 0))
    return sections


def _is_extender(ch: str) -> bool:
    o = ord(ch)
    return (
        unicodedata.category(ch).startswith("M")
        or 0xFE00 <= o <= 0xFE0F
        or o == 0x200D
        or 0x1F3FB <= o <= 0x1F3FF
        or 0xE0020 <= o <= 0xE007F
        or 0xE0100 <= o <= 0xE01EF
    )


def _word_tokens(text: str) -> tuple[list[int], list[int]]:
    """Starts and ends of the word-like tokens of ``text`` two or more characters long."""
    starts: list[int] = []
    ends: list[int] = []
    for m in _WORD_TOKEN.finditer(text):
        start, end = m.span()
        if "/" in m.group() or "@" in m.group():  # a URL or address: not its closing punctuation
            while end - start > 1 and (
                text[end - 1] in _URL_TRAILER
                or (text[end - 1] in ")]" and text.count("(", start, end) < text.count(")", start, end))
            ):
                end -= 1
        if end - start > 1:
            starts.append(start)
            ends.append(end)
    return starts, ends


class _Section:
    def __init__(self, text: str, counter: _Counter, line_level: int = LINE) -> None:
        self.text = text
        self.n = len(text)
        self.counter = counter
        self.limit = counter.limit
        self.token_starts, self.token_ends = _word_tokens(text)
        marks: dict[int, int] = {}

        def mark(pos: int, level: int) -> None:
            if 0 < pos < self.n and marks.get(pos, 99) > level:
                marks[pos] = level

        for m in _WHITESPACE.finditer(text):
            if m.start() == 0:
                continue
            newlines = m.group().count("\n")
            mark(m.start(), PARAGRAPH if newlines >= 2 else line_level if newlines else WORD)
        for m in _SENTENCE_END.finditer(text):
            mark(m.end(), SENTENCE)
        for m in _CLAUSE_END.finditer(text):
            mark(m.end(), CLAUSE)
        self.pos = [p for p in sorted(marks) if self.token_start(p) is None]
        self.lvl = [marks[p] for p in self.pos]

    # -- helpers ---------------------------------------------------------------------------

    def token_start(self, i: int) -> int | None:
        """The start of the word-like token that ``i`` falls strictly inside, else None."""
        k = bisect_right(self.token_starts, i) - 1
        if k >= 0 and self.token_starts[k] < i < self.token_ends[k]:
            return self.token_starts[k]
        return None

    def count(self, start: int, end: int) -> int:
        return self.counter.count(self.text[start:end])

    def skip_ws(self, i: int) -> int:
        text, n = self.text, self.n
        while i < n and text[i].isspace():
            i += 1
        return i

    def trim(self, start: int, end: int) -> int:
        text = self.text
        while end > start and text[end - 1].isspace():
            end -= 1
        return end

    # -- the search ----------------------------------------------------------------------------

    def reach(self, p: int) -> int:
        """The furthest end ``e > p`` with ``count(text[p:e]) <= limit`` (verified), found by an
        interpolating search that assumes counts grow with length."""
        counter, limit, n = self.counter, self.limit, self.n
        base = counter.base
        lo, hi = p, None  # text[p:lo] fits (lo == p: nothing measured yet); text[p:hi] does not
        lo_count = base
        guess = p + max(1, int((limit - base) * counter.chars_per_token * 1.05))
        slack = max(1, limit // 64)
        prev_span = None
        for _ in range(64):
            upper = n if hi is None else hi - 1
            e = min(max(guess, lo + 1), upper)
            c = self.count(p, e)
            if c <= limit:
                lo, lo_count = e, c
            else:
                hi = e
            if lo == n or (hi is not None and hi - lo <= max(1, (lo - p) // 64)):
                break
            if lo > p and lo_count >= limit - slack:
                break
            rate = max(c - base, 1) / (e - p)  # tokens per character, from this measurement
            target = p + int((limit - base) / rate)
            if hi is None:
                guess = max(target, e + 1) if c <= limit else target
                if c <= limit and guess <= e:
                    guess = p + 2 * (e - p)
            else:
                span = hi - lo
                if prev_span is not None and span > prev_span // 2:
                    guess = (lo + hi) // 2  # interpolation is not converging: bisect
                else:
                    guess = min(max(target, lo + 1), hi - 1)
                prev_span = span
        if lo == p:
            if self.count(p, p + 1) > limit:
                raise ValueError(
                    f"the character {self.text[p]!r} alone counts more than the limit of {limit} "
                    "tokens"
                )
            lo = p + 1
        return lo

    def choose_end(self, p: int, lo: int, floor: int) -> int:
        """Where to cut a chunk starting at ``p`` whose text fits up to ``lo``; result > floor."""
        if lo >= self.n:
            return self.n
        pos, lvl = self.pos, self.lvl
        i = bisect_right(pos, floor)
        j = bisect_right(pos, lo)
        if i < j:
            k = max(i, bisect_left(pos, p + (lo - p) // 2, i, j))
            if k < j:
                best = j - 1
                for idx in range(j - 1, k - 1, -1):
                    if lvl[idx] < lvl[best]:
                        best = idx
                        if lvl[idx] == PARAGRAPH:
                            break
                return pos[best]
            last = pos[j - 1]
            following = pos[j] if j < len(pos) else self.n
            start = self.skip_ws(last)
            if start >= following or self.count(start, following) <= self.limit:
                return last
        return self.char_cut(p, lo, floor)

    def char_cut(self, p: int, lo: int, floor: int) -> int:
        text = self.text
        c = lo
        lowest = max(p + 1, floor + 1, lo - 32)
        while c > lowest and c < self.n and (_is_extender(text[c]) or text[c - 1] == "\u200d"):
            c -= 1
        if c < self.n and (_is_extender(text[c]) or text[c - 1] == "\u200d"):
            c = lo  # nothing better nearby
        start = self.token_start(c)
        if start is not None and self.trim(p, start) > max(p, floor):
            return start  # the whole token goes to the next chunk
        return c

    def fit(self, p: int, end: int) -> int:
        """Shrink ``end`` until ``text[p:end]`` (trimmed) fits; only needed when the counter is
        not monotone."""
        while True:
            end = self.trim(p, end)
            if self.count(p, end) <= self.limit:
                return end
            if self.count(p, p + 1) > self.limit:
                raise ValueError(
                    f"the character {self.text[p]!r} alone counts more than the limit of "
                    f"{self.limit} tokens"
                )
            good, bad = p + 1, end  # largest fitting end in [good, bad)
            while bad - good > 1:
                mid = (good + bad) // 2
                if self.count(p, mid) <= self.limit:
                    good = mid
                else:
                    bad = mid
            end = good
            start = self.token_start(end)
            if start is not None and self.trim(p, start) > p:
                end = start  # measured again at the top of the loop

    def overlap_start(self, p: int, end: int, budget: int) -> int | None:
        """The earliest start after ``p`` of whole trailing units of ``text[p:end]`` whose tokens
        fit in ``budget``; None when not even the last unit fits."""
        if budget <= self.counter.base:
            return None
        pos, lvl = self.pos, self.lvl
        i = bisect_right(pos, p)
        j = bisect_left(pos, end)
        starts: list[int] = []
        for idx in range(i, j):
            if lvl[idx] <= CLAUSE:
                s = self.skip_ws(pos[idx])
                if p < s < end and (not starts or s > starts[-1]):
                    starts.append(s)
        lo, hi = 0, len(starts)  # find the first start whose tail fits
        while lo < hi:
            mid = (lo + hi) // 2
            if self.count(starts[mid], end) <= budget:
                hi = mid
            else:
                lo = mid + 1
        return starts[lo] if lo < len(starts) else None


def _split_section(
    text: str,
    counter: _Counter,
    overlap_tokens: int,
    heading_end: int,
    line_level: int = LINE,
    max_spans: int | None = None,
) -> list[tuple[int, int]]:
    sec = _Section(text, counter, line_level)
    budget = min(overlap_tokens, counter.limit // 2)
    spans: list[tuple[int, int]] = []
    p = sec.skip_ws(0)
    floor = heading_end  # the chunk must end after this (the heading, or the previous chunk)
    prev_end = 0
    while p < sec.n:
        lo = sec.reach(p)
        end = sec.trim(p, sec.choose_end(p, lo, max(floor, p)) if lo > floor else lo)
        if end > floor:
            end = sec.fit(p, end)
        if end <= floor:
            if p < prev_end:  # the overlap leaves no room: start after the previous chunk
                p = sec.skip_ws(prev_end)
            floor = p
            continue
        spans.append((p, end))
        if max_spans is not None and len(spans) >= max_spans:
            break
        taken = counter.count(text[p:end]) - counter.base
        if taken > 0 and end - p > 8:
            counter.chars_per_token = (end - p) / taken
        if sec.skip_ws(end) >= sec.n:
            break
        prev_end = floor = end
        q = sec.overlap_start(p, end, budget) if budget > 0 else None
        p = q if q is not None else sec.skip_ws(end)
    return spans


# --------------------------------------------------------------------------------------------
# Tables


@dataclass
class _Table:
    start: int  # start of the header row
    head_end: int  # end of the header row (Markdown: of the delimiter row), before its newline
    end: int  # end of the last row
    header: str  # header row (and delimiter row), one line each, as written
    caption_start: int | None  # start of the caption line, if there is one
    caption: str


def _cells(line: str) -> list[str]:
    row = line.strip().removeprefix("|")
    if row.endswith("|") and not row.endswith("\\|"):
        row = row[:-1]
    return _CELL_SPLIT.split(row)


def _find_tables(text: str) -> list[_Table]:
    """The tables of a section (see the module docstring), in order."""
    lines: list[tuple[int, int, str]] = []  # (start, end, kind)
    fenced: set[int] = set()  # lines inside code fences
    offset = 0
    in_fence = False
    for raw in text.split("\n"):
        line = raw.rstrip("\r")
        if _FENCE.match(line):
            in_fence = not in_fence
            kind = "text"
        elif in_fence or _HEADING_LINE.match(line):
            if in_fence:
                fenced.add(len(lines))
            kind = "text"
        elif not line.strip():
            kind = "blank"
        elif _DELIMITER_ROW.match(line):
            kind = "delimiter"
        elif "|" in line and len(_cells(line)) >= 2:
            kind = "row"
        else:
            kind = "text"
        lines.append((offset, offset + len(line), kind))
        offset += len(raw) + 1

    def content(i: int) -> str:
        return text[lines[i][0] : lines[i][1]]

    def in_code(i: int) -> bool:
        return i in fenced

    tables: list[_Table] = []
    i = 0
    while i < len(lines):
        if lines[i][2] != "row":
            i += 1
            continue
        markdown = i + 1 < len(lines) and lines[i + 1][2] == "delimiter"
        if not markdown and " | " not in content(i):
            i += 1
            continue
        columns = len(_cells(content(i)))
        last = i + 1 if markdown else i
        rows = 0
        j = last + 1
        while j < len(lines):
            k = j
            while k < len(lines) and lines[k][2] == "blank":
                k += 1
            if k >= len(lines) or lines[k][2] != "row":
                break
            if k > j and len(_cells(content(k))) != columns:
                break  # after a gap, other columns: the next table
            rows += 1
            last = k
            j = k + 1
        if rows < (1 if markdown else 2):
            i += 1
            continue
        header = content(i).strip() + ("\n" + content(i + 1).strip() if markdown else "")
        caption_start, caption = None, ""
        above = i - 1
        if above >= 0 and lines[above][2] == "blank":
            above -= 1
        if above >= 0 and lines[above][2] == "text":
            line = content(above)
            if (
                len(line.strip()) <= CAPTION_CHARS
                and not line.rstrip().endswith(_SENTENCE_STOPS)  # a sentence of the text above
                and not _HEADING_LINE.match(line)
                and not _FENCE.match(line)
                and not in_code(above)
            ):
                caption_start = lines[above][0] + len(line) - len(line.lstrip())
                caption = line.strip()
        head_end = lines[i + 1][1] if markdown else lines[i][1]
        tables.append(_Table(lines[i][0], head_end, lines[last][1], header, caption_start, caption))
        i = last + 1
    return tables


def _section_chunks(section: str, counter: _Counter, overlap_tokens: int, heading_end: int) -> list[str]:
    """The chunks of one section: its tables split by rows, the text around them as usual."""
    tables = _find_tables(section) if "|" in section else []
    if tables and len(section) <= 16 * counter.limit and counter.count(section.strip()) <= counter.limit:
        tables = []  # the whole section is one chunk: nothing to repeat
    if not tables:
        return [section[s:e] for s, e in _split_section(section, counter, overlap_tokens, heading_end)]
    headings = section[:heading_end].strip()
    out: list[str] = []
    pos = 0

    def plain(start: int, end: int) -> None:
        part = section[start:end]
        if part.strip():
            floor = heading_end if start == 0 else 0
            out.extend(part[s:e] for s, e in _split_section(part, counter, overlap_tokens, floor))

    for table in tables:
        lead = table.caption_start if table.caption_start is not None else table.start
        if pos == 0 and not section[heading_end:lead].strip():
            lead = 0  # nothing but the heading before the table: it opens the table's first chunk
        pieces = _table_chunks(section, table, lead, table.caption or headings, counter)
        if pieces is None:  # header too big to repeat: the table is plain text
            continue
        plain(pos, lead)
        out.extend(pieces)
        pos = table.end
    plain(pos, len(section))
    return out


def _table_chunks(
    section: str, table: _Table, lead: int, caption: str, counter: _Counter
) -> list[str] | None:
    """The chunks of one table, or None when its header (with or without the caption) would take
    more than half of every chunk."""
    limit, count = counter.limit, counter.count
    prefix = "\n".join(x for x in (caption, table.header) if x) + "\n"
    if count(prefix) > limit // 2:
        prefix = table.header + "\n"
        if count(prefix) > limit // 2:
            return None
    body = section[table.head_end : table.end]
    gap = len(body) - len(body.lstrip())
    first_prefix = section[lead : table.head_end + gap]
    out: list[str] = []
    if count(first_prefix) <= limit // 2:
        first = _split_section(body, _Counter(counter.count, limit, first_prefix), 0, 0, PARAGRAPH, 1)
        end = first[0][1] if first else len(body)
        out.append(first_prefix + body[gap:end])
    else:  # a long lead (heading and caption): on its own, then every chunk with the header
        out.extend(section[lead:table.start][s:e] for s, e in _split_section(
            section[lead:table.start], counter, 0, 0))
        end = 0
    rest = body[end:]
    later = _Counter(counter.count, limit, prefix)
    out.extend(prefix + rest[s:e] for s, e in _split_section(rest, later, 0, 0, PARAGRAPH))
    return out

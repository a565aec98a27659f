"""Where a chunk's text lies on its PDF pages: the boxes to highlight when it is cited.

A chunk's text is the page text tidied (lines joined, letter spacing removed, ligatures spelled
out), which changes only whitespace against the layout's text (ingest.loaders.pdf_layout), so
the chunk is found on its page by :meth:`PageLayout.find`, which ignores whitespace. A chunk that
runs over a page break is found piece by piece: the longest start of it on its page, the rest on
the next page(s).

Usage::

    from ingest.passage_boxes import passage_boxes
    passage_boxes(layouts, page=3, text=chunk.text)   # [(3, (x0, top, x1, bottom)), ...]

Boxes are in PDF points, origin at the top-left of the displayed page (pdf_layout's frame);
``page`` is 1-based like ``Page.number``. Nothing found (a chunk from an OCR'd page with no
layout, text the layout does not hold): ``[]``.
"""

from __future__ import annotations

from typing import Sequence

MIN_PIECE_CHARS = 8
"""A start shorter than this on a page is not trusted as the chunk's piece there (it could be
any common phrase)."""

Box = tuple[float, float, float, float]


def _compact(text: str) -> str:
    return "".join(text.split())


def _longest_start_found(layout, needle: str) -> tuple[int, int, int] | None:
    """(start, end, characters matched) of the longest start of ``needle`` found on ``layout``'s
    page, by halving: a whole chunk first, then ever shorter starts."""
    low, high = MIN_PIECE_CHARS, len(needle)
    best = None
    while low <= high:
        mid = (low + high) // 2
        where = layout.find(needle[:mid])
        if where is None:
            high = mid - 1
        else:
            best = (*where, mid)
            low = mid + 1
    return best


def passage_boxes(layouts: Sequence, page: int | None, text: str, max_pages: int = 3) -> list[tuple[int, Box]]:
    """``(page number, box)`` of the lines ``text`` covers, from ``page`` on (see the module
    docstring); ``layouts`` are the document's :class:`PageLayout` in page order."""
    if page is None or not text.strip():
        return []
    by_number = {layout.page_index + 1: layout for layout in layouts}
    needle = _compact(text)
    out: list[tuple[int, Box]] = []
    number = page
    while needle and number in by_number and number < page + max_pages:
        layout = by_number[number]
        whole = layout.find(needle)
        if whole is not None:
            out += [(number, _rounded(b)) for b in layout.boxes_for(*whole)]
            break
        piece = _longest_start_found(layout, needle)
        if piece is None:
            break
        start, end, matched = piece
        out += [(number, _rounded(b)) for b in layout.boxes_for(start, end)]
        needle = needle[matched:]
        number += 1
    return out


def _rounded(box: Sequence[float]) -> Box:
    return tuple(round(float(v), 1) for v in box)  # type: ignore[return-value]


__all__ = ["passage_boxes"]

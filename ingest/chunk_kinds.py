"""What a chunk is, beyond its text: body text, a reference list, text repeated in the document,
or an abstract in the other language.

A reference list shares names, years and title words with many questions and, in a Chinese paper,
is often the only English text, so an English question lands on it. So does the English title and
abstract of a Chinese paper, which names the topic of every page but answers few questions. Text
repeated on every page (a disclaimer, a form's fixed wording) matches the same questions many
times over. All are kept (a question about the references or the abstract still finds them) but
marked at ingest, and retrieval ranks them low (rag.retrieval.LOW_RANK_WEIGHT).

Usage::

    from ingest.chunk_kinds import chunk_kinds
    chunk_kinds(["正文……", "参考文献\\n[1] 王五. 论文[J]. 学报, 2019.", ...], headings)
    # ["body", "references", ...]
"""

from __future__ import annotations

import re
from typing import Sequence

BODY, REFERENCES, REPEATED = "body", "references", "repeated"
OTHER_LANGUAGE_ABSTRACT = "other-language-abstract"
ABSTRACT_MARK = re.compile(r"^\s*(?:abstract|summary|key\s*words?|摘\s*要|关\s*键\s*词|關\s*鍵\s*詞)\s*[:：.]?", re.I | re.M)
"""A line that opens an abstract or its keywords (Abstract: / Key words / 摘要 / 关键词)."""
DOCUMENT_LANGUAGE_SHARE = 0.6
"""A document is in one language when at least this share of its chunks' text is in it."""

_NUMBER = r"(?:[0-9]{1,2}(?:\.[0-9]{1,2})*|[一二三四五六七八九十]+)"
REFERENCE_HEADING = re.compile(
    rf"^\s*(?:{_NUMBER}[.、．\s]\s*)?(?:参考文献|参考资料|引用文献|主要参考文献|文献|references?|bibliography"
    r"|works cited|literature cited)\s*[:：]?\s*$",
    re.I,
)
"""A heading line that opens a reference list: 参考文献 / 5 References / Bibliography."""
OTHER_SECTION = re.compile(r"^\s*(?:附录|致谢|作者简介|appendix|acknowledge?ments?)\b", re.I)
"""A heading that ends one (an appendix after the references)."""
_ENTRY_START = re.compile(r"^\s*(?:\[\d{1,3}\]|［\d{1,3}］|\(\d{1,3}\)|\d{1,3}[.．]\s)")
_ENTRY_MARK = re.compile(
    r"\[(?:J|M|C|D|R|N|S|P|A|G|Z|DB|CP|EB/OL|J/OL|M/OL)\]|et al\.|doi\s*[:.]|\bpp?\.\s*\d|\bvol\.|\bIn:|出版社|学报"
    r"|\bJournal\b|\bProceedings\b|\barXiv\b",
    re.I,
)
_YEAR = re.compile(r"(?<!\d)(?:19|20)\d{2}(?!\d)")
_PAGE_NUMBER = re.compile(
    r"第\s*\d+\s*页(?:\s*[/，,]?\s*共\s*\d+\s*页)?|\bpage\s+\d+(?:\s+of\s+\d+)?\b|^\s*[-–—]?\s*\d{1,4}\s*[-–—]?\s*$",
    re.I | re.M,
)
"""Page numbers, which differ between otherwise repeated text (第 3 页 / Page 3 of 9 / - 3 -)."""
MIN_REPEATED_CHARS = 16
"""Shorter chunks (a bare heading, a page number) are not marked as repeated."""


def looks_like_references(text: str) -> bool:
    """Whether most of ``text``'s lines are bibliography entries: numbered entries with years
    and the marks of citations ([J], et al., pp., doi, 出版社 ...)."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return False
    entries = sum(1 for line in lines if _ENTRY_START.match(line))
    marks = len(_ENTRY_MARK.findall(text))
    years = len(_YEAR.findall(text))
    if entries >= 3:
        return years >= 0.6 * entries and (marks >= 0.3 * entries or years >= entries)
    # entries run together on one line (a PDF text layer without line breaks)
    inline = len(re.findall(r"(?:\[\d{1,3}\]|［\d{1,3}］)", text))
    return inline >= 4 and years >= 0.6 * inline and marks >= 0.3 * inline


def _continues_references(text: str) -> bool:
    """After a reference heading, a chunk that goes on with the list: it may start in the middle
    of an entry (chunks are cut by size), so a couple of entries or citation marks and a year do."""
    lines = [line for line in text.splitlines() if line.strip()]
    entries = sum(1 for line in lines if _ENTRY_START.match(line))
    return bool(_YEAR.search(text)) and entries + len(_ENTRY_MARK.findall(text)) >= 2


def _after_heading_line(text: str) -> str | None:
    """The text after a reference-list heading line inside ``text`` (None without one)."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if REFERENCE_HEADING.match(line):
            return "\n".join(lines[i + 1:])
    return None


def _other_language_abstracts(texts: Sequence[str], headings: Sequence[str]) -> set[int]:
    """Indexes of the chunks that hold an abstract (or its title and keywords) in another language
    than the document's: in a chunk of that language that has an abstract or keyword line, or
    follows such a chunk without a change of language or section."""
    from rag.language import detect_language

    languages = [detect_language(t) for t in texts]
    # Chinese characters and English words, so that a page of each weighs about the same
    sizes = [len(re.findall(r"[\u4e00-\u9fff]|[A-Za-z]+", t)) for t in texts]
    total = sum(sizes) or 1
    main = next((lang for lang in ("zh", "en")
                 if sum(n for n, l in zip(sizes, languages) if l == lang) >= DOCUMENT_LANGUAGE_SHARE * total), None)
    found: set[int] = set()
    for i, (text, language) in enumerate(zip(texts, languages)):
        if main is None or language == main:
            continue
        heading = headings[i] if i < len(headings) else ""
        if ABSTRACT_MARK.search(text) or ABSTRACT_MARK.search(heading.split(">")[-1]):
            found.add(i)
        elif i - 1 in found and heading == (headings[i - 1] if i - 1 < len(headings) else ""):
            found.add(i)  # the abstract goes on in the next chunk
    return found


def chunk_kinds(texts: Sequence[str], headings: Sequence[str] | None = None) -> list[str]:
    """The kind of each chunk of one document, in document order: :data:`BODY`,
    :data:`REFERENCES`, :data:`REPEATED` (the same text, page numbers and spaces aside, as an
    earlier chunk of the document) or :data:`OTHER_LANGUAGE_ABSTRACT`."""
    headings = list(headings) if headings is not None else [""] * len(texts)
    kinds: list[str] = []
    in_references = False  # after a reference heading line in the text
    under_heading = False  # in a section whose heading opens a reference list
    previous_heading = None
    seen: set[str] = set()
    for text, heading in zip(texts, headings):
        if heading != previous_heading:
            last = re.split(r"\s*[>/›]\s*", heading)[-1] if heading else ""
            under_heading = bool(REFERENCE_HEADING.match(last))
            in_references = False
            previous_heading = heading
        kind = BODY
        after = _after_heading_line(text)
        if under_heading:
            kind = REFERENCES
        elif after is not None:
            in_references = True
            # the chunk is mostly the list (a heading at its end opens the list for the next one)
            if len(after.strip()) >= 0.5 * len(text.strip()):
                kind = REFERENCES
        elif any(OTHER_SECTION.match(line) for line in text.splitlines()[:1]):
            in_references = False
        elif in_references and _continues_references(text):
            kind = REFERENCES
        elif looks_like_references(text):
            kind = REFERENCES
        # the same text but for its page number; other digits count (table rows differ in them)
        key = re.sub(r"\s+", "", _PAGE_NUMBER.sub("", text))
        if kind == BODY and len(key) >= MIN_REPEATED_CHARS:
            if key in seen:
                kind = REPEATED
            seen.add(key)
        kinds.append(kind)
    for i in _other_language_abstracts(texts, headings):
        if kinds[i] == BODY:
            kinds[i] = OTHER_LANGUAGE_ABSTRACT
    return kinds


__all__ = ["BODY", "REFERENCES", "REPEATED", "OTHER_LANGUAGE_ABSTRACT", "chunk_kinds", "looks_like_references"]

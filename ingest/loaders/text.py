"""Plain text and Markdown, and the text encodings of text and HTML files.

Text encodings (plain text and HTML)
------------------------------------
:func:`decode_bytes` decides, in this order:

1. a byte-order mark (UTF-8, UTF-32 LE/BE, UTF-16 LE/BE);
2. BOM-less UTF-32 (LE or BE): the bytes decode strictly, the characters are assigned and below
   plane 4, and the non-ASCII ones score as text (see 5); UTF-32 text is at least a quarter NUL
   bytes, so this is only tried when it is;
3. BOM-less UTF-16 recognised by its NUL-byte pattern (every other byte NUL in ASCII-heavy text);
4. plain strict UTF-8 when the bytes hold no NUL at all;
5. BOM-less UTF-16 (LE or BE) by content, *before* any NUL handling: Chinese UTF-16 has few or no
   NUL bytes (CJK code units have no zero byte), so the two strict UTF-16 readings are scored
   like the legacy readings below (plus a point per line break, which is 0A 00 in one byte
   order and a stray U+0A00 in the other). The better one wins when it looks like text (at most
   2% bad characters), averages at least half a point per non-ASCII character, and beats every
   legacy reading of the same bytes (with stray NULs removed as in 6). A reading whose
   non-ASCII code units are nearly all pairs of printable ASCII or NUL bytes is ASCII text with
   stray NULs, not UTF-16, and is not taken;
6. NUL bytes otherwise: trailing NUL padding is dropped; a few stray NULs (at most 8, or 1% of the bytes)
   are removed; more than that means binary data and the file is refused;
7. strict UTF-8;
8. a scored contest between the strict decodes that succeed among GB18030 (a superset of GBK and
   GB2312), CP950 and Big5-HKSCS (Big5 variants), plus UTF-8 with replacement characters when the
   damage is small (invalid bytes at most 1% of all bytes *and* at most 5% of the non-ASCII bytes).
   Each decoded text is scored per character: very frequent Chinese characters score highest,
   characters from the "common" tables (GB2312 level 1, Big5 level 1) score positively, CJK
   punctuation a little, rare ideographs, kana, symbols negatively, and private-use characters,
   replacement characters and control characters strongly negatively. GBK bytes read as Big5
   produce level-2 (rare) ideographs and kana, Big5 bytes read as GBK produce GBK/3-4 ideographs,
   kana and private-use characters, so the right reading wins even on a few characters. Ties go
   to GB18030;
9. when no Chinese reading has positive evidence, charset-normalizer's best guess (other legacy
   encodings such as cp1252), and UTF-8 with replacement when at most 1% of the bytes are invalid;
10. the chosen text must look like text: more than 5% control / private-use / replacement
   characters means binary data and the file is refused.

charset-normalizer is deliberately not the first resort: on short GBK text it often answers Big5
or a Cyrillic code page.
"""

from __future__ import annotations

import codecs
import re
import unicodedata
from functools import lru_cache
from pathlib import Path

from ingest.errors import EmptyDocument, UnreadableFile
from ingest.loaders.document import LoadedDocument, Page, clean_text


_MD_HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.+?)[ \t#]*$", re.MULTILINE)


def _first_markdown_heading(text: str) -> str | None:
    m = _MD_HEADING.search(text)
    return m.group(2).strip() if m else None


def load_text(path: Path, file_type: str) -> LoadedDocument:
    data = path.read_bytes()
    if not data.strip():
        raise EmptyDocument(path, "the file is empty" if not data else "the file holds only whitespace")
    try:
        text, _encoding = decode_bytes(data)
    except ValueError as exc:
        raise UnreadableFile(path, str(exc)) from None
    text = clean_text(text)
    title = path.stem
    if file_type == "markdown":
        title = _first_markdown_heading(text) or path.stem
    return LoadedDocument(path=path, file_type=file_type, title=title, pages=[Page(None, text)])


BOMS = (
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)

# Chinese legacy encodings tried strictly, in tie-break order.
_CJK_CANDIDATES = ("gb18030", "cp950", "big5hkscs")

# The most frequent Chinese characters (simplified); their traditional forms are added at run time.
_FREQUENT_SIMPLIFIED = (
    "的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年得就那要下以生会自着去之过家学"
    "对可她里后小么心多天而能好都然没日于起还发成事只作当想看文无开手十用主行方又如前所本见经头"
    "面公同三已老从动两长知民样现分将外但身些与高意进把法此实回二理美点月明其种声全工己话儿者向"
    "情部正名定女问力机给等几很业最间新什打便位因重被走电四第门相次东政海口使教西再平真听世气信"
    "北少关并内加化由却代军产入先山五太水万市眼体别处总才场师书比住员九笑性通目华报立马命张活难"
    "神数件安表原车白应路期叫死常提感金何更反合放做系计或司利受光王果亲界及今京务制解各任至清物"
    "台象记边共风战干接它许八特觉望直服毛林题建南度统色字请交爱让认算论百吃义科怎元社术结六功指"
    "思非流每青管夫连远资队跟带花快条院变联言权往展该领传近留红治决周保达办运武半候七必城父强步"
    "完革深区即求品士转量空甚众技轻程告江语英基派满式李息写呢识极令黄德收脸钱党倒未持取设始版双"
    "历越史商千片容研像找友孩站广改议形委早房音火际则首单据导影失拿网香似斯专石若兵弟谁校读志飞"
    "观争究包组造落视济喜离虽坏兴切料术据支持统研究问题系统数据方法技术文档处理信息模型中文英文"
)

_CJK_PUNCT_RANGES = ((0x3001, 0x303F), (0xFF01, 0xFF5E), (0xFE30, 0xFE4F))


@lru_cache(maxsize=1)
def _char_tables() -> tuple[frozenset[str], frozenset[str]]:
    """(frequent characters, common characters) for scoring Chinese decodes."""
    common: set[str] = set()
    # GB2312 level 1: the 3,755 most used simplified characters (rows 0xB0-0xD7).
    for lead in range(0xB0, 0xD8):
        for trail in range(0xA1, 0xFF):
            try:
                common.add(bytes((lead, trail)).decode("gb2312"))
            except UnicodeDecodeError:
                pass
    # Big5 level 1: the 5,401 most used traditional characters (0xA440-0xC67E).
    for lead in range(0xA4, 0xC7):
        for trail in list(range(0x40, 0x7F)) + list(range(0xA1, 0xFF)):
            code = (lead << 8) | trail
            if code > 0xC67E:
                break
            try:
                common.add(bytes((lead, trail)).decode("cp950"))
            except UnicodeDecodeError:
                pass
    frequent = set(_FREQUENT_SIMPLIFIED)
    try:
        from opencc import OpenCC

        frequent |= set(OpenCC("s2t").convert(_FREQUENT_SIMPLIFIED))
    except Exception:  # opencc missing or broken: simplified forms only
        pass
    common -= {c for c in common if ord(c) < 0x2E80}  # only ideographs count as "common"
    return frozenset(frequent), frozenset(common)


def _char_score(ch: str, frequent: frozenset[str], common: frozenset[str]) -> int:
    o = ord(ch)
    if o < 0x80:
        if o < 0x20 and ch not in "\t\n\r\x0c":
            return -5
        return 0
    if ch in frequent:
        return 3
    if ch in common:
        return 1
    for lo, hi in _CJK_PUNCT_RANGES:
        if lo <= o <= hi:
            return 1
    if 0xE000 <= o <= 0xF8FF or o == 0xFFFD or 0xF0000 <= o or 0x80 <= o < 0xA0:
        return -5
    if 0x4E00 <= o <= 0x9FFF:
        return -1
    if 0x3400 <= o <= 0x4DBF or 0x20000 <= o <= 0x3FFFF:
        return -2
    return -1


def _score(text: str) -> int:
    frequent, common = _char_tables()
    sample = text[:_SCORE_SAMPLE]
    return sum(
        _char_score(ch, frequent, common) for ch in sample if ord(ch) >= 0x80 or ord(ch) < 0x20
    )


_SCORE_SAMPLE = 200_000


_BAD_CHARS = re.compile(
    "[\x00-\x08\x0e-\x1a\x1c-\x1f\x7f-\x9f\ufffd\ue000-\uf8ff\ud800-\udfff"
    "\U000f0000-\U0010ffff]"
)


def bad_char_ratio(text: str) -> float:
    """Share of characters that do not belong in text (controls, private use, U+FFFD)."""
    if not text:
        return 0.0
    return len(_BAD_CHARS.findall(text)) / len(text)


def _utf16_without_bom(data: bytes) -> str | None:
    """Recognise BOM-less UTF-16 of mostly-ASCII text by its NUL pattern."""
    n = len(data) - (len(data) % 2)
    if n < 4:
        return None
    even_nul = data[0:n:2].count(0)
    odd_nul = data[1:n:2].count(0)
    pairs = n // 2
    if odd_nul >= 0.4 * pairs and even_nul <= 0.05 * pairs:
        encoding = "utf-16-le"
    elif even_nul >= 0.4 * pairs and odd_nul <= 0.05 * pairs:
        encoding = "utf-16-be"
    else:
        return None
    if len(data) % 2:
        return None
    try:
        data.decode(encoding)
    except UnicodeDecodeError:
        return None
    return encoding


def _utf8_damage(data: bytes) -> tuple[str, int]:
    """UTF-8 decode with replacement characters; also returns how many bytes were invalid."""
    escaped = data.decode("utf-8", errors="surrogateescape")  # each bad byte -> U+DC80..U+DCFF
    bad = len(_ESCAPED.findall(escaped))
    return (_ESCAPED.sub("\ufffd", escaped) if bad else escaped), bad


_ESCAPED = re.compile("[\udc80-\udcff]")


def _utf32_without_bom(data: bytes) -> tuple[str, str] | None:
    """BOM-less UTF-32. Every code unit of UTF-32 text has a zero top byte and a second byte of at
    most 0x10, so a strict decode of other data mostly fails; what remains is checked to be text
    (assigned characters, none above plane 3, few control characters, a good score)."""
    n = len(data)
    if n < 4 or n % 4 or data.count(0) < n // 4:
        return None
    for encoding in ("utf-32-le", "utf-32-be"):
        try:
            text = data.decode(encoding)
        except UnicodeDecodeError:
            continue
        text = text.rstrip("\x00")
        if not text or max(map(ord, text)) > 0x3FFFF or bad_char_ratio(text) > 0.02:
            continue
        sample = text[:_SCORE_SAMPLE]
        wide = [ch for ch in sample if ord(ch) >= 0x80]
        if sum(1 for ch in wide if unicodedata.category(ch) == "Cn") > 0.02 * len(sample):
            continue
        # Like UTF-16 read by content: the non-ASCII characters must read as text
        # (e.g. b"ab\0\0cd\0\0" decodes, but to two rare ideographs over and over).
        score = _score(sample)
        if wide and (score <= 0 or score < 0.5 * len(wide)):
            continue
        return text, encoding
    return None


def _ascii_pair(code: int) -> bool:
    """Whether both bytes of a UTF-16 code unit could come from ASCII text with stray NULs:
    printable ASCII, tab, line break or NUL."""
    return all(0x20 <= b <= 0x7E or b in (0x00, 0x09, 0x0A, 0x0D) for b in (code >> 8, code & 0xFF))


def _utf16_by_content(
    data: bytes, legacy_best: int | None, few_nuls: bool
) -> tuple[str, str] | None:
    """BOM-less UTF-16 (LE or BE) recognised by what the text says rather than by NUL bytes.

    ``legacy_best`` is the best score of the legacy readings of the same bytes, None when none
    decodes; ``few_nuls`` says whether the bytes could be legacy text with stray NULs (or none).
    See step 5 of the module docstring.
    """
    if len(data) < 2 or len(data) % 2:
        return None
    readings: list[tuple[int, str, str, int]] = []  # (score with line breaks, encoding, text, score)
    for encoding in ("utf-16-le", "utf-16-be"):
        try:
            text = data.decode(encoding).rstrip("\x00")
        except UnicodeDecodeError:
            continue
        if not text.strip() or bad_char_ratio(text) > 0.02:
            continue
        score = _score(text)
        readings.append((score + text[:_SCORE_SAMPLE].count("\n"), encoding, text, score))
    if not readings:
        return None
    readings.sort(key=lambda r: r[0], reverse=True)
    total, encoding, text, score = readings[0]
    if len(readings) == 2 and readings[1][0] == total:
        return None  # nothing tells the byte orders apart
    wide = [ord(ch) for ch in text[:_SCORE_SAMPLE] if ord(ch) >= 0x80]
    if total <= 0 or score < 0.5 * len(wide):
        return None
    if legacy_best is not None and total <= legacy_best:
        return None
    if few_nuls:
        bmp = [o for o in wide if o <= 0xFFFF]
        if bmp and sum(map(_ascii_pair, bmp)) >= 0.8 * len(bmp):
            return None  # mostly ASCII bytes (a few stray NULs), read two bytes at a time
    return text, encoding


def _remove_nuls(data: bytes) -> tuple[bytes, str | None]:
    """The bytes without trailing NUL padding and stray NULs, or an error when there are too
    many NULs for text."""
    if b"\x00" not in data:
        return data, None
    stripped = data.rstrip(b"\x00")
    nuls = stripped.count(0)
    if nuls > max(8, len(stripped) // 100):
        return data, f"contains {nuls} NUL bytes; this looks like binary data, not a text file"
    return stripped.replace(b"\x00", b""), None


def decode_bytes(data: bytes) -> tuple[str, str]:
    """Decode the bytes of a text file; returns ``(text, encoding)``.

    Raises ValueError, with a reason fit for a user, when the bytes do not look like text.
    See the module docstring for the method.
    """
    for bom, encoding in BOMS:
        if data.startswith(bom):
            try:
                text = data.decode(encoding)
            except UnicodeDecodeError:
                continue  # e.g. FF FE 00 00 that is really UTF-16 text starting with NUL
            return _check_text(text, encoding), encoding

    wide32 = _utf32_without_bom(data)
    if wide32 is not None:
        return _check_text(*wide32), wide32[1]

    encoding = _utf16_without_bom(data)
    if encoding:
        return _check_text(data.decode(encoding), encoding), encoding

    if b"\x00" not in data:
        try:
            return _check_text(data.decode("utf-8"), "utf-8"), "utf-8"
        except (UnicodeDecodeError, ValueError):
            pass  # not UTF-8, or UTF-8 full of control characters (UTF-16 can read so)

    # Not plain UTF-8: NUL bytes, or invalid sequences. UTF-16 is decided before any NUL is
    # touched, against the legacy readings of the bytes with stray NULs removed.
    cleaned, nul_error = _remove_nuls(data)
    candidates: list[tuple[int, int, str, str]] = []  # (score, -order, encoding, text)
    strict_utf8: str | None = None
    utf8_text, damage = "", 0
    if nul_error is None:
        try:
            strict_utf8 = cleaned.decode("utf-8")
        except UnicodeDecodeError:
            pass
        if strict_utf8 is None:
            candidates, utf8_text, damage = _legacy_candidates(cleaned)
    legacy_scores = [c[0] for c in candidates]
    if strict_utf8 is not None:
        legacy_scores.append(_score(strict_utf8))
    wide16 = _utf16_by_content(
        data, max(legacy_scores) if legacy_scores else None, few_nuls=nul_error is None
    )
    if wide16 is not None:
        return _check_text(*wide16), wide16[1]

    if nul_error is not None:
        raise ValueError(nul_error)
    data = cleaned
    if strict_utf8 is not None:
        return _check_text(strict_utf8, "utf-8"), "utf-8"

    best = max(candidates) if candidates else None
    if best is not None and best[0] > 0:
        return _check_text(best[3], best[2]), best[2]

    try:  # Western European legacy text is the likeliest remaining case
        text = data.decode("cp1252")
        if bad_char_ratio(text) <= 0.01:
            return text, "cp1252"
    except UnicodeDecodeError:
        pass
    guess = _charset_normalizer_guess(data)
    if guess is not None:
        text, encoding = guess
        if bad_char_ratio(text) <= 0.01:
            return text, encoding
    if damage <= len(data) * 0.01:
        return _check_text(utf8_text, "utf-8 (damaged)"), "utf-8 (damaged)"
    if best is not None:
        return _check_text(best[3], best[2]), best[2]
    raise ValueError(
        "cannot decode the text: it is not UTF-8, UTF-16, GB18030/GBK or Big5, "
        "and looks like binary data"
    )


def _legacy_candidates(data: bytes) -> tuple[list[tuple[int, int, str, str]], str, int]:
    """The scored readings of bytes that are not strict UTF-8 (step 8 of the module docstring),
    with the UTF-8 reading with replacement characters and its count of invalid bytes."""
    candidates: list[tuple[int, int, str, str]] = []  # (score, -order, encoding, text)
    for order, encoding in enumerate(_CJK_CANDIDATES):
        try:
            text = data.decode(encoding)
        except UnicodeDecodeError:
            continue
        candidates.append((_score(text), -order, encoding, text))
    utf8_text, damage = _utf8_damage(data)
    non_ascii = sum(1 for b in data if b >= 0x80)
    if damage <= len(data) * 0.01 and damage <= non_ascii * 0.05:
        candidates.append((_score(utf8_text), -9, "utf-8 (damaged)", utf8_text))
    mixed = _mixed_utf8_legacy(data)
    if mixed is not None:
        candidates.append((_score(mixed), -10, "utf-8 + gb18030/big5 (mixed)", mixed))
    return candidates, utf8_text, damage


# Runs of at least two UTF-8 characters of three or four bytes (CJK and above): such runs
# almost never arise by chance from GBK or Big5 bytes, so they anchor the UTF-8 parts of a line.
_UTF8_ANCHORS = re.compile("[\u0800-\ud7ff\ue000-\U0010ffff]{2,}")
_UTF8_WIDE = re.compile("[\u0800-\ud7ff\ue000-\U0010ffff]")


def _mixed_utf8_legacy(data: bytes) -> str | None:
    """Text in which UTF-8 and a Chinese legacy encoding are mixed (files pasted together, a
    GBK log appended to a UTF-8 one). Line by line: a line that is valid UTF-8 with CJK (or
    plain ASCII) stays UTF-8; any other line keeps its runs of UTF-8 CJK characters and decodes
    every stretch between them with its best-scoring Chinese encoding. None when there is no mix.
    """
    escaped = data.decode("utf-8", errors="surrogateescape")
    if not _ESCAPED.search(escaped):
        return None
    parts: list[str] = []
    utf8_seen = False
    for line in re.split(r"(?<=\n)", escaped):
        if not _ESCAPED.search(line) and (line.isascii() or _UTF8_WIDE.search(line)):
            parts.append(line)
            utf8_seen = utf8_seen or not line.isascii()
            continue
        last = 0
        for m in _UTF8_ANCHORS.finditer(line):
            parts.append(_best_legacy(line[last : m.start()]))
            parts.append(m.group())
            last = m.end()
            utf8_seen = True
        parts.append(_best_legacy(line[last:]))
    return "".join(parts) if utf8_seen else None


def _best_legacy(segment: str) -> str:
    if segment.isascii():
        return segment
    raw = segment.encode("utf-8", errors="surrogateescape")
    best: tuple[int, int, str] | None = None
    for order, encoding in enumerate(_CJK_CANDIDATES):
        try:
            text = raw.decode(encoding)
        except UnicodeDecodeError:
            continue
        candidate = (_score(text), -order, text)
        best = candidate if best is None else max(best, candidate)
    return best[2] if best is not None else raw.decode("gb18030", errors="replace")


def _charset_normalizer_guess(data: bytes) -> tuple[str, str] | None:
    try:
        from charset_normalizer import from_bytes

        match = from_bytes(data).best()
    except Exception:
        return None
    if match is None:
        return None
    try:
        return str(match), match.encoding
    except Exception:
        return None


def _check_text(text: str, encoding: str) -> str:
    ratio = bad_char_ratio(text.replace("\x00", ""))
    if ratio > 0.05:
        raise ValueError(
            f"decoded as {encoding}, {ratio:.0%} of the characters are control or unassigned "
            "characters; this looks like binary data, not a text file"
        )
    return text

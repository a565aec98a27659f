"""Search forms of text: tokens for keyword (BM25) search and the text the embedder sees.

The text shown to people (a chunk's stored text) stays as written; only its *search forms* are
normalised, on the index side and the question side alike, so that a passage is found however it
is typed:

1. **Unicode compatibility forms** (NFKC): full-width letters and digits (``ＺＸ－３００Ｐ`` →
   ``ZX-300P``, ``１２３`` → ``123``), ligatures (``ﬃ`` → ``ffi``), compatibility and radical
   ideographs (``⾦`` → ``金``), circled numbers, ideographic spaces. NFKC also turns full-width
   ``：；！？（）`` into their ASCII forms; tokens never keep punctuation, so this changes no word.
2. **Script and regional vocabulary.** jieba's dictionary is Simplified Chinese, so Traditional
   text is folded to mainland Simplified: text that is mostly Traditional goes through OpenCC's
   ``tw2sp`` (Taiwan phrases: 軟體 → 软件, 記憶體 → 内存, 隨身碟 → U盘, 印表機 → 打印机,
   網路 → 网络) plus the Hong Kong variant characters ``tw2sp`` leaves (衞 → 卫, from ``hk2s``).
   Simplified text is never put through ``tw2sp`` (it would turn the mainland 序列 into 串行);
   stray Traditional characters in it are folded character by character (``t2s``) as before.
   The tokens of a Traditional text also keep the words of its plain character folding where
   the two differ (序列 next to 串行, 资料 next to 数据), so a question worded either way finds it.
3. jieba words, Latin words lower-cased, punctuation and spaces dropped.

    >>> search_tokens("這個軟體支援 GPU 加速。")
    ['这个', '软件', '支持', 'gpu', '加速', '软体', '支援']
    >>> search_form("ＺＸ－３００Ｐ的記憶體")
    'ZX-300P的内存'
"""

from __future__ import annotations

import functools
import os
import re
import threading
import unicodedata

_WORD = re.compile(r"\w", re.UNICODE)
_jieba_lock = threading.Lock()

TRADITIONAL_SHARE = 0.5
"""A text counts as Traditional when more than this share of its script-specific characters
(those only one of the two scripts uses) are Traditional."""


@functools.lru_cache(maxsize=1)
def _t2s():
    """The converter and every character it could change.

    The pure-Python converter costs about 4 µs a character; most text (Simplified Chinese,
    English) holds none of the characters it changes, and a set test finds that in C.
    """
    from opencc import OpenCC

    converter = OpenCC("t2s")
    converter.convert("")  # loads its dictionaries
    changeable: set[str] = set()
    try:
        for chain in converter._dict_chain_data:  # private, hence the fallback below
            for _longest, _shortest, mapping in chain:
                for source, targets in mapping.items():
                    target = targets.split(" ")[0]  # the converter uses the first candidate
                    if len(source) == len(target):
                        changeable.update(a for a, b in zip(source, target) if a != b)
                    else:
                        changeable.update(source)
    except (AttributeError, TypeError, ValueError):
        return converter, None
    return converter, frozenset(changeable)


@functools.lru_cache(maxsize=1)
def _regional():
    """``(tw2sp converter, Hong Kong leftovers table, Traditional-only characters,
    Simplified-only characters)``; the character sets are None when OpenCC's dictionary files
    cannot be read (then any character ``t2s`` changes counts as Traditional)."""
    import opencc

    taiwan = opencc.OpenCC("tw2sp")
    taiwan.convert("")  # loads its dictionaries
    hong_kong = opencc.OpenCC("hk2s")
    folder = os.path.join(os.path.dirname(opencc.__file__), "dictionary")

    def single_char_changes(name: str) -> dict[str, str]:
        changes: dict[str, str] = {}
        with open(os.path.join(folder, name), encoding="utf-8") as fh:
            for line in fh:
                source, _, targets = line.rstrip("\n").partition("\t")
                target = targets.split(" ")[0]
                if len(source) == 1 and target and target != source:
                    changes[source] = target
        return changes

    leftovers: dict[int, str] = {}
    traditional = simplified = None
    try:
        # Hong Kong variants tw2sp does not know (衞, 敍, 枱 ...): folded as hk2s folds them.
        for char in single_char_changes("HKVariantsRev.txt"):
            mainland = hong_kong.convert(char)
            if taiwan.convert(char) == char and mainland != char:
                leftovers[ord(char)] = mainland
        to_simplified_chars = set(single_char_changes("TSCharacters.txt")) | {chr(c) for c in leftovers}
        to_traditional_chars = set(single_char_changes("STCharacters.txt"))
        traditional = frozenset(to_simplified_chars - to_traditional_chars)
        simplified = frozenset(to_traditional_chars - to_simplified_chars)
    except OSError:
        pass
    return taiwan, leftovers, traditional, simplified


@functools.lru_cache(maxsize=1)
def _jieba():
    import logging

    import jieba

    jieba.setLogLevel(logging.WARNING)
    with _jieba_lock:
        jieba.initialize()
    return jieba


def normalize(text: str) -> str:
    """Unicode NFKC: compatibility forms (full-width, ligatures, radicals ...) to plain ones."""
    if text.isascii():
        return text
    return unicodedata.normalize("NFKC", text)


def to_simplified(text: str) -> str:
    """Traditional characters and phrases folded to Simplified (OpenCC ``t2s``: script only, no
    regional vocabulary); other text returned as is."""
    converter, changeable = _t2s()
    if changeable is not None and changeable.isdisjoint(text):
        return text
    return converter.convert(text)


def is_traditional(text: str) -> bool:
    """Whether ``text`` is written in Traditional Chinese: more than :data:`TRADITIONAL_SHARE` of
    its characters that belong to one script only are Traditional ones."""
    _taiwan, _leftovers, traditional, simplified = _regional()
    if traditional is None or simplified is None:
        return to_simplified(text) != text
    if traditional.isdisjoint(text):
        return False
    trad = sum(1 for ch in text if ch in traditional)
    simp = sum(1 for ch in text if ch in simplified)
    return trad > TRADITIONAL_SHARE * (trad + simp)


def _folds(text: str) -> tuple[str, str]:
    """``(mainland form, script-only form)`` of already normalised text; equal unless the text
    is Traditional and its regional vocabulary differs from the mainland's."""
    taiwan, leftovers, _traditional, _simplified = _regional()
    script = to_simplified(text)
    if leftovers:
        script = script.translate(leftovers)
    if script == text or not is_traditional(text):
        return script, script
    mainland = taiwan.convert(text)
    if leftovers:
        mainland = mainland.translate(leftovers)
    return mainland, script


def to_mainland(text: str) -> str:
    """Traditional text in mainland Simplified script and vocabulary (see the module docstring);
    Simplified text with only its stray Traditional characters folded."""
    return _folds(text)[0]


def search_form(text: str) -> str:
    """The text as searches compare it: NFKC, then :func:`to_mainland`. The embedder is given
    this form of every passage and question."""
    return to_mainland(normalize(text))


def _words(text: str) -> list[str]:
    jieba = _jieba()
    words = jieba.lcut_for_search(text, HMM=True)
    return [w.lower() for w in (w.strip() for w in words) if w and _WORD.search(w)]


def search_tokens(text: str) -> list[str]:
    """Words to index or query with: the jieba words of :func:`search_form`, lower-cased, no
    punctuation; for Traditional text followed by the words its plain character folding has
    and the mainland form lacks."""
    mainland, script = _folds(normalize(text))
    tokens = _words(mainland)
    if script != mainland:
        have = set(tokens)
        tokens += [w for w in _words(script) if w not in have]
    return tokens


# Words that carry the form of a question (or a greeting), not its topic. Passages rarely contain them, so
# their IDF is high and they would pull chunks that happen to say 什么 or 哪 to the top.
# Used on queries only (the stored chunk tokens keep every word).
QUERY_STOPWORDS = frozenset(
    """
    什么 什么样 为什么 怎么 怎么样 怎样 如何 哪 哪个 哪些 哪里 哪儿 哪年 哪一年 哪位 哪种 哪一 哪家
    谁 几 几个 几年 几次 多少 多久 多长 多大 多高 多远 何 何时 何地 何种 何人 吗 呢 么 吧 啊 呀
    是 的 了 在 有 和 与 及 或 被 把 对 于 为 以 之 其 中 上 下 这 那 这个 那个 这些 那些 请问 请 问
    一个 一种 可以 能 会 要 就 都 也 还 又 叫 叫做 称为 称作 属于 位于 指 作为 进行 由 从 到 向 给 让
    what which who whom whose when where why how is are was were be been being do does did the a an
    of in on at to for from by with and or as that this these those it its please tell me about
    你好 您好 谢谢 多谢 嗨 哈喽 好的 hello hi hey ok okay thanks thank you
    """.split()
)


def query_tokens(text: str) -> list[str]:
    """``search_tokens`` of a question without question and function words (see above).

    Falls back to every token when the question consists of nothing else.
    """
    tokens = search_tokens(text)
    kept = [t for t in tokens if t not in QUERY_STOPWORDS]
    return kept or tokens

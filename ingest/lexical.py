"""Tokens for keyword (BM25) search, computed once at ingest and stored with each chunk.

jieba's dictionary is Simplified Chinese, so Traditional text is folded to Simplified first;
otherwise 資訊 and 资讯 would never match. Latin words are lower-cased; punctuation and spaces
are dropped.

    >>> search_tokens("這個軟體支援 GPU 加速。")
    ['这个', '软体', '支援', 'gpu', '加速']
"""

from __future__ import annotations

import functools
import re
import threading

_WORD = re.compile(r"\w", re.UNICODE)
_jieba_lock = threading.Lock()


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
def _jieba():
    import logging

    import jieba

    jieba.setLogLevel(logging.WARNING)
    with _jieba_lock:
        jieba.initialize()
    return jieba


def to_simplified(text: str) -> str:
    """Traditional characters and phrases folded to Simplified; other text returned as is."""
    converter, changeable = _t2s()
    if changeable is not None and changeable.isdisjoint(text):
        return text
    return converter.convert(text)


def search_tokens(text: str) -> list[str]:
    """Words to index or query with: Simplified, segmented by jieba, lower-cased, no punctuation."""
    jieba = _jieba()
    words = jieba.lcut_for_search(to_simplified(text), HMM=True)
    return [w.lower() for w in (w.strip() for w in words) if w and _WORD.search(w)]


# Words that carry the form of a question, not its topic. Passages rarely contain them, so
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
    """.split()
)


def query_tokens(text: str) -> list[str]:
    """``search_tokens`` of a question without question and function words (see above).

    Falls back to every token when the question consists of nothing else.
    """
    tokens = search_tokens(text)
    kept = [t for t in tokens if t not in QUERY_STOPWORDS]
    return kept or tokens

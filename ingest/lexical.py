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
    from opencc import OpenCC

    return OpenCC("t2s")


@functools.lru_cache(maxsize=1)
def _jieba():
    import logging

    import jieba

    jieba.setLogLevel(logging.WARNING)
    with _jieba_lock:
        jieba.initialize()
    return jieba


def to_simplified(text: str) -> str:
    return _t2s().convert(text)


def search_tokens(text: str) -> list[str]:
    """Words to index or query with: Simplified, segmented by jieba, lower-cased, no punctuation."""
    jieba = _jieba()
    words = jieba.lcut_for_search(to_simplified(text), HMM=True)
    return [w.lower() for w in (w.strip() for w in words) if w and _WORD.search(w)]

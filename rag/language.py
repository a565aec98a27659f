"""Which language a text is in, as far as prompts and retrieval care: ``"zh"`` or ``"en"``.

    >>> detect_language("北京是哪个国家的首都？")
    'zh'
    >>> detect_language("What is the capital of France?")
    'en'
    >>> detect_language("GPU 加速怎么打开？")   # mixed: any real share of Chinese counts as Chinese
    'zh'
"""

from __future__ import annotations

import re

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ffff]")
_LATIN_WORD = re.compile(r"[A-Za-z]+")


def cjk_ratio(text: str) -> float:
    """Share of Chinese characters among Chinese characters plus Latin words."""
    cjk = len(_CJK.findall(text))
    latin = len(_LATIN_WORD.findall(text))
    total = cjk + latin
    return cjk / total if total else 0.0


def detect_language(text: str, threshold: float = 0.2) -> str:
    """``"zh"`` when at least ``threshold`` of the text's words/characters are Chinese, else ``"en"``."""
    return "zh" if cjk_ratio(text) >= threshold and _CJK.search(text) else "en"


def has_traditional(text: str) -> bool:
    """True when folding to Simplified changes the text (it holds Traditional characters)."""
    from ingest.lexical import to_simplified

    return bool(_CJK.search(text)) and to_simplified(text) != text


__all__ = ["detect_language", "cjk_ratio", "has_traditional"]

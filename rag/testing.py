"""A deterministic fake chat model for tests (ours and the UI's): records every prompt, checks
that it fits the window, and answers predictably.

Usage::

    from rag.testing import fake_loaded_model
    model = fake_loaded_model(context_window=512, max_new_tokens=32)
    kb = KnowledgeBase("kb_dir", model=model)          # or KnowledgeBase(..., model=...) in UI tests
    kb.ask("问题")
    fake = model.chat_model
    fake.calls[-1].prompt          # the exact prompt text (Llama-2 chat layout) of the last call
    fake.calls[-1].prompt_tokens   # its size in the fake tokenizer

Tokenizer: every CJK character, every run of Latin letters/digits and every other non-space
character is one token (:func:`fake_count_tokens`). A call whose
``prompt_tokens + max_new_tokens`` exceeds ``context_window`` raises :class:`ContextOverflow`
(an ``AssertionError``), so a chain that overflows fails the test that drives it.

Default answers (``responder=None``):

* the prompt contains numbered sources (``<source id="1" ...>``): the answer cites the first one,
  ``根据资料[1]：<its first 24 characters>。`` (Chinese prompt) or
  ``According to [1]: <first 8 words>.`` (English prompt);
* ``<document>`` blocks (summaries): ``FAKE:`` + the first 40 characters of each block;
* otherwise: ``FAKE:`` followed by the start of the last user message after its first line.

Every answer is cut to ``max_new_tokens`` fake tokens (like a real model would stop), and is
streamed in pieces of a few characters.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import ConfigDict, Field

from rag.models.base import LoadedModel
from rag.models.prompts import format_messages_llama2

_TOKEN = re.compile(r"[A-Za-z0-9_]+|[^\sA-Za-z0-9_]")
_DOCUMENT = re.compile(r"<document(?: [^>]*)?>\n(.*?)\n</document>", re.S)
_SOURCE = re.compile(r'<source id="(\d+)"[^>]*>\n?(.*?)\n?</source>', re.S)


def fake_count_tokens(text: str) -> int:
    """One token per CJK character, per Latin/digit run and per other non-space character."""
    return len(_TOKEN.findall(text))


def _truncate_tokens(text: str, limit: int) -> str:
    if limit <= 0:
        return ""
    count = 0
    for m in _TOKEN.finditer(text):
        count += 1
        if count > limit:
            return text[: m.start()].rstrip()
    return text


class ContextOverflow(AssertionError):
    """A prompt plus the generation reserve did not fit the fake model's window."""


@dataclass
class FakeCall:
    messages: list[BaseMessage]
    prompt: str
    prompt_tokens: int
    max_new_tokens: int
    answer: str = ""

    @property
    def user_text(self) -> str:
        humans = [m for m in self.messages if isinstance(m, HumanMessage)]
        return str(humans[-1].content) if humans else ""


def default_responder(messages: Sequence[BaseMessage]) -> str:
    humans = [m for m in messages if isinstance(m, HumanMessage)]
    text = str(humans[-1].content) if humans else ""
    sources = _SOURCE.findall(text)
    chinese = bool(re.search(r"[\u4e00-\u9fff]", text[:400]))
    if sources:
        first = sources[0][1].strip()
        if chinese:
            return f"根据资料[{sources[0][0]}]：{first[:24]}。"
        words = first.split()[:8]
        return f"According to [{sources[0][0]}]: {' '.join(words)}."
    docs = _DOCUMENT.findall(text)
    if docs:
        return "FAKE: " + " | ".join(d.strip()[:40] for d in docs)
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    if len(lines) > 1 and lines[-1].endswith(("：", ":")):
        lines = lines[:-1]
    body = " ".join(lines[1:] if len(lines) > 1 else lines)
    return "FAKE: " + body[:60]


class FakeChatModel(BaseChatModel):
    """See the module docstring."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    context_window: int = 4096
    max_new_tokens: int = 64
    responder: Callable[[Sequence[BaseMessage]], str] | None = None
    strict: bool = True
    piece_chars: int = 3
    prompt_tokens_per_s: float | None = None
    """Set: each call sleeps as long as reading its prompt at this speed would take."""
    calls: list[FakeCall] = Field(default_factory=list)
    lock: Any = Field(default_factory=threading.Lock, exclude=True)

    @property
    def _llm_type(self) -> str:
        return "docqa-fake"

    # what the chains use to measure prompts (same as our real backends)
    def count_tokens(self, text: str) -> int:
        return fake_count_tokens(text)

    def format_prompt(self, messages: Sequence[BaseMessage]) -> str:
        return format_messages_llama2(messages)

    def get_num_tokens(self, text: str) -> int:
        return fake_count_tokens(text)

    @property
    def prompts(self) -> list[str]:
        return [c.prompt for c in self.calls]

    def reset(self) -> None:
        with self.lock:
            self.calls.clear()

    def _answer(self, messages: list[BaseMessage], **kwargs: Any) -> str:
        prompt = self.format_prompt(messages)
        tokens = fake_count_tokens(prompt) + 1  # + BOS, as the real backends add it
        max_new = int(kwargs.get("max_new_tokens") or self.max_new_tokens)
        call = FakeCall(list(messages), prompt, tokens, max_new)
        with self.lock:
            self.calls.append(call)
        if self.strict and tokens + max_new > self.context_window:
            raise ContextOverflow(
                f"prompt {tokens} + max_new_tokens {max_new} > context window {self.context_window}"
            )
        if self.prompt_tokens_per_s:
            time.sleep(tokens / self.prompt_tokens_per_s)
        answer = (self.responder or default_responder)(messages)
        call.answer = _truncate_tokens(answer, max_new)
        return call.answer

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=self._answer(messages, **kwargs)))])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        answer = self._answer(messages, **kwargs)
        for start in range(0, len(answer), self.piece_chars):
            piece = answer[start : start + self.piece_chars]
            if run_manager:
                run_manager.on_llm_new_token(piece)
            yield ChatGenerationChunk(message=AIMessageChunk(content=piece))


def fake_loaded_model(
    context_window: int = 4096,
    max_new_tokens: int = 64,
    responder: Callable[[Sequence[BaseMessage]], str] | None = None,
    notice: str | None = None,
    strict: bool = True,
    prompt_tokens_per_s: float | None = None,
) -> LoadedModel:
    """A :class:`LoadedModel` around a :class:`FakeChatModel` (``.chat_model`` to inspect calls).

    Without ``prompt_tokens_per_s`` the fake reads prompts instantly and says so (its prompt
    speed is preset, so no measuring calls appear in ``.calls``); with it, each call sleeps as
    reading would take and rag.models.speed measures the fake like a real model."""
    from rag.models.speed import PromptSpeed

    chat = FakeChatModel(
        context_window=context_window, max_new_tokens=max_new_tokens, responder=responder, strict=strict,
        prompt_tokens_per_s=prompt_tokens_per_s,
    )
    instant = PromptSpeed(tokens_per_s=1e12, overhead_s=0.0, probe_tokens=0)
    return LoadedModel(
        chat_model=chat,
        count_tokens=chat.count_tokens,
        context_window=context_window,
        name="fake-chat-model",
        backend="fake",
        is_stand_in=False,
        notice=notice,
        max_new_tokens=max_new_tokens,
        prompt_speed=None if prompt_tokens_per_s else instant,
    )


__all__ = ["FakeChatModel", "FakeCall", "ContextOverflow", "fake_loaded_model", "fake_count_tokens", "default_responder"]

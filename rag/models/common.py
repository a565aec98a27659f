"""What every backend shares: stop sequences, cancellation, LangChain plumbing, token counting."""

from __future__ import annotations

import contextlib
import threading
import weakref
from abc import abstractmethod
from typing import Any, Iterator, Sequence

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import ConfigDict, Field


class StopFilter:
    """Cuts a token stream at the first stop sequence, holding back text that might start one."""

    def __init__(self, stops: Sequence[str] | None):
        self.stops = [s for s in (stops or []) if s]
        self.buf = ""
        self.done = False

    def feed(self, text: str) -> str:
        if self.done:
            return ""
        if not self.stops:
            return text
        self.buf += text
        hits = [i for i in (self.buf.find(s) for s in self.stops) if i >= 0]
        if hits:
            out, self.buf, self.done = self.buf[: min(hits)], "", True
            return out
        hold = 0
        for s in self.stops:
            for k in range(min(len(s) - 1, len(self.buf)), 0, -1):
                if self.buf.endswith(s[:k]):
                    hold = max(hold, k)
                    break
        cut = len(self.buf) - hold
        out, self.buf = self.buf[:cut], self.buf[cut:]
        return out

    def flush(self) -> str:
        out, self.buf = ("" if self.done else self.buf), ""
        return out


class Cancel:
    """Set when the consumer stops reading, or when the caller's own event is set."""

    def __init__(self, external: threading.Event | None = None):
        self.internal = threading.Event()
        self.external = external

    def set(self) -> None:
        self.internal.set()

    def is_set(self) -> bool:
        return self.internal.is_set() or (self.external is not None and self.external.is_set())


_ENGINE_LOCKS: "weakref.WeakKeyDictionary[Any, threading.Lock]" = weakref.WeakKeyDictionary()
_ENGINE_LOCKS_GUARD = threading.Lock()


def engine_lock(engine: Any) -> threading.Lock:
    """The one lock of a loaded model object, shared by every chat model wrapping it.

    A llama.cpp context and a transformers model (with its NTK hook) hold per-generation state,
    so two threads (two Streamlit sessions, ``batch``) must not generate with one at once; the UI
    also makes cheap copies of a chat model per question, which share the engine and so the lock.
    """
    with _ENGINE_LOCKS_GUARD:
        lock = _ENGINE_LOCKS.get(engine)
        if lock is None:
            lock = _ENGINE_LOCKS[engine] = threading.Lock()
        return lock


def generation_settings(settings: Any) -> dict[str, Any]:
    """The sampling and prompt fields every chat model takes from ``ModelSettings``."""
    return dict(
        temperature=settings.temperature,
        top_k=settings.top_k,
        top_p=settings.top_p,
        repetition_penalty=settings.repetition_penalty,
        max_new_tokens=settings.max_new_tokens,
        system_prompt=settings.system_prompt,
    )


class LocalChatModel(BaseChatModel):
    """Base of our chat models: subclasses yield raw text pieces, this class adds stop
    sequences, cancellation and callbacks.

    Cancellation: pass ``cancel_event=threading.Event()`` to ``invoke``/``stream`` (or set the
    model's ``cancel_event``) and set it from any thread; or simply stop consuming ``stream()`` —
    closing the generator stops the generation.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    model_name: str = "model"
    temperature: float = 0.2
    top_k: int = 40
    top_p: float = 0.9
    repetition_penalty: float = 1.1
    max_new_tokens: int = 512
    stop: list[str] | None = None
    system_prompt: str | None = None
    cancel_event: Any = Field(default=None, exclude=True)

    # --- what a backend provides ---------------------------------------------------------------
    @abstractmethod
    def _stream_text(self, messages: list[BaseMessage], stop: list[str], cancel: Cancel, **kwargs: Any) -> Iterator[str]:
        """Yield generated text pieces; must return promptly once ``cancel.is_set()``."""

    def generation_engine(self) -> Any:
        """The loaded model object generation runs on (one generation at a time on it)."""
        return None

    @abstractmethod
    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` in the model's own tokenizer (no BOS)."""

    @abstractmethod
    def format_prompt(self, messages: Sequence[BaseMessage]) -> str:
        """The exact prompt text the model will see."""

    # --- LangChain ----------------------------------------------------------------------------
    def get_num_tokens(self, text: str) -> int:
        return self.count_tokens(text)

    def get_num_tokens_from_messages(self, messages: list[BaseMessage], tools: Any = None) -> int:
        return self.count_tokens(self.format_prompt(messages))

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {
            "model_name": self.model_name,
            "temperature": self.temperature,
            "top_k": self.top_k,
            "top_p": self.top_p,
            "repetition_penalty": self.repetition_penalty,
            "max_new_tokens": self.max_new_tokens,
        }

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        engine = self.generation_engine()
        with engine_lock(engine) if engine is not None else contextlib.nullcontext():
            yield from self._stream_unlocked(messages, stop, run_manager, **kwargs)

    def _stream_unlocked(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None,
        run_manager: CallbackManagerForLLMRun | None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        stops = list(stop or []) + list(self.stop or [])
        cancel = Cancel(kwargs.pop("cancel_event", None) or self.cancel_event)
        filt = StopFilter(stops)
        pieces = self._stream_text(messages, stops, cancel, **kwargs)
        try:
            for piece in pieces:
                text = filt.feed(piece)
                if text:
                    if run_manager:
                        run_manager.on_llm_new_token(text)
                    yield ChatGenerationChunk(message=AIMessageChunk(content=text))
                if filt.done:
                    break
                if cancel.is_set():
                    break
            tail = filt.flush()
            if tail:
                yield ChatGenerationChunk(message=AIMessageChunk(content=tail))
        finally:
            cancel.set()
            close = getattr(pieces, "close", None)
            if close:
                close()

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        text = "".join(c.message.content for c in self._stream(messages, stop, run_manager, **kwargs))
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])

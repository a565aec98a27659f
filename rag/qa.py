"""Multi-document question answering as a LangChain Runnable.

Usage::

    from rag.qa import QAChain
    chain = QAChain(model, retriever)                    # model: LoadedModel, retriever: HybridRetriever
    result = chain.invoke({"question": "北京是哪个国家的首都？", "history": []})
    result["answer"], result["sources"]                  # "……[1]", [{"n": 1, "doc_id", ...}]
    for event in chain.stream({"question": "……"}):
        ...                                              # {"type": "token", "text"} …, then {"type": "final", ...}

Steps (each an LCEL Runnable, run with the caller's config so callbacks and tracing see them):

1. ``rewrite``: with earlier turns, the model turns a follow-up ("它的人口呢？") into a standalone
   question. Skipped (no model call) without history, for a question that does not lean on the
   conversation (:func:`leans_on_conversation`: no pronoun, 这/那, "…呢？", and not very short),
   and for the packaged stand-in, which cannot rewrite.
2. ``retrieve``: :class:`rag.retrieval.HybridRetriever` (``k``, ``doc_ids``, threshold) with the
   question as asked, fused (:func:`fuse_hit_lists`) with the rewrite's hits when there is one,
   so a poor rewrite never takes away what the question finds; and with the question's
   translation when the documents in scope are in the other language (``translator``,
   rag.translate: one short model call, cached). The result's ``searched_for`` lists what was
   searched. Nothing
   relevant: the answer is the fixed :func:`rag.retrieval.no_passage_message` and the model is
   not called.
3. ``pack``: the prompt is filled up to the model's real window:
   ``LoadedModel.context_window − LoadedModel.max_new_tokens`` minus system prompt, instruction,
   question and history, all measured with the model's own tokenizer on the exact prompt text
   (``chat_model.format_prompt`` where the backend has it). ``k`` passages, best first; the
   room up to ``context_budget`` (None: the window; see rag.models.speed) widens each passage
   with its neighbouring chunks, best passage first, round by round, until the budget is used
   or whole documents are in. A passage that does not fit
   whole is cut; history turns are dropped oldest first; a final exact count guarantees the limit.
4. ``generate``: system prompt + instruction (Chinese for a Chinese question, English otherwise)
   with the numbered ``<source>`` blocks; the backend formats them for Alpaca-2 (``[INST]``).

Result of ``invoke``::

    {"answer": str, "sources": [{"n", "doc_id", "source", "file_name", "title", "page", "chunk",
     "text", "score"}], "cited": [1, 2], "standalone_question": str, "language": "zh" | "en",
     "notice": str | None, "translation": {"target", "text", "note"} | None, ...}

``stream`` yields ``{"type": "sources", "sources": [...]}`` as soon as retrieval and packing are
done (before the model starts), ``{"type": "token", "text": str}`` for each piece of the answer
and then one ``{"type": "final", **result}``.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.runnables import Runnable, RunnableConfig, RunnableLambda, RunnablePassthrough

from rag.language import detect_language
from rag.models.base import LoadedModel, truncate_to_tokens
from rag.models.speed import observe as observe_prompt_speed
from rag.prompts_qa import (
    CleanStream,
    clean_generated,
    clean_rewrite,
    defuse,
    qa_echo_texts,
    qa_instruction,
    rewrite_instruction,
    source_block,
)
from rag.retrieval import Hit, boxes_json, fuse_hit_lists, no_passage_message
from rag.translate import own_language_hits, search_translation, translation_dict

MAX_HISTORY_TURNS = 4
REWRITE_MAX_NEW_TOKENS = 96
MIN_PASSAGE_TOKENS = 48
"""A passage is only cut to fit when at least this much room is left."""
PROMPT_SLACK = 2
"""Tokens added to every prompt count (BOS and a margin for tokenizers that merge across joins)."""

_CITATION = re.compile(r"\[(\d{1,3})\]")


_LEANS_ON_CONTEXT = re.compile(
    r"[它他她其该此这那]|上述|前者|后者|呢[？?]?\s*$|^(那|还有|另外|然后)"
    r"|\b(it|its|they|them|their|this|that|these|those|he|she|him|his|her|one|ones|also|too|else)\b"
    r"|^\s*(and|what about|how about)\b",
    re.I,
)


def leans_on_conversation(question: str) -> bool:
    """Whether a question may need earlier turns to be understood (a pronoun, 这/那, '…呢？',
    'what about …') or is too short to stand alone; only such questions are rewritten."""
    if _LEANS_ON_CONTEXT.search(question):
        return True
    cjk = len(re.findall(r"[\u4e00-\u9fff]", question))
    return cjk < 5 and len(question.split()) < 4


class ContextTooSmall(ValueError):
    """Even the bare question does not fit the model's window with its answer reserve."""


def _history_pairs(history: Any) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    for turn in history or []:
        if isinstance(turn, dict):
            pairs.append((str(turn.get("user") or turn.get("question") or ""), str(turn.get("assistant") or turn.get("answer") or "")))
        else:
            user, assistant = turn
            pairs.append((str(user), str(assistant)))
    return pairs


def merge_overlapping(a: str, b: str, max_overlap: int = 800) -> str:
    """Join consecutive chunks, dropping the overlap the splitter repeated at the start of ``b``."""
    limit = min(len(a), len(b), max_overlap)
    for m in range(limit, 7, -1):
        if a.endswith(b[:m]):
            return a + b[m:]
    return a + "\n" + b


@dataclass
class PackedSource:
    n: int
    hit: Hit
    lo: int
    hi: int
    text: str
    pages: set = field(default_factory=set)
    """Pages of the chunks widened into it (besides the hit's own)."""

    def page_range(self) -> list[int] | None:
        pages = sorted(p for p in self.pages | {self.hit.page} if p is not None)
        return [pages[0], pages[-1]] if pages else None

    def to_dict(self) -> dict[str, Any]:
        h = self.hit
        return {
            "pages": self.page_range(),
            "n": self.n,
            "doc_id": h.doc_id,
            "source": h.source,
            "file_name": h.file_name,
            "title": h.title,
            "page": h.page,
            "chunk": h.chunk,
            "chunks": [self.lo, self.hi],
            "text": self.text,
            "passage": self.passage_span(),
            "score": round(float(h.score), 4),
            "boxes": boxes_json(h.boxes),
            "ocr": h.ocr,
        }

    def passage_span(self) -> list[int] | None:
        """``[start, end]`` of the retrieved chunk inside ``text`` (which may hold neighbouring
        chunks around it, or only a cut start of it); None when it cannot be placed."""
        own = self.hit.text
        start = self.text.find(own)
        if start >= 0:
            return [start, start + len(own)]
        head = own[: min(len(own), 40)]
        start = self.text.find(head) if head else -1
        return [start, len(self.text)] if start >= 0 else None


@dataclass
class Packed:
    messages: list[BaseMessage]
    sources: list[PackedSource]
    prompt_tokens: int
    history_used: int
    language: str
    question: str
    standalone: str = ""
    searched_for: list[str] = field(default_factory=list)
    translation: Any = None
    notes: list[str] = field(default_factory=list)


class PromptMeter:
    """Measures a message list the way the backend will see it."""

    def __init__(self, model: LoadedModel):
        self.model = model
        self._format = getattr(model.chat_model, "format_prompt", None)

    def __call__(self, messages: Sequence[BaseMessage]) -> int:
        if callable(self._format):
            return self.model.count_tokens(self._format(list(messages))) + PROMPT_SLACK
        # a chat model of another library: message texts plus a generous per-message overhead
        return sum(self.model.count_tokens(str(m.content)) + 8 for m in messages) + 16 + PROMPT_SLACK


def system_prompt_text(value: str | None) -> str:
    from rag.models.prompts import resolve_system_prompt

    return resolve_system_prompt(value)


class EventChain(Runnable[Any, dict]):
    """A Runnable whose ``stream`` yields ``{"type": "token", "text"}`` events (after one
    ``{"type": "sources", "sources"}`` event as soon as retrieval is done, when passages were
    found) and then one ``{"type": "final", ...}``; ``invoke`` returns the final event's fields, ``astream`` and
    ``ainvoke`` do the same from async code. Subclasses write ``stream``."""

    @property
    def InputType(self) -> type:  # noqa: N802 - LangChain's name
        return dict

    @property
    def OutputType(self) -> type:  # noqa: N802
        return dict

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> dict:
        final: dict | None = None
        for event in self.stream(input, config, **kwargs):
            if event["type"] == "final":
                final = {k: v for k, v in event.items() if k != "type"}
        assert final is not None
        return final

    async def astream(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any):
        """The same events as :meth:`stream`; the work runs in a worker thread."""
        import asyncio

        loop = asyncio.get_running_loop()
        events = self.stream(input, config, **kwargs)
        done = object()
        while True:
            event = await loop.run_in_executor(None, next, events, done)
            if event is done:
                return
            yield event

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> dict:
        final: dict | None = None
        async for event in self.astream(input, config, **kwargs):
            if event["type"] == "final":
                final = {k: v for k, v in event.items() if k != "type"}
        assert final is not None
        return final


class QAChain(EventChain):
    """Question (+ history) → answer with numbered, cited sources. See the module docstring."""

    def __init__(
        self,
        model: LoadedModel,
        retriever: Any,
        *,
        k: int | None = None,
        doc_ids: Sequence[str] | None = None,
        system_prompt: str | None = None,
        max_history_turns: int = MAX_HISTORY_TURNS,
        expand: bool = True,
        language: str | None = None,
        context_budget: int | None = None,
        translator: Any = None,
    ) -> None:
        self.model = model
        self.translator = translator
        self.retriever = retriever
        self.k = k
        self.doc_ids = list(doc_ids) if doc_ids is not None else None
        self.system_prompt = system_prompt_text(system_prompt)
        self.max_history_turns = max_history_turns
        self.expand = expand
        self.language = language
        self.meter = PromptMeter(model)
        self.limit = model.context_window - model.max_new_tokens
        self.context_budget = context_budget
        chat = model.chat_model
        own = hasattr(chat, "max_new_tokens")  # our backends and the fake take it per call
        self._llm = chat.bind(max_new_tokens=model.max_new_tokens) if own else chat
        self._rewriter = (chat.bind(max_new_tokens=self._rewrite_budget()) if own else chat) | StrOutputParser()
        self.prepare: Runnable = (
            RunnableLambda(self._normalise, name="normalise")
            | RunnablePassthrough.assign(standalone_question=RunnableLambda(self._rewrite, name="rewrite"))
            | RunnablePassthrough.assign(translation=RunnableLambda(self._translate, name="translate"))
            | RunnablePassthrough.assign(hits=RunnableLambda(self._retrieve, name="retrieve"))
            | RunnableLambda(self._pack, name="pack")
        )
        self.generate: Runnable = self._llm | StrOutputParser()

    # -- Runnable ---------------------------------------------------------------------------------

    def stream(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Iterator[dict]:
        packed: Packed | dict = self.prepare.invoke(input, config)
        if isinstance(packed, dict):  # nothing relevant was found: fixed answer, no model call
            yield {"type": "token", "text": packed["answer"]}
            yield {"type": "final", **packed}
            return
        # the sources are known before the model starts: shown while it writes
        yield {"type": "sources", "sources": [s.to_dict() for s in packed.sources]}
        # what the model writes is shown without markup or echoes of our instructions
        echoes = qa_echo_texts(packed.language) + (self.system_prompt,)
        cleaner = CleanStream(echoes)
        pieces: list[str] = []
        started = time.perf_counter()
        for piece in self.generate.stream(packed.messages, config):
            if piece:
                if not pieces:  # the model's real prompt speed keeps the budget honest
                    observe_prompt_speed(self.model, packed.prompt_tokens, time.perf_counter() - started)
                pieces.append(piece)
                shown = cleaner.feed(piece)
                if shown:
                    yield {"type": "token", "text": shown}
        tail = cleaner.finish()
        if tail:
            yield {"type": "token", "text": tail}
        yield {"type": "final", **self._result(packed, clean_generated("".join(pieces), echoes))}

    # -- steps ------------------------------------------------------------------------------------

    def _normalise(self, input: Any) -> dict:
        if isinstance(input, str):
            input = {"question": input}
        question = str(input.get("question") or "").encode("utf-8", "replace").decode("utf-8").strip()
        if not question:
            raise ValueError("the question is empty")
        history = _history_pairs(input.get("history"))[-self.max_history_turns :] if self.max_history_turns else []
        language = self.language or detect_language(question)
        return {
            "question": question,
            "history": history,
            "language": language,
            "k": input.get("k", self.k),
            "doc_ids": input.get("doc_ids", self.doc_ids),
        }

    def _rewrite_budget(self) -> int:
        return max(16, min(REWRITE_MAX_NEW_TOKENS, self.model.max_new_tokens))

    def _rewrite(self, state: dict, config: RunnableConfig | None = None) -> str:
        question, history, lang = state["question"], list(state["history"]), state["language"]
        if not history or self.model.is_stand_in or not leans_on_conversation(question):
            return question  # nothing to resolve, or a model that cannot rewrite
        limit = self.model.context_window - self._rewrite_budget()
        while history:
            messages = [SystemMessage(self.system_prompt), HumanMessage(rewrite_instruction(question, history, lang))]
            if self.meter(messages) <= limit:
                break
            history = history[1:]
        if not history:
            return question
        try:
            rewritten = clean_rewrite(self._rewriter.invoke(messages, config))
        except Exception:
            return question
        if not rewritten or len(rewritten) > 4 * len(question) + 200:
            return question
        return rewritten

    def _translate(self, state: dict, config: RunnableConfig | None = None) -> Any:
        """The (rewritten) question in the documents' language when they are in the other one
        (rag.translate.Translation), else None."""
        if self.translator is None:
            return None
        return self.translator.for_search(self.retriever, state["standalone_question"], state["doc_ids"], config)

    def _searched_for(self, state: dict) -> list[str]:
        translation = state.get("translation")
        extra = [translation.text] if translation is not None and translation.text else []
        return list(dict.fromkeys([state["question"], state["standalone_question"], *extra]))

    def _retrieve(self, state: dict) -> list[Hit]:
        """Hits for the question as asked, fused with those for the rewrite and the translation
        when there are: they add passages but never remove the one the question finds first."""
        # exactly k passages, as the user asked; a larger window is used by widening them
        want = int(state["k"] or getattr(self.retriever, "k", None) or self.retriever.settings.k)
        queries = self._searched_for(state)
        translation = state.get("translation")
        translated = translation is not None and bool(translation.text)
        asked = queries[:-1] if translated else queries
        lists = [self.retriever.search(q, k=want, doc_ids=state["doc_ids"]) for q in asked]
        if translated:  # it judges the other language's passages
            lists = [own_language_hits(hits, q) for hits, q in zip(lists, asked)]
            lists.append(search_translation(self.retriever, translation, want, state["doc_ids"]))
        return lists[0] if len(lists) == 1 else fuse_hit_lists(lists, want)

    def _messages(self, question: str, history: list[tuple[str, str]], blocks: list[str], lang: str) -> list[BaseMessage]:
        messages: list[BaseMessage] = [SystemMessage(self.system_prompt)]
        for user, assistant in history:
            messages.append(HumanMessage(defuse(user)))
            messages.append(AIMessage(defuse(assistant)))
        messages.append(HumanMessage(qa_instruction(question, blocks, lang)))
        return messages

    def _pack(self, state: dict) -> Packed | dict:
        hits: list[Hit] = state["hits"]
        lang = state["language"]
        question = state["question"]
        standalone = state["standalone_question"]
        if not hits:
            return self._no_passage(state)
        # the question the user asked stays the question; a rewrite only guided retrieval, but a
        # follow-up without history in the prompt would be ambiguous, so the rewrite is asked
        # when history had to be dropped
        history = list(state["history"])
        limit = self.limit
        if limit <= 0:
            raise ContextTooSmall(
                f"context window {self.model.context_window} leaves no room after reserving "
                f"{self.model.max_new_tokens} tokens for the answer"
            )

        def size(blocks: list[str], hist: list[tuple[str, str]], q: str) -> int:
            return self.meter(self._messages(q, hist, blocks, lang))

        # room without sources: drop history (oldest first) while even the bare prompt is too big
        asked = question
        while history and size([], history, asked) > limit - MIN_PASSAGE_TOKENS:
            history = history[1:]
            asked = standalone
        base = size([], history, asked)
        if base > limit:
            asked = self._cut_question(asked, history, lang, limit)
            base = size([], history, asked)
        count = self.model.count_tokens
        sources: list[PackedSource] = []
        used = base
        for hit in hits:
            n = len(sources) + 1
            if any(s.hit.doc_id == hit.doc_id and s.lo <= hit.chunk <= s.hi for s in sources):
                continue
            block = source_block(n, hit.text, hit.file_name, hit.page, hit.title)
            cost = count(block) + 2
            if used + cost <= limit:
                sources.append(PackedSource(n, hit, hit.chunk, hit.chunk, hit.text))
                used += cost
                continue
            room = limit - used - count(source_block(n, "", hit.file_name, hit.page, hit.title)) - 4
            if room >= (MIN_PASSAGE_TOKENS if sources else MIN_PASSAGE_TOKENS // 3):
                text = self._cut_text(hit.text, room)
                if text:
                    sources.append(PackedSource(n, hit, hit.chunk, hit.chunk, text))
            break
        if self.expand and sources:
            # widening is what fills a large window; the budget keeps a CPU's first token near
            budget = limit if self.context_budget is None else min(limit, self.context_budget)
            used = self._widen(sources, used, budget)
        # exact check of the real prompt; estimates above may be off by a few tokens per join
        while True:
            blocks = [source_block(s.n, s.text, s.hit.file_name, s.hit.page, s.hit.title) for s in sources]
            messages = self._messages(asked, history, blocks, lang)
            total = self.meter(messages)
            if total <= limit:
                break
            if not sources:
                raise ContextTooSmall(f"the question alone needs {total} tokens; the model allows {limit}")
            last = sources[-1]
            over = total - limit
            shorter = self._cut_text(last.text, max(0, count(last.text) - over - 8))
            if shorter and count(shorter) >= MIN_PASSAGE_TOKENS // 3:
                last.text = shorter
            else:
                sources.pop()
        if not sources:
            raise ContextTooSmall(
                f"relevant passages were found, but none fits the model's window "
                f"({self.model.context_window} tokens, {self.model.max_new_tokens} reserved for the answer)"
            )
        return Packed(messages, sources, total, len(history), lang, asked, standalone,
                      searched_for=self._searched_for(state), translation=state.get("translation"))

    def _widen(self, sources: list[PackedSource], used: int, limit: int) -> int:
        """Add neighbouring chunks to passages, one chunk per passage per round, best first;
        two passages of one document that meet are merged into the better-ranked one."""
        store = getattr(self.retriever, "store", None)
        if store is None:
            return used
        count = self.model.count_tokens
        doc_chunks: dict[str, dict[int, Any]] = {}
        grew = True
        while grew:
            grew = False
            for s in list(sources):
                if s not in sources:
                    continue  # merged away in this round
                by_index = doc_chunks.get(s.hit.doc_id)
                if by_index is None:
                    by_index = doc_chunks[s.hit.doc_id] = {c.index: c for c in store.document_chunks(s.hit.doc_id)}
                for side in (1, -1):  # after first: a passage usually continues
                    idx = s.hi + 1 if side == 1 else s.lo - 1
                    if idx not in by_index:
                        continue
                    other = next(
                        (o for o in sources if o is not s and o.hit.doc_id == s.hit.doc_id and o.lo <= idx <= o.hi),
                        None,
                    )
                    if other is not None:
                        keep, gone = (s, other) if sources.index(s) < sources.index(other) else (other, s)
                        first, second = (s, other) if side == 1 else (other, s)
                        text = merge_overlapping(first.text, second.text)
                        keep.pages |= gone.pages | {gone.hit.page}
                        saved = count(keep.text) + count(gone.text) + self._block_cost(gone) - count(text)
                        keep.text, keep.lo, keep.hi = text, min(s.lo, other.lo), max(s.hi, other.hi)
                        sources.remove(gone)
                        used -= saved
                        grew = True
                        break
                    piece = by_index[idx].text
                    text = merge_overlapping(s.text, piece) if side == 1 else merge_overlapping(piece, s.text)
                    cost = count(text) - count(s.text) + 1
                    if used + cost > limit:
                        continue
                    s.text = text
                    s.pages.add(by_index[idx].page)
                    used += cost
                    if side == 1:
                        s.hi = idx
                    else:
                        s.lo = idx
                    grew = True
        for n, s in enumerate(sources, 1):
            s.n = n
        return used

    def _block_cost(self, s: PackedSource) -> int:
        return self.model.count_tokens(source_block(s.n, "", s.hit.file_name, s.hit.page, s.hit.title)) + 2

    def _cut_text(self, text: str, tokens: int) -> str:
        """The longest prefix of ``text`` within ``tokens`` (cut at a sentence end when one is near)."""
        count = self.model.count_tokens
        cut = truncate_to_tokens(text, tokens, count)
        if cut == text:
            return text
        ends = [cut.rfind(p) for p in "。！？.!?\n"]
        end = max(ends)
        if end >= len(cut) * 0.6:
            cut = cut[: end + 1]
        return cut.rstrip() + "…" if cut.strip() and count(cut.rstrip() + "…") <= tokens else cut.rstrip()

    def _cut_question(self, question: str, history: list, lang: str, limit: int) -> str:
        over = self.meter(self._messages(question, history, [], lang)) - limit
        keep = self.model.count_tokens(question) - over - 4
        cut = self._cut_text(question, keep)
        if not cut:
            raise ContextTooSmall(
                f"the model's window ({self.model.context_window} tokens, {self.model.max_new_tokens} "
                f"reserved for the answer) is too small for the prompt"
            )
        return cut

    def _no_passage(self, state: dict) -> dict:
        return {
            "answer": no_passage_message(state["language"]),
            "sources": [],
            "cited": [],
            "standalone_question": state["standalone_question"],
            "searched_for": self._searched_for(state),
            "mode": "generate",
            "language": state["language"],
            "notice": self.model.notice,
            "translation": translation_dict(state.get("translation")),
            "found": False,
        }

    def _result(self, packed: Packed, answer: str) -> dict:
        numbers = {s.n for s in packed.sources}
        cited = sorted({int(m) for m in _CITATION.findall(answer)} & numbers)
        return {
            "mode": "generate",
            "searched_for": packed.searched_for,
            "answer": answer,
            "sources": [s.to_dict() for s in packed.sources],
            "cited": cited,
            "standalone_question": packed.standalone or packed.question,
            "language": packed.language,
            "notice": self.model.notice,
            "translation": translation_dict(packed.translation),
            "found": True,
            "prompt_tokens": packed.prompt_tokens,
            "context_budget": self.context_budget,
        }


def make_qa_chain(model: LoadedModel, retriever: Any, **kwargs: Any) -> QAChain:
    return QAChain(model, retriever, **kwargs)


__all__ = ["EventChain", "QAChain", "make_qa_chain", "ContextTooSmall", "merge_overlapping"]

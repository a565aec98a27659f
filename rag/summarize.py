"""Summaries of one document, several, or a whole knowledge base, within the model's window.

Usage::

    from rag.summarize import Summarizer, SourceText
    summarizer = Summarizer(model)                               # model: LoadedModel
    result = summarizer.summarize([SourceText("report.pdf", text)], progress=print)
    result.text, result.strategy, result.steps                   # "...", "map_reduce", 7

Strategies (``strategy="auto"`` picks from the token budget):

* ``stuff``: every document in one prompt; used when it fits
  ``context_window − max_new_tokens``.
* ``map_reduce``: each document is cut (with the model's own tokenizer) into parts that fit one
  prompt; every part is summarised independently (the *map* steps run through ``Runnable.batch``
  with ``max_concurrency``, so a server backend can run them in parallel; in-process llama.cpp and
  transformers models run them one at a time); then the partial
  summaries are packed greedily into as few *reduce* prompts as fit, and reduced again,
  recursively, until one prompt holds them all. A partial summary that is too long to be paired
  with another is cut, so every round makes progress.
* ``refine``: the parts in order, each step rewriting the running summary with the next part
  (sequential; parts are sized so that part + running summary + prompt fit).

Prompts are Chinese for Chinese text and English otherwise (:mod:`rag.prompts_qa`). Every step
is measured on the exact prompt text before the call and cut if needed, so no step can exceed the
window. ``progress(SummaryProgress)`` is called after each model call; ``on_text(piece)`` (when
given) receives the final summary as the model writes it (the stuff call, the last reduce, the
last refine step), so a reader sees it grow instead of waiting for the whole.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.runnables import Runnable, RunnableConfig

from rag.language import detect_language
from rag.models.base import LoadedModel, truncate_to_tokens
from rag.prompts_qa import SUMMARY, clean_generated, document_block, part_label
from rag.qa import ContextTooSmall, PromptMeter, system_prompt_text

STRATEGIES = ("auto", "stuff", "map_reduce", "refine")
MIN_PART_TOKENS = 32
MAX_CONCURRENCY = 4
PARALLEL_BACKENDS = {"openai", "fake"}
"""Backends whose requests may run concurrently (a server queues or batches them)."""


@dataclass
class SourceText:
    """A document to summarise: a display name, its text, and its id in a knowledge base."""

    name: str
    text: str
    doc_id: str = ""


@dataclass
class SummaryProgress:
    """After each model call: ``phase`` is stuff | map | reduce | refine; ``done`` of ``total``
    calls planned so far (reduce rounds are only known once the map results are in)."""

    phase: str
    done: int
    total: int
    strategy: str
    level: int = 0
    """Reduce round (1 = the first reduce over the map results)."""


@dataclass
class SummaryResult:
    text: str
    strategy: str
    steps: int
    doc_ids: list[str] = field(default_factory=list)
    language: str = "zh"
    parts: int = 1
    notice: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


ProgressCallback = Callable[[SummaryProgress], None]


class Summarizer:
    """See the module docstring."""

    def __init__(
        self,
        model: LoadedModel,
        *,
        system_prompt: str | None = None,
        max_concurrency: int = MAX_CONCURRENCY,
        language: str | None = None,
    ) -> None:
        self.model = model
        self.system_prompt = system_prompt_text(system_prompt)
        # in-process backends (llama.cpp, transformers) hold one model that is not safe to call
        # from several threads at once: their map steps run one at a time
        self.max_concurrency = max_concurrency if model.backend in PARALLEL_BACKENDS else 1
        self.language = language
        self.meter = PromptMeter(model)
        self.limit = model.context_window - model.max_new_tokens
        chat = model.chat_model
        llm = chat.bind(max_new_tokens=model.max_new_tokens) if hasattr(chat, "max_new_tokens") else chat
        self.generate: Runnable = llm | StrOutputParser()

    # -- prompts ----------------------------------------------------------------------------------

    def _messages(self, lang: str, kind: str, material: str, label: str = "", summary: str = "") -> list[BaseMessage]:
        text = SUMMARY[lang][kind].format(material=material, label=label, summary=summary)
        return [SystemMessage(self.system_prompt), HumanMessage(text)]

    def _overhead(self, lang: str, kind: str, label: str = "", summary: str = "") -> int:
        return self.meter(self._messages(lang, kind, document_block("", "x" * 8), label, summary))

    def _cut(self, text: str, tokens: int) -> str:
        return truncate_to_tokens(text, tokens, self.model.count_tokens).rstrip()

    def _fit(self, lang: str, kind: str, material_text: str, name: str = "", label: str = "", summary: str = "") -> list[BaseMessage]:
        """Messages for one step, the material cut until the exact prompt fits the window."""
        text = material_text
        while True:
            block = document_block(text, name) if kind != "reduce" else text
            messages = self._messages(lang, kind, block, label, summary)
            size = self.meter(messages)
            if size <= self.limit:
                return messages
            keep = self.model.count_tokens(text) - (size - self.limit) - 4
            if keep < MIN_PART_TOKENS // 2:
                if summary:  # refine: shorten the running summary instead
                    summary = self._cut(summary, self.model.count_tokens(summary) // 2)
                    continue
                raise ContextTooSmall(
                    f"a summary step needs more than the model's {self.model.context_window}-token window "
                    f"({self.model.max_new_tokens} reserved for the output)"
                )
            text = self._cut(text, keep)

    # -- splitting --------------------------------------------------------------------------------

    def _parts(self, doc: SourceText, budget: int) -> list[str]:
        if budget < MIN_PART_TOKENS:
            raise ContextTooSmall(
                f"the model's window ({self.model.context_window} tokens, {self.model.max_new_tokens} "
                f"reserved for the output) leaves only {budget} tokens per part"
            )
        if self.model.count_tokens(doc.text) <= budget:
            return [doc.text]
        from ingest.splitter import split_text

        overlap = min(32, budget // 8)
        return [p for p in split_text(doc.text, self.model.count_tokens, budget, overlap) if p.strip()]

    # -- public -------------------------------------------------------------------------------------

    def choose(self, docs: Sequence[SourceText], lang: str) -> str:
        """``stuff`` when all documents fit one prompt, else ``map_reduce``."""
        material = "\n\n".join(document_block(d.text, d.name) for d in docs)
        return "stuff" if self.meter(self._messages(lang, "stuff", material)) <= self.limit else "map_reduce"

    def summarize(
        self,
        docs: Sequence[SourceText] | SourceText | str,
        strategy: str = "auto",
        progress: ProgressCallback | None = None,
        config: RunnableConfig | None = None,
        on_text: Callable[[str], None] | None = None,
    ) -> SummaryResult:
        """The summary of ``docs``; see the module docstring for ``progress`` and ``on_text``."""
        self._on_text = on_text
        if isinstance(docs, str):
            docs = [SourceText("", docs)]
        elif isinstance(docs, SourceText):
            docs = [docs]
        docs = [d for d in docs if d.text.strip()]
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
        doc_ids = [d.doc_id for d in docs if d.doc_id]
        if not docs:
            return SummaryResult("", "stuff", 0, doc_ids, self.language or "zh", 0, self.model.notice)
        lang = self.language or detect_language("".join(d.text[:2000] for d in docs[:8]))
        chosen = self.choose(docs, lang) if strategy == "auto" else strategy
        if chosen == "stuff" and self.choose(docs, lang) != "stuff":
            chosen = "map_reduce"  # a forced stuff that cannot fit would have to drop text
        run = {"stuff": self._stuff, "map_reduce": self._map_reduce, "refine": self._refine}[chosen]
        text, steps, parts = run(docs, lang, progress, config)
        # no echo of our markup or instructions on screen (the template parts before {material})
        echoes = tuple(t.split("{")[0] for t in SUMMARY.get(lang, SUMMARY["en"]).values())
        text = clean_generated(text, echoes + (self.system_prompt,))
        return SummaryResult(text.strip(), chosen, steps, doc_ids, lang, parts, self.model.notice)

    # -- strategies ---------------------------------------------------------------------------------

    _on_text: Callable[[str], None] | None = None

    def _call(self, messages: list[BaseMessage], config: RunnableConfig | None, final: bool = False) -> str:
        """One model call; the call that writes the final summary is streamed to ``on_text``."""
        if not (final and self._on_text):
            return self.generate.invoke(messages, config).strip()
        pieces = []
        for piece in self.generate.stream(messages, config):
            if piece:
                pieces.append(piece)
                self._on_text(piece)
        return "".join(pieces).strip()

    def _stuff(self, docs, lang, progress, config) -> tuple[str, int, int]:
        material = "\n\n".join(document_block(d.text, d.name) for d in docs)
        messages = self._messages(lang, "stuff", material)
        text = self._call(messages, config, final=True)
        if progress:
            progress(SummaryProgress("stuff", 1, 1, "stuff"))
        return text, 1, len(docs)

    def _batch(self, prompts: list[list[BaseMessage]], phase: str, counter: dict, progress, config, level: int = 0) -> list[str]:
        out: list[str] = [""] * len(prompts)
        cfg = dict(config or {})
        cfg["max_concurrency"] = self.max_concurrency
        for i, text in self.generate.batch_as_completed(prompts, cfg):
            if isinstance(text, Exception):
                raise text
            out[i] = text.strip()
            counter["done"] += 1
            if progress:
                progress(SummaryProgress(phase, counter["done"], counter["total"], "map_reduce", level))
        return out

    def _map_reduce(self, docs, lang, progress, config) -> tuple[str, int, int]:
        map_overhead = self._overhead(lang, "map", part_label(lang, 999, 999, "x" * 24))
        budget = self.limit - map_overhead - 8
        jobs: list[tuple[SourceText, int, int, str]] = []
        for d in docs:
            parts = self._parts(d, budget)
            for i, p in enumerate(parts, 1):
                jobs.append((d, i, len(parts), p))
        prompts = [self._fit(lang, "map", p, d.name, part_label(lang, i, n, d.name)) for d, i, n, p in jobs]
        counter = {"done": 0, "total": len(prompts)}
        partials = self._batch(prompts, "map", counter, progress, config)
        # name each partial so the reduce step knows which document it speaks of
        named = [
            (f"[{d.name}]\n{s}" if d.name and len(docs) > 1 else s) for (d, _, _, _), s in zip(jobs, partials) if s
        ]
        if not named:
            return "", counter["done"], len(jobs)
        level = 0
        while True:
            level += 1
            groups = self._groups(named, lang)
            if len(groups) == 1 and (len(named) > 1 or level > 1 or len(jobs) > 1):
                counter["total"] += 1
                text = self._call(self._fit(lang, "reduce", "\n\n".join(groups[0])), config, final=True)
                counter["done"] += 1
                if progress:
                    progress(SummaryProgress("reduce", counter["done"], counter["total"], "map_reduce", level))
                return text, counter["done"], len(jobs)
            if len(groups) == 1:  # a single part: its map summary is the summary
                return named[0], counter["done"], len(jobs)
            counter["total"] += len(groups)
            prompts = [self._fit(lang, "reduce", "\n\n".join(g)) for g in groups]
            named = [s for s in self._batch(prompts, "reduce", counter, progress, config, level) if s]

    def _groups(self, partials: list[str], lang: str) -> list[list[str]]:
        """Greedy packing of partial summaries into reduce prompts that fit; partials too long
        to share a prompt with another are cut to half the room, so each round shrinks."""
        count = self.model.count_tokens
        room = self.limit - self._overhead(lang, "reduce") - 8
        if room < 2 * MIN_PART_TOKENS + 8 and len(partials) > 1:
            raise ContextTooSmall(
                f"the model's window ({self.model.context_window} tokens) is too small to merge partial summaries"
            )
        half = max(MIN_PART_TOKENS, room // 2 - 4)
        items = [p if count(p) <= half else self._cut(p, half) for p in partials] if len(partials) > 1 else partials
        groups: list[list[str]] = []
        current: list[str] = []
        used = 0
        for p in items:
            cost = count(p) + 2
            if current and used + cost > room:
                groups.append(current)
                current, used = [], 0
            current.append(p)
            used += cost
        if current:
            groups.append(current)
        return groups

    def _refine(self, docs, lang, progress, config) -> tuple[str, int, int]:
        reserve = self.model.max_new_tokens  # the running summary can be this long
        overhead = self._overhead(lang, "refine", part_label(lang, 999, 999, "x" * 24))
        budget = self.limit - overhead - reserve - 8
        if budget < MIN_PART_TOKENS:
            budget = self.limit - self._overhead(lang, "map", part_label(lang, 999, 999, "x" * 24)) - 8
        jobs = []
        for d in docs:
            parts = self._parts(d, max(budget, MIN_PART_TOKENS))
            for i, p in enumerate(parts, 1):
                jobs.append((d, i, len(parts), p))
        summary = ""
        total = len(jobs)
        for step, (d, i, n, p) in enumerate(jobs, 1):
            label = part_label(lang, i, n, d.name)
            if not summary:
                messages = self._fit(lang, "map" if total > 1 else "stuff", p, d.name, label)
            else:
                messages = self._fit(lang, "refine", p, d.name, label, summary)
            summary = self._call(messages, config, final=step == total) or summary
            if progress:
                progress(SummaryProgress("refine", step, total, "refine"))
        return summary, total, total


class SummaryChain(Runnable[Any, dict]):
    """A Runnable around :class:`Summarizer`.

    Input: a text, a list of texts, a list of :class:`SourceText`, or a dict with ``texts`` /
    ``documents`` (and optionally ``strategy``); a knowledge base's chain also takes
    ``{"doc_ids": [...]}`` (see ``KnowledgeBase.summary_chain``). Output: ``SummaryResult.to_dict()``.
    """

    def __init__(self, summarizer: Summarizer, strategy: str = "auto", loader: Callable[[Any], list[SourceText]] | None = None):
        self.summarizer = summarizer
        self.strategy = strategy
        self.loader = loader

    def _docs(self, input: Any) -> tuple[list[SourceText], str]:
        strategy = self.strategy
        if isinstance(input, dict):
            strategy = input.get("strategy", strategy)
            if "doc_ids" in input and self.loader is not None:
                return self.loader(input["doc_ids"]), strategy
            input = input.get("documents", input.get("texts", input.get("text", "")))
        if isinstance(input, str):
            return [SourceText("", input)], strategy
        if isinstance(input, SourceText):
            return [input], strategy
        docs = [d if isinstance(d, SourceText) else SourceText("", str(d)) for d in input]
        return docs, strategy

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> dict:
        docs, strategy = self._docs(input)
        return self.summarizer.summarize(docs, strategy, kwargs.get("progress"), config).to_dict()


__all__ = ["Summarizer", "SummaryChain", "SummaryProgress", "SummaryResult", "SourceText", "STRATEGIES"]


# -- extractive: no model ---------------------------------------------------------------------------

EXTRACTIVE_NOTICE = ("Extractive summary: the outline and the most central sentences, taken from the "
                     "documents as written; no model wrote it.")
MAX_EXTRACTIVE_CANDIDATES = 400
"""Sentences embedded at most (evenly spread over the documents): bounds the time on long ones."""


@dataclass
class KeySentence:
    text: str
    file_name: str
    page: int | None
    doc_id: str
    position: int
    score: float


@dataclass
class ExtractiveSummary:
    """A document's outline and key sentences (centrality over sentence embeddings), in
    reading order, each with where it is."""

    outline: list[tuple[str, str, int | None]]
    """(file name, heading, page) in reading order."""
    sentences: list[KeySentence]
    notice: str = EXTRACTIVE_NOTICE

    def to_markdown(self, title: str = "Summary") -> str:
        lines = [f"# {title}", "", f"_{self.notice}_", ""]
        if self.outline:
            lines += ["## Outline", ""]
            lines += [f"- {heading}" + (f" (p. {page})" if page else "") for _, heading, page in self.outline]
            lines.append("")
        lines += ["## Key sentences", ""]
        for s in self.sentences:
            where = s.file_name + (f", p. {s.page}" if s.page else "")
            lines.append(f"- {s.text} ({where})")
        return "\n".join(lines) + "\n"


def extractive_summary(chunks_by_doc: Sequence[Sequence[Any]], embedder: Any, sentences: int | None = None,
                       ) -> ExtractiveSummary:
    """Outline and key sentences of documents given as their stored chunks (``ChunkRecord``s, in
    order). A sentence's centrality is its mean cosine similarity to every other candidate; the
    best are taken greedily, skipping near-repeats (cosine > 0.95 to one already taken), and
    returned in reading order. ``sentences``: how many (default: 3 to 10, growing with length)."""
    import numpy as np

    from ingest.splitter import sentence_spans

    outline: list[tuple[str, str, int | None]] = []
    candidates: list[KeySentence] = []
    seen: set[str] = set()
    for chunks in chunks_by_doc:
        last_heading = None
        for chunk in chunks:
            heading = (chunk.heading or "").strip()
            if heading and heading != last_heading and heading != (chunk.title or "").strip():
                outline.append((chunk.file_name, heading, chunk.page))
            last_heading = heading or last_heading
            for start, end in sentence_spans(chunk.text):
                text = chunk.text[start:end].strip()
                if not 8 <= len(text) <= 300 or text in seen or text.lstrip().startswith("#"):
                    continue  # overlaps repeat sentences; headings are in the outline
                seen.add(text)
                candidates.append(KeySentence(text, chunk.file_name, chunk.page, chunk.doc_id, len(candidates), 0.0))
    if not candidates:
        return ExtractiveSummary(outline, [])
    if len(candidates) > MAX_EXTRACTIVE_CANDIDATES:
        step = len(candidates) / MAX_EXTRACTIVE_CANDIDATES
        candidates = [candidates[int(i * step)] for i in range(MAX_EXTRACTIVE_CANDIDATES)]
    count = sentences or min(10, max(3, len(candidates) // 12))
    vectors = np.asarray(embedder.encode_passages([c.text for c in candidates]), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True) + 1e-12
    similarity = vectors @ vectors.T
    centrality = (similarity.sum(axis=1) - 1.0) / max(len(candidates) - 1, 1)
    chosen: list[int] = []
    for i in np.argsort(-centrality):
        if len(chosen) >= count:
            break
        if all(similarity[i, j] <= 0.95 for j in chosen):
            chosen.append(int(i))
    for i in chosen:
        candidates[i].score = round(float(centrality[i]), 4)
    return ExtractiveSummary(outline, [candidates[i] for i in sorted(chosen)])

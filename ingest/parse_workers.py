"""Reading and splitting files, in the ingesting process or in reader processes.

:func:`prepare_document` loads one file (``ingest.loaders``), splits it (``ingest.splitter``)
and computes its chunks' search tokens: everything ingestion does to a file before embedding.

:class:`ParsePool` runs it in worker processes ahead of the embedder, so that parsing and
embedding overlap. The workers are started with ``spawn`` (a fresh interpreter, never ``fork``:
the parent may hold threads and native libraries such as torch, onnxruntime or Chroma). They
import only the loaders, the splitter and the lexical tokenizer, never torch or the embedding
model; they count tokens with the picklable counter the embedder gives
(``Embedder.token_counter()``). All writes stay in the parent.

A worker that dies (a parser crash, the system ending it for memory) costs only the file it was
reading: the pool is started again, the file is read once more on its own to make sure it is
the culprit, and is then reported as failed; the other files are read again.

Scanned PDFs are OCR'd page by page (seconds a page): ``on_page(n, total)`` is told as each
page begins, in this process or in a worker. Workers put ``(task key, n, total)`` on a
``multiprocessing`` queue that the pool gives them through its initializer (a fresh queue for
each set of workers, so that one killed while writing to it cannot spoil the next);
:meth:`ParsePool.result` forwards the events of the file it waits for while it waits, and those
of files read ahead when their result is asked for. What a loader read only in part (a page
whose OCR failed) comes back as :attr:`PreparedDocument.warnings`.
"""

from __future__ import annotations

import itertools
import multiprocessing
import multiprocessing.spawn
import os
import queue
import re
import signal
import threading
from concurrent.futures import Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from ingest import errors
from ingest.chunk_kinds import chunk_kinds
from ingest.errors import DocumentError, EmptyDocument
from ingest.lexical import search_tokens
from ingest.passage_boxes import passage_boxes
from ingest.loaders import LoadedDocument, load_document
from ingest.splitter import split_document
from ingest.store import NewChunk, PreparedDocument

CountTokens = Callable[[str], int]
SearchTokens = Callable[[str], list[str]]
OnPage = Callable[[int, int], None]
"""``on_page(n, total)``: OCR of the n-th of ``total`` pages without a text layer begins."""

EVENT_POLL_S = 0.1
"""While waiting for a worker's result, page events are forwarded at least this often."""


@dataclass(frozen=True)
class ParseOptions:
    """The settings reading and splitting depend on (sent once to each worker)."""

    max_bytes: int
    chunk_tokens: int
    overlap_tokens: int
    max_tokens: int


def prepare_document(path: Path, doc_id: str, count_tokens: CountTokens, options: ParseOptions,
                     tokens: SearchTokens = search_tokens, on_page: OnPage | None = None) -> PreparedDocument:
    """``path`` loaded and split into chunks with their search tokens, ready to be embedded.
    Raises :class:`DocumentError` when the file cannot be read or holds no text. ``on_page``:
    see :func:`ingest.loaders.load_document` (OCR of a scanned PDF's pages)."""
    loaded = load_document(path, max_bytes=options.max_bytes, on_page=on_page)
    drafts = split_document(
        loaded,
        count_tokens,
        chunk_tokens=options.chunk_tokens,
        overlap_tokens=options.overlap_tokens,
        max_tokens=options.max_tokens,
    )
    if not drafts:
        raise EmptyDocument(path, "no text to index")
    kinds = chunk_kinds([d.text for d in drafts], [d.heading for d in drafts])
    # PDF pages come with their layout: each chunk keeps the boxes of its lines, for highlighting
    layouts = [p.layout for p in loaded.pages if getattr(p, "layout", None) is not None]
    read_by_ocr = {p.number for p in loaded.pages if getattr(p, "ocr", False)}
    chunks = [
        NewChunk(
            index=d.index,
            text=d.text,
            page=d.page,
            heading=d.heading,
            tokens=tokens(f"{d.heading}\n{d.text}" if d.heading else d.text),
            kind=kind,
            boxes=passage_boxes(layouts, d.page, d.text) if layouts else [],
            ocr=d.page in read_by_ocr,
        )
        for d, kind in zip(drafts, kinds)
    ]
    pages = sum(1 for p in loaded.pages if p.number is not None) or 1
    return PreparedDocument(
        doc_id=doc_id,
        source=str(path),
        title=loaded.title,
        file_type=loaded.file_type,
        pages=pages,
        chunks=chunks,
        title_from_name=_title_from_name(loaded, path),
        warnings=list(loaded.warnings),
    )


def _title_from_name(loaded: LoadedDocument, path: Path) -> bool:
    """Whether the loader fell back to the file's stem for the title: such a title follows the
    file when it is renamed. A Markdown heading that happens to equal the stem is the document's
    own title. (For PDF, DOCX and HTML a title from inside that equals the stem cannot be told
    apart from the fallback, and is taken to be the name.)"""
    if loaded.title != path.stem:
        return False
    if loaded.file_type == "markdown":
        heading = re.compile(rf"^ {{0,3}}#{{1,6}}[ \t]+{re.escape(loaded.title)}[ \t#]*$", re.MULTILINE)
        return heading.search(loaded.text) is None
    return True


# -- how many workers ---------------------------------------------------------------------------

AUTO_MIN_BYTES = 512 * 1024
"""``parse_workers = None`` starts workers only for jobs of at least two files and this many bytes.

A pool gives its first result ~1.5 s after it is started (a fresh interpreter, the loaders, and
jieba's dictionary, which every worker loads once: ~0.9 s), but that start overlaps the hashing
and embedding in the ingesting process, and so does all parsing after it. Measured on 2 cores
(bench/ingest.py, 1 MB of Chinese text in 45 files, PyTorch embedder): pipeline ÷ raw encode
1.165 reading in-process, 1.129 with one reader. Much smaller jobs finish before a pool would
pay off (10,000 tiny files are ~0.3 MB: 2 s in-process). Unchanged files are never parsed, and
the pool is only started when the first file that needs reading comes up, so re-ingesting a
large unchanged folder starts no process."""

MAX_AUTO_WORKERS = 4
"""More readers rarely help: the embedder, not parsing, is the slow stage with every embedder
we ship, and each reader takes ~120 MB (the loaders and its own copy of jieba's dictionary)."""


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))  # the CPUs this process may run on (containers)
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def parse_workers_for(setting: int | None, sizes: Sequence[int]) -> int:
    """Reader processes for a job of files of ``sizes`` bytes; 0: read in the ingesting process.

    ``setting`` is ``settings.ingest.parse_workers``: a number is taken as given (but never more
    workers than files); None chooses: none for one file or a small job (see AUTO_MIN_BYTES),
    else one CPU fewer than this process may use (the embedder in the ingesting process keeps
    one busy), at least 1 and at most MAX_AUTO_WORKERS."""
    if setting is not None:
        return max(0, min(setting, len(sizes)))
    if len(sizes) < 2 or sum(sizes) < AUTO_MIN_BYTES:
        return 0
    return min(len(sizes), MAX_AUTO_WORKERS, max(1, usable_cpus() - 1))


# -- the worker side ----------------------------------------------------------------------------

_worker_state: tuple[CountTokens, SearchTokens, ParseOptions] | None = None
_worker_events = None  # the pool's queue of page events, or None


def _start_worker(count_tokens: CountTokens, tokens: SearchTokens, options: ParseOptions, events=None) -> None:
    global _worker_state, _worker_events
    _worker_state = (count_tokens, tokens, options)
    _worker_events = events
    if events is not None:
        # Events not yet read when the worker ends are dropped rather than waited for: a worker
        # must never hang on exit because the pool stopped reading them.
        events.cancel_join_thread()
    # Ctrl-C in a terminal reaches the whole process group: the ingesting process handles it
    # (and ends the pool); a worker would only print a traceback and break the pool.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _ping() -> int:
    return os.getpid()


def _page_event(key: int) -> OnPage | None:
    events = _worker_events
    if events is None:
        return None

    def on_page(n: int, total: int) -> None:
        try:
            events.put((key, n, total))
        except Exception:  # progress is not worth a file
            pass

    return on_page


def _parse_in_worker(path: Path, doc_id: str, key: int = 0) -> tuple:
    """``("ok", PreparedDocument)`` or ``("failed", error class name or None, reason)``; page
    events go on the pool's queue as ``(key, n, total)``.

    Errors travel as data: a DocumentError cannot be pickled back (its constructor takes two
    arguments), and an unexpected exception is reported the way the pipeline reports it."""
    count_tokens, tokens, options = _worker_state
    try:
        return ("ok", prepare_document(path, doc_id, count_tokens, options, tokens, _page_event(key)))
    except DocumentError as exc:
        return ("failed", type(exc).__name__, exc.reason)
    except Exception as exc:  # a bug or a parser error on one file must not stop the rest
        return ("failed", None, f"unexpected {type(exc).__name__}: {exc}")


def _unpack(path: Path, outcome: tuple) -> PreparedDocument:
    if outcome[0] == "ok":
        return outcome[1]
    _, kind, reason = outcome
    cls = getattr(errors, kind or "", None)
    if not (isinstance(cls, type) and issubclass(cls, DocumentError)):
        cls = DocumentError
    raise cls(path, reason)


# -- starting workers without the parent's main script ------------------------------------------

# ``spawn`` imports the parent's main script again in every child (as ``__mp_main__``) unless it
# was run with ``python -m``. Under Streamlit that script is the app, which would run in every
# worker, and a plain script without an ``if __name__ == "__main__"`` guard would ingest again
# there. The workers need nothing from it, so while this module starts them (a flag of the
# starting thread: other users of multiprocessing are not affected) the child is not told of it.
_starting_readers = threading.local()


def _preparation_data(name, _original=multiprocessing.spawn.get_preparation_data):
    data = _original(name)
    if getattr(_starting_readers, "active", False):
        data.pop("init_main_from_name", None)
        data.pop("init_main_from_path", None)
    return data


if not getattr(multiprocessing.spawn.get_preparation_data, "_docqa_readers", False):
    _preparation_data._docqa_readers = True
    multiprocessing.spawn.get_preparation_data = _preparation_data


# -- the pool -----------------------------------------------------------------------------------

CRASH_REASON = (
    "the reader process stopped unexpectedly while reading this file (a crash in its parser, or "
    "the system ended it, perhaps for lack of memory); the other files were read"
)


_task_keys = itertools.count(1)


class ParseTask:
    """One file handed to the pool; :meth:`ParsePool.result` gives its document."""

    def __init__(self, path: Path, doc_id: str) -> None:
        self.path = path
        self.doc_id = doc_id
        self.key = next(_task_keys)  # names the task in page events
        self.future: Future | None = None
        self.pages: list[tuple[int, int]] = []  # page events that came before its result was asked for


class ParsePool:
    """Worker processes reading and splitting files; results are taken per task, in any order.

    ``inline(path, doc_id, on_page)`` reads a file in this process: used only when worker
    processes cannot be started here at all (so that a broken environment does not fail every
    file)."""

    def __init__(self, workers: int, count_tokens: CountTokens, tokens: SearchTokens,
                 options: ParseOptions, inline: Callable[[Path, str, OnPage | None], PreparedDocument]) -> None:
        self.workers = workers
        self._initargs = (count_tokens, tokens, options)
        self._inline = inline
        self._executor: ProcessPoolExecutor | None = None
        self._events = None  # the current workers' queue of page events
        self._open: list[ParseTask] = []  # submitted, result not yet taken
        self.unavailable: str | None = None  # why workers cannot run here

    def submit(self, path: Path, doc_id: str) -> ParseTask:
        task = ParseTask(path, doc_id)
        self._open.append(task)
        self._send(task)
        return task

    def result(self, task: ParseTask, on_page: OnPage | None = None) -> PreparedDocument:
        """The file's document (waiting for it); raises its DocumentError. ``on_page(n, total)``
        is told of the file's OCR'd pages: those read before (at once), then as they come."""
        try:
            return self._result(task, on_page)
        finally:
            self._forget(task)
            task.pages.clear()

    def _result(self, task: ParseTask, on_page: OnPage | None) -> PreparedDocument:
        if self.unavailable:
            return self._inline(task.path, task.doc_id, on_page)
        try:
            if task.future is None:  # it was sent to a pool that had already broken
                raise BrokenProcessPool
            outcome = self._wait(task, task.future, on_page)
        except BrokenProcessPool:
            # A worker died reading this file or another one in flight. Start afresh and read
            # this file alone: if a worker dies again, it is this file's doing.
            self._forget(task)
            if not self._restart():
                return self._inline(task.path, task.doc_id, on_page)
            try:
                alone = self._submit(_parse_in_worker, task.path, task.doc_id, task.key)
                self._open.append(task)  # so that its page events are kept meanwhile
                outcome = self._wait(task, alone, on_page)
            except BrokenProcessPool:
                outcome = ("failed", None, CRASH_REASON)
                self._restart()
            finally:
                self._forget(task)  # not among the files to send again
            self._resend_lost()
        return _unpack(task.path, outcome)

    def discard(self, task: ParseTask) -> None:
        """The file's document is not needed after all."""
        self._forget(task)
        task.pages.clear()
        if task.future is not None:
            task.future.cancel()

    def close(self) -> None:
        self._open.clear()
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
        self._events = None

    # -- internals

    def _wait(self, task: ParseTask, future: Future, on_page: OnPage | None) -> tuple:
        """``future``'s outcome, forwarding ``task``'s page events to ``on_page`` meanwhile;
        raises BrokenProcessPool when a worker died."""
        while True:
            self._take_events()
            if on_page is not None:
                while task.pages:
                    on_page(*task.pages.pop(0))
            if future.done():
                return future.result()
            wait([future], timeout=EVENT_POLL_S)

    def _take_events(self) -> None:
        """Page events waiting on the queue, given to their tasks (those of tasks no longer
        open are dropped)."""
        events = self._events
        if events is None:
            return
        open_tasks = {t.key: t for t in self._open}
        while True:
            try:
                key, n, total = events.get_nowait()
            except queue.Empty:
                return
            except Exception:  # a queue spoilt by a dying worker: no more page events from it
                self._events = None
                return
            task = open_tasks.get(key)
            if task is not None:
                task.pages.append((n, total))

    def _forget(self, task: ParseTask) -> None:
        try:
            self._open.remove(task)
        except ValueError:
            pass

    def _send(self, task: ParseTask) -> None:
        if self.unavailable:
            return
        task.pages.clear()  # read again from the start
        try:
            task.future = self._submit(_parse_in_worker, task.path, task.doc_id, task.key)
        except BrokenProcessPool:
            task.future = None  # noticed, and sent again, when its result is asked for
        except Exception as exc:  # processes cannot be started here at all (no /dev/shm, limits)
            self._give_up(exc)

    def _submit(self, fn, *args) -> Future:
        if self._executor is None:
            context = multiprocessing.get_context("spawn")
            events = context.Queue()  # fresh for each set of workers
            self._executor = ProcessPoolExecutor(
                self.workers, mp_context=context,
                initializer=_start_worker, initargs=(*self._initargs, events),
            )
            self._events = events
        _starting_readers.active = True  # workers are started here, as tasks come in
        try:
            return self._executor.submit(fn, *args)
        finally:
            _starting_readers.active = False

    def _restart(self) -> bool:
        """A fresh pool, checked with a no-op task; False (and ``unavailable`` set) when
        workers cannot even start here."""
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
        try:
            self._submit(_ping).result()
        except Exception as exc:
            self._give_up(exc)
            return False
        return True

    def _give_up(self, exc: Exception) -> None:
        """From now on every file is read in this process."""
        self.unavailable = f"reader processes cannot start: {type(exc).__name__}: {exc}"
        self.close()

    def _resend_lost(self) -> None:
        """Send again the files whose results went down with a broken pool."""
        for task in self._open:
            f = task.future
            if f is None or not f.done() or f.cancelled() or f.exception() is not None:
                self._send(task)


__all__ = ["ParseOptions", "ParsePool", "ParseTask", "prepare_document", "parse_workers_for",
           "CRASH_REASON", "AUTO_MIN_BYTES"]

"""What the Streamlit app does, apart from drawing: knowledge bases, uploads, models.

Nothing here draws widgets; the functions are plain Python (unit-testable without Streamlit)
except the ``cached_*`` loaders, which wrap the expensive objects in ``st.cache_resource`` so
that every browser session of one server shares them.

Knowledge bases
    The *default* knowledge base is ``settings.store.dir`` (``DOCQA_STORE__DIR``, default
    ``docs_store``). More knowledge bases live as folders under :func:`kb_root`, i.e.
    ``<store.dir>/kbs/<name>``, so that everything the app writes stays inside the one
    configured folder. The default one cannot be deleted from the UI; the others can (their
    whole folder goes, after a confirmation in the UI).

Uploads
    Uploaded files are written to ``<knowledge base>/uploads/`` under a sanitised name (see
    :func:`safe_filename`), never anywhere else, and then ingested with
    :meth:`rag.api.KnowledgeBase.add`.

Injection for tests (no environment magic)
    The app reads two optional ``st.session_state`` entries before it builds anything:

    * ``docqa_settings``: a :class:`rag.settings.Settings` to use instead of ``Settings()``;
    * ``docqa_model``: a ready :class:`rag.models.base.LoadedModel` (e.g.
      ``rag.testing.fake_loaded_model()``) to answer with instead of ``load_chat_model``.

    ``AppTest`` sets them before ``run()``; a real user never does.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import tempfile
import threading
import time
import unicodedata
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterable, Sequence

import streamlit as st

from rag.settings import Settings
from ui.i18n import N_

DEFAULT_KB = "default"
KB_ROOT_NAME = "kbs"
UPLOADS_DIR = "uploads"
SETTINGS_KEY = "docqa_settings"
MODEL_KEY = "docqa_model"

# Sampling settings are applied per call; changing them never reloads the model.
SAMPLING_FIELDS = ("temperature", "top_k", "top_p", "repetition_penalty", "max_new_tokens", "system_prompt")

_WINDOWS_RESERVED = re.compile(r'[<>:"/\\|?*]')
_MAX_NAME_BYTES = 180
_KB_NAME = re.compile(r"^[\w\u4e00-\u9fff][\w\u4e00-\u9fff .-]{0,63}$")


# -- knowledge bases ------------------------------------------------------------------------------


def default_kb_dir(settings: Settings) -> Path:
    return Path(settings.store.dir).expanduser().resolve()


def kb_root(settings: Settings) -> Path:
    """Folder holding the extra (named) knowledge bases: ``<store.dir>/kbs``."""
    return default_kb_dir(settings) / KB_ROOT_NAME


def list_kbs(settings: Settings) -> dict[str, Path]:
    """Knowledge-base name → folder; ``default`` first, then the named ones alphabetically. With a
    shared catalogue (``store.catalog_url``) there is only the one it holds."""
    kbs = {DEFAULT_KB: default_kb_dir(settings)}
    root = kb_root(settings)
    if root.is_dir() and not settings.store.catalog_url:
        for child in sorted(root.iterdir(), key=lambda p: p.name.lower()):
            if child.is_dir() and not child.name.startswith(".") and child.name != DEFAULT_KB:
                kbs[child.name] = child.resolve()
    return kbs


class KBNameError(ValueError):
    """A knowledge-base name that cannot be used; ``template`` and ``values`` for translation."""

    def __init__(self, template: str, **values: Any):
        super().__init__(template.format(**values))
        self.template, self.values = template, values


def validate_kb_name(name: str) -> str:
    """The name, stripped; ValueError with a readable reason when it cannot be a folder name."""
    name = unicodedata.normalize("NFC", (name or "").strip())
    if not name:
        raise KBNameError(N_("Give the knowledge base a name."))
    if name.lower() == DEFAULT_KB:
        raise KBNameError(N_("'{name}' is the name of the default knowledge base."), name=DEFAULT_KB)
    if not _KB_NAME.match(name) or name in (".", ".."):
        raise KBNameError(N_(
            "Use letters, digits, Chinese characters, spaces, '-', '_' or '.' (at most 64), "
            "starting with a letter, digit or character."
        ))
    return name


def create_kb(settings: Settings, name: str) -> Path:
    if settings.store.catalog_url:  # every folder would open the same database
        raise KBNameError(N_("This app serves one shared knowledge base (its catalogue is in PostgreSQL); "
                             "another one needs its own database and app instances (docs/deploy.md)."))
    name = validate_kb_name(name)
    path = kb_root(settings) / name
    if path.exists():
        raise KBNameError(N_("A knowledge base named '{name}' already exists."), name=name)
    path.mkdir(parents=True)
    return path


def kb_settings(settings: Settings, name: str) -> Settings:
    """The settings for knowledge base ``name`` (KeyError if there is none)."""
    return settings.with_store(list_kbs(settings)[name])


def delete_kb(settings: Settings, name: str) -> Path:
    """Delete a named knowledge base's folder (never the default one)."""
    if name == DEFAULT_KB:
        raise ValueError("The default knowledge base cannot be deleted; delete its documents instead.")
    kbs = list_kbs(settings)
    if name not in kbs:
        raise ValueError(f"There is no knowledge base named '{name}'.")
    path = kbs[name]
    root = kb_root(settings).resolve()
    if path.parent != root:  # paranoia: only ever delete a direct child of the root
        raise ValueError(f"{path} is not inside {root}; not deleting it.")
    forget_kb(settings.with_store(path))
    _drop_server_collection(settings.with_store(path))
    shutil.rmtree(path)
    return path


def _drop_server_collection(settings: Settings) -> None:
    """With a Chroma server, a knowledge base's vectors live there: drop its collection too."""
    if not settings.store.chroma_host:
        return
    catalog = Path(settings.store.dir) / "catalog.sqlite3"
    if not catalog.exists():
        return
    import sqlite3

    try:
        with sqlite3.connect(catalog) as db:
            row = db.execute("SELECT value FROM meta WHERE key = 'collection'").fetchone()
        if row:
            import chromadb

            chromadb.HttpClient(host=settings.store.chroma_host, port=settings.store.chroma_port).delete_collection(row[0])
    except Exception:
        pass  # the folder goes anyway; a stale server collection is harmless


# -- the shared, cached objects ---------------------------------------------------------------------

def kb_key(settings: Settings) -> str:
    """What makes two knowledge bases different (the model is set per call, not here)."""
    data = settings.model_dump(mode="json", exclude={"model", "ui"})
    data["store"]["dir"] = str(default_kb_dir(settings))
    return json.dumps(data, sort_keys=True)


@st.cache_resource(show_spinner=False, max_entries=16)
def _cached_kb(key: str, _settings: Settings):
    from rag.api import KnowledgeBase

    return KnowledgeBase(default_kb_dir(_settings), _settings)


def open_kb(settings: Settings):
    """The KnowledgeBase for these settings, opened once per server process and shared."""
    return _cached_kb(kb_key(settings), settings)


def forget_kb(settings: Settings) -> None:
    """Drop the cached KnowledgeBase for these settings (before its folder is deleted)."""
    from ingest.store import forget_embedded_client

    _cached_kb.clear(kb_key(settings), None)
    forget_embedded_client(default_kb_dir(settings))


def model_key(settings: Settings) -> str:
    """What makes two loaded models different: everything but the per-call sampling settings."""
    return settings.model.model_dump_json(exclude=set(SAMPLING_FIELDS))


@st.cache_resource(show_spinner=False, max_entries=2)
def _cached_model(key: str, _settings: Settings):
    from rag.models.loader import load_chat_model

    return load_chat_model(_settings)


def load_model(settings: Settings):
    """The chat model these settings name, loaded once per server process (sampling settings
    are not part of the key: apply them with :func:`with_sampling`)."""
    return _cached_model(model_key(settings), settings)


def with_model(kb, model, settings: Settings | None = None):
    """A view of the shared (cached) knowledge base that answers with ``model`` (and, when
    given, this session's answer settings: mode, context budget).

    The view shares the store, ingestor and retriever; only its model and answer settings
    differ, so sessions with different choices never change each other's answers.
    """
    view = copy.copy(kb)
    view.model = model
    if settings is not None:
        view.settings = kb.settings.model_copy(update={"answer": settings.answer})
    return view


def with_sampling(model, settings: Settings):
    """The loaded model with this call's sampling settings (temperature, max new tokens, ...).

    The chat model is copied shallowly (the weights are shared), so changing a slider never
    reloads a model. Fields a chat model does not have are left alone.
    """
    chat = model.chat_model
    fields = getattr(type(chat), "model_fields", {})
    update = {
        name: getattr(settings.model, name)
        for name in SAMPLING_FIELDS
        if name in fields and getattr(chat, name, None) != getattr(settings.model, name)
    }
    if not update:
        return replace(model, max_new_tokens=settings.model.max_new_tokens) if "max_new_tokens" in fields else model
    return replace(model, chat_model=chat.model_copy(update=update), max_new_tokens=settings.model.max_new_tokens)


# -- uploads ----------------------------------------------------------------------------------------


@st.cache_data(max_entries=64, show_spinner=False)
def _page_png(path: str, modified: float, page: int, boxes: tuple) -> bytes:
    from rag.page_image import render_page

    return render_page(path, page, [(int(b[0]), b[1:5]) for b in boxes])


def page_png(path: str, page: int, boxes: tuple) -> bytes:
    """PNG of a cited PDF page with the passage highlighted (rag.page_image), cached per file
    version, page and boxes: opening the same citation again costs nothing."""
    return _page_png(path, os.path.getmtime(path), page, boxes)


def retrieval_test(kb, question: str, k: int, doc_ids: Sequence[str] | None) -> tuple[list, float]:
    """The ``k`` best passages for ``question`` with no threshold applied, and the threshold the
    answers use (rag.retrieval.HybridRetriever.effective_threshold): what the retrieval-test tab
    shows, so a user can see why an answer came out as it did."""
    hits = kb.retriever.search(question, k=k, doc_ids=doc_ids, relevance_threshold=0.0)
    return hits, kb.retriever.effective_threshold()


def safe_filename(name: str, default: str = "upload") -> str:
    """A file name that is safe to create inside the uploads folder.

    Directories (``/``, ``\\``), ``..``, drive letters and absolute paths are dropped (only the
    last path component is kept), control and bidi-override characters removed, characters that
    Windows forbids replaced by ``_``; non-ASCII letters (``中文.pdf``) and spaces are kept.
    Leading dots go (no hidden files); long names are shortened keeping the suffix.
    """
    name = unicodedata.normalize("NFC", str(name or ""))
    name = "".join(ch for ch in name if unicodedata.category(ch) not in ("Cc", "Cf", "Cs", "Zl", "Zp"))
    name = PurePosixPath(name.replace("\\", "/")).name
    name = _WINDOWS_RESERVED.sub("_", name)
    name = re.sub(r"\s+", " ", name).strip().lstrip(".").strip()
    if name in ("", ".", ".."):
        return default
    if len(name.encode("utf-8")) > _MAX_NAME_BYTES:
        stem, dot, suffix = name.rpartition(".")
        if not dot or len(suffix) > 10:
            stem, suffix = name, ""
        suffix = f".{suffix}" if suffix else ""
        budget = _MAX_NAME_BYTES - len(suffix.encode("utf-8"))
        stem = stem.encode("utf-8")[:budget].decode("utf-8", "ignore").rstrip()
        name = (stem or default) + suffix
    return name


def uploads_dir(kb_dir: Path) -> Path:
    return Path(kb_dir) / UPLOADS_DIR


def save_upload(folder: Path, name: str, data: bytes) -> tuple[Path, bool]:
    """Write ``data`` into ``folder`` under a safe version of ``name``.

    Never overwrites a different file: ``a.pdf`` becomes ``a (2).pdf`` and so on. If a file of
    that name already holds exactly these bytes it is reused. Returns (path, written).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    root = folder.resolve()
    safe = safe_filename(name)
    stem, suffix = _split_suffix(safe)
    for n in range(1, 10_000):
        candidate = root / (safe if n == 1 else f"{stem} ({n}){suffix}")
        if candidate.resolve().parent != root:
            raise ValueError(f"refusing to write outside {root}: {name!r}")
        if candidate.exists():
            try:
                if candidate.is_file() and candidate.stat().st_size == len(data) and candidate.read_bytes() == data:
                    return candidate, False
            except OSError:
                pass
            continue
        fd, tmp = tempfile.mkstemp(dir=root, prefix=".upload-", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            try:
                os.link(tmp, candidate)  # fails if the name appeared meanwhile: no clobbering
            except FileExistsError:
                continue
            except OSError:
                if candidate.exists():
                    continue
                os.replace(tmp, candidate)
                return candidate, True
            return candidate, True
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    raise ValueError(f"too many files named {safe} already")


def _split_suffix(name: str) -> tuple[str, str]:
    path = PurePosixPath(name)
    suffix = path.suffix if 0 < len(path.suffix) <= 10 else ""
    return (name[: -len(suffix)] if suffix else name), suffix


@dataclass
class UploadOutcome:
    """What happened to one uploaded file."""

    name: str
    """The name the browser sent."""
    status: str
    """added | updated | unchanged | duplicate | failed | too_large | unsupported"""
    message: str = ""
    """What happened, in English; ``template`` and ``values`` are the same for translation."""
    saved_as: str | None = None
    doc_id: str | None = None
    template: str = ""
    values: dict = field(default_factory=dict)
    renamed_to: str | None = None
    """The name it was saved under, when that differs from the one sent."""
    warnings: list[str] = field(default_factory=list)
    """What an added or updated file lacks, in English as the loader says it (a PDF page
    whose OCR failed, pages skipped because OCR is not available)."""

    @property
    def ok(self) -> bool:
        return self.status in ("added", "updated", "unchanged", "duplicate")

    def say(self, template: str, **values: Any) -> "UploadOutcome":
        self.template, self.values = template, values
        self.message = template.format(**values) + (f" (saved as {self.renamed_to})" if self.renamed_to else "")
        return self


def outcome(name: str, status: str, template: str, **values: Any) -> UploadOutcome:
    return UploadOutcome(name, status).say(template, **values)


@dataclass
class UploadBatch:
    outcomes: list[UploadOutcome] = field(default_factory=list)

    @property
    def failed(self) -> list[UploadOutcome]:
        return [o for o in self.outcomes if not o.ok]

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for o in self.outcomes:
            out[o.status] = out.get(o.status, 0) + 1
        return out


@dataclass
class UploadProgress:
    """Where an upload stands: files finished of all, and the ingestion's own figures."""

    name: str
    """The file the last event was about (the name the browser sent)."""
    status: str
    """An UploadOutcome status when the file is finished, else ``reading``, ``ocr`` or
    ``embedding``."""
    done: int
    total: int
    chunks_done: int = 0
    chunks_total: int = 0
    fraction: float = 0.0
    eta_s: float | None = None
    page: int = 0
    pages: int = 0
    """With ``status="ocr"``: the page of a scanned PDF being OCR'd, of ``pages`` to OCR."""


def supported_suffixes() -> list[str]:
    from ingest.loaders import SUPPORTED_SUFFIXES

    return sorted(s.lstrip(".") for s in SUPPORTED_SUFFIXES)


def ingest_uploads(
    kb,
    files: Sequence[tuple[str, bytes]],
    max_upload_mb: float,
    progress: Callable[[UploadProgress], None] | None = None,
) -> UploadBatch:
    """Check, save and ingest uploaded files ``[(name, bytes), ...]`` into ``kb``.

    * larger than ``max_upload_mb`` → ``too_large`` (not saved);
    * a type the loaders cannot read → ``unsupported`` (not saved);
    * content already in the knowledge base → ``duplicate`` ("already in the knowledge base as
      ..."), not saved again; the same content twice in one upload is stored once and noted;
    * everything else is saved under ``<kb>/uploads/`` and ingested; a file the loaders
      reject is ``failed`` with the reason, and its saved copy is removed again; a file read
      only in part (a scanned page whose OCR failed) is added, with ``warnings``.

    ``progress(UploadProgress)`` is called as each file is finished and, while files are being
    ingested, as each is read, as each page of a scanned PDF is OCR'd (``status="ocr"``, with
    ``page``/``pages``) and as each slice of its chunks is embedded.
    """
    from ingest.loaders import SUPPORTED_SUFFIXES
    from ingest.pipeline import content_id

    batch = UploadBatch()
    total = len(files)
    done = 0
    limit = int(max_upload_mb * 1024 * 1024)
    folder = uploads_dir(kb.store.dir)
    known = {d.doc_id: d for d in kb.documents()}
    to_ingest: dict[str, UploadOutcome] = {}  # saved path → outcome
    written: set[str] = set()
    first_copy: dict[str, UploadOutcome] = {}  # content id → its first file in this upload
    copies: list[tuple[UploadOutcome, UploadOutcome]] = []  # (later copy, first copy)

    last = UploadProgress("", "", 0, total)

    def tell(**changes: Any) -> None:
        nonlocal last
        last = replace(last, done=done, **changes)
        if progress:
            progress(last)

    def tick(result: UploadOutcome) -> None:
        nonlocal done
        done += 1
        # files refused before ingestion count as done work too
        tell(name=result.name, status=result.status, fraction=max(last.fraction, done / max(total, 1)))

    for name, data in files:
        shown = safe_filename(name)
        suffix = PurePosixPath(shown).suffix.lower()
        if len(data) > limit:
            result = outcome(
                name, "too_large",
                N_("{size} MB is above the upload limit of {limit} MB (setting ui.max_upload_mb, DOCQA_UI__MAX_UPLOAD_MB)."),
                size=f"{len(data) / 1048576:.1f}", limit=f"{max_upload_mb:g}",
            )
        elif suffix not in SUPPORTED_SUFFIXES:
            result = outcome(
                name, "unsupported", N_("'{suffix}' files cannot be read; supported: {supported}."),
                suffix=suffix or "no extension", supported=", ".join(supported_suffixes()),
            )
        else:
            doc_id = content_id(data)
            if doc_id in known:
                names = ", ".join(known[doc_id].file_names) or known[doc_id].title
                result = outcome(name, "duplicate", N_("already in the knowledge base (as {names})."), names=names)
                result.doc_id = doc_id
            elif doc_id in first_copy:
                # Whether this copy counts as stored depends on how the first copy fares.
                copies.append((UploadOutcome(name, "duplicate", "", doc_id=doc_id), first_copy[doc_id]))
                batch.outcomes.append(copies[-1][0])
                continue
            else:
                try:
                    path, was_written = save_upload(folder, name, data)
                except (OSError, ValueError) as exc:
                    result = outcome(name, "failed", N_("could not be saved: {error}"), error=exc)
                    first_copy[doc_id] = result
                else:
                    if was_written:
                        written.add(str(path))
                    to_ingest[str(path)] = UploadOutcome(name, "pending", saved_as=str(path), doc_id=doc_id,
                                                         renamed_to=path.name if path.name != shown else None)
                    first_copy[doc_id] = to_ingest[str(path)]
                    batch.outcomes.append(to_ingest[str(path)])
                    continue
        batch.outcomes.append(result)
        tick(result)

    if to_ingest:
        before = done  # files settled before ingestion started

        def on_progress(p) -> None:
            result = to_ingest.get(str(Path(p.path).resolve())) or to_ingest.get(p.path)
            if result is None:
                return
            share = (before + p.fraction * len(to_ingest)) / max(total, 1)
            figures = dict(chunks_done=p.chunks_done, chunks_total=p.chunks_total, eta_s=p.eta_s,
                           page=getattr(p, "page", 0), pages=getattr(p, "pages", 0))
            if not p.finished:
                tell(name=result.name, status=p.status, fraction=share, **figures)
                return
            nonlocal last
            _finish(result, p.status, p.error)
            last = replace(last, fraction=share, **figures)  # a new object: readers never see half an update
            tick(result)

        report = kb.add(list(to_ingest), progress=on_progress)
        for warning in getattr(report, "warnings", ()):
            result = to_ingest.get(str(Path(warning.path).resolve())) or to_ingest.get(warning.path)
            if result is not None:
                result.warnings.append(warning.warning)
        for failure in report.failed:  # failures the progress callback did not see
            result = to_ingest.get(str(Path(failure.path).resolve())) or to_ingest.get(failure.path)
            if result is not None and result.status == "pending":
                _finish(result, "failed", failure.error)
                tick(result)
        for result in to_ingest.values():
            if result.status == "pending":  # not reported at all: say so rather than guess
                _finish(result, "failed", None, N_("the ingestion did not report on this file"))
                tick(result)
            if result.status == "failed" and result.saved_as in written:
                Path(result.saved_as).unlink(missing_ok=True)
                result.saved_as = None
    for dup, first in copies:
        if first.status == "failed":
            dup.status = "failed"
            dup.say(N_("same content as {first}, which could not be stored: {reason}"), first=first.name,
                     reason=first.message)
        else:
            dup.say(N_("same content as {first} in this upload; stored once."), first=safe_filename(first.name))
        tick(dup)
    return batch


@dataclass
class IngestJob:
    """An upload being ingested in a background thread, so that the app stays usable (chat
    works) meanwhile. ``progress`` is replaced, never changed in place, as the work goes on."""

    key: str
    names: list[str]
    progress: UploadProgress
    batch: UploadBatch | None = None
    error: str | None = None
    started: float = field(default_factory=time.time)
    thread: threading.Thread | None = None

    @property
    def finished(self) -> bool:
        return self.batch is not None or self.error is not None


_jobs: dict[str, IngestJob] = {}
_jobs_lock = threading.Lock()


def _job_key(settings: Settings) -> str:
    return str(Path(settings.store.dir).expanduser().resolve())


def start_ingest_job(kb, settings: Settings, files: Sequence[tuple[str, bytes]], max_upload_mb: float) -> IngestJob:
    """Run :func:`ingest_uploads` in a background thread; one job per knowledge base at a time
    (a second start while one runs is a ValueError). Every session of the server sees the job."""
    key = _job_key(settings)
    with _jobs_lock:
        running = _jobs.get(key)
        if running is not None and not running.finished:
            raise ValueError("files are already being added to this knowledge base; wait until they are in")
        job = IngestJob(key, [name for name, _ in files], UploadProgress("", "checking", 0, len(files)))
        _jobs[key] = job

    def report(p: UploadProgress) -> None:
        job.progress = p

    def work() -> None:
        try:
            batch = ingest_uploads(kb, files, max_upload_mb, progress=report)
        except Exception as exc:  # shown in the app; what was stored before stays stored
            job.error = f"{type(exc).__name__}: {exc}"
        else:
            job.batch = batch

    job.thread = threading.Thread(target=work, name=f"ingest-{key}", daemon=True)
    job.thread.start()
    return job


def ingest_job(settings: Settings) -> IngestJob | None:
    """The upload job of this knowledge base (running, or finished and not yet taken)."""
    return _jobs.get(_job_key(settings))


def take_finished_job(settings: Settings) -> IngestJob | None:
    """The finished job of this knowledge base, removed from the list; None while it runs."""
    key = _job_key(settings)
    with _jobs_lock:
        job = _jobs.get(key)
        if job is None or not job.finished:
            return None
        return _jobs.pop(key)


_STATUS_TEXT = {
    "added": N_("added to the knowledge base"),
    "updated": N_("updated (the file of this name had other content before)"),
    "unchanged": N_("already in the knowledge base (unchanged)"),
}


def _finish(result: UploadOutcome, status: str, error: str | None, template: str = N_("could not be ingested")) -> None:
    result.status = status if status in _STATUS_TEXT or status == "failed" else "added"
    if result.status == "failed":
        # the ingestion's own reason (from the loaders) is passed on as it is
        result.say("{reason}", reason=error) if error else result.say(template)
    else:
        result.say(_STATUS_TEXT[result.status])


# -- knowledge-base maintenance ----------------------------------------------------------------------


def delete_document(kb, doc_id: str) -> bool:
    """Remove a document with all its sources (by id, so every file holding it is forgotten);
    of those files, the copies in ``<kb>/uploads`` that still hold this document's bytes are
    deleted too. Other files, and upload files that now hold something else, are never touched."""
    from ingest.pipeline import content_id

    doc = next((d for d in kb.documents() if d.doc_id == doc_id), None)
    if doc is None:
        return False
    removed = kb.remove(doc_id)
    if removed:
        up = uploads_dir(kb.store.dir).resolve()
        for source in doc.sources:
            path = Path(source)
            try:
                if path.resolve().parent == up and path.is_file() and content_id(path.read_bytes()) == doc_id:
                    path.unlink()
            except OSError:
                pass
    return removed


@dataclass
class ReindexResult:
    report: Any = None
    missing: list[str] = field(default_factory=list)
    rebuilt: int = 0


def reindex(kb, rebuild: bool = False, doc_ids: Iterable[str] | None = None, progress=None) -> ReindexResult:
    """Ingest the stored documents' source files again.

    Without ``rebuild`` only files whose content changed are re-read (the pipeline skips
    unchanged content). With ``rebuild`` each document whose files still exist is removed and
    ingested afresh (new chunking and embedding settings take effect). Sources whose files are
    gone are listed in ``missing`` and left alone.
    """
    wanted = set(doc_ids) if doc_ids else None
    docs = [d for d in kb.documents() if wanted is None or d.doc_id in wanted]
    result = ReindexResult()
    paths: list[str] = []
    for doc in docs:
        present = [s for s in doc.sources if Path(s).is_file()]
        result.missing.extend(s for s in doc.sources if not Path(s).is_file())
        if rebuild and present:
            kb.remove(doc.doc_id)
            result.rebuilt += 1
        paths.extend(present)
    result.report = kb.add(paths, progress=progress) if paths else None
    return result


def history_pairs(messages: Sequence[dict]) -> list[tuple[str, str]]:
    """(question, answer) pairs from the chat log, for follow-up questions."""
    pairs: list[tuple[str, str]] = []
    question: str | None = None
    for m in messages:
        if m.get("role") == "user":
            question = m.get("content", "")
        elif m.get("role") == "assistant" and question is not None and not m.get("error"):
            pairs.append((question, m.get("content", "")))
            question = None
    return pairs


def summary_markdown(title: str, text: str, strategy: str, documents: Sequence[str]) -> str:
    docs = "\n".join(f"- {d}" for d in documents) or "- (all documents)"
    return f"# {title}\n\n{text.strip()}\n\n---\n\nStrategy: {strategy}\n\nDocuments:\n{docs}\n"


def conversation_store(kb_dir: Path | str):
    """The knowledge base's stored conversations (rag.conversations; SQLite in its folder)."""
    from rag.conversations import ConversationStore

    return ConversationStore.for_kb(kb_dir)


def stand_in_answers(settings: Settings, injected_model=None) -> bool:
    """Whether the packaged stand-in model would answer, decided without loading any model."""
    from rag.api import stand_in_would_answer

    return stand_in_would_answer(settings, injected_model)

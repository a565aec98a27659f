"""Local chat models in a supervised process of their own.

llama.cpp and PyTorch run native code: an illegal instruction (a build for another CPU), a
segmentation fault (a damaged model file) or the kernel's out-of-memory killer ends the whole
process at once, with no Python exception. Run in the app's own process that would take the
Streamlit server and every user's conversation down, and a CLI would end with exit code 132 and
no word. So :func:`rag.models.load_chat_model` runs local models here instead::

    from rag.models import load_chat_model
    model = load_chat_model(settings)          # settings.model.isolation == "process" (default)
    model.chat_model.invoke("你好")            # generated in the model process
    # if that process dies: ModelCrashed("The llamacpp model process for ... was killed by
    # SIGILL while generating: ..."); the next call starts the model process again.

The model process is ``python -m rag.models.worker FD``, talking over a socket pair with
``multiprocessing.connection`` framing (pickle, between two processes of this program only).
It loads the model exactly as the in-process loader would (:func:`rag.models.loader.build_loaded`), answers token counts and prompt formatting at
once, and streams generations one at a time, each cancellable. When the caller exits, the
socket closes and the model process ends with it.
"""

from __future__ import annotations

import itertools
import os
import pickle
import queue
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Iterator, Sequence

from langchain_core.messages import BaseMessage
from pydantic import Field

from rag.models.base import LoadedModel
from rag.models.common import Cancel, LocalChatModel, generation_settings
from rag.models.errors import BackendUnavailable, ModelCrashed, ModelError, ModelUnavailable, StandInMissing

REQUEST_TIMEOUT_S = 300.0
"""Longest wait for a token count or a prompt format; past it the model process is taken for hung."""

# Per-call fields a chat model copy may change (the app's sliders); sent with every request.
CALL_FIELDS = ("temperature", "top_k", "top_p", "repetition_penalty", "max_new_tokens", "system_prompt")
_CRASHED = "crashed"


# Errors that travel from the model process as themselves (rebuilt from their fields);
# anything else arrives as a ModelError naming its type.
_TRAVELLING_ERRORS = {cls.__name__: cls for cls in (ValueError, TypeError, KeyError, RuntimeError, OSError,
                                                    MemoryError, ModelError, BackendUnavailable,
                                                    ModelUnavailable, StandInMissing)}


def _portable(exc: BaseException) -> tuple:
    """What the caller needs to raise ``exc`` again: (type name, fields)."""
    name = type(exc).__name__
    if isinstance(exc, ModelUnavailable):
        return (name, (exc.model, exc.how))
    if name in _TRAVELLING_ERRORS and type(exc) is _TRAVELLING_ERRORS[name]:
        return (name, (str(exc),))
    return ("ModelError", (f"{name}: {exc}",))


def _rebuild(error: tuple) -> BaseException:
    name, fields = error
    return _TRAVELLING_ERRORS.get(name, ModelError)(*fields)


LOG_KEEP_DAYS = 7


def _remove_old_logs(folder: Path) -> None:
    """Model-process logs older than LOG_KEEP_DAYS (those of crashes are kept that long)."""
    cutoff = time.time() - LOG_KEEP_DAYS * 86400
    for log in folder.glob("model-*.log"):
        try:
            if log.stat().st_mtime < cutoff:
                log.unlink()
        except OSError:
            pass


class ModelWorker:
    """Starts, talks to and restarts one model process. Thread-safe."""

    def __init__(self, plan: Any, model_settings: Any):
        self.plan = plan
        self.model_settings = model_settings
        self.info: dict[str, Any] = {}
        self.restarts = 0
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._pending: dict[int, queue.Queue] = {}
        self._proc: subprocess.Popen | None = None
        self._conn: Any = None
        self._alive = False
        self._closed = False
        self.log_path: Path | None = None

    # --- process life ---------------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def _crash(self, exitcode: int | None, during: str) -> ModelCrashed:
        return ModelCrashed(self.plan.display, self.plan.backend, exitcode, during,
                            str(self.log_path) if self.log_path else None)

    def start(self) -> dict[str, Any]:
        """Start the model process and load the model; returns what the model process reports."""
        with self._lock:
            return self._start_locked()

    def _start_locked(self) -> dict[str, Any]:
        from multiprocessing.connection import Connection

        ours, theirs = socket.socketpair()
        # the model process writes to its own log (llama.cpp's messages, a native crash's stack),
        # which a crash report names, instead of the app's terminal
        logs = Path(tempfile.gettempdir()) / "alpaca-docqa"
        logs.mkdir(parents=True, exist_ok=True)
        _remove_old_logs(logs)
        self.log_path = logs / f"model-{os.getpid()}-{int(time.time() * 1000)}.log"
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parents[2])  # so `rag` imports from any cwd
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
        with open(self.log_path, "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "rag.models.worker", str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=env,
            )
        theirs.close()
        conn = Connection(ours.detach())
        try:
            conn.send(("load", self.plan, self.model_settings))
            kind, payload = conn.recv()
        except (EOFError, OSError):
            conn.close()
            raise self._crash(proc.wait(), "loading the model") from None
        if kind == "error":
            conn.close()
            proc.wait()
            raise _rebuild(payload)
        # each process gets its own table of waiting requests, so a dead one's crash report
        # never reaches requests sent to its successor
        self._pending = {}
        self._proc, self._conn, self._alive, self.info = proc, conn, True, payload
        threading.Thread(target=self._read, args=(proc, conn, self._pending), name="model-worker-reader",
                         daemon=True).start()
        return payload

    def _read(self, proc: subprocess.Popen, conn: Any, pending: dict[int, queue.Queue]) -> None:
        try:
            while True:
                rid, kind, payload = conn.recv()
                waiting = pending.get(rid)
                if waiting is not None:
                    waiting.put((kind, payload))
        except (EOFError, OSError):
            pass
        try:
            code = proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # the socket broke but the process hangs on
            proc.kill()
            code = proc.wait()
        with self._lock:
            if self._proc is proc:
                self._alive = False
            waiting = list(pending.values())
        for q in waiting:
            q.put((_CRASHED, code))

    def _ensure_running(self) -> None:
        if self._closed:
            raise ModelError(f"the model {self.plan.display} was closed; load it again to use it")
        if self._alive and self._proc is not None and self._proc.poll() is None:
            return
        if self._proc is not None:
            print(
                f"[docqa] restarting the model process for {self.plan.display} "
                f"(the last one ended with code {self._proc.poll()})",
                file=sys.stderr,
            )
            self.restarts += 1
        self._start_locked()

    def close(self) -> None:
        """End the model process; the model cannot be used afterwards."""
        with self._lock:
            self._closed = True
            proc, conn, self._alive = self._proc, self._conn, False
            if conn is None:
                return
            try:
                conn.send((0, "shutdown", ()))
            except OSError:
                pass
            conn.close()
        if proc is not None:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.returncode == 0 and self.log_path is not None:  # a clean end: nothing to keep
                self.log_path.unlink(missing_ok=True)

    def __del__(self):  # pragma: no cover - best effort at interpreter exit
        try:
            if self._proc is not None and self._proc.poll() is None:
                self._proc.kill()
        except Exception:
            pass

    # --- requests -------------------------------------------------------------------------------
    def _send(self, kind: str, args: tuple) -> tuple[int, queue.Queue, dict]:
        with self._lock:
            self._ensure_running()
            rid = next(self._ids)
            waiting: queue.Queue = queue.Queue()
            pending = self._pending
            pending[rid] = waiting
            try:
                self._conn.send((rid, kind, args))
            except OSError:  # died between the check and the send: the reader reports it
                pass
            return rid, waiting, pending

    def _cancel(self, rid: int) -> None:
        with self._lock:
            if self._alive:
                try:
                    self._conn.send((0, "cancel", (rid,)))
                except OSError:
                    pass

    def call(self, kind: str, *args: Any, during: str = "answering a request") -> Any:
        rid, waiting, pending = self._send(kind, args)
        try:
            what, payload = waiting.get(timeout=REQUEST_TIMEOUT_S)
        except queue.Empty:  # hung (a deadlock in native code): end it, the next request restarts it
            with self._lock:
                proc = self._proc
                if proc is not None:
                    proc.kill()
                    proc.wait(timeout=30)
                self._alive = False
            raise self._crash(None, during) from None
        finally:
            pending.pop(rid, None)
        if what == "ok":
            return payload
        if what == _CRASHED:
            raise self._crash(payload, during)
        raise _rebuild(payload)

    def stream(self, messages: list[BaseMessage], stop: list[str], fields: dict[str, Any],
               kwargs: dict[str, Any], cancel: Cancel) -> Iterator[str]:
        rid, waiting, pending = self._send("stream", (messages, stop, fields, kwargs))
        finished = False
        try:
            while True:
                try:
                    what, payload = waiting.get(timeout=0.1)
                except queue.Empty:
                    if cancel.is_set():
                        return
                    continue
                if what == "chunk":
                    yield payload
                elif what == "done":
                    finished = True
                    return
                elif what == _CRASHED:
                    finished = True
                    raise self._crash(payload, "generating")
                else:
                    finished = True
                    raise _rebuild(payload)
                if cancel.is_set():
                    return
        finally:
            if not finished:
                self._cancel(rid)
            pending.pop(rid, None)


class WorkerChatModel(LocalChatModel):
    """A chat model whose generation runs in a :class:`ModelWorker`'s process."""

    worker: Any = Field(exclude=True)
    context_window: int = 4096
    rope_report: dict = Field(default_factory=dict)
    backend: str = "llamacpp"

    @property
    def _llm_type(self) -> str:
        return f"docqa-{self.backend}-process"

    def generation_engine(self) -> Any:
        return self.worker

    def _call_fields(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in CALL_FIELDS}

    def count_tokens(self, text: str) -> int:
        return int(self.worker.call("count", text))

    def format_prompt(self, messages: Sequence[BaseMessage]) -> str:
        return self.worker.call("format", list(messages), self._call_fields())

    def _stream_text(self, messages: list[BaseMessage], stop: list[str], cancel: Cancel, **kwargs: Any) -> Iterator[str]:
        sendable = {}
        for key, value in kwargs.items():
            try:
                pickle.dumps(value)
            except Exception:
                continue  # callbacks and the like stay here
            sendable[key] = value
        yield from self.worker.stream(list(messages), list(stop), self._call_fields(), sendable, cancel)


def load_in_worker(plan: Any, model_settings: Any) -> LoadedModel:
    """Start a model process for ``plan`` (from :func:`rag.models.loader.plan_load`)."""
    worker = ModelWorker(plan, model_settings)
    info = worker.start()
    chat = WorkerChatModel(
        worker=worker,
        context_window=info["context_window"],
        rope_report=info.get("rope_report") or {},
        backend=plan.backend,
        model_name=info["name"],
        **generation_settings(model_settings),
    )
    return LoadedModel(
        chat_model=chat,
        count_tokens=chat.count_tokens,
        context_window=int(info["context_window"]),
        name=info["name"],
        backend=plan.backend,
        is_stand_in=info["is_stand_in"],
        notice=info["notice"],
        max_new_tokens=info["max_new_tokens"],
        identity=info.get("identity", ""),
    )


# --- the model process ---------------------------------------------------------------------------

def serve(fd: int) -> None:
    """The model process: load, then answer requests until the caller goes away."""
    import faulthandler
    from multiprocessing.connection import Connection

    from rag.models.loader import build_loaded

    import signal

    faulthandler.enable()  # a native crash leaves the Python stack in the log
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the caller's to handle (it cancels)
    conn = Connection(fd)
    _, plan, model_settings = conn.recv()
    try:
        loaded = build_loaded(plan, model_settings)
    except BaseException as exc:
        conn.send(("error", _portable(exc)))
        return
    chat = loaded.chat_model
    conn.send((
        "loaded",
        {
            "name": loaded.name,
            "context_window": loaded.context_window,
            "notice": loaded.notice,
            "is_stand_in": loaded.is_stand_in,
            "max_new_tokens": loaded.max_new_tokens,
            "identity": loaded.identity,
            "rope_report": getattr(chat, "rope_report", None),
            "pid": os.getpid(),
        },
    ))
    send_lock = threading.Lock()

    def send(message: tuple) -> None:
        with send_lock:
            conn.send(message)

    jobs: queue.Queue = queue.Queue()
    cancels: dict[int, Cancel] = {}

    def generate() -> None:
        while True:
            rid, (messages, stop, fields, kwargs) = jobs.get()
            cancel = cancels[rid]
            pieces = None
            try:
                model = chat.model_copy(update=fields)
                pieces = model._stream_text(messages, stop, cancel, **kwargs)
                for piece in pieces:
                    send((rid, "chunk", piece))
                    if cancel.is_set():
                        break
                send((rid, "done", None))
            except Exception as exc:
                send((rid, "error", _portable(exc)))
            finally:
                if pieces is not None:
                    pieces.close()
                cancels.pop(rid, None)

    threading.Thread(target=generate, name="generate", daemon=True).start()
    while True:
        try:
            rid, kind, args = conn.recv()
        except (EOFError, OSError):
            break  # the caller is gone
        if kind == "shutdown":
            break
        if kind == "stream":
            cancels[rid] = Cancel()
            jobs.put((rid, args))
        elif kind == "cancel":
            target = cancels.get(args[0])
            if target is not None:
                target.set()
        else:
            try:
                if kind == "count":
                    result: Any = chat.count_tokens(args[0])
                elif kind == "format":
                    result = chat.model_copy(update=args[1]).format_prompt(args[0])
                else:
                    raise ModelError(f"unknown request {kind!r}")
                send((rid, "ok", result))
            except Exception as exc:
                traceback.print_exc()
                send((rid, "error", _portable(exc)))
    for cancel in list(cancels.values()):
        cancel.set()
    os._exit(0)  # daemon threads may sit in native code; nothing is left to flush


if __name__ == "__main__":
    serve(int(sys.argv[1]))

"""Helpers for the UI tests: build an AppTest of ui/app.py with injected settings and model.

The app reads two optional session-state entries (see ui/services.py): ``docqa_settings``
(a Settings object: which knowledge base, limits) and ``docqa_model`` (a ready LoadedModel,
e.g. the fake from rag.testing). Nothing else is patched.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from streamlit.testing.v1 import AppTest

REPO = Path(__file__).resolve().parent.parent
APP = REPO / "ui" / "app.py"
TIMEOUT = 240  # seconds per run: the embedder is slow on a small shared machine


def make_app(settings, model=None) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.session_state["docqa_settings"] = settings
    if model is not None:
        at.session_state["docqa_model"] = model
    return at


def run(at: AppTest) -> AppTest:
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def texts(at: AppTest) -> str:
    """Every piece of text on the page (markdown, captions, alerts, expander labels...), joined."""
    parts: list[str] = []
    for kind in ("markdown", "caption", "info", "success", "warning", "error", "title", "subheader", "toast"):
        for el in getattr(at, kind, []):
            parts.append(str(getattr(el, "value", "")))
    for exp in at.expander:
        parts.append(str(exp.label))
    for status in at.status:
        parts.append(str(getattr(status, "label", "")))
    return "\n".join(parts)


def button(at: AppTest, key: str):
    return at.button(key=key)


def upload(at: AppTest, files: list[tuple[str, bytes]], wait: bool = True) -> AppTest:
    """Drop files on the uploader (the only file_uploader on the page) and run; with ``wait``,
    run again (as the page's own timer would) until the background ingestion has finished."""
    at.file_uploader[0].set_value([(name, data, "application/octet-stream") for name, data in files])
    run(at)
    if wait:
        wait_for_ingestion(at)
    return at


def wait_for_ingestion(at: AppTest, timeout: float = TIMEOUT) -> AppTest:
    import time

    from ui import services

    settings = services.kb_settings(at.session_state["docqa_settings"], at.session_state["kb_name"])
    deadline = time.monotonic() + timeout
    while services.ingest_job(settings) is not None:
        job = services.ingest_job(settings)
        if job is not None and job.thread is not None:
            job.thread.join(timeout=0.5)
        if time.monotonic() > deadline:
            raise TimeoutError("the upload did not finish")
        run(at)
    return at


def ask(at: AppTest, question: str) -> AppTest:
    at.chat_input(key="question").set_value(question)
    return run(at)


def find_widget(at: AppTest, kind: str, key: str) -> Any:
    return getattr(at, kind)(key=key)


class CitingServer:
    """A minimal OpenAI-compatible chat server on 127.0.0.1 whose every answer is ``answer``,
    streamed word by word: a model that cites, for browser tests (the packaged stand-in rarely
    does). It answers ``/v1/models`` and streaming ``/v1/chat/completions`` only.

        with CitingServer("北京的常住人口约两千一百万[1]。") as url:   # http://127.0.0.1:PORT/v1
            ...
    """

    def __init__(self, answer: str):
        self.answer = answer
        self.requests: list[dict] = []

    def __enter__(self) -> str:
        import json
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _json(self, code: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                if self.path.rstrip("/") == "/v1/models":
                    self._json(200, {"object": "list", "data": [{"id": "citing-test-model", "object": "model",
                                                                 "max_model_len": 4096}]})
                else:
                    self._json(404, {"error": "not found"})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                if self.path.rstrip("/") != "/v1/chat/completions":
                    self._json(404, {"error": "not found"})
                    return
                server.requests.append(body)
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                pieces = [server.answer[i:i + 3] for i in range(0, len(server.answer), 3)]
                for piece in pieces + [None]:
                    delta = {"content": piece} if piece is not None else {}
                    event = {"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "citing-test-model",
                             "choices": [{"index": 0, "delta": delta,
                                          "finish_reason": None if piece is not None else "stop"}]}
                    self.wfile.write(f"data: {json.dumps(event, ensure_ascii=False)}\n\n".encode())
                self.wfile.write(b"data: [DONE]\n\n")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

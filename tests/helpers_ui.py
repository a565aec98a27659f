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


def upload(at: AppTest, files: list[tuple[str, bytes]]) -> AppTest:
    """Drop files on the uploader (the only file_uploader on the page) and run."""
    at.file_uploader[0].set_value([(name, data, "application/octet-stream") for name, data in files])
    return run(at)


def ask(at: AppTest, question: str) -> AppTest:
    at.chat_input(key="question").set_value(question)
    return run(at)


def find_widget(at: AppTest, kind: str, key: str) -> Any:
    return getattr(at, kind)(key=key)

"""Small drawing helpers for the Streamlit app (no state, no services)."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import Any, Sequence

import streamlit as st

STATUS_ICON = {
    "added": ":material/check_circle:",
    "updated": ":material/sync:",
    "unchanged": ":material/info:",
    "duplicate": ":material/content_copy:",
    "failed": ":material/error:",
    "too_large": ":material/error:",
    "unsupported": ":material/block:",
}

_CITATION = re.compile(r"\[(\d{1,3})\]")


def source_label(src: dict) -> str:
    """``[2] 年报.pdf · p. 3`` for a source dict of ``KnowledgeBase.ask``."""
    name = src.get("file_name") or Path(str(src.get("source", ""))).name or src.get("title") or "?"
    page = src.get("page")
    where = f" · p. {page}" if page else ""
    return f"[{src.get('n', '?')}] {name}{where}"


def highlight_citations(answer: str, sources: Sequence[dict]) -> str:
    """Bold the number of each ``[n]`` marker that points at a shown source.

    ``[**1**]``, not ``**[1]**``: CommonMark does not open emphasis between a CJK character and
    a bracket, so ``万**[1]**。`` would show its asterisks; inside the brackets it always works.
    """
    known = {str(s.get("n")) for s in sources}
    return _CITATION.sub(lambda m: f"[**{m.group(1)}**]" if m.group(1) in known else m.group(0), answer)


def render_sources(sources: Sequence[dict]) -> None:
    if not sources:
        return
    st.caption("Sources — open one to read the passage")
    for src in sources:
        score = src.get("score")
        label = source_label(src) + (f" · relevance {score:.2f}" if isinstance(score, (int, float)) else "")
        with st.expander(label):
            st.markdown(str(src.get("text", "")).strip() or "_(empty passage)_")
            st.caption(str(src.get("source", "")))


def render_answer(message: dict) -> None:
    """An assistant turn: the answer, its notice, and one expander per cited source."""
    if message.get("error"):
        st.error(message["content"])
        return
    sources = message.get("sources") or []
    st.markdown(highlight_citations(message.get("content", ""), sources))
    if message.get("notice"):
        st.warning(message["notice"], icon=":material/warning:")
    if sources:
        render_sources(sources)
    else:
        st.caption("No passage of the chosen documents was relevant enough; nothing was cited.")


def render_upload_outcomes(outcomes: Sequence[Any]) -> None:
    for o in outcomes:
        icon = STATUS_ICON.get(o.status)
        text = f"**{o.name}** — {o.message}"
        if o.ok:
            (st.success if o.status in ("added", "updated") else st.info)(text, icon=icon)
        else:
            st.error(text, icon=icon)


def when(ts: float | None) -> str:
    if not ts:
        return "—"
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M")


def doc_label(doc) -> str:
    names = ", ".join(doc.file_names) or doc.title or doc.doc_id[:8]
    return names

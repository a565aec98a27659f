"""Small drawing helpers for the Streamlit app (no state, no services)."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import Any, Sequence

import streamlit as st

from ui.i18n import N_, _

STATUS_ICON = {
    "added": ":material/check_circle:",
    "updated": ":material/sync:",
    "unchanged": ":material/info:",
    "duplicate": ":material/content_copy:",
    "failed": ":material/error:",
    "too_large": ":material/error:",
    "unsupported": ":material/block:",
}

STATUS_TEXT = {
    "added": N_("added"),
    "updated": N_("updated"),
    "unchanged": N_("unchanged"),
    "duplicate": N_("duplicate"),
    "failed": N_("failed"),
    "too_large": N_("too large"),
    "unsupported": N_("unsupported"),
    "checking": N_("checking"),
    "reading": N_("reading"),
    "embedding": N_("embedding"),
}

_CITATION = re.compile(r"\[(\d{1,3})\]")


def status_text(status: str) -> str:
    """An upload or ingestion status in the interface language."""
    return _(STATUS_TEXT[status]) if status in STATUS_TEXT else status


def source_label(src: dict) -> str:
    """``[2] 年报.pdf · p. 3`` (``pp. 3–4`` when the passage runs over a page break) for a source
    dict of ``KnowledgeBase.ask``."""
    name = src.get("file_name") or Path(str(src.get("source", ""))).name or src.get("title") or "?"
    page = src.get("page")
    pages = src.get("pages") or []
    if len(pages) == 2 and pages[0] != pages[1]:  # a passage widened over a page break
        where = " · " + _("pp. {first}–{last}", first=pages[0], last=pages[1])
    else:
        where = " · " + _("p. {page}", page=page) if page else ""
    scanned = " · " + _("OCR") if src.get("ocr") else ""  # read from a scan: may hold misreadings
    return f"[{src.get('n', '?')}] {name}{where}{scanned}"


def highlight_citations(answer: str, sources: Sequence[dict]) -> str:
    """Bold the number of each ``[n]`` marker that points at a shown source.

    ``[**1**]``, not ``**[1]**``: CommonMark does not open emphasis between a CJK character and
    a bracket, so ``万**[1]**。`` would show its asterisks; inside the brackets it always works.
    """
    known = {str(s.get("n")) for s in sources}
    return _CITATION.sub(lambda m: f"[**{m.group(1)}**]" if m.group(1) in known else m.group(0), answer)


def passage_html(text: str, spans: Sequence[Sequence[int]], css_class: str = "docqa-quote") -> str:
    """The passage as safe HTML (its own markup escaped) with ``spans`` marked."""
    import html

    out, at = [], 0
    for start, end in sorted((int(s), int(e)) for s, e in spans):
        if start < at or end <= start:
            continue
        out.append(html.escape(text[at:start]))
        out.append(f'<mark class="{css_class}">{html.escape(text[start:end])}</mark>')
        at = end
    out.append(html.escape(text[at:]))
    return "".join(out).strip().replace("\n", "<br>")


def render_sources(sources: Sequence[dict], key: str | None = None) -> None:
    """One expander per source; with ``key`` (unique per answer on the page), a PDF source whose
    file is still there can show its page with the passage highlighted (rendered on demand)."""
    if not sources:
        return
    st.caption(_("Sources — open one to read the passage"))
    for src in sources:
        score = src.get("score")
        label = source_label(src) + (" · " + _("relevance {score}", score=f"{score:.2f}")
                                     if isinstance(score, (int, float)) else "")
        text = str(src.get("text", ""))
        with st.expander(label, expanded=bool(src.get("quotes"))):
            passage = src.get("passage")
            if src.get("quotes"):  # quote mode: the quoted sentences marked inside their passage
                st.markdown(passage_html(text, src["quotes"]), unsafe_allow_html=True)
            elif passage and (passage[0] > 0 or passage[1] < len(text)):
                # widened with its neighbours: the retrieved passage is marked in its surroundings
                st.markdown(passage_html(text, [passage], "docqa-passage"), unsafe_allow_html=True)
            else:
                st.markdown(text.strip() or "_" + _("(empty passage)") + "_")
            st.caption(str(src.get("source", "")))
            if key is not None and src.get("boxes") and str(src.get("source", "")).lower().endswith(".pdf"):
                render_page_toggle(src, f"{key}_page_{src.get('n')}")


def render_page_toggle(src: dict, key: str) -> None:
    """A switch that shows the cited PDF page as an image with the passage's boxes highlighted."""
    from ui.services import page_png

    page = src.get("page") or src["boxes"][0][0]
    if not st.toggle(_("Show page {page} with the passage marked", page=page), key=key):
        return
    try:
        png = page_png(str(src["source"]), int(page), tuple(tuple(b) for b in src["boxes"]))
    except Exception as exc:  # the file moved or changed since it was added: say so, keep the answer
        st.caption(_("The page cannot be shown: {error}", error=exc))
        return
    st.image(png, caption=source_label(src), width="stretch")


KIND_LABELS = {"references": N_("reference list"), "repeated": N_("repeated text"),
               "other-language-abstract": N_("abstract in the other language")}


def render_retrieval_test(hits: Sequence[Any], threshold: float) -> None:
    """The ranked passages of a retrieval test (rag.retrieval.Hit, searched with no threshold):
    each with its 0..1 score and the parts it is made of, and whether ``threshold`` keeps it."""
    kept = sum(1 for h in hits if h.score >= threshold)
    if not hits:
        st.caption(_("No passage was found at all."))
        return
    st.caption(_("{kept} of {n} passages reach the threshold {threshold}: only those would be used to answer.",
                 kept=kept, n=len(hits), threshold=f"{threshold:.2f}"))
    for rank, hit in enumerate(hits, 1):
        label = source_label({"n": rank, "file_name": hit.file_name, "page": hit.page, "source": hit.source,
                              "ocr": hit.ocr})
        label += " · " + _("relevance {score}", score=f"{hit.score:.2f}")
        if hit.score < threshold:
            label += " · " + _("below the threshold")
        with st.expander(label):
            dense, words, extra = st.columns(3)
            cosine = "–" if hit.dense_similarity is None else f"{hit.dense_similarity:.3f}"
            dense.metric(_("meaning (dense)"), f"{hit.dense_relevance:.2f}", help=_("cosine {cosine}", cosine=cosine))
            words.metric(_("words (BM25)"), f"{hit.lexical_relevance:.2f}", help=_("BM25 {bm25}", bm25=f"{hit.bm25:.2f}"))
            if hit.rerank_score is not None:
                extra.metric(_("reranker"), f"{hit.rerank_score:.2f}")
            kind = hit.extra.get("kind")
            if kind:
                extra.caption(_("Ranked low: {kind}", kind=_(KIND_LABELS.get(kind, kind))))
            st.markdown(hit.text.strip() or "_" + _("(empty passage)") + "_")
            st.caption(str(hit.source))
            if hit.boxes and str(hit.source).lower().endswith(".pdf"):
                render_page_toggle({"n": rank, "file_name": hit.file_name, "source": hit.source, "page": hit.page,
                                    "boxes": [[p, *b] for p, b in hit.boxes]}, f"retrieval_page_{rank}")


def render_answer(message: dict, key: str | None = None) -> None:
    """An assistant turn: the answer, its notice, and one expander per cited source (``key``: see
    :func:`render_sources`)."""
    if message.get("error"):
        st.error(message["content"])
        return
    sources = message.get("sources") or []
    if message.get("mode") == "quote" and message.get("found", True):
        st.caption(":material/format_quote: " + _("Quoted from the documents (no model wrote this)"))
        for line in str(message.get("content", "")).split("\n\n"):
            st.markdown("> " + highlight_citations(line, sources))
    else:
        st.markdown(highlight_citations(message.get("content", ""), sources))
    searched = message.get("searched_for") or []
    if len(searched) > 1:  # a follow-up and its rewrite, or a question and its translation
        st.caption(_("Searched for: {queries}", queries=" · ".join(f"“{q}”" for q in searched)))
    if message.get("notice") and message.get("mode") != "quote":
        st.warning(_(message["notice"]), icon=":material/warning:")
    translation_note = (message.get("translation") or {}).get("note")
    if translation_note:  # a question in the other language that could not be translated
        st.caption(":material/translate: " + _(translation_note))
    if sources:
        # quote mode: only the passages something was quoted from are opened and marked
        render_sources([s for s in sources if s.get("quotes")] or sources
                       if message.get("mode") == "quote" else sources, key=key)
    else:
        st.caption(_("No passage of the chosen documents was relevant enough; nothing was cited."))


def render_upload_outcomes(outcomes: Sequence[Any]) -> None:
    for o in outcomes:
        icon = STATUS_ICON.get(o.status)
        said = _(o.template, **o.values) if o.template else o.message
        if o.renamed_to:
            said += _(" (saved as {name})", name=o.renamed_to)
        text = f"**{o.name}** — {said}"
        if o.ok:
            (st.success if o.status in ("added", "updated") else st.info)(text, icon=icon)
        else:
            st.error(text, icon=icon)
        for warning in getattr(o, "warnings", ()):  # added, but read only in part
            st.warning(f"**{o.name}** — " + _("read only in part: {warning}", warning=warning),
                       icon=":material/warning:")


def when(ts: float | None) -> str:
    if not ts:
        return "—"
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M")


def doc_label(doc) -> str:
    names = ", ".join(doc.file_names) or doc.title or doc.doc_id[:8]
    return names

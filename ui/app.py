"""alpaca-docqa in the browser: ``streamlit run ui/app.py`` (or ``make run``).

Upload documents, manage knowledge bases, ask questions with cited answers, summarise.
Configuration comes from :class:`rag.settings.Settings` (``DOCQA_*`` variables, ``docqa.toml``);
the sidebar changes the model, the sampling and the reranker for this browser session. The
server binds to 127.0.0.1 (``.streamlit/config.toml``). How knowledge bases are laid out on disk and how tests
inject settings and a model: see :mod:`ui.services`.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `streamlit run ui/app.py` puts ui/ on the path, not the project
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

from rag.models.registry import list_models  # noqa: E402
from rag.settings import Settings  # noqa: E402
from rag.i18n import format_duration  # noqa: E402
from rag.i18n import LANGUAGES  # noqa: E402
from ui import components as ui  # noqa: E402
from ui.i18n import N_, _  # noqa: E402
from ui import i18n, services  # noqa: E402

STRATEGIES = {
    "auto": N_("auto — pick by length"),
    "stuff": N_("stuff — everything in one prompt"),
    "map_reduce": N_("map_reduce — summarise parts, then combine"),
    "refine": N_("refine — read part by part, improving the summary"),
}
MODEL_SOURCES = ["stand_in", "variant", "path", "url"]
MODEL_SOURCE_LABELS = {
    "stand_in": N_("Stand-in (packaged SmolLM2)"),
    "variant": N_("Chinese-Alpaca-2 variant"),
    "path": N_("Local path"),
    "url": N_("Server URL"),
}
BACKENDS = ["auto", "llamacpp", "transformers", "openai"]
LANGUAGE_CHOICES = {"auto": N_("Automatic (browser language)"), **LANGUAGES}

st.set_page_config(page_title="alpaca-docqa", page_icon=":material/menu_book:", layout="wide")
state = st.session_state


# -- settings -----------------------------------------------------------------------------------


def base_settings() -> Settings:
    injected = state.get(services.SETTINGS_KEY)
    if injected is not None:
        return injected
    if "_env_settings" not in state:
        state["_env_settings"] = Settings()
    return state["_env_settings"]


def init_state(base: Settings) -> None:
    ms = base.model
    defaults = {
        "kb_name": services.DEFAULT_KB,
        "upload_results": {},
        "uploader_gen": 0,
        "summary": None,
        "model_name": ms.name,
        "model_backend": ms.backend,
        "model_ctx": int(ms.context_length or 0),
        "temperature": min(max(float(ms.temperature), 0.0), 2.0),
        "max_new_tokens": min(max(int(ms.max_new_tokens), 1), 32768),
        "k": min(max(int(base.retrieval.k), 1), 50),
        "reranker": base.retrieval.reranker or "",
        "context_budget": base.answer.context_budget,
        "confirm_delete_kb": False,
    }
    for key, value in defaults.items():
        state.setdefault(key, value)
    if state.get("model_source") not in MODEL_SOURCES:
        name = ms.name.strip()
        if not name:
            state.model_source = MODEL_SOURCES[0]
        elif name.startswith(("http://", "https://")):
            state.model_source, state.model_url = MODEL_SOURCES[3], name
        elif name.lower() in {m.key for m in list_models()}:
            state.model_source, state.model_variant = MODEL_SOURCES[1], name.lower()
        else:  # a file, folder, Hub id or quantised registry name
            state.model_source, state.model_path = MODEL_SOURCES[2], name


def effective_settings(base: Settings, kb_dir: Path, reranker: str | None = None) -> Settings:
    """The base settings with this session's knowledge base, model, sampling and reranker
    choices (``reranker``: one that loaded, or None for none)."""
    s = base.with_store(kb_dir)
    model = s.model.model_copy(update={
        "name": state.model_name,
        "backend": state.model_backend,
        "context_length": int(state.model_ctx) or None,
        "temperature": float(state.temperature),
        "max_new_tokens": int(state.max_new_tokens),
    })
    retrieval = s.retrieval.model_copy(update={"k": int(state.k), "reranker": reranker})
    answer = s.answer.model_copy(update={"context_budget": state.context_budget})
    return s.model_copy(update={"model": model, "retrieval": retrieval, "answer": answer})


TRANSLATED_CHOICES = ("model_source", "context_budget", "ui_language", "answer_mode", "summary_mode", "strategy")
"""Keys of the radios and select boxes whose options are shown translated."""

base = base_settings()
init_state(base)
i18n.choose_language(state.get("ui_language") or base.ui.language)
if state.get("_choices_language") != i18n.language():
    # The browser hands a radio's or select box's choice back as the label it shows. After a
    # language change that label (in the old language) matches no option, and Streamlit would
    # keep the label text itself as the value. Setting each choice again from here sends the
    # browser the label in the new language.
    for choice_key in TRANSLATED_CHOICES:
        if choice_key in state:
            state[choice_key] = state[choice_key]
    state["_choices_language"] = i18n.language()


# -- sidebar: knowledge bases ----------------------------------------------------------------------

sb = st.sidebar
sb.title(":material/menu_book: alpaca-docqa")
kbs = services.list_kbs(base)
if "_next_kb" in state:  # chosen by a button below in the previous run
    state.kb_name = state.pop("_next_kb")
if state.kb_name not in kbs:
    state.kb_name = services.DEFAULT_KB
sb.selectbox(
    _("Knowledge base"), list(kbs), key="kb_name",
    help=_("'default' is {default}; others live in {root}.", default=kbs[services.DEFAULT_KB], root=services.kb_root(base)),
)
kb_dir = kbs[state.kb_name]
with sb.expander(_("Manage knowledge bases")):
    with st.form("new_kb", clear_on_submit=True, border=False):
        new_name = st.text_input(_("New knowledge base"), placeholder=_("e.g. 合同 or reports-2024"), key="new_kb_name")
        if st.form_submit_button(_("Create"), key="create_kb"):
            try:
                services.create_kb(base, new_name)
            except services.KBNameError as exc:
                st.error(_(exc.template, **exc.values))
            else:
                state["_next_kb"] = services.validate_kb_name(new_name)
                st.rerun()
    if state.kb_name == services.DEFAULT_KB:
        st.caption(_("The default knowledge base cannot be deleted (delete its documents instead)."))
    elif not state.confirm_delete_kb:
        adding = services.ingest_job(base.with_store(kb_dir)) is not None  # not while files go in
        if st.button(_("Delete '{name}'…", name=state.kb_name), key="ask_delete_kb", disabled=adding):
            state.confirm_delete_kb = True
            st.rerun()
    else:
        st.warning(_("Delete knowledge base '{name}' with all its documents and uploads? This cannot be undone.",
                     name=state.kb_name))
        c1, c2 = st.columns(2)
        if c1.button(_("Yes, delete"), type="primary", key="confirm_delete_kb_yes"):
            name = state.kb_name
            services.delete_kb(base, name)
            state.pop(f"conversation_{name}", None)
            state["_next_kb"] = services.DEFAULT_KB
            state.confirm_delete_kb = False
            st.toast(_("Deleted knowledge base '{name}'", name=name))
            st.rerun()
        if c2.button(_("Cancel"), key="confirm_delete_kb_no"):
            state.confirm_delete_kb = False
            st.rerun()


# -- sidebar: model and answering settings ------------------------------------------------------------

sb.subheader(_("Model"))
model_info = sb.container()
with sb.expander(_("Choose the model"), expanded=False):
    with st.form("model_form", border=False):
        st.radio(_("Model"), MODEL_SOURCES, key="model_source", format_func=i18n.labels(MODEL_SOURCE_LABELS).get)
        variants = [m.key for m in list_models()]
        st.selectbox(_("Variant (downloaded from the Hub when missing and allowed)"), variants, key="model_variant")
        st.text_input(_("Local path (.gguf file, HF model folder) or Hub id"), key="model_path")
        st.text_input(_("Server URL (OpenAI-compatible)"), key="model_url", placeholder="http://127.0.0.1:8000/v1")
        st.selectbox(_("Backend"), BACKENDS, key="model_backend_choice",
                     index=BACKENDS.index(state.model_backend) if state.model_backend in BACKENDS else 0)
        st.number_input(_("Context length (0 = the model's own)"), min_value=0, max_value=262144, step=1024,
                        key="model_ctx_choice", value=int(state.model_ctx))
        if st.form_submit_button(_("Apply"), key="apply_model"):
            chosen = {
                "stand_in": "",
                "variant": state.get("model_variant", ""),
                "path": (state.get("model_path") or "").strip(),
                "url": (state.get("model_url") or "").strip(),
            }[state.model_source]
            if state.model_source != "stand_in" and not chosen:
                st.error(_("Fill in the field for the model source you picked."))
            else:
                state.model_name = chosen
                state.model_backend = state.model_backend_choice
                state.model_ctx = int(state.model_ctx_choice)
                st.rerun()

sb.subheader(_("Answering"))
sb.slider(_("Passages per question (k)"), 1, max(20, state.k), key="k",
          help=_("How many passages retrieval hands to the model (more on long-context models)."))
sb.text_input(_("Reranker (empty = off)"), key="reranker", placeholder="BAAI/bge-reranker-v2-m3",
              help=_("A cross-encoder (Hub name or model folder) that reads the best {n} passages found together "
                     "with the question and reorders them: more accurate, but slower on a CPU.",
                     n=base.retrieval.rerank_candidates))
reranker = (state.reranker or "").strip() or None
failed = state.get("_reranker_failed") or (None, "")  # not tried again on every rerun
if reranker is not None and reranker != failed[0]:  # loaded here (once per server): a bad name is said at once
    try:
        with sb, st.spinner(_("Loading {name} (first time only)…", name=reranker)):
            from rag.rerank import load_reranker

            load_reranker(reranker, base.retrieval.reranker_device)
    except Exception as exc:  # the questions are still answered, without reranking
        failed = state["_reranker_failed"] = (reranker, str(exc))
if reranker is not None and reranker == failed[0]:
    sb.error(_("Reranker not available, searching without it: {error}", error=failed[1]))
    reranker = None
sb.slider(_("Temperature"), 0.0, max(1.5, state.temperature), step=0.05, key="temperature",
          help=_("0 = always the most likely words."))
sb.number_input(_("Max new tokens"), 1, max(4096, state.max_new_tokens), step=16, key="max_new_tokens",
                help=_("Longest answer the model may write."))
budgets = {"auto": N_("Fast: what the model reads in about {s} s"), "window": N_("The model's whole window")}
if state.context_budget not in budgets:  # a number from the settings
    budgets[state.context_budget] = N_("{n} tokens")
sb.radio(_("Context per answer"), list(budgets), key="context_budget",
         format_func={k: _(v, s=f"{base.answer.first_token_s:g}", n=k) for k, v in budgets.items()}.get,
         help=_("How much of the documents goes into the model's prompt. On a CPU a full window takes minutes "
                "before the first word; 'fast' widens the passages only as far as the model reads them within "
                "the wait (its speed is measured once)."))
sb.selectbox(_("Language"), list(LANGUAGE_CHOICES), key="ui_language", format_func=i18n.labels(LANGUAGE_CHOICES).get,
             index=list(LANGUAGE_CHOICES).index(base.ui.language) if base.ui.language in LANGUAGE_CHOICES else 0,
             help=_("Language of this interface; answers follow the language of each question."))

settings = effective_settings(base, kb_dir, reranker)


# -- the knowledge base and the model -------------------------------------------------------------------

try:
    with st.spinner(_("Opening knowledge base '{name}' (first time: loading the embedder)…", name=state.kb_name)):
        kb = services.open_kb(settings)
except Exception as exc:  # a broken store or a missing embedder: say so, keep the page usable
    st.error(_("The knowledge base at {path} cannot be opened: {error}", path=kb_dir, error=exc))
    st.stop()

_model_cache: dict = {}


def get_model():
    """(LoadedModel with this session's sampling, error text); loads once per server, with feedback."""
    if "value" not in _model_cache:
        injected = state.get(services.MODEL_KEY)
        try:
            if injected is not None:
                loaded = injected
            else:
                label = settings.model.name or _("the stand-in model")
                with st.spinner(_("Loading {name} (first time only)…", name=label)):
                    loaded = services.load_model(settings)
            _model_cache["value"] = (services.with_sampling(loaded, settings), None)
        except Exception as exc:
            _model_cache["value"] = (None, f"{type(exc).__name__}: {exc}")
    return _model_cache["value"]


docs = kb.documents()
doc_names = {d.doc_id: ui.doc_label(d) for d in docs}
# Conversations live on disk per knowledge base; a new session (a reload, a restarted server)
# reopens the most recent one.
conversations = services.conversation_store(kb_dir)
conv_key = f"conversation_{state.kb_name}"
if conv_key not in state:
    latest = conversations.list()
    state[conv_key] = latest[0].id if latest else None
if state[conv_key] and not conversations.exists(state[conv_key]):
    state[conv_key] = None
chat_log = conversations.messages(state[conv_key]) if state[conv_key] else []


def remember(message: dict) -> None:
    if state[conv_key] is None:
        state[conv_key] = conversations.create()
    conversations.append(state[conv_key], message)
    chat_log.append(message)


conversations_slot = sb.container()  # drawn last, so a conversation begun below is listed

st.title(_("Ask your documents"))
st.caption(_("Knowledge base **{name}** · {n} document(s) · `{path}`", name=state.kb_name, n=len(docs), path=kb_dir))

scope_key = f"scope_{state.kb_name}"
if scope_key in state:
    state[scope_key] = [d for d in state[scope_key] if d in doc_names]
chosen_ids = st.multiselect(
    _("Use only these documents (empty = all)"), list(doc_names), key=scope_key,
    format_func=lambda i: doc_names.get(i, i), disabled=not docs, placeholder=_("All documents"),
    help=_("Questions and summaries only read the documents chosen here."),
)
doc_ids = list(chosen_ids) or None

tab_chat, tab_docs, tab_summary, tab_retrieval = st.tabs(
    [":material/chat: " + _("Chat"), ":material/description: " + _("Documents"), ":material/summarize: " + _("Summary"),
     ":material/manage_search: " + _("Retrieval test")]
)


# -- documents -------------------------------------------------------------------------------------------

def progress_text(p) -> str:
    """``2/5 files · 120/300 chunks · about 1 min 5 s left · report.pdf: embedding``; while a
    scanned PDF is OCR'd: ``… · OCR page 3/12 of scan.pdf``"""
    parts = [_("{done}/{total} files", done=p.done, total=p.total)]
    if p.chunks_total:
        parts.append(_("{done}/{total} chunks", done=p.chunks_done, total=p.chunks_total))
    if p.eta_s is not None:
        parts.append(_("about {time} left", time=format_duration(p.eta_s, i18n.language())))
    if p.name and p.status == "ocr":
        page, pages = getattr(p, "page", 0), getattr(p, "pages", 0)
        parts.append(_("OCR page {page}/{pages} of {name}", page=page, pages=pages, name=p.name) if page
                     else f"{p.name}: {ui.status_text('reading')}")
    elif p.name:
        parts.append(f"{p.name}: {ui.status_text(p.status)}")
    return " · ".join(parts)


@st.fragment(run_every=1.0)
def ingest_panel() -> None:
    """Progress of the files being added; redrawn every second on its own while the rest of
    the page (chat included) works as usual. When the job is done the whole page is redrawn."""
    job = services.ingest_job(settings)
    if job is None:
        return
    if job.finished:
        services.take_finished_job(settings)
        if job.error:
            state.upload_error = job.error
        else:
            state.upload_results[state.kb_name] = job.batch.outcomes
        st.rerun()
    with st.container(border=True):
        st.markdown(_("**Adding {n} file(s)** — you can keep asking questions meanwhile.", n=len(job.names)))
        st.progress(min(max(job.progress.fraction, 0.0), 1.0), text=progress_text(job.progress))


def upload_summary(outcomes) -> str:
    counts: dict[str, int] = {}
    for o in outcomes:
        counts[o.status] = counts.get(o.status, 0) + 1
    return _(", ").join(f"{v} {ui.status_text(k)}" for k, v in counts.items())


with tab_docs:
    # ui.max_upload_mb is enforced here; Streamlit's server.maxUploadSize (config.toml) caps it too
    limit = float(min(base.ui.max_upload_mb, st.get_option("server.maxUploadSize") or base.ui.max_upload_mb))
    job = services.ingest_job(settings)
    uploaded = st.file_uploader(
        _("Add documents — drag and drop or browse (PDF, DOCX, HTML, Markdown, text; up to {mb} MB each)", mb=f"{limit:g}"),
        # no type filter: the browser would drop other files silently; each is reported instead
        accept_multiple_files=True,
        key=f"uploader_{state.uploader_gen}",
        disabled=job is not None,
    )
    if uploaded and job is None:
        files = [(f.name, f.getvalue()) for f in uploaded]
        # ingested in the background: chat and the other tabs stay usable meanwhile
        services.start_ingest_job(kb, settings, files, limit)
        state.uploader_gen += 1  # a fresh, empty uploader
        st.rerun()
    if job is not None:
        ingest_panel()
    if state.get("upload_error"):
        st.error(_("Adding the files failed: {error}", error=state.pop("upload_error")))
    results = state.upload_results.get(state.kb_name)
    if results:
        with st.container(border=True):
            st.markdown(_("**Last upload** — {summary}", summary=upload_summary(results)))
            ui.render_upload_outcomes(results)
            if st.button(_("Dismiss"), key="dismiss_upload"):
                state.upload_results.pop(state.kb_name, None)
                st.rerun()

    if state.get("deleted_message"):
        st.success(state.pop("deleted_message"), icon=":material/delete:")
    st.subheader(_("Documents ({n})", n=len(docs)))
    old_ids = kb.store.outdated_ids()  # one query; the documents are already read
    outdated = [d for d in docs if d.doc_id in old_ids]
    if outdated:
        st.warning(_("{n} document(s) were indexed by an older version: text boxes, list numbers, notes and "
                     "new ways of matching words are missing from them until they are indexed again.",
                     n=len(outdated)), icon=":material/update:")
        if st.button(_("Index them again now"), key="rebuild_outdated", disabled=services.ingest_job(settings) is not None):
            with st.spinner(_("Re-indexing…")):
                services.reindex(kb, rebuild=True, doc_ids=[d.doc_id for d in outdated])
            st.rerun()
    if not docs:
        st.info(_("This knowledge base is empty. Drop files above to add them."))
    else:
        for d in docs:
            # each figure carries its own label, so a narrow screen (where columns stack) keeps them
            cols = st.columns([8, 1], vertical_alignment="center")
            stems = {Path(n).stem for n in d.file_names}
            title = f" — {d.title}" if d.title and d.title not in d.file_names and d.title not in stems else ""
            cols[0].markdown(f"{doc_names[d.doc_id]}{title}  \n`{d.doc_id[:12]}` · {d.file_type} · " + _(
                "{pages} page(s) · {chunks} chunk(s) · added {when}", pages=d.pages, chunks=d.chunk_count,
                when=ui.when(d.added_at)))
            if cols[1].button("", icon=":material/delete:", key=f"del_{d.doc_id}",
                              help=_("Delete {name}", name=doc_names[d.doc_id])):
                state.confirm_delete_doc = d.doc_id
                st.rerun()
            if state.get("confirm_delete_doc") == d.doc_id:
                st.warning(_("Delete **{name}**? It leaves the knowledge base and its uploaded file is deleted.",
                             name=doc_names[d.doc_id]))
                yes, no = st.columns(2)
                if yes.button(_("Yes, delete"), type="primary", key="confirm_delete_doc_yes"):
                    with st.spinner(_("Deleting {name}…", name=doc_names[d.doc_id])):
                        services.delete_document(kb, d.doc_id)
                    state.confirm_delete_doc = None
                    state.upload_results.pop(state.kb_name, None)  # its outcomes are stale now
                    state.deleted_message = _("Deleted {name}.", name=doc_names[d.doc_id])
                    st.rerun()
                if no.button(_("Cancel"), key="confirm_delete_doc_no"):
                    state.confirm_delete_doc = None
                    st.rerun()
        with st.expander(_("Re-index")):
            st.caption(_("Read the documents' files again: changed files are re-indexed, unchanged ones are skipped. "
                         "'Rebuild' re-splits and re-embeds everything (after changing chunking or embedding settings)."))
            rebuild = st.checkbox(_("Rebuild from scratch"), key="rebuild")
            if st.button(_("Re-index now"), key="reindex", disabled=services.ingest_job(settings) is not None):
                with st.status(_("Re-indexing…"), expanded=True) as status:
                    bar = st.progress(0.0)

                    def on_reindex(p) -> None:
                        bar.progress(min(p.fraction, 1.0), text=progress_text(services.UploadProgress(
                            Path(p.path).name, p.status, p.done, p.total, p.chunks_done, p.chunks_total,
                            p.fraction, p.eta_s, page=p.page, pages=p.pages)))

                    result = services.reindex(kb, rebuild=rebuild, doc_ids=doc_ids, progress=on_reindex)
                    r = result.report
                    if r is not None:
                        st.write(_("added {added}, updated {updated}, unchanged {unchanged}, chunks {chunks}, "
                                   "failed {failed}", added=r.added, updated=r.updated, unchanged=r.unchanged,
                                   chunks=r.chunks, failed=len(r.failed)))
                        for f in r.failed:
                            st.error(f"{Path(f.path).name}: {f.error}")
                    for m in result.missing:
                        st.warning(_("{path}: the file is gone; the stored copy was kept (delete it above if unwanted).",
                                     path=m))
                    status.update(label=_("Re-index finished"), state="error" if (r and r.failed) else "complete")


# -- chat --------------------------------------------------------------------------------------------------

with tab_chat:
    notice_slot = st.container()
    if not docs:
        st.info(_("**No documents yet.** Open the **Documents** tab and drop PDF, Word, HTML, Markdown or text files "
                  "there; then ask questions here. Answers cite the passages they use [1], [2] …"))
    # Quote mode is the default while only the packaged stand-in would answer (it cannot answer
    # Chinese questions usefully); with a real model it is one click away as the evidence.
    stand_in = services.stand_in_answers(settings, state.get(services.MODEL_KEY))
    if state.get("_answer_mode_for") != stand_in:
        state.answer_mode = "quote" if stand_in else "generate"
        state._answer_mode_for = stand_in
    answer_modes = {"quote": N_("Quotes from the documents"), "generate": N_("The model's own answer")}
    st.radio(_("Answer with"), list(answer_modes), key="answer_mode", horizontal=True,
             format_func=i18n.labels(answer_modes).get)
    if state.answer_mode == "quote" and stand_in:
        st.caption(_("Only the small stand-in model is available, and it cannot answer well: answers are the "
                     "documents' own sentences that best match the question, with their sources. Choose "
                     "**The model's own answer** to let it write anyway, or pick a Chinese-Alpaca-2 model."))
    elif state.answer_mode == "quote":
        st.caption(_("Show me the evidence: the documents' own sentences that best match the question."))
    conversation = st.container()  # above the input, also for the turn being answered now
    for position, message in enumerate(chat_log):
        with conversation.chat_message(message["role"]):
            if message["role"] == "assistant":
                ui.render_answer(message, key=f"turn{position}")
            else:
                st.markdown(message["content"])
    question = st.chat_input(_("Ask a question about your documents…") if docs else _("Add documents first"),
                             disabled=not docs, key="question")
    if question:
        history = services.history_pairs(chat_log)
        remember({"role": "user", "content": question})
        with conversation.chat_message("user"):
            st.markdown(question)
        with conversation.chat_message("assistant"):
            mode = state.answer_mode
            model, error = (None, None) if mode == "quote" else get_model()
            if model is None and mode != "quote":
                message = {"role": "assistant", "content": _("The model could not be loaded: {error}", error=error),
                           "error": True}
            else:
                kb_view = kb if mode == "quote" else services.with_model(kb, model, settings)
                final: dict = {}

                slot = st.empty()
                with slot.container():
                    answer_area = st.container()
                    sources_area = st.empty()  # filled as soon as retrieval is done

                def tokens():
                    for event in kb_view.stream_ask(question, history=history, doc_ids=doc_ids, k=int(state.k),
                                                    mode=mode):
                        if event.get("type") == "token":
                            yield event.get("text", "")
                        elif event.get("type") == "sources":
                            with sources_area.container():
                                ui.render_sources(event.get("sources") or [])
                        elif event.get("type") == "final":
                            final.update(event)

                try:
                    with answer_area:
                        with st.spinner(_("Searching the documents and answering…")):
                            streamed = st.write_stream(tokens())
                except Exception as exc:
                    message = {"role": "assistant", "error": True,
                               "content": _("Answering failed: {error}", error=f"{type(exc).__name__}: {exc}")}
                else:
                    answer = final.get("answer", streamed if isinstance(streamed, str) else "")
                    message = {"role": "assistant", "content": answer, "sources": final.get("sources", []),
                               "notice": final.get("notice") or (model.notice if model else None),
                               "mode": final.get("mode", "generate"), "found": final.get("found", True),
                               "searched_for": final.get("searched_for", []),
                               "translation": final.get("translation")}
                    slot.empty()
            ui.render_answer(message, key=f"turn{len(chat_log)}")  # its place once remembered
        remember(message)


# -- summary ----------------------------------------------------------------------------------------------

with tab_summary:
    scope = ", ".join(doc_names[i] for i in chosen_ids) if chosen_ids else _("all documents")
    st.caption(_("Summarises: {scope} (choose above).", scope=scope))
    stand_in = services.stand_in_answers(settings, state.get(services.MODEL_KEY))
    if state.get("_summary_mode_for") != stand_in:  # extractive while only the stand-in would write
        state.summary_mode = "extractive" if stand_in else "generate"
        state._summary_mode_for = stand_in
    summary_modes = {"extractive": N_("Outline and key sentences (no model)"), "generate": N_("Written by the model")}
    st.radio(_("Summary"), list(summary_modes), key="summary_mode", horizontal=True,
             format_func=i18n.labels(summary_modes).get)
    extractive = state.summary_mode == "extractive"
    strategy = st.selectbox(_("Strategy"), list(STRATEGIES), format_func=i18n.labels(STRATEGIES).get, key="strategy",
                            disabled=extractive)
    if extractive and st.button(_("Summarize"), disabled=not docs, key="summarize", type="primary"):
        with st.spinner(_("Finding the outline and the most central sentences…")):
            try:
                result = kb.extractive_summary(doc_ids)
            except Exception as exc:
                st.error(f"{type(exc).__name__}: {exc}")
            else:
                names = [doc_names[i] for i in chosen_ids] if chosen_ids else list(doc_names.values())
                state.summary = {"kb": state.kb_name, "extractive": True, "documents": names,
                                 "markdown": result.to_markdown(_("Summary")), "notice": result.notice,
                                 "outline": [(h, p) for _x, h, p in result.outline],
                                 "sentences": [(s.text, s.file_name, s.page) for s in result.sentences]}
    elif not extractive and st.button(_("Summarize"), disabled=not docs, key="summarize", type="primary"):
        model, error = get_model()
        if model is None:
            st.error(_("The model could not be loaded: {error}", error=error))
        else:
            with st.status(_("Summarizing ({strategy})…", strategy=strategy), expanded=True) as status:
                bar = st.progress(0.0, text=_("Reading the documents…"))
                live = st.empty()  # the final summary, as the model writes it
                written: list[str] = []
                phases = {"stuff": N_("one prompt"), "map": N_("summarising parts"), "reduce": N_("combining"),
                          "refine": N_("refining")}

                def on_summary(p) -> None:
                    total = max(int(p.total or 1), 1)
                    phase = _(phases.get(p.phase, p.phase))
                    bar.progress(min(p.done / total, 1.0),
                                 text=_("{phase}: step {done} of {total}", phase=phase, done=p.done, total=total))

                def on_text(piece: str) -> None:
                    written.append(piece)
                    live.markdown("".join(written) + " ▌")

                try:
                    result = services.with_model(kb, model, settings).summarize(doc_ids=doc_ids, strategy=strategy,
                                                                      progress=on_summary, on_text=on_text)
                except Exception as exc:
                    status.update(label=_("Summarizing failed"), state="error")
                    st.error(f"{type(exc).__name__}: {exc}")
                else:
                    live.empty()
                    status.update(label=_("Summary ready — strategy {strategy}, {steps} model call(s)",
                                          strategy=result.strategy, steps=result.steps),
                                  state="complete", expanded=False)
                    names = [doc_names[i] for i in chosen_ids] if chosen_ids else list(doc_names.values())
                    state.summary = {
                        "kb": state.kb_name, "text": result.text, "strategy": result.strategy,
                        "steps": result.steps, "documents": names,
                        "notice": getattr(result, "notice", None) or model.notice,
                    }
    summary = state.summary
    if summary and summary["kb"] == state.kb_name and summary.get("extractive"):
        with st.container(border=True):
            st.markdown(_("**Outline and key sentences** · {n} document(s)", n=len(summary["documents"])))
            st.caption(_(summary["notice"]))
            page = _("p. {page}")
            if summary["outline"]:
                st.markdown(_("**Outline**") + "\n\n" + "\n".join(
                    f"- {h}" + (f" ({page.format(page=p)})" if p else "") for h, p in summary["outline"]))
            st.markdown(_("**Key sentences**") + "\n\n" + "\n".join(
                f"- {t} _({f}{', ' + page.format(page=p) if p else ''})_" for t, f, p in summary["sentences"]))
            st.download_button(_("Download as Markdown"), summary["markdown"], file_name="summary.md",
                               mime="text/markdown", key="download_summary", icon=":material/download:")
    elif summary and summary["kb"] == state.kb_name:
        with st.container(border=True):
            st.markdown(_("**Summary** · strategy `{strategy}` · {steps} model call(s) · {n} document(s)",
                          strategy=summary["strategy"], steps=summary["steps"], n=len(summary["documents"])))
            st.markdown(summary["text"])
            if summary.get("notice"):
                st.warning(_(summary["notice"]), icon=":material/warning:")
            st.download_button(
                _("Download as Markdown"),
                services.summary_markdown(_("Summary"), summary["text"], summary["strategy"], summary["documents"]),
                file_name="summary.md", mime="text/markdown", key="download_summary", icon=":material/download:",
            )


# -- retrieval test ----------------------------------------------------------------------------------------

with tab_retrieval:
    st.caption(_("See what a question finds before asking it: the ranked passages of the chosen documents with "
                 "their scores, and which of them a threshold keeps. No model is used."))
    probe = st.text_input(_("Question"), key="retrieval_question", disabled=not docs)
    probe_k = st.slider(_("Passages to show"), 1, 30, 10, key="retrieval_k")
    if probe.strip():
        try:
            found, default_threshold = services.retrieval_test(kb, probe.strip(), probe_k, doc_ids)
        except Exception as exc:
            st.error(_("Searching failed: {error}", error=f"{type(exc).__name__}: {exc}"))
        else:
            trial = st.slider(_("Try a relevance threshold"), 0.0, 1.0, float(default_threshold), 0.01,
                              key="retrieval_threshold",
                              help=_("Answers use {threshold} (settings.retrieval.relevance_threshold).",
                                     threshold=f"{default_threshold:.2f}"))
            ui.render_retrieval_test(found, trial)


# -- model status (last: the page is drawn before a first model load blocks) -------------------------

with model_info:
    model, model_error = get_model()
    if model is None:
        st.error(_("Model not available: {error}", error=model_error))
        st.caption(_("Pick another model below, or set DOCQA_MODEL__NAME and restart."))
    else:
        st.markdown(f"**{model.name}**  \n{model.backend} · " +
                    _("context window **{tokens}** tokens", tokens=f"{model.context_window:,}"))
        if model.is_stand_in:
            st.caption(_("Stand-in model (no model configured)."))
with notice_slot:  # in quote mode the stand-in writes nothing: the caption above says why
    quoting_for_stand_in = model is not None and model.is_stand_in and state.answer_mode == "quote"
    if model is not None and (model.is_stand_in or model.notice) and not quoting_for_stand_in:
        st.warning(_(model.notice or "A stand-in model is answering."), icon=":material/warning:")
    elif model is None:
        st.error(_("No model: {error}", error=model_error))


# -- sidebar: stored conversations (last: this run's new turns are in the list) ------------------

with conversations_slot:
    st.subheader(_("Conversations"))
    if st.button(_("New conversation"), key="new_conversation", icon=":material/add:", disabled=not chat_log):
        state[conv_key] = None
        st.rerun()
    for conv in conversations.list()[:30]:
        current = conv.id == state[conv_key]
        if st.button(f"{conv.title or '…'} ({conv.turns})", key=f"open_conv_{conv.id}", icon=":material/chat:",
                     type="primary" if current else "secondary", width="stretch",
                     help=_("The conversation that is open") if current else _("Open this conversation")):
            state[conv_key] = conv.id
            st.rerun()
    if state[conv_key] and st.button(_("Delete this conversation"), key="delete_conversation", icon=":material/delete:"):
        conversations.delete(state[conv_key])
        state[conv_key] = None
        st.toast(_("Conversation deleted"))
        st.rerun()

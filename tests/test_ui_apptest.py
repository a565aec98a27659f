"""The Streamlit app driven headlessly with streamlit.testing.v1.AppTest.

A test knowledge base lives under tmp_path; the model is rag.testing's deterministic fake (or a
subclass that records temperature), injected through session state (see ui/services.py). Files
are uploaded through AppTest's file_uploader support, so the real upload handler runs.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest

from tests.docmaker import make_truncated_pdf, pdf_bytes
from tests.helpers_ui import ask, make_app, run, texts, upload
from ui import services
from rag.retrieval import no_passage_message

pytestmark = pytest.mark.slow


@pytest.fixture(params=["en", "zh-Hans"], autouse=True)
def lang(request):
    """Every test here runs with the interface in English and in Simplified Chinese."""
    return request.param


@pytest.fixture
def kb_settings(tmp_path, lang):
    from rag.settings import Settings

    return Settings(store={"dir": tmp_path / "kb"}, ui={"language": lang})


@pytest.fixture
def T(lang):  # noqa: N802 - reads like the app's _()
    """What the app shows for an English message in this test's language."""
    from ui.i18n import CATALOG

    return lambda message, **values: CATALOG.text(lang, message, **values)


def prefix(text: str) -> str:
    """The part of a translated message before its first filled-in field."""
    return text.split("\x00")[0]

BEIJING = "北京是中华人民共和国的首都，常住人口约两千一百万。北京有故宫和长城。"
WUHAN = "武汉位于长江中游，是湖北省的省会，以热干面闻名。"


@pytest.fixture
def fake():
    from rag.testing import fake_loaded_model

    return fake_loaded_model()


@pytest.fixture
def app(kb_settings, fake, embedder):
    at = make_app(kb_settings, fake)
    return run(at)


def doc_count(at) -> int:
    return len(at.session_state["docqa_settings"] and _kb(at).documents())


def _kb(at):
    from ui import services

    settings = at.session_state["docqa_settings"]
    name = at.session_state["kb_name"]
    return services.open_kb(services.kb_settings(settings, name))


# -- start -------------------------------------------------------------------------------------------


def test_empty_app_explains_what_to_do(app, fake, T):
    page = texts(app)
    assert T("**No documents yet.** Open the **Documents** tab and drop PDF, Word, HTML, Markdown or text files "
             "there; then ask questions here. Answers cite the passages they use [1], [2] …") in page
    assert app.chat_input(key="question").proto.disabled
    # the loaded model and its context window are visible in the sidebar
    assert "fake-chat-model" in page and "4,096" in page
    assert not app.exception


STAND_IN_QUOTES = ("Only the small stand-in model is available, and it cannot answer well: answers are the documents' "
                   "own sentences that best match the question, with their sources. Choose **The model's own answer** "
                   "to let it write anyway, or pick a Chinese-Alpaca-2 model.")


def test_stand_in_notice_at_top_and_with_each_answer(kb_settings, fake, embedder, T):
    stand_in = replace(fake, is_stand_in=True, notice="A small stand-in model is answering (test).")
    at = run(make_app(kb_settings, stand_in))
    assert T(STAND_IN_QUOTES) in texts(at)  # quote mode says why
    upload(at, [("北京.txt", BEIJING.encode())])
    # with only the stand-in, questions are answered with quotes, and the app says why
    assert at.radio(key="answer_mode").value == "quote"
    assert T(STAND_IN_QUOTES) in texts(at)
    ask(at, "北京的人口是多少？")
    assert T("Quoted from the documents (no model wrote this)") in texts(at)
    assert not stand_in.chat_model.calls  # no model call in quote mode
    # one click lets the stand-in write: one warning at the top of the chat, one under the answer
    at.radio(key="answer_mode").set_value("generate")
    ask(at, "北京的人口是多少？")
    assert stand_in.chat_model.calls
    assert sum("stand-in model is answering" in w.value for w in at.warning) >= 2


def test_starts_with_packaged_stand_in_model_when_none_is_configured(kb_settings, embedder, T):
    pytest.importorskip("llama_cpp")
    at = run(make_app(kb_settings))  # no injected model: load_chat_model with an empty name
    page = texts(at)
    assert "SmolLM2" in page
    assert T(STAND_IN_QUOTES) in page and T("Stand-in model (no model configured).") in page


def test_model_process_killed_mid_answer_is_shown_and_the_next_question_works(kb_settings, embedder, monkeypatch):
    """The stand-in runs in its own process; SIGSEGV to it in the middle of an answer (a native
    crash) leaves the app running: the chat shows what happened, keeps the conversation, and
    the next question is answered by a restarted model process."""
    pytest.importorskip("llama_cpp")
    import os
    import signal
    import threading
    import time

    from rag.models.worker import ModelWorker

    streamed: list[tuple[ModelWorker, str]] = []
    real_stream = ModelWorker.stream

    def stream(self, *args, **kwargs):
        for piece in real_stream(self, *args, **kwargs):
            streamed.append((self, piece))
            yield piece

    monkeypatch.setattr(ModelWorker, "stream", stream)
    # the whole window: no prompt-speed probe runs through the model process before the answer
    settings = kb_settings.model_copy(update={"model": kb_settings.model.model_copy(update={"max_new_tokens": 48}),
                                              "answer": kb_settings.answer.model_copy(update={"context_budget": "window"})})
    at = run(make_app(settings))
    upload(at, [("北京.txt", BEIJING.encode())])
    at.radio(key="answer_mode").set_value("generate")  # the stand-in answers in quote mode by default
    run(at)
    killed: list[int] = []
    restarts_before: list[int] = []

    def kill_mid_answer():
        end = time.time() + 240
        while not streamed and time.time() < end:
            time.sleep(0.01)
        if streamed:
            worker = streamed[0][0]
            killed.append(worker.pid)
            restarts_before.append(worker.restarts)  # the model is shared by the server's sessions
            os.kill(worker.pid, signal.SIGSEGV)

    killer = threading.Thread(target=kill_mid_answer)
    killer.start()
    ask(at, "北京的人口是多少？")
    killer.join()
    assert killed, "no answer was streamed"
    errors = [e.value for e in at.error]
    assert any("SIGSEGV" in e and "model process" in e and "llamacpp" in e for e in errors), errors
    worker = streamed[0][0]
    streamed.clear()
    ask(at, "北京有什么名胜？")
    assert streamed and worker.pid != killed[0] and worker.restarts == restarts_before[0] + 1
    from rag.conversations import ConversationStore

    store = ConversationStore.for_kb(settings.store.dir)
    log = store.messages(at.session_state[f"conversation_{at.session_state['kb_name']}"])
    assert [m["role"] for m in log] == ["user", "assistant", "user", "assistant"]
    assert log[1].get("error") and not log[3].get("error") and log[3]["content"].strip()
    assert "北京的人口是多少？" in texts(at)  # the first turn is still on the page


def test_model_that_cannot_load_is_reported_and_documents_still_work(tmp_path, embedder, lang, T):
    from rag.settings import Settings

    settings = Settings(store={"dir": tmp_path / "kb"}, model={"name": str(tmp_path / "missing.gguf")},
                        ui={"language": lang})
    at = run(make_app(settings))
    assert any(e.value.startswith(T("Model not available: {error}", error="\x00").split("\x00")[0]) for e in at.error)
    upload(at, [("北京.txt", BEIJING.encode())])
    assert T("added to the knowledge base") in texts(at)
    ask(at, "北京的人口是多少？")
    assert any(e.value.startswith(prefix(T("The model could not be loaded: {error}", error="\x00"))) for e in at.error)


# -- uploads -----------------------------------------------------------------------------------------


def test_upload_many_files_with_progress_failures_and_safe_names(app, kb_settings, tmp_path, T):
    broken = make_truncated_pdf(tmp_path / "broken.pdf", ["这是一个被截断的文件。"]).read_bytes()
    upload(app, [
        ("../../北京 报告.pdf", pdf_bytes([BEIJING])),
        ("武汉.md", f"# 武汉\n\n{WUHAN}".encode()),
        ("broken.pdf", broken),
        ("empty.txt", b""),
    ])
    page = texts(app)
    assert "**北京 报告.pdf** — " not in page  # shown under the name the browser sent
    assert "**../../北京 报告.pdf** — " + T("added to the knowledge base") in page
    outcomes = {o.name: o for o in app.session_state["upload_results"]["default"]}
    assert outcomes["../../北京 报告.pdf"].status == "added"
    assert outcomes["武汉.md"].status == "added"
    assert outcomes["broken.pdf"].status == "failed" and outcomes["broken.pdf"].message
    assert outcomes["empty.txt"].status == "failed"
    assert len(app.error) >= 2  # one clear message per failed file
    # saved inside <kb>/uploads only, under a safe name; failed files are not kept
    uploads = Path(kb_settings.store.dir) / "uploads"
    assert sorted(p.name for p in uploads.iterdir()) == ["北京 报告.pdf", "武汉.md"]
    assert not (Path(kb_settings.store.dir).parent / "北京 报告.pdf").exists()
    # documents table: both documents with pages and chunk counts
    assert T("Documents ({n})", n=2) in page
    # a summary line over the per-file messages
    counts = T(", ").join([f"2 {T('added')}", f"2 {T('failed')}"])
    assert T("**Last upload** — {summary}", summary=counts) in page


def test_upload_size_limit_is_enforced_with_a_message(tmp_path, fake, embedder, lang, T):
    from rag.settings import Settings

    settings = Settings(store={"dir": tmp_path / "kb"}, ui={"max_upload_mb": 1, "language": lang})
    at = run(make_app(settings, fake))
    upload(at, [("big.txt", ("大" * 400_000).encode())])  # 1.2 MB
    refused = T("{size} MB is above the upload limit of {limit} MB (setting ui.max_upload_mb, DOCQA_UI__MAX_UPLOAD_MB).",
                size="1.1", limit="1")
    assert any(refused in e.value for e in at.error), [e.value for e in at.error]
    assert not (tmp_path / "kb" / "uploads" / "big.txt").exists()


def test_chat_works_while_documents_are_being_added(app, fake, monkeypatch, T):
    """Files are ingested in the background with their progress shown; meanwhile a question
    is answered from what is already stored."""
    import threading

    from ingest.pipeline import Ingestor
    from tests.helpers_ui import wait_for_ingestion

    upload(app, [("北京.txt", BEIJING.encode())])
    release = threading.Event()
    embed = Ingestor._embed

    def held_embed(self, docs, embedded=None):
        assert release.wait(120), "the test never released the embedder"
        return embed(self, docs, embedded)

    monkeypatch.setattr(Ingestor, "_embed", held_embed)
    upload(app, [("武汉.md", f"# 武汉\n\n{WUHAN}".encode())], wait=False)
    adding = T("**Adding {n} file(s)** — you can keep asking questions meanwhile.", n=1)
    page = texts(app)
    assert adding in page
    assert len(app.progress) >= 1  # the bar, with files and stage in its text
    assert services.ingest_job(services.kb_settings(app.session_state["docqa_settings"], "default")) is not None

    ask(app, "北京的常住人口是多少？")  # answered while the upload is still running
    answer = "\n".join(m.value for m in app.chat_message[-1].markdown)
    assert "两千一百万" in answer or "北京是中华人民共和国的首都" in answer
    assert adding in texts(app)  # still going

    release.set()
    wait_for_ingestion(app)
    page = texts(app)
    assert T("**Last upload** — {summary}", summary=f"1 {T('added')}") in page and T("Documents ({n})", n=2) in page
    assert adding not in page


def test_duplicates_are_recognised(app, kb_settings, T):
    upload(app, [("北京.txt", BEIJING.encode()), ("copy.txt", BEIJING.encode())])
    outcomes = app.session_state["upload_results"]["default"]
    assert [o.status for o in outcomes] == ["added", "duplicate"]
    assert "same content as 北京.txt" in outcomes[1].message
    assert T("same content as {first} in this upload; stored once.", first="北京.txt") in texts(app)
    upload(app, [("again.txt", BEIJING.encode())])
    outcome = app.session_state["upload_results"]["default"][0]
    assert outcome.status == "duplicate"
    assert "already in the knowledge base (as 北京.txt)" in outcome.message
    assert any(T("already in the knowledge base (as {names}).", names="北京.txt") in i.value for i in app.info)
    assert len(_kb(app).documents()) == 1


def test_same_name_other_content_does_not_clobber(app, kb_settings):
    upload(app, [("同名.txt", BEIJING.encode())])
    upload(app, [("同名.txt", WUHAN.encode())])
    uploads = Path(kb_settings.store.dir) / "uploads"
    assert sorted(p.name for p in uploads.iterdir()) == ["同名 (2).txt", "同名.txt"]
    assert (uploads / "同名.txt").read_text() == BEIJING
    assert len(_kb(app).documents()) == 2


# -- chat ----------------------------------------------------------------------------------------------


def test_ask_streams_answer_with_citation_and_source_snippet(app, fake, T):
    upload(app, [("北京.pdf", pdf_bytes([WUHAN, BEIJING]))])
    ask(app, "北京的常住人口是多少？")
    answer = app.chat_message[-1]
    assert answer.name == "assistant"
    body = "\n".join(m.value for m in answer.markdown)
    assert "[**1**]" in body and "北京是中华人民共和国的首都" in body  # the citation, its number in bold
    labels = [e.label for e in app.expander]
    # the hit is on p. 2; the passage shown was widened with the chunk before it, on p. 1, and
    # its label says so
    pages = T("pp. {first}–{last}", first=1, last=2)
    assert any(label.startswith(f"[1] 北京.pdf · {pages} · " + prefix(T("relevance {score}", score="\x00")))
               for label in labels), labels
    src = next(e for e in app.expander if e.label.startswith("[1] 北京.pdf"))
    shown = "\n".join(m.value for m in src.markdown)
    assert "两千一百万" in shown and "武汉位于长江中游" in shown
    assert "北京的常住人口是多少" in fake.chat_model.calls[-1].prompt


def test_follow_up_question_uses_history(app, fake, T):
    upload(app, [("北京.txt", BEIJING.encode())])
    ask(app, "北京的常住人口是多少？")
    before = len(fake.chat_model.calls)
    ask(app, "它有什么名胜？")
    new_calls = fake.chat_model.calls[before:]
    # the follow-up is rewritten with the earlier turn in the prompt
    assert any("北京的常住人口是多少" in c.prompt and "它有什么名胜" in c.prompt for c in new_calls)
    assert len([m for m in app.chat_message if m.name == "assistant"]) == 2
    # what was searched is shown under the answer: the question as asked and the rewrite
    captions = [c.value for c in app.chat_message[-1].caption]
    assert any(c.startswith(T("Searched for: {queries}", queries="“它有什么名胜？” · “")) for c in captions), captions


def test_nothing_relevant_is_said_honestly(tmp_path, fake, embedder, lang, T):
    from rag.retrieval import no_passage_message
    from rag.settings import Settings

    settings = Settings(store={"dir": tmp_path / "kb"}, retrieval={"relevance_threshold": 0.999}, ui={"language": lang})
    at = run(make_app(settings, fake))
    upload(at, [("北京.txt", BEIJING.encode())])
    calls = len(fake.chat_model.calls)
    ask(at, "量子计算机的纠错码如何设计？")
    body = "\n".join(m.value for m in at.chat_message[-1].markdown)
    assert no_passage_message("zh") in body
    assert any(T("No passage of the chosen documents was relevant enough; nothing was cited.") == c.value
               for c in at.caption)
    assert len(fake.chat_model.calls) == calls  # no model call for an empty context


def test_question_scope_limits_documents(app, fake):
    upload(app, [("北京.txt", BEIJING.encode()), ("武汉.txt", WUHAN.encode())])
    kb = _kb(app)
    wuhan = next(d.doc_id for d in kb.documents() if "武汉.txt" in d.file_names)
    app.multiselect(key="scope_default").set_value([wuhan])
    run(app)
    ask(app, "北京的常住人口是多少？")
    labels = [e.label for e in app.expander if e.label.startswith("[")]
    # only Wuhan's text is searched, and it does not answer: nothing found, Beijing never cited
    assert not any("北京.txt" in label for label in labels), labels
    body = "\n".join(m.value for m in app.chat_message[-1].markdown)
    assert no_passage_message("zh") in body
    ask(app, "武汉有什么有名的小吃？")
    labels = [e.label for e in app.expander if e.label.startswith("[")]
    assert labels and all("武汉.txt" in label for label in labels), labels


def test_settings_k_and_temperature_are_used(app, monkeypatch, kb_settings, embedder):
    from rag.api import KnowledgeBase
    from rag.testing import FakeChatModel, fake_loaded_model

    class RecordingFake(FakeChatModel):
        temperature: float = 0.2
        seen: list = []

        def _answer(self, messages, **kwargs):
            self.seen.append((self.temperature, kwargs.get("max_new_tokens")))
            return super()._answer(messages, **kwargs)

    model = fake_loaded_model()
    chat = RecordingFake(seen=[])
    model = replace(model, chat_model=chat, count_tokens=chat.count_tokens)
    at = run(make_app(kb_settings, model))
    upload(at, [("北京.txt", BEIJING.encode())])

    seen_k = []
    original = KnowledgeBase.stream_ask

    def spy(self, question, history=None, doc_ids=None, k=None, mode=None):
        seen_k.append(k)
        yield from original(self, question, history=history, doc_ids=doc_ids, k=k, mode=mode)

    monkeypatch.setattr(KnowledgeBase, "stream_ask", spy)
    at.slider(key="k").set_value(3)
    at.slider(key="temperature").set_value(0.7)
    at.number_input(key="max_new_tokens").set_value(40)
    run(at)
    ask(at, "北京的人口？")
    assert seen_k == [3]
    assert chat.seen[-1] == (0.7, 40)
    # the shared model object itself is untouched (sampling is per call)
    assert chat.temperature == 0.2


# -- knowledge-base management -----------------------------------------------------------------------------


def test_delete_document_removes_it_and_its_upload(app, kb_settings, T):
    upload(app, [("北京.txt", BEIJING.encode()), ("武汉.txt", WUHAN.encode())])
    kb = _kb(app)
    beijing = next(d for d in kb.documents() if "北京.txt" in d.file_names)
    last_upload = prefix(T("**Last upload** — {summary}", summary="\x00"))
    assert last_upload in texts(app)
    # the first click asks; Cancel keeps the document
    app.button(key=f"del_{beijing.doc_id}").click()
    run(app)
    asks = T("Delete **{name}**? It leaves the knowledge base and its uploaded file is deleted.", name="北京.txt")
    assert asks in texts(app) and len(kb.documents()) == 2
    app.button(key="confirm_delete_doc_no").click()
    run(app)
    assert asks not in texts(app) and len(kb.documents()) == 2
    # asked again and confirmed: gone, said so, and the stale upload panel is gone too
    app.button(key=f"del_{beijing.doc_id}").click()
    run(app)
    app.button(key="confirm_delete_doc_yes").click()
    run(app)
    assert [d.file_names for d in kb.documents()] == [["武汉.txt"]]
    page = texts(app)
    # every figure of a document row carries its label (columns stack on a narrow screen)
    row = T("{pages} page(s) · {chunks} chunk(s) · added {when}", pages=1, chunks=1, when="\x00")
    assert re.search(r"武汉\.txt  \n`[0-9a-f]{12}` · text · " + re.escape(prefix(row)) + r"\d{4}-", page), page
    assert T("Documents ({n})", n=1) in page and T("Deleted {name}.", name="北京.txt") in page
    assert last_upload not in page
    assert not (Path(kb_settings.store.dir) / "uploads" / "北京.txt").exists()


def test_reindex_picks_up_changed_files(app, kb_settings, T):
    upload(app, [("北京.txt", BEIJING.encode())])
    path = Path(kb_settings.store.dir) / "uploads" / "北京.txt"
    path.write_text(WUHAN, encoding="utf-8")
    app.button(key="reindex").click()
    run(app)
    assert any(T("Re-index finished") == str(s.label) for s in app.status)
    kb = _kb(app)
    assert kb.retrieve("热干面", k=1)[0].text.startswith("武汉")
    app.checkbox(key="rebuild").check()
    app.button(key="reindex").click()
    run(app)
    assert len(kb.documents()) == 1


def test_create_switch_and_delete_knowledge_bases(app, kb_settings, T):
    from ui import services

    upload(app, [("北京.txt", BEIJING.encode())])
    app.text_input(key="new_kb_name").input("合同 2024")
    app.button(key="create_kb").click()
    run(app)
    assert app.session_state["kb_name"] == "合同 2024"
    new_dir = services.kb_root(kb_settings) / "合同 2024"
    assert new_dir.is_dir()
    assert T("Knowledge base **{name}** · {n} document(s) · `{path}`", name="合同 2024", n=0, path=new_dir) in texts(app)
    upload(app, [("武汉.txt", WUHAN.encode())])
    assert (new_dir / "uploads" / "武汉.txt").exists()
    # switch back: the default KB still has its own document
    app.selectbox(key="kb_name").set_value("default")
    run(app)
    assert "北京.txt" in texts(app) and "武汉.txt" not in texts(app)
    # bad names are refused with a message
    app.text_input(key="new_kb_name").input("../escape")
    app.button(key="create_kb").click()
    run(app)
    assert [e.value for e in app.error] == [T(
        "Use letters, digits, Chinese characters, spaces, '-', '_' or '.' (at most 64), starting with a letter, "
        "digit or character.")]
    assert not (Path(kb_settings.store.dir).parent / "escape").exists()
    # delete asks first
    app.selectbox(key="kb_name").set_value("合同 2024")
    run(app)
    app.button(key="ask_delete_kb").click()
    run(app)
    assert new_dir.is_dir() and any(
        T("Delete knowledge base '{name}' with all its documents and uploads? This cannot be undone.", name="合同 2024")
        == w.value for w in app.warning)
    app.button(key="confirm_delete_kb_yes").click()
    run(app)
    assert not new_dir.exists()
    assert app.session_state["kb_name"] == "default"
    assert "合同 2024" not in app.selectbox(key="kb_name").options


# -- summary --------------------------------------------------------------------------------------------


def test_summarize_with_strategy_progress_and_download(app, fake, monkeypatch, T):
    from streamlit.runtime.media_file_manager import MediaFileManager

    offered: dict[str, bytes] = {}  # url -> the bytes the browser would download
    real_add = MediaFileManager.add

    def add(self, data, *args, **kwargs):
        url = real_add(self, data, *args, **kwargs)
        offered[url] = data
        return url

    monkeypatch.setattr(MediaFileManager, "add", add)
    upload(app, [("北京.txt", BEIJING.encode()), ("武汉.txt", WUHAN.encode())])
    app.selectbox(key="strategy").set_value("map_reduce")
    run(app)
    app.button(key="summarize").click()
    run(app)
    labels = [str(s.label) for s in app.status]
    ready = prefix(T("Summary ready — strategy {strategy}, {steps} model call(s)", strategy="map_reduce", steps="\x00"))
    assert any(label.startswith(ready) for label in labels), labels
    summary = app.session_state["summary"]
    assert summary["strategy"] == "map_reduce" and summary["text"]
    assert summary["text"] in texts(app)
    buttons = app.get("download_button")
    assert len(buttons) == 1, "no download button"
    data = offered[buttons[0].proto.url].decode("utf-8")
    assert buttons[0].proto.url.endswith(".md")
    assert data.startswith("# " + T("Summary")) and summary["text"] in data
    assert "map_reduce" in data and "北京.txt" in data and "武汉.txt" in data


# -- ui.services without Streamlit running ------------------------------------------------------


@pytest.mark.parametrize(
    "raw, safe",
    [
        ("报告.pdf", "报告.pdf"),
        ("年度 报告 2024.docx", "年度 报告 2024.docx"),
        ("../../etc/passwd", "passwd"),
        ("/etc/cron.d/evil.txt", "evil.txt"),
        ("C:\\Users\\me\\中文 文件.pdf", "中文 文件.pdf"),
        ("a\x00b\r\n\tc.txt", "abc.txt"),
        ("safe\u202etxt.exe.md", "safetxt.exe.md"),  # no right-to-left override tricks
        ("..", "upload"),
        ("...", "upload"),
        ("", "upload"),
        ("..hidden.md", "hidden.md"),
        ('a<b>:c"|?*.txt', "a_b__c____.txt"),
    ],
)
def test_safe_filename(raw, safe):
    assert services.safe_filename(raw) == safe


def test_safe_filename_shortens_long_names_keeping_the_suffix():
    name = services.safe_filename("长" * 200 + ".pdf")
    assert name.endswith(".pdf") and len(name.encode()) <= 180


def test_save_upload_never_leaves_the_folder_nor_clobbers(tmp_path):
    folder = tmp_path / "kb" / "uploads"
    a, written = services.save_upload(folder, "../../a.txt", b"one")
    assert written and a == (folder / "a.txt").resolve()
    same, written = services.save_upload(folder, "a.txt", b"one")
    assert same == a and not written
    b, written = services.save_upload(folder, "a.txt", b"two")
    assert written and b.name == "a (2).txt" and a.read_bytes() == b"one"
    assert sorted(p.name for p in folder.iterdir()) == ["a (2).txt", "a.txt"]
    assert not (tmp_path / "a.txt").exists()


def test_kb_layout_create_list_delete(tmp_path):
    from rag.settings import Settings

    settings = Settings(store={"dir": tmp_path / "store"})
    assert services.list_kbs(settings) == {"default": (tmp_path / "store").resolve()}
    path = services.create_kb(settings, "合同")
    assert path == (tmp_path / "store" / "kbs" / "合同").resolve()
    assert list(services.list_kbs(settings)) == ["default", "合同"]
    with pytest.raises(ValueError):
        services.create_kb(settings, "合同")
    for bad in ["", "default", "../x", "a/b", ".hidden"]:
        with pytest.raises(ValueError):
            services.create_kb(settings, bad)
    with pytest.raises(ValueError):
        services.delete_kb(settings, "default")
    services.delete_kb(settings, "合同")
    assert not path.exists() and list(services.list_kbs(settings)) == ["default"]


def test_history_pairs_skip_errors():
    log = [
        {"role": "user", "content": "q1"}, {"role": "assistant", "content": "a1"},
        {"role": "user", "content": "q2"}, {"role": "assistant", "content": "boom", "error": True},
        {"role": "user", "content": "q3"}, {"role": "assistant", "content": "a3"},
    ]
    assert services.history_pairs(log) == [("q1", "a1"), ("q3", "a3")]


def test_server_binds_to_localhost_with_an_upload_cap():
    import tomllib

    from tests.helpers_ui import REPO

    config = tomllib.loads((REPO / ".streamlit" / "config.toml").read_text())
    assert config["server"]["address"] == "127.0.0.1"
    assert config["server"]["headless"] is True
    assert config["server"]["maxUploadSize"] == 100
    assert "streamlit run ui/app.py" in (REPO / "Makefile").read_text()


# -- quote mode and stored conversations ---------------------------------------------------------------


def test_quote_mode_answers_with_the_documents_sentences_and_marks_them(kb_settings, embedder):
    """The default with only the stand-in: no model runs (none is even loaded here); the answer
    is the passage's own sentences with [n], and the passage opens with them marked."""
    at = run(make_app(kb_settings))
    upload(at, [("北京.txt", BEIJING.encode()), ("武汉.txt", WUHAN.encode())])
    ask(at, "北京的常住人口是多少？")
    answer = at.chat_message[-1]
    quoted = [m.value for m in answer.markdown if m.value.startswith("> ")]
    assert any("常住人口约两千一百万。[**1**]" in q for q in quoted), quoted
    marked = [m.value for m in answer.markdown if "<mark" in m.value]
    assert marked and '<mark class="docqa-quote">北京是中华人民共和国的首都，常住人口约两千一百万。</mark>' in marked[0]
    assert any(e.label.startswith("[1] 北京.txt") for e in answer.expander)
    assert not at.error


def test_conversations_survive_a_restart_and_can_be_started_anew_and_deleted(kb_settings, fake, embedder):
    at = run(make_app(kb_settings, fake))
    upload(at, [("北京.txt", BEIJING.encode())])
    ask(at, "北京的人口是多少？")
    ask(at, "北京有什么名胜？")
    first_answer = at.chat_message[1].markdown[0].value

    # a new session on the same knowledge base (a reload, a restarted or crashed server)
    again = run(make_app(kb_settings, fake))
    assert [m.name for m in again.chat_message] == ["user", "assistant", "user", "assistant"]
    assert again.chat_message[0].markdown[0].value == "北京的人口是多少？"
    assert again.chat_message[1].markdown[0].value == first_answer
    listed = [b for b in again.button if b.key and b.key.startswith("open_conv_")]
    assert [b.label for b in listed] == ["北京的人口是多少？ (2)"]

    # a new conversation: empty chat; its first question becomes its title in the list
    again.button(key="new_conversation").click()
    run(again)
    assert not again.chat_message
    ask(again, "故宫在哪里？")
    labels = [b.label for b in again.button if b.key and b.key.startswith("open_conv_")]
    assert labels == ["故宫在哪里？ (1)", "北京的人口是多少？ (2)"]
    # reopen the first one, then delete it
    next(b for b in again.button if b.label.startswith("北京的人口")).click()
    run(again)
    assert [m.name for m in again.chat_message] == ["user", "assistant", "user", "assistant"]
    again.button(key="delete_conversation").click()
    run(again)
    labels = [b.label for b in again.button if b.key and b.key.startswith("open_conv_")]
    assert labels == ["故宫在哪里？ (1)"] and not again.chat_message


def test_extractive_summary_without_a_model(kb_settings, embedder, monkeypatch, T):
    """With only the stand-in the Summary tab gives the outline and key sentences, labelled as
    taken from the documents, with pages, and no model call."""
    from rag.summarize import Summarizer

    monkeypatch.setattr(Summarizer, "summarize", lambda *a, **k: pytest.fail("a model summary was asked for"))
    at = run(make_app(kb_settings))
    doc = "# 城市简介\n\n## 北京\n\n" + BEIJING + "\n\n## 武汉\n\n" + WUHAN
    upload(at, [("城市.md", doc.encode())])
    assert at.radio(key="summary_mode").value == "extractive"
    at.button(key="summarize").click()
    run(at)
    page = texts(at)
    from rag.summarize import EXTRACTIVE_NOTICE

    assert T(EXTRACTIVE_NOTICE) in page
    assert T("**Outline**") + "\n\n- 北京\n- 武汉" in page
    key = next(m.value for m in at.markdown if m.value.startswith(T("**Key sentences**")))
    sentences = [line[2:] for line in key.splitlines()[2:]]
    assert 3 <= len(sentences) and all(s.endswith("_(城市.md)_") for s in sentences)
    assert all(s.split(" _(")[0] in doc for s in sentences)  # the documents' own sentences


def test_backend_that_cannot_load_the_stand_in_says_so(kb_settings, embedder, T):
    at = run(make_app(kb_settings))
    at.selectbox(key="model_backend_choice").set_value("transformers")
    at.button(key="apply_model").click()  # the form's submit button
    run(at)
    errors = [e.value for e in at.error]
    assert any("only the llamacpp backend loads" in e for e in errors), errors
    assert any(e.startswith(prefix(T("Model not available: {error}", error="\x00"))) for e in errors)  # not kept silently


def test_context_per_answer_fast_or_whole_window(tmp_path, embedder, lang, T):
    """'Fast' packs what the (slow) model reads within the wait; 'whole window' fills it."""
    from rag.settings import Settings
    from rag.testing import fake_loaded_model
    from tests.helpers_rag import long_chinese_text

    slow = fake_loaded_model(16384, 64, prompt_tokens_per_s=40000)
    settings = Settings(store={"dir": tmp_path / "kb"}, ui={"language": lang}, answer={"first_token_s": 0.02})
    at = run(make_app(settings, slow))
    upload(at, [("report.txt", long_chinese_text(45, seed=3).encode())])
    at.radio(key="answer_mode").set_value("generate")
    at.slider(key="k").set_value(2)
    run(at)
    assert at.radio(key="context_budget").value == "auto"
    ask(at, "第十二节讨论的工作投入了多少资金？")
    fast = slow.chat_model.calls[-1].prompt_tokens
    at.radio(key="context_budget").set_value("window")
    run(at)
    ask(at, "第十二节讨论的工作投入了多少资金？")
    whole = slow.chat_model.calls[-1].prompt_tokens
    assert fast < 1200 and 2 * fast < whole  # two passages within the budget vs the whole document


def test_documents_indexed_by_an_older_version_are_flagged_and_indexed_again(app, kb_settings, T):
    import sqlite3

    upload(app, [("北京.txt", BEIJING.encode()), ("武汉.txt", WUHAN.encode())])
    with sqlite3.connect(Path(kb_settings.store.dir) / "catalog.sqlite3") as db:  # as an older version left it
        db.execute("UPDATE documents SET index_version = NULL WHERE doc_id IN "
                   "(SELECT doc_id FROM sources WHERE path LIKE '%北京.txt')")
    run(app)
    warning = T("{n} document(s) were indexed by an older version: text boxes, list numbers, notes and new ways "
                "of matching words are missing from them until they are indexed again.", n=1)
    assert any(w.value == warning for w in app.warning)
    app.button(key="rebuild_outdated").click()
    run(app)
    assert not any(w.value == warning for w in app.warning)
    kb = _kb(app)
    assert kb.store.outdated_documents() == [] and len(kb.documents()) == 2
    assert kb.retrieve("北京的常住人口", k=1)[0].file_name == "北京.txt"


def test_retrieval_test_shows_scores_and_what_a_threshold_keeps(app, T):
    upload(app, [("北京.txt", BEIJING.encode()), ("武汉.txt", WUHAN.encode())])
    app.text_input(key="retrieval_question").input("北京的常住人口是多少？")
    run(app)
    labels = [e.label for e in app.expander if e.label.startswith("[")]
    assert labels and "北京.txt" in labels[0], labels  # ranked, best first
    assert len(labels) == 2  # both documents are listed, the unrelated one too
    default = app.slider(key="retrieval_threshold").value
    kb = _kb(app)
    assert default == pytest.approx(kb.retriever.effective_threshold())
    scores = [float(re.search(r"(\d\.\d\d)$", label.replace(" · " + T("below the threshold"), "")).group(1))
              for label in labels]
    kept = sum(s >= default for s in scores)
    assert T("{kept} of {n} passages reach the threshold {threshold}: only those would be used to answer.",
             kept=kept, n=2, threshold=f"{default:.2f}") in [c.value for c in app.caption]
    app.slider(key="retrieval_threshold").set_value(1.0)
    run(app)
    assert all(T("below the threshold") in e.label for e in app.expander if e.label.startswith("["))
    assert T("{kept} of {n} passages reach the threshold {threshold}: only those would be used to answer.",
             kept=0, n=2, threshold="1.00") in [c.value for c in app.caption]

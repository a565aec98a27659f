"""The real thing: `streamlit run ui/app.py` driven by headless Chromium through Playwright.

A temporary knowledge base (DOCQA_STORE__DIR) and the packaged stand-in model (SmolLM2-135M,
answers capped at 48 new tokens) are used. The test uploads a Chinese PDF, asks about it, and
checks that an answer appears with the PDF cited among the shown sources. Screenshots are
written to test-output/ui-browser/ (the paths are printed; run with -s to see them).

Playwright cannot download its own browser here: the system Chromium is used
(DOCQA_TEST_CHROMIUM, else /usr/bin/chromium, chromium or chromium-browser on PATH); without one
the test is skipped with a message saying so.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.docmaker import make_chinese_pdf
from tests.helpers_ui import CitingServer

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "test-output" / "ui-browser"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PAGE_1 = "上海是中国的经济中心，位于长江入海口。"
PAGE_2 = "北京是中华人民共和国的首都，常住人口约两千一百万。北京有故宫和长城。"

pytestmark = [pytest.mark.browser, pytest.mark.server, pytest.mark.slow]


HIGHLIGHT_PIXELS_JS = """img => {
    const c = document.createElement("canvas");
    c.width = img.naturalWidth; c.height = img.naturalHeight;
    const ctx = c.getContext("2d"); ctx.drawImage(img, 0, 0);
    const d = ctx.getImageData(0, 0, c.width, c.height).data;
    let n = 0;
    for (let i = 0; i < d.length; i += 4)
        if (d[i] > 200 && d[i + 1] > 170 && d[i + 1] < 245 && d[i + 2] < 160) n++;
    return n;
}"""
"""Pixels of the highlight's yellow in a page image (the page itself is black on white)."""


def _choose(page, selectbox, option_text: str) -> None:
    """Pick an option of a Streamlit select box; a rerun that redraws the sidebar can close the
    list just opened, so it is opened again until the option shows."""
    for _attempt in range(5):
        selectbox.click()
        option = page.locator('[role="option"]').filter(has_text=option_text).first
        try:
            option.wait_for(timeout=10_000)
        except Exception:
            continue
        option.click()
        return
    raise AssertionError(f"the option {option_text!r} never showed")


def chromium_path() -> str | None:
    for candidate in (os.environ.get("DOCQA_TEST_CHROMIUM"), "/usr/bin/chromium"):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("chromium") or shutil.which("chromium-browser")


class StreamlitServer:
    """`streamlit run ui/app.py` on 127.0.0.1 and a free port over one knowledge base folder;
    ``restart()`` stops it and starts a new server process on the same port and folder."""

    def __init__(self, tmp_path: Path):
        self.tmp_path = tmp_path
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp_path / "streamlit.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOCQA_")}
        env.update(
            DOCQA_STORE__DIR=str(self.tmp_path / "kb"),
            DOCQA_MODEL__MAX_NEW_TOKENS="48",
            DOCQA_MODEL__TEMPERATURE="0",  # greedy: the same answer on every run
            HF_HUB_OFFLINE="1",
            TRANSFORMERS_OFFLINE="1",
            ANONYMIZED_TELEMETRY="False",
            PYTHONUNBUFFERED="1",
        )
        log = open(self.log_path, "a")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "ui/app.py",
             "--server.address", "127.0.0.1", "--server.port", str(self.port), "--server.headless", "true",
             "--browser.gatherUsageStats", "false"],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.time() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            if self.proc.poll() is not None or time.time() > deadline:
                self.proc.kill()
                pytest.fail(f"streamlit did not start:\n{self.log_path.read_text()[-3000:]}")
            time.sleep(0.5)

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def restart(self) -> None:
        self.stop()
        self.start()


@pytest.fixture
def streamlit_server(tmp_path):
    """A running StreamlitServer with a fresh knowledge base."""
    pytest.importorskip("llama_cpp", reason="the stand-in model needs llama-cpp-python")
    if chromium_path() is None:
        pytest.skip("no Chromium found (/usr/bin/chromium, chromium on PATH or DOCQA_TEST_CHROMIUM); "
                    "Playwright cannot download its own browser here, so the browser test cannot run")
    server = StreamlitServer(tmp_path)
    server.start()
    yield server
    server.stop()


def test_upload_ask_and_see_cited_source_in_a_real_browser(streamlit_server, tmp_path):
    executable = chromium_path()
    assert executable is not None  # the fixture skipped otherwise
    sync_api = pytest.importorskip("playwright.sync_api")
    server = streamlit_server
    url, log_path = server.url, server.log_path
    pdf = make_chinese_pdf(tmp_path / "北京介绍.pdf", [PAGE_1, PAGE_2], title="北京介绍")
    OUT.mkdir(parents=True, exist_ok=True)
    shots: list[Path] = []

    def shot(page, name: str) -> None:
        path = OUT / name
        page.screenshot(path=str(path), full_page=True)
        shots.append(path)
        print(f"screenshot: {path}")

    # a model that cites, and also echoes prompt markup and writes HTML, as weak models do
    citing = CitingServer('<source id="1" file="北京介绍.pdf">根据资料，北京的常住人口约两千一百万[1]。</source>'
                          '<img src="https://example.com/x.png"> [/INST]</s>')
    with citing as citing_url, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(240_000)
            try:
                page.goto(url, wait_until="domcontentloaded")
                failed = page.locator('[data-testid="stException"]').or_(page.get_by_text("Script execution error"))
                failed.or_(page.get_by_text("Ask your documents")).first.wait_for()
                assert failed.count() == 0, failed.first.inner_text()
                # the empty app explains what to do, and the stand-in model is announced
                page.get_by_text("No documents yet").first.wait_for()
                page.get_by_text("SmolLM2-135M-Instruct").first.wait_for()
                page.get_by_text("stand-in model", exact=False).first.wait_for()
                shot(page, "1-empty.png")

                page.get_by_role("tab", name="Documents").click()
                sheet = tmp_path / "预算.xlsx"
                sheet.write_bytes(b"PK\x03\x04 not really a spreadsheet")
                page.locator('[data-testid="stFileUploader"] input[type="file"]').set_input_files([str(pdf), str(sheet)])
                page.get_by_text("added to the knowledge base").first.wait_for()
                # a file of a type that cannot be read is reported with the upload, not dropped
                page.get_by_text("'.xlsx' files cannot be read").first.wait_for()
                page.get_by_text("Documents (1)").first.wait_for()
                assert (tmp_path / "kb" / "uploads" / "北京介绍.pdf").is_file()
                shot(page, "2-uploaded.png")

                page.get_by_role("tab", name="Chat").click()
                box = page.locator('[data-testid="stChatInput"] textarea')
                box.wait_for()
                box.fill("北京的常住人口是多少？")
                box.press("Enter")
                assistant = page.locator('[data-testid="stChatMessage"]').nth(1)
                assistant.wait_for()
                source = page.locator('[data-testid="stExpander"] summary', has_text="北京介绍.pdf").first
                source.wait_for()
                # the best passage is cited first, with the page it is on (p. 2 holds the figure)
                label = source.inner_text().split("\n")[-1]
                assert re.fullmatch(r"\[1\] 北京介绍\.pdf · p\. 2 · relevance 0\.\d\d", label), label
                # quote mode (only the stand-in is there): the documents' sentence with its [1], and
                # the sentence marked inside the opened passage; no model generated anything
                assistant.get_by_text("Quoted from the documents").wait_for()
                answer = assistant.inner_text().split("Sources")[0]
                assert re.search(r"常住人口约两千一百万。\[1\]", answer), answer
                mark = assistant.locator("mark.docqa-quote").first
                mark.wait_for()
                assert "两千一百万" in mark.inner_text()
                assert failed.count() == 0, failed.first.inner_text()
                shot(page, "3-answer.png")

                # the cited PDF page, rendered on demand with the passage highlighted
                assistant.get_by_text("Show page 2 with the passage marked").click()
                image = assistant.locator('[data-testid="stImage"] img').first
                image.wait_for()
                assert image.evaluate("img => img.naturalWidth") > 800  # the whole page, readable
                # the highlight's yellow, counted in the image itself (a screenshot of a tall image
                # may catch the part under Streamlit's header)
                assert image.evaluate(HIGHLIGHT_PIXELS_JS) > 500  # the passage's lines are marked
                assert failed.count() == 0, failed.first.inner_text()
                shot(page, "3c-page-shown.png")

                # a summary without a model: outline and key sentences, with a Markdown download
                page.get_by_role("tab", name="Summary").click()
                page.get_by_role("button", name="Summarize").click()
                page.get_by_text("Outline and key sentences ·").first.wait_for()
                page.get_by_text("no model wrote it", exact=False).first.wait_for()
                page.locator("li:visible", has_text="两千一百万").first.wait_for()  # a key sentence, with its page
                assert "(北京介绍.pdf, p. 2)" in page.locator("li:visible", has_text="两千一百万").first.inner_text()
                page.get_by_role("button", name="Download as Markdown").wait_for()
                assert failed.count() == 0, failed.first.inner_text()
                shot(page, "4-summary.png")

                # the model picker offers the registry, a local path and a server URL
                page.get_by_test_id("stSidebarUserContent").get_by_text("Choose the model").click()
                page.get_by_text("Chinese-Alpaca-2 variant").first.wait_for()
                page.get_by_text("Server URL (OpenAI-compatible)").first.wait_for()
                shot(page, "5-model-picker.png")

                # a model that cites (an OpenAI-compatible server): [1] in the answer, its source below
                page.get_by_text("Server URL", exact=True).click()
                page.get_by_label("Server URL (OpenAI-compatible)").fill(citing_url)
                page.get_by_role("button", name="Apply").click()
                page.get_by_text("citing-test-model").first.wait_for()
                page.get_by_role("tab", name="Chat").click()
                box.fill("北京的常住人口有多少？")
                box.press("Enter")
                turn = page.locator('[data-testid="stChatMessage"]').nth(3)
                turn.get_by_text("两千一百万").first.wait_for()
                cited = turn.locator('[data-testid="stExpander"] summary').first
                cited.wait_for()
                answer_text = turn.inner_text().split("Sources")[0]
                assert "两千一百万[1]。" in answer_text and "*" not in answer_text, answer_text  # no raw markup
                for raw in ("<source", "source>", "<img", "example.com", "[/INST]", "</s>"):
                    assert raw not in answer_text, answer_text
                # widened over the page break to p. 1 in generate mode: the label gives the range
                assert re.fullmatch(r"\[1\] 北京介绍\.pdf · pp\. 1–2 · relevance 0\.\d\d",
                                    cited.inner_text().split("\n")[-1]), cited.inner_text()
                assert citing.requests and "两千一百万" in json.dumps(citing.requests[-1], ensure_ascii=False)
                assert failed.count() == 0, failed.first.inner_text()
                shot(page, "6-cited-answer.png")

                # the server restarts (or crashed): the conversation is still there on reload
                server.restart()
                page.goto(url, wait_until="domcontentloaded")
                messages = page.locator('[data-testid="stChatMessage"]')
                messages.nth(3).wait_for()
                assert messages.count() == 4
                assert "北京的常住人口是多少？" in messages.nth(0).inner_text()
                assert "两千一百万[1]。" in messages.nth(3).inner_text()
                page.get_by_text("北京的常住人口是多少？ (2)").first.wait_for()  # listed in the sidebar
                assert failed.count() == 0, failed.first.inner_text()
                shot(page, "7-after-restart.png")
            except Exception:
                try:
                    shot(page, "failure.png")
                finally:
                    print(log_path.read_text()[-3000:])
                raise
        finally:
            browser.close()
    assert all(s.exists() and s.stat().st_size > 10_000 for s in shots)


def test_chinese_browser_gets_a_chinese_app_that_answers_while_files_are_added(streamlit_server, tmp_path):
    """A browser set to Chinese gets the Chinese interface without any setting. A long file is
    added in the background: its progress (files, chunks, time left) updates on its own, and a
    question asked meanwhile is answered from the document already stored."""
    executable = chromium_path()
    sync_api = pytest.importorskip("playwright.sync_api")
    server = streamlit_server
    pdf = make_chinese_pdf(tmp_path / "北京介绍.pdf", [PAGE_1, PAGE_2], title="北京介绍")
    long_text = tmp_path / "长文.txt"
    long_text.write_text("".join(f"第{i}条：合同双方应当按照约定全面履行自己的义务，不得擅自变更或者解除合同。" * 3
                                 for i in range(1500)), encoding="utf-8")
    OUT.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000}, locale="zh-CN")
            page.set_default_timeout(240_000)
            try:
                page.goto(server.url, wait_until="domcontentloaded")
                page.get_by_text("向你的文档提问").first.wait_for()
                page.get_by_text("还没有文档。", exact=False).first.wait_for()
                page.get_by_role("tab", name="文档").click()
                uploader = page.locator('[data-testid="stFileUploader"] input[type="file"]')
                uploader.set_input_files([str(pdf)])
                page.get_by_text("已加入知识库").first.wait_for()
                page.get_by_text("文档（1）").first.wait_for()

                page.locator('[data-testid="stFileUploader"] input[type="file"]').set_input_files([str(long_text)])
                page.get_by_text("正在添加 1 个文件", exact=False).first.wait_for()
                bar = page.locator('[data-testid="stProgress"]').first
                bar.get_by_text("文本块", exact=False).first.wait_for()  # chunks counted as they are embedded
                first_reading = bar.inner_text()
                page.screenshot(path=str(OUT / "zh-1-adding.png"), full_page=True)

                page.get_by_role("tab", name="问答").click()
                box = page.locator('[data-testid="stChatInput"] textarea')
                box.fill("北京的常住人口是多少？")
                box.press("Enter")
                assistant = page.locator('[data-testid="stChatMessage"]').nth(1)
                assistant.get_by_text("摘自文档原文", exact=False).wait_for()
                assert "两千一百万" in assistant.inner_text()
                page.screenshot(path=str(OUT / "zh-2-answer-while-adding.png"), full_page=True)
                page.get_by_role("tab", name="文档").click()
                if page.get_by_text("正在添加 1 个文件", exact=False).count():  # still going: it moves on its own
                    page.wait_for_function(
                        "([text]) => { const e = document.querySelector('[data-testid=\"stProgress\"]');"
                        " return !e || e.innerText !== text; }", arg=[first_reading])
                page.get_by_text("上次上传", exact=False).first.wait_for()
                page.get_by_text("文档（2）").first.wait_for()
                page.screenshot(path=str(OUT / "zh-3-added.png"), full_page=True)
            except Exception:
                page.screenshot(path=str(OUT / "zh-failure.png"), full_page=True)
                print(server.log_path.read_text()[-3000:])
                raise
        finally:
            browser.close()


def test_switching_the_language_keeps_every_choice(streamlit_server):
    """The browser hands back a radio's choice as the label it shows: after switching to
    Chinese, every choice must still be one of the options (an English label once became the
    value, showed up as a third option and made answering fail with a ValueError)."""
    executable = chromium_path()
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000}, locale="en-US")
            page.set_default_timeout(120_000)
            page.goto(streamlit_server.url, wait_until="domcontentloaded")
            page.get_by_text("Ask your documents").first.wait_for()
            sidebar = page.locator('[data-testid="stSidebar"]')
            _choose(page, sidebar.locator('[data-testid="stSelectbox"]').filter(has_text="Language"), "简体中文")
            page.get_by_text("向你的文档提问").first.wait_for()
            answer_with = page.get_by_role("radiogroup", name="回答方式")
            answer_with.get_by_text("由模型作答").click()  # any interaction after the switch
            page.wait_for_timeout(1500)
            answer_with.get_by_text("摘录文档原文").click()
            page.wait_for_timeout(1500)
            budget = page.get_by_role("radiogroup", name="每次回答的上下文")
            assert budget.locator("label").all_inner_texts() == ["快速：模型约 10 秒内能读完的量", "模型的整个窗口"]
            assert budget.locator("input:checked").count() == 1
            assert answer_with.locator("input:checked").count() == 1
            assert page.locator('[data-testid="stException"]').count() == 0
        finally:
            browser.close()

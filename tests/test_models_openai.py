"""OpenAI-compatible backend against a real `python -m llama_cpp.server` serving SmolLM2."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

from tests.helpers_models import smollm2_gguf

from rag.models import ModelUnavailable, load_chat_model
from rag.models.openai_backend import estimate_tokens
from rag.settings import ModelSettings

pytestmark = pytest.mark.server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(smollm2_gguf()), "--host", "127.0.0.1",
         "--port", str(port), "--n_ctx", "2048", "--verbose", "false"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(url + "/models", timeout=2).read()
                break
            except Exception:
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError("llama_cpp.server did not start")
                time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_streams_through_the_server(server):
    lm = load_chat_model(ModelSettings(name=server, max_new_tokens=24, temperature=0.0))
    assert lm.backend == "openai" and not lm.is_stand_in
    # llama_cpp.server does not report its window: the conservative default, with a note
    assert lm.context_window == 2048 and "context window" in lm.notice
    chunks = [c.content for c in lm.chat_model.stream("Name a fruit.")]
    assert len([c for c in chunks if c]) >= 3
    full = "".join(chunks)
    assert lm.chat_model.invoke("Name a fruit.").content == full  # greedy
    stop = full.strip()[3:6]
    assert lm.chat_model.invoke("Name a fruit.", stop=[stop]).content == full[: full.index(stop)]


def test_server_tokenizer_counts_like_the_model(server):
    import llama_cpp

    lm = load_chat_model(ModelSettings(name=server, context_length=1024))
    assert lm.context_window == 1024
    assert "estimates" not in (lm.notice or "")
    llm = llama_cpp.Llama(model_path=str(smollm2_gguf()), vocab_only=True, verbose=False)
    text = "Local document QA 本地文档问答"
    assert lm.count_tokens(text) == len(llm.tokenize(text.encode(), add_bos=False, special=True))


def test_cancel_and_close(server):
    chat = load_chat_model(ModelSettings(name=server, max_new_tokens=300)).chat_model
    short = chat.model_copy(update={"max_new_tokens": 4, "temperature": 0.0})
    expected = short.invoke("Hi").content  # greedy: the same text whenever the server is free
    assert expected.strip()
    ev = threading.Event()
    n = 0
    for _ in chat.stream("Tell a long story.", cancel_event=ev):
        n += 1
        if n == 2:
            ev.set()
    assert n <= 3
    gen = chat.stream("Tell a long story.")
    next(gen)
    gen.close()  # closes the HTTP stream; the next request is served promptly
    assert short.invoke("Hi").content == expected  # not a tail of the abandoned story


def test_unreachable_server_is_a_clear_error():
    with pytest.raises(ModelUnavailable, match="llama_cpp.server"):
        load_chat_model(ModelSettings(name=f"http://127.0.0.1:{_free_port()}/v1"))


def test_estimate_is_documented_fallback():
    assert estimate_tokens("你好世界") == 4 and estimate_tokens("abcdef") == 2

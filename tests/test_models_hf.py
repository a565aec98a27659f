"""transformers backend on a tiny random Llama (vocab 55296, char-level tokenizer)."""

from __future__ import annotations

import importlib.util
import json
import threading
import time

import pytest
import torch

from tests.helpers_models import HEAD_DIM, make_tiny_llama

from rag.models import load_chat_model
from rag.models.errors import BackendUnavailable
from rag.models.hf_backend import pick_dtype
from rag.settings import ModelSettings


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    # the name matches a registry key, so the registry's 16K rope and Alpaca-2 prompt apply
    path = tmp_path_factory.mktemp("m") / "chinese-alpaca-2-7b-16k-tiny"
    make_tiny_llama(path)
    cfg = json.loads((path / "config.json").read_text())
    cfg["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.Evil"}  # must never be imported
    (path / "config.json").write_text(json.dumps(cfg))
    return path


def _load(folder, **kw):
    kw.setdefault("max_new_tokens", 24)
    kw.setdefault("temperature", 0.0)
    return load_chat_model(ModelSettings(name=str(folder), **kw), in_process=True)


def _hf_threads():
    return [t for t in threading.enumerate() if t.name == "hf-generate" and t.is_alive()]


def test_dtype_choice(monkeypatch):
    assert pick_dtype("cpu") == torch.float32
    assert pick_dtype("mps") == torch.float16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert pick_dtype("cuda") == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert pick_dtype("cuda:0") == torch.float16


def test_loads_with_registry_rope_and_prompt(folder):
    lm = _load(folder)
    chat = lm.chat_model
    assert lm.backend == "transformers" and lm.context_window == 16384 and not lm.is_stand_in
    assert chat.model.config.rope_parameters["rope_type"] == "linear"
    assert chat.model.config.rope_parameters["factor"] == 4.0
    assert chat.model.dtype == torch.float32 and chat.model.device.type == "cpu"
    assert chat.prompt_format == "llama2-chat"
    assert chat.format_prompt([("human", "你好")]).endswith("你好 [/INST]")
    # char-level tokenizer: one token per character, the model's own count
    assert lm.count_tokens("你好abc") == 5 and chat.get_num_tokens("你好abc") == 5
    assert chat.get_num_tokens_from_messages([("human", "hi")]) > 40


def test_stream_equals_invoke_and_stops(folder):
    chat = _load(folder).chat_model
    chunks = [c.content for c in chat.stream("测试")]
    full = "".join(chunks)
    assert len([c for c in chunks if c]) >= 2 and len(full) >= 10
    assert chat.invoke("测试").content == full  # greedy: same text
    stop = full[6:8]
    cut = chat.invoke("测试", stop=[stop]).content
    assert cut == full[: full.index(stop)]


def test_cancel_event_stops_generation(folder):
    chat = _load(folder, max_new_tokens=4000).chat_model
    ev = threading.Event()
    n = 0
    for _ in chat.stream("长文", cancel_event=ev):
        n += 1
        if n == 3:
            ev.set()
    assert n < 10
    assert not _hf_threads()


def test_consumer_stopping_stops_generation(folder):
    chat = _load(folder, max_new_tokens=4000).chat_model
    for _ in chat.stream("长文"):
        break
    deadline = time.time() + 5
    while _hf_threads() and time.time() < deadline:
        time.sleep(0.05)
    assert not _hf_threads()


def test_speculative_decoding_with_draft_model(folder, tmp_path):
    """A draft with other weights (same tokenizer) proposes tokens the main model checks: the
    draft really runs, and greedy assisted decoding still gives the main model's own text."""
    draft_folder = tmp_path / "draft"
    make_tiny_llama(draft_folder, seed=1)
    plain = _load(folder, max_new_tokens=12).chat_model.invoke("草稿").content
    lm = _load(folder, max_new_tokens=12, draft_model=str(draft_folder))
    draft = lm.chat_model.draft_model
    assert draft is not None
    calls = []
    draft.register_forward_hook(lambda module, args, output: calls.append(1))
    assert lm.chat_model.invoke("草稿").content == plain
    assert calls, "the draft model never ran"


def test_quantisation_needs_bitsandbytes(folder):
    if importlib.util.find_spec("bitsandbytes") is not None:
        pytest.skip("bitsandbytes is installed here")
    with pytest.raises(BackendUnavailable, match="bitsandbytes"):
        _load(folder, load_in_4bit=True)


def test_ntk_setting_installs_hook(folder):
    chat = _load(folder, rope_ntk=True).chat_model
    assert chat.ntk_hook is not None and chat.context_window == 24576
    assert chat.invoke("x").content  # generation works with the hook in place
    assert chat.ntk_hook.pinned is None  # unpinned after the generation


def test_prompt_longer_than_the_window_is_refused(folder):
    """As on llama.cpp: past the window the output is garbage, so it is an error, not silence."""
    chat = _load(folder, context_length=128).chat_model
    with pytest.raises(ValueError, match="the context window is 128"):
        chat.invoke("长" * 150)
    # a prompt that fits gets at most the room left in the window
    prompt_tokens = len(chat.encode_prompt([("human", "短")])["input_ids"][0])
    asked = []
    generate = chat.model.generate
    chat.model.generate = lambda **kw: asked.append(kw["max_new_tokens"]) or generate(**kw)
    try:
        chat.model_copy(update={"max_new_tokens": 500}).invoke("短")
    finally:
        del chat.model.generate
    assert asked == [128 - prompt_tokens] and 0 < asked[0] < 500


def test_rope_report_reads_back_what_transformers_uses(folder):
    report = _load(folder).chat_model.rope_report
    assert report["ok"] and report["rope_type"] == "linear" and report["max_position_embeddings"] == 16384
    assert report["rope_parameters"]["factor"] == 4.0 and report["n_ctx"] == 16384
    # the rotary embedding's own first/last inverse frequencies: theta^0 / 4 and theta^-(d-2)/d / 4
    first, last = report["inv_freq_first_last"]
    d = HEAD_DIM
    assert first == pytest.approx(0.25) and last == pytest.approx(10000 ** (-(d - 2) / d) / 4, rel=1e-5)


def test_window_beyond_what_the_variant_handles_gives_a_notice(folder):
    assert _load(folder).notice is None
    assert "beyond the 16384" in _load(folder, context_length=20000).notice
    assert _load(folder, context_length=30000, rope_ntk=True).notice is None  # NTK: up to 32K
    assert "beyond the 32768" in _load(folder, context_length=40000, rope_ntk=True).notice

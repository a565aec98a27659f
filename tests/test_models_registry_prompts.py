"""Registry, prompt format, stop filter and the `python -m rag models` command."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

from rag.models import prompts, registry
from rag.models.common import StopFilter


def test_registry_covers_the_family():
    keys = {m.key for m in registry.list_models()}
    for size in ("1.3b", "7b", "13b"):
        assert f"chinese-alpaca-2-{size}" in keys and f"chinese-llama-2-{size}" in keys
    assert {"chinese-alpaca-2-7b-16k", "chinese-alpaca-2-13b-16k", "chinese-alpaca-2-7b-64k",
            "chinese-alpaca-2-1.3b-rlhf", "chinese-alpaca-2-7b-rlhf"} <= keys
    m16 = registry.get_model("chinese-alpaca-2-7b-16k")
    assert (m16.rope.kind, m16.rope.factor, m16.context_length) == ("linear", 4.0, 16384)
    m64 = registry.get_model("chinese-alpaca-2-7b-64k")
    assert (m64.rope.kind, m64.rope.factor, m64.rope.original_max_positions, m64.context_length) == ("yarn", 16.0, 4096, 65536)
    assert all(m.vocab_size == 55296 for m in registry.list_models())
    base = registry.get_model("chinese-llama-2-7b")
    assert base.kind == "base" and base.prompt_format == "plain" and base.hf_repo == "hfl/chinese-llama-2-7b"
    assert registry.get_model("chinese-alpaca-2-7b").gguf_repo == "hfl/chinese-alpaca-2-7b-gguf"
    assert registry.get_model("chinese-alpaca-2-13b").draft_key == "chinese-alpaca-2-1.3b"


def test_find_model_by_repo_and_file():
    assert registry.find_model("hfl/chinese-alpaca-2-7b-16k").key == "chinese-alpaca-2-7b-16k"
    assert registry.find_model("hfl/chinese-alpaca-2-7b-gguf/ggml-model-q8_0.gguf").key == "chinese-alpaca-2-7b"
    assert registry.find_model("someone/else") is None
    with pytest.raises(KeyError, match="known"):
        registry.get_model("chinese-alpaca-3")


def test_models_cli_table_and_json():
    out = subprocess.run([sys.executable, "-m", "rag", "models", "--json"], capture_output=True, text=True, check=True).stdout
    data = json.loads(out)
    assert len(data) == len(registry.list_models())
    row = next(d for d in data if d["key"] == "chinese-alpaca-2-7b-64k")
    assert row["rope"]["kind"] == "yarn" and row["context_length"] == 65536
    table = subprocess.run([sys.executable, "-m", "rag", "models"], capture_output=True, text=True, check=True).stdout
    assert "chinese-alpaca-2-7b-16k" in table and "linear x4" in table and "continuation" in table


def test_single_turn_prompt_is_upstream_template():
    p = prompts.format_messages_llama2([HumanMessage("你好")])
    assert p == "[INST] <<SYS>>\nYou are a helpful assistant. 你是一个乐于助人的助手。\n<</SYS>>\n\n你好 [/INST]"


def test_multi_turn_layout():
    msgs = [SystemMessage("SYS"), HumanMessage("q1"), AIMessage("a1"), HumanMessage("q2"), AIMessage("a2"), HumanMessage("q3")]
    p = prompts.format_messages_llama2(msgs)
    assert p == ("[INST] <<SYS>>\nSYS\n<</SYS>>\n\nq1 [/INST] a1</s>"
                 "<s>[INST] q2 [/INST] a2</s><s>[INST] q3 [/INST]")


def test_long_answer_system_prompt_by_name():
    assert prompts.resolve_system_prompt("long") == prompts.LONG_ANSWER_SYSTEM_PROMPT
    assert "详细回复" in prompts.LONG_ANSWER_SYSTEM_PROMPT
    assert prompts.resolve_system_prompt(None) == prompts.DEFAULT_SYSTEM_PROMPT
    assert prompts.resolve_system_prompt("Be brief.") == "Be brief."


def test_stop_filter_holds_back_partial_stop():
    f = StopFilter(["###"])
    assert f.feed("abc#") == "abc"
    assert f.feed("#x") == "##x"
    assert f.feed("yz##") == "yz"
    assert f.feed("#tail") == "" and f.done
    assert f.flush() == ""
    g = StopFilter(["\n\n"])
    assert g.feed("a\n") == "a" and g.flush() == "\n"

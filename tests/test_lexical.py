"""Search tokens and script folding."""

from __future__ import annotations

import json

import pytest
from opencc import OpenCC

from ingest.lexical import search_tokens, to_simplified
from tests.conftest import CMRC_PATH


# Sentences with characters whose folding depends on context (乾隆/干燥, 著名/看着, 覆盖, 沈阳,
# 什么, 老态龙钟), for when the CMRC passages beside the checkout are not there.
SAMPLES = [
    "乾隆皇帝在位六十年，天气乾燥时他常去承德避暑。",
    "他是著名的作家，看著窗外的雪，写下了这部小说。",
    "大雪覆盖了沈阳的街道，人们不知道为什么今天这么冷。",
    "这位老人虽然老态龙钟，却对书法情有独钟。",
    "台湾的资料库于二〇二〇年上线，支援多种语言。",
]


@pytest.fixture(scope="module")
def passages() -> list[str]:
    if not CMRC_PATH.is_file():
        return SAMPLES
    data = json.loads(CMRC_PATH.read_text(encoding="utf-8"))
    return SAMPLES + [p["context"] for a in data["data"] for p in a["paragraphs"]][:300]


def test_folding_matches_opencc_on_simplified_and_traditional_text(passages):
    t2s, s2t = OpenCC("t2s"), OpenCC("s2t")
    traditional = [s2t.convert(p) for p in passages[:105]]
    samples = passages + traditional + ["情有獨鍾，老態龍鍾", "乾隆皇帝", "The 資料庫 is 很大", "plain English"]
    assert [to_simplified(s) for s in samples] == [t2s.convert(s) for s in samples]
    assert to_simplified(traditional[0]) != traditional[0]


def test_traditional_and_simplified_give_the_same_tokens():
    assert search_tokens("這個資料庫支援 GPU 加速。") == search_tokens("这个资料库支援 GPU 加速。")
    assert "gpu" in search_tokens("這個資料庫支援 GPU 加速。")

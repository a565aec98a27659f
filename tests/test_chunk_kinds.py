"""Reference lists and repeated text are marked at ingest (ingest.chunk_kinds) and ranked low."""

from __future__ import annotations

import pytest

from ingest.chunk_kinds import BODY, OTHER_LANGUAGE_ABSTRACT, REFERENCES, REPEATED, chunk_kinds, looks_like_references
from tests.helpers_rag import make_kb
from tests.helpers_reliability import unversion_catalogue

GBT_REFERENCES = """参考文献
[1] 张伟, 李娜. 大熊猫野外种群的食性研究[J]. 动物学报, 2019, 65(3): 210-218.
[2] 王强. 竹林生态系统与大熊猫保护[M]. 北京: 科学出版社, 2016.
[3] Wei F, Hu Y, Yan L, et al. Giant pandas are not an evolutionary cul-de-sac[J]. Molecular Biology and Evolution, 2015, 32(1): 4-12.
[4] Schaller G B. The Last Panda[M]. Chicago: University of Chicago Press, 1993."""

ENGLISH_REFERENCES = """References
1. Hu J, Wei F. Comparative ecology of giant pandas. Proceedings of the Zoological Society, 2004, pp. 12-19.
2. Zhang Z, et al. Habitat use by giant pandas. Journal of Mammalogy 88 (2007) 1-9.
3. Nie Y, et al. Exceptionally low daily energy expenditure in the giant panda. Science, 2015, vol. 349, pp. 171-174."""

HISTORY = ("1949年中华人民共和国成立。1953年开始第一个五年计划，1958年开始建设人民大会堂，"
           "1966年至1976年……1978年改革开放，2001年加入世界贸易组织，2008年举办奥运会。")
STEPS = "1. 打开设置页面。\n2. 选择打印机。\n3. 点击安装驱动。\n4. 重新启动电脑。"


def test_reference_lists_are_recognised():
    assert looks_like_references(GBT_REFERENCES) and looks_like_references(ENGLISH_REFERENCES)
    body = "大熊猫是中国特有的熊科动物，主要栖息在四川、陕西和甘肃的山区，每天要吃十几公斤竹子。" * 3
    assert chunk_kinds([body, GBT_REFERENCES]) == [BODY, REFERENCES]
    assert chunk_kinds([body, ENGLISH_REFERENCES]) == [BODY, REFERENCES]
    # entries continued in the next chunk, after the heading opened the list
    assert chunk_kinds([body, GBT_REFERENCES, GBT_REFERENCES.split("\n", 2)[2]]) == [BODY, REFERENCES, REFERENCES]
    # a chunk cut in the middle of an entry, after a chunk that holds body text and the list's
    # start (as a LibreOffice PDF of a Word paper splits)
    tail = "Hu Y, Yan L, et al. Giant pandas[J]. Molecular Biology and Evolution, 2015, 32(1): 4-12.\n[4] Schaller"
    assert chunk_kinds([body + "\n参考文献\n" + GBT_REFERENCES.split("\n")[1], tail]) == [BODY, REFERENCES]
    # a section headed 参考文献 (Markdown, DOCX, HTML headings) is references whatever it holds
    assert chunk_kinds([body, "见作者主页。"], ["论文", "5 参考文献"]) == [BODY, REFERENCES]


def test_body_text_with_years_or_numbered_steps_stays_body():
    assert not looks_like_references(HISTORY) and not looks_like_references(STEPS)
    assert chunk_kinds([HISTORY, STEPS]) == [BODY, BODY]
    # an appendix after the references is body again
    assert chunk_kinds(["正文。" * 10, GBT_REFERENCES, "附录 A 调查表\n样地编号、海拔和竹子种类。"]) == [BODY, REFERENCES, BODY]


def test_text_repeated_in_a_document_is_marked_after_its_first_time():
    notice = "本文件仅供内部使用，未经许可不得转载。第 1 页"
    kinds = chunk_kinds([notice, "第一章 总则。" * 5, notice.replace("1", "2"), "短句"])
    assert kinds == [BODY, BODY, REPEATED, BODY]


PAPER = ("# 大熊猫的食性\n\n"
         "大熊猫主要以竹子为食，成年个体每天要吃十几公斤竹子，一年中大部分时间都在进食和休息。"
         "春季它们偏爱竹笋，秋季则更多取食竹叶。\n\n"
         "## 参考文献\n\n" + GBT_REFERENCES.split("\n", 1)[1] + "\n")


@pytest.fixture(scope="module")
def kb(tmp_path_factory):
    return make_kb(tmp_path_factory.mktemp("kinds"), docs={"paper.md": PAPER})


def test_marked_at_ingest_and_ranked_low(kb, monkeypatch):
    from rag import retrieval

    hits = kb.retriever.search("大熊猫野外种群的食性", k=2, relevance_threshold=0.0)
    by_kind = {h.extra.get("kind", BODY): h for h in hits}
    assert set(by_kind) == {BODY, REFERENCES}
    assert hits[0].extra.get("kind", BODY) == BODY  # body text first, though the entry repeats the words
    assert kb.store.marked_kinds([h.chunk_id for h in hits]) == {by_kind[REFERENCES].chunk_id: REFERENCES}
    # measured here: without the weight the reference entry comes first
    monkeypatch.setattr(retrieval, "LOW_RANK_WEIGHT", 1.0)
    assert kb.retriever.search("大熊猫野外种群的食性", k=2, relevance_threshold=0.0)[0].chunk_id == by_kind[REFERENCES].chunk_id


def test_a_question_about_the_references_finds_them_first(kb):
    hits = kb.retriever.search("参考文献里有哪些关于大熊猫食性的文献？", k=2, relevance_threshold=0.0)
    assert hits[0].text.lstrip("# ").startswith("参考文献") or "[1]" in hits[0].text
    assert "kind" not in hits[0].extra


def test_a_catalogue_from_before_chunk_kinds_opens_and_takes_new_documents(tmp_path):
    import sqlite3

    from rag.api import KnowledgeBase
    from tests.helpers_rag import DOCS, write_docs

    kb = make_kb(tmp_path, docs={"panda.md": DOCS["panda.md"]})
    settings, path = kb.settings, kb.store.dir
    kb.close()
    db = sqlite3.connect(path / "catalog.sqlite3")
    db.execute("ALTER TABLE chunks DROP COLUMN kind")
    unversion_catalogue(db)  # written before the migrations
    db.commit()
    db.close()
    reopened = KnowledgeBase(path, settings)
    assert reopened.retrieve("大熊猫吃什么？", k=1)[0].file_name == "panda.md"
    assert reopened.add(write_docs(tmp_path / "more", {"paper.md": PAPER})).ok
    hits = reopened.retriever.search("大熊猫野外种群的食性", k=3, relevance_threshold=0.0)
    assert REFERENCES in {h.extra.get("kind") for h in hits}


def test_table_chunks_that_differ_only_in_their_numbers_are_not_repeated_text():
    header = "表1 ZX系列主要参数\n| 型号 | 额定功率 | 重量 |\n|---|---|---|\n"
    first = header + "| ZX-1001 | 8100 W | 50.25 kg |\n| ZX-1002 | 8137 W | 50.50 kg |"
    second = header + "| ZX-1003 | 8174 W | 50.75 kg |\n| ZX-1004 | 8211 W | 51.00 kg |"
    assert chunk_kinds([first, second]) == [BODY, BODY]
    footer = "版权所有 © 某某公司，未经书面许可不得复制本手册的任何部分。"
    assert chunk_kinds([footer + "\n- 3 -", footer + "\nPage 4 of 9"]) == [BODY, REPEATED]


ENGLISH_ABSTRACT = ("Feeding Habits of the Giant Panda in the Qinling Mountains\n"
                    "Abstract: We observed what wild giant pandas eat through the year. Adult pandas feed almost only "
                    "on bamboo, shoots in spring and leaves in autumn, and spend most of the day eating.\n"
                    "Key words: giant panda; bamboo; feeding habits")
CHINESE_BODY = ("1 结果\n成年大熊猫每天要吃十几公斤竹子，一年中大部分时间都在进食和休息。"
                "春季它们偏爱竹笋，秋季则更多取食竹叶，冬季下到低海拔地区觅食。")


def test_an_abstract_in_the_other_language_is_marked():
    chinese_head = "秦岭大熊猫的食性\n摘要：本文观察了野生大熊猫全年的食物组成。\n关键词：大熊猫；竹子；食性"
    kinds = chunk_kinds([chinese_head, ENGLISH_ABSTRACT, CHINESE_BODY * 3, GBT_REFERENCES])
    assert kinds == [BODY, OTHER_LANGUAGE_ABSTRACT, BODY, REFERENCES]
    # in an English paper its English abstract is body text; an English line without an abstract
    # mark in a Chinese paper (a quoted sentence, a table) is body text too
    assert chunk_kinds([ENGLISH_ABSTRACT, "Results. Pandas eat bamboo all year round." * 3]) == [BODY, BODY]
    assert chunk_kinds([CHINESE_BODY * 3, "Pandas eat about twelve kilograms of bamboo a day."]) == [BODY, BODY]
    # the abstract going on in the next chunk
    more = "Pandas also eat small animals and carrion now and then, which we saw twice."
    assert chunk_kinds([CHINESE_BODY * 3, ENGLISH_ABSTRACT, more, CHINESE_BODY]) == \
        [BODY, OTHER_LANGUAGE_ABSTRACT, OTHER_LANGUAGE_ABSTRACT, BODY]


def test_an_english_question_finds_the_chinese_page_before_the_english_abstract(tmp_path, monkeypatch):
    """As in a Chinese journal paper: the English question's words are all in the English
    abstract, but the Chinese body answers it (searched through the dictionary words)."""
    from rag import retrieval

    paper = ("# 秦岭大熊猫的食性\n\n摘要：本文观察了野生大熊猫全年的食物组成。\n\n"
             "## English abstract\n\n" + ENGLISH_ABSTRACT + "\n\n## 1 结果\n\n" + CHINESE_BODY * 2 + "\n")
    kb = make_kb(tmp_path, docs={"paper.md": paper})
    question = "What do giant pandas eat in spring?"
    found = kb.retriever.search(question, k=5, relevance_threshold=0.0)
    assert OTHER_LANGUAGE_ABSTRACT in {h.extra.get("kind") for h in found}
    assert "竹笋" in kb.retrieve(question, k=3)[0].text  # no model: with the dictionary's words
    monkeypatch.setattr(retrieval, "LOW_RANK_WEIGHT", 1.0)  # measured here: unmarked, the abstract wins
    assert "Abstract" in kb.retrieve(question, k=3)[0].text
    # asked about the abstract, it is not ranked low
    monkeypatch.undo()
    assert "Abstract" in kb.retriever.search("What does the abstract say about bamboo?", k=1,
                                             relevance_threshold=0.0)[0].text

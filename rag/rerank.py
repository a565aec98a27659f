"""Optional cross-encoder reranking of retrieved passages.

Usage::

    from rag.rerank import load_reranker

    reranker = load_reranker("BAAI/bge-reranker-v2-m3")       # Hub name or local folder; cached
    reranker.rerank("北京是哪个国家的首都？", ["北京是中国的首都。", "大熊猫吃竹子。"])
    # one 0..1 relevance per passage, in the given order (float32 array)

    # or through the settings: the retriever reranks its best fused candidates
    #   DOCQA_RETRIEVAL__RERANKER=BAAI/bge-reranker-base  DOCQA_RETRIEVAL__RERANK_CANDIDATES=20

A cross-encoder reads question and passage together and gives one logit per pair; its sigmoid
is the 0..1 relevance these models' own tools report (FlagEmbedding's ``normalize=True`` for
bge-reranker, BCEmbedding's scores for bce-reranker, sentence-transformers' default for one
output), on one scale for every question, so one relevance threshold serves all questions.
The value is not a calibrated probability for every model: set the threshold per reranker.
sentence-transformers 6's
``CrossEncoder.predict`` applies the activation stored with the model (a sigmoid by default for
one output, but some models store an identity); logits are asked for explicitly here and the
sigmoid applied once, whatever the model stored.

Like the embedder (ingest.embeddings), a reranker is loaded from safetensors weights only and
never runs code shipped with the model. Nothing here is imported unless a reranker is
configured; sentence-transformers is imported only when one is loaded.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rag.models.errors import ModelError

ENV_VAR = "DOCQA_RETRIEVAL__RERANKER"


class RerankerUnavailable(ModelError):
    """The configured reranker cannot be loaded; ``str(err)`` names it and says how to get it.

    A :class:`ModelError`, so the CLIs report it like a chat model that cannot load (exit 3)."""


class Reranker:
    """A sentence-transformers ``CrossEncoder`` scoring (question, passage) pairs 0..1.

    ``model``: a Hub name (``BAAI/bge-reranker-base``) or a local folder. Inputs longer than the
    model's own limit (``max_length``: its tokenizer's ``model_max_length``, capped at its
    position table) are truncated, the longer text (the passage) first.
    """

    def __init__(self, model: str, device: str | None = None, batch_size: int = 32) -> None:
        local = Path(model).expanduser()
        if local.is_dir():
            from ingest.embeddings import refuse_pickle_weights

            refuse_pickle_weights(local, "Reranker folder", RerankerUnavailable)
        elif _looks_like_path(model):  # not a Hub name: say so instead of asking the Hub
            raise RerankerUnavailable(
                f"Reranker folder {model} does not exist. Set {ENV_VAR} (or --reranker) to a model "
                f"folder or a Hub name such as BAAI/bge-reranker-base, or leave it empty to search "
                f"without reranking."
            )
        from sentence_transformers import CrossEncoder  # heavy: only when a reranker is used

        from ingest.embeddings import no_loading_bars

        try:
            # Weights only from safetensors (a pickle can run code when loaded); never code
            # shipped with a model (trust_remote_code also keeps a stored activation to torch.*).
            with no_loading_bars():
                self._model = CrossEncoder(
                    str(local) if local.is_dir() else model,
                    device=device,
                    trust_remote_code=False,
                    model_kwargs={"use_safetensors": True},
                )
        except Exception as exc:  # the libraries raise many types for "cannot get it"
            raise RerankerUnavailable(_unavailable_message(model, exc)) from exc
        if self._model.num_labels != 1:
            raise RerankerUnavailable(
                f"Reranker '{model}' gives {self._model.num_labels} scores per pair; a reranker "
                f"(cross-encoder for relevance, e.g. BAAI/bge-reranker-base) gives one."
            )
        self.name = model
        self.max_length = int(self._model.max_seq_length or 512)
        self.batch_size = batch_size
        self.device = str(self._model.device)
        self._lock = threading.Lock()  # one batch at a time: app sessions share this object

    def logits(self, question: str, passages: Sequence[str]) -> np.ndarray:
        """The model's raw logits, one per passage (float32)."""
        if not passages:
            return np.zeros(0, dtype=np.float32)
        from torch import nn

        pairs = [(question, p) for p in passages]
        with self._lock:
            out = self._model.predict(
                pairs, batch_size=self.batch_size, activation_fn=nn.Identity(),
                convert_to_numpy=True, show_progress_bar=False,
            )
        return np.asarray(out, dtype=np.float32).reshape(len(passages))

    def rerank(self, question: str, passages: Sequence[str]) -> np.ndarray:
        """0..1 relevance of each passage to ``question`` (float32, in the passages' order)."""
        return sigmoid(self.logits(question, passages))


def sigmoid(x: np.ndarray) -> np.ndarray:
    """1 / (1 + e^-x) without overflow for large logits."""
    return (0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, dtype=np.float64)))).astype(np.float32)


def _looks_like_path(model: str) -> bool:
    """A Hub name is ``name`` or ``org/name``; anything else is meant as a folder."""
    return model.startswith((".", "/", "~")) or "\\" in model or model.count("/") > 1


def _unavailable_message(model: str, exc: Exception) -> str:
    offline = os.environ.get("HF_HUB_OFFLINE") == "1"
    folder = model.rstrip("/").split("/")[-1]
    return (
        f"Reranker '{model}' could not be loaded ({type(exc).__name__}: {exc}). "
        + ("The Hugging Face Hub is switched off (HF_HUB_OFFLINE=1). " if offline else "")
        + f"On a machine with internet, run `hf download {model} --local-dir ./models/{folder}`, copy that "
        f"folder here and set {ENV_VAR} (or --reranker) to its path; or leave {ENV_VAR} empty to search "
        f"without reranking."
    )


@functools.lru_cache(maxsize=2)
def load_reranker(model: str, device: str | None = None) -> Reranker:
    """The reranker ``model`` names, loaded once per process (failures are not cached)."""
    return Reranker(model, device=device)


__all__ = ["Reranker", "RerankerUnavailable", "load_reranker", "sigmoid"]

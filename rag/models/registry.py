"""Every Chinese-LLaMA-2 / Chinese-Alpaca-2 variant, in one table of plain constants.

This is the one place that knows the model family: Hub repositories, GGUF files, context length,
RoPE scaling, prompt format and vocabulary. Loaders and backends read it; nothing else hard-codes
a model fact.

Sources: the upstream README of ymcui/Chinese-LLaMA-Alpaca-2 (model tables, long-context and RLHF
releases, speculative-sampling notes). Facts that could not be checked offline are marked
``UNVERIFIED`` next to them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

VOCAB_SIZE = 55296
"""Chinese-LLaMA-2 / Alpaca-2 vocabulary (LLaMA and Alpaca share it)."""

ROPE_THETA = 10000.0
HEAD_DIM = 128
"""All 1.3B/7B/13B variants use 128-dimensional attention heads (Llama-2 layout)."""

TRAINED_CONTEXT = 4096
"""Llama-2's original window; the 16K and 64K variants are extended from it."""

HUB_ORG = "hfl"

GGUF_QUANTS = ("q4_0", "q4_k", "q5_k", "q6_k", "q8_0", "f16")
"""Quantisations upstream lists for its GGUF repos, file names ``ggml-model-{quant}.gguf``.
UNVERIFIED: the exact set per repository (some may lack q4_k/q5_k or name K-quants ``Q4_K``);
``q4_0`` and ``q8_0`` are the ones upstream's llama.cpp guide uses."""

DEFAULT_GGUF_QUANT = "q4_0"

RopeKind = Literal["none", "linear", "yarn"]


@dataclass(frozen=True)
class RopeScaling:
    """How a variant stretches its rotary position embedding."""

    kind: RopeKind = "none"
    factor: float = 1.0
    original_max_positions: int = TRAINED_CONTEXT
    """The window the scaling starts from (YaRN's ``original_max_position_embeddings``)."""


NO_SCALING = RopeScaling()
LINEAR_16K = RopeScaling("linear", 4.0)
YARN_64K = RopeScaling("yarn", 16.0, TRAINED_CONTEXT)


@dataclass(frozen=True)
class ModelVariant:
    key: str
    display_name: str
    kind: Literal["base", "chat"]
    """``base`` (Chinese-LLaMA-2): text continuation only. ``chat`` (Chinese-Alpaca-2)."""
    size: str
    hf_repo: str
    gguf_repo: str
    context_length: int
    rope: RopeScaling = NO_SCALING
    rope_theta: float = ROPE_THETA
    head_dim: int = HEAD_DIM
    prompt_format: Literal["llama2-chat", "plain"] = "llama2-chat"
    vocab_size: int = VOCAB_SIZE
    rlhf: bool = False
    gguf_has_rope_metadata: bool = True
    """False where the published GGUF files are known (or suspected) not to carry the scaling
    metadata, so llama.cpp must be told explicitly."""
    draft_key: str | None = None
    """Upstream's suggested small model for speculative decoding."""
    notes: str = ""
    gguf_files: tuple[str, ...] = field(default_factory=lambda: tuple(f"ggml-model-{q}.gguf" for q in GGUF_QUANTS))

    @property
    def is_chat(self) -> bool:
        return self.kind == "chat"

    @property
    def default_gguf_file(self) -> str:
        return f"ggml-model-{DEFAULT_GGUF_QUANT}.gguf"

    def gguf_file(self, quant: str | None = None) -> str:
        return f"ggml-model-{(quant or DEFAULT_GGUF_QUANT).lower()}.gguf"

    def to_dict(self) -> dict:
        data = asdict(self)
        data["gguf_files"] = list(self.gguf_files)
        return data


def _variant(family: str, size: str, suffix: str = "", **kw) -> ModelVariant:
    chat = family == "alpaca"
    stem = f"chinese-{'alpaca' if chat else 'llama'}-2-{size.lower()}{suffix}"
    display = f"Chinese-{'Alpaca' if chat else 'LLaMA'}-2-{size}{suffix.upper()}"
    return ModelVariant(
        key=stem,
        display_name=display,
        kind="chat" if chat else "base",
        size=size,
        hf_repo=f"{HUB_ORG}/{stem}",
        gguf_repo=f"{HUB_ORG}/{stem}-gguf",
        prompt_format="llama2-chat" if chat else "plain",
        **kw,
    )


def _family() -> tuple[ModelVariant, ...]:
    out: list[ModelVariant] = []
    for family in ("alpaca", "llama"):
        chat = family == "alpaca"
        small = f"chinese-{'alpaca' if chat else 'llama'}-2-1.3b"
        for size in ("1.3B", "7B", "13B"):
            out.append(_variant(family, size, context_length=TRAINED_CONTEXT,
                                draft_key=None if size == "1.3B" else small))
        for size in ("7B", "13B"):
            out.append(_variant(
                family, size, "-16k", context_length=16384, rope=LINEAR_16K,
                draft_key=None,
                notes="Position interpolation x4; NTK (rope_ntk) stretches it further (upstream: 24K-32K).",
            ))
        out.append(_variant(
            family, "7B", "-64k", context_length=65536, rope=YARN_64K,
            # UNVERIFIED: whether hfl's 64K GGUF files carry rope.scaling.* keys (the checkpoint's
            # YaRN lives in custom modelling code, which converters of the time did not read), so
            # the loader always passes the YaRN parameters to llama.cpp explicitly.
            gguf_has_rope_metadata=False,
            notes="YaRN x16 over 4096. Upstream ships custom modelling code for it; this project "
                  "uses transformers' and llama.cpp's native YaRN instead (no trust_remote_code).",
        ))
    for size in ("1.3B", "7B"):
        out.append(_variant("alpaca", size, "-rlhf", context_length=TRAINED_CONTEXT, rlhf=True,
                            draft_key="chinese-alpaca-2-1.3b" if size == "7B" else None,
                            notes="Preference-aligned (RLHF) chat model."))
    return tuple(out)


MODELS: tuple[ModelVariant, ...] = _family()
_BY_KEY = {m.key: m for m in MODELS}
_BY_REPO = {r.lower(): m for m in MODELS for r in (m.hf_repo, m.gguf_repo)}

BASE_MODEL_NOTICE = (
    "{name} is a base (continuation) model, not a chat model: it continues text rather than "
    "answering questions, so QA answers will be poor. Use a Chinese-Alpaca-2 variant (e.g. "
    "chinese-alpaca-2-7b) for QA."
)


def list_models() -> list[ModelVariant]:
    return list(MODELS)


def get_model(key: str) -> ModelVariant:
    """The variant with this registry key (case-insensitive); KeyError naming the keys if none."""
    try:
        return _BY_KEY[key.strip().lower()]
    except KeyError:
        raise KeyError(f"unknown model {key!r}; known: {', '.join(_BY_KEY)}") from None


def find_model(name: str) -> ModelVariant | None:
    """The variant named by a registry key or one of its Hub repos (``hfl/...``), else None."""
    n = name.strip().lower().rstrip("/")
    if n in _BY_KEY:
        return _BY_KEY[n]
    if n in _BY_REPO:
        return _BY_REPO[n]
    # "hfl/chinese-alpaca-2-7b-gguf/ggml-model-q8_0.gguf": a repo plus a file
    parts = n.split("/")
    if len(parts) >= 3 and "/".join(parts[:2]) in _BY_REPO:
        return _BY_REPO["/".join(parts[:2])]
    return None


def match_variant_by_path(path: str) -> ModelVariant | None:
    """Best-effort: a local folder/file whose name contains a registry key (longest match)."""
    low = path.lower().replace("_", "-")
    hits = [m for m in MODELS if m.key in low]
    return max(hits, key=lambda m: len(m.key)) if hits else None


def table() -> str:
    """The registry as a fixed-width text table (``python -m rag models``)."""
    rows = [("key", "type", "ctx", "rope", "hub", "gguf repo")]
    for m in MODELS:
        rope = "-" if m.rope.kind == "none" else f"{m.rope.kind} x{m.rope.factor:g}"
        rows.append((m.key, m.kind + (" rlhf" if m.rlhf else ""), str(m.context_length), rope, m.hf_repo, m.gguf_repo))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append("")
    lines.append("base = Chinese-LLaMA-2, for text continuation, not chat/QA. GGUF files: "
                 + ", ".join(f"ggml-model-{q}.gguf" for q in GGUF_QUANTS) + f" (default {DEFAULT_GGUF_QUANT}).")
    return "\n".join(lines)

"""RoPE scaling for the long-context variants, the same on transformers and on llama.cpp.

* 16K variants: linear position interpolation (PI), factor 4: position ``p`` is rotated as
  ``p / 4``. transformers: ``rope_type="linear"``; llama.cpp: ``rope_freq_scale=1/4``.
* 64K variant: YaRN, factor 16 over an original 4096-position window. transformers' native
  ``rope_type="yarn"`` (no ``trust_remote_code``); llama.cpp ``rope_scaling_type=YARN``,
  ``rope_freq_scale=1/16``, ``yarn_orig_ctx=4096``, ``yarn_ext_factor=1``, ``beta_fast=32``,
  ``beta_slow=1``: the values transformers uses by default, with the attention (cos/sin) scale
  ``0.1·ln(16)+1`` that both apply.
* NTK (upstream's adaptive "auto" formula, off by default): for a sequence of ``L`` tokens longer
  than the trained window ``M``, ``alpha = L / (M/2) - 1`` and the rotary base becomes
  ``base·alpha^(d/(d-2))`` (``d`` the head dimension), on top of the linear factor.
  transformers' own ``dynamic`` rope type uses another formula, so here a small forward pre-hook
  on the model's rotary embedding recomputes ``inv_freq`` for the current length (or for a length
  pinned by the backend before a generation, so one generation keeps one base). On llama.cpp the
  same base is computed once for the chosen ``n_ctx`` and passed as ``rope_freq_base``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from rag.models.registry import HEAD_DIM, ROPE_THETA, TRAINED_CONTEXT, ModelVariant, RopeKind

# llama.cpp enum values (llama.h), kept here so this module imports without llama_cpp.
LLAMA_ROPE_SCALING_TYPE_NONE = 0
LLAMA_ROPE_SCALING_TYPE_LINEAR = 1
LLAMA_ROPE_SCALING_TYPE_YARN = 2

YARN_BETA_FAST = 32.0
YARN_BETA_SLOW = 1.0

NTK_CONTEXT = {4096: 12288, 16384: 24576}
"""Default window with NTK on: the low end of upstream's ranges (4K → 12K-18K, 16K → 24K-32K)."""


NTK_MAX_CONTEXT = {4096: 18432, 16384: 32768}
"""The most NTK is trusted with: the high end of upstream's ranges."""


@dataclass(frozen=True)
class RopeConfig:
    """The RoPE settings in force for one loaded model."""

    kind: RopeKind = "none"
    factor: float = 1.0
    original_max_positions: int = TRAINED_CONTEXT
    max_positions: int = TRAINED_CONTEXT
    """Positions the model handles with this scaling (4096, 16384, 65536): NTK's ``M``."""
    theta: float = ROPE_THETA
    head_dim: int = HEAD_DIM
    ntk: bool = False

    @classmethod
    def for_variant(cls, variant: ModelVariant, ntk: bool = False) -> "RopeConfig":
        return cls(
            kind=variant.rope.kind,
            factor=variant.rope.factor,
            original_max_positions=variant.rope.original_max_positions,
            max_positions=variant.context_length,
            theta=variant.rope_theta,
            head_dim=variant.head_dim,
            ntk=ntk,
        ).checked()

    def checked(self) -> "RopeConfig":
        if self.ntk and self.kind == "yarn":
            raise ValueError("NTK extension applies to unscaled and linearly scaled (16K) models, not YaRN (64K)")
        if self.kind != "none" and self.factor <= 1.0:
            raise ValueError(f"{self.kind} rope scaling needs a factor > 1, got {self.factor}")
        return self

    def with_ntk(self, ntk: bool) -> "RopeConfig":
        return replace(self, ntk=ntk).checked()

    def context_window(self, requested: int | None = None) -> int:
        if requested:
            return int(requested)
        if self.ntk:
            return NTK_CONTEXT.get(self.max_positions, int(self.max_positions * 1.5))
        return self.max_positions

    def supported_context(self) -> int:
        """The longest window this model handles well: the trained (or scaled) window, or with
        NTK the top of upstream's range."""
        if self.ntk:
            return NTK_MAX_CONTEXT.get(self.max_positions, self.max_positions * 2)
        return self.max_positions

    def describe(self) -> str:
        parts = ["no scaling" if self.kind == "none" else f"{self.kind} x{self.factor:g}"]
        if self.ntk:
            parts.append("+ adaptive NTK")
        return " ".join(parts)


# --- the formulas -------------------------------------------------------------------------------

def ntk_alpha(seq_len: int, max_positions: int) -> float:
    """Upstream's adaptive alpha; only used when ``seq_len > max_positions`` (then alpha > 1)."""
    return seq_len / (max_positions / 2) - 1


def ntk_base(theta: float, alpha: float, head_dim: int) -> float:
    return theta * alpha ** (head_dim / (head_dim - 2))


def effective_base(cfg: RopeConfig, seq_len: int) -> float:
    """The rotary base for a sequence of ``seq_len`` tokens (NTK only beyond the window)."""
    if cfg.ntk and seq_len > cfg.max_positions:
        return ntk_base(cfg.theta, ntk_alpha(seq_len, cfg.max_positions), cfg.head_dim)
    return cfg.theta


def inv_freq(cfg: RopeConfig, seq_len: int):
    """Inverse frequencies (torch, float32) for none/linear(+NTK); YaRN is left to transformers."""
    import torch

    if cfg.kind == "yarn":
        raise ValueError("YaRN inverse frequencies come from transformers' native implementation")
    base = effective_base(cfg, seq_len)
    d = cfg.head_dim
    freqs = 1.0 / (base ** (torch.arange(0, d, 2, dtype=torch.int64).to(torch.float32) / d))
    if cfg.kind == "linear":
        freqs = freqs / cfg.factor
    return freqs


# --- transformers -------------------------------------------------------------------------------

def hf_rope_parameters(cfg: RopeConfig) -> dict[str, Any]:
    """``rope_parameters`` (transformers 5.x; ``rope_scaling`` in 4.x) for this configuration."""
    if cfg.kind == "none":
        return {"rope_type": "default", "rope_theta": cfg.theta}
    if cfg.kind == "linear":
        return {"rope_type": "linear", "factor": float(cfg.factor), "rope_theta": cfg.theta}
    return {
        "rope_type": "yarn",
        "factor": float(cfg.factor),
        "original_max_position_embeddings": int(cfg.original_max_positions),
        "beta_fast": YARN_BETA_FAST,
        "beta_slow": YARN_BETA_SLOW,
        "rope_theta": cfg.theta,
    }


def apply_to_hf_config(config: Any, cfg: RopeConfig) -> None:
    """Write ``cfg`` into a transformers config (5.x ``rope_parameters`` or 4.x ``rope_scaling``).

    Any ``auto_map`` (custom modelling code, e.g. upstream's 64K checkpoint) is dropped: the
    native implementation is used and remote code is never run.
    """
    params = hf_rope_parameters(cfg)
    config.max_position_embeddings = int(cfg.max_positions)
    if hasattr(config, "rope_parameters"):
        config.rope_parameters = params
    else:  # transformers 4.x
        config.rope_theta = cfg.theta
        legacy = {k: v for k, v in params.items() if k != "rope_theta"}
        legacy["type"] = legacy["rope_type"]
        config.rope_scaling = None if cfg.kind == "none" else legacy
    if getattr(config, "auto_map", None):
        config.auto_map = {}


def rope_config_from_hf(config: Any, ntk: bool = False) -> RopeConfig:
    """Read the scaling a transformers config declares (for models not in the registry)."""
    params = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    theta = float(params.get("rope_theta", getattr(config, "rope_theta", ROPE_THETA)) or ROPE_THETA)
    rtype = params.get("rope_type", params.get("type", "default")) or "default"
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    maxpos = int(getattr(config, "max_position_embeddings", TRAINED_CONTEXT))
    if rtype == "linear":
        return RopeConfig("linear", float(params["factor"]), maxpos, maxpos, theta, head_dim, ntk).checked()
    if rtype == "yarn":
        orig = int(params.get("original_max_position_embeddings") or maxpos)
        factor = float(params.get("factor") or maxpos / orig)
        return RopeConfig("yarn", factor, orig, max(maxpos, int(orig * factor)), theta, head_dim, False).checked()
    if rtype != "default":
        raise ValueError(f"rope type {rtype!r} is not supported by this project (none, linear, yarn)")
    return RopeConfig("none", 1.0, maxpos, maxpos, theta, head_dim, ntk).checked()


class NtkHook:
    """Keeps a transformers rotary embedding's ``inv_freq`` at the adaptive-NTK value.

    Installed as a forward pre-hook on ``model.model.rotary_emb``. Length used: the pinned one if
    set (backends pin prompt + max_new_tokens before generating, so the KV cache is built with
    one base, like llama.cpp's fixed ``rope_freq_base``), else ``max(position_ids)+1`` — upstream's
    per-call behaviour.
    """

    def __init__(self, rotary: Any, cfg: RopeConfig):
        if cfg.kind == "yarn":
            raise ValueError("NTK hook on a YaRN model")
        self.rotary = rotary
        self.cfg = cfg
        self.pinned: int | None = None
        self._current: int | None = None
        self._handle = rotary.register_forward_pre_hook(self._pre_hook, with_kwargs=True)

    def pin(self, length: int | None) -> None:
        self.pinned = length

    def remove(self) -> None:
        self._handle.remove()

    def length_key(self, seq_len: int) -> int:
        return seq_len if seq_len > self.cfg.max_positions else 0

    def set_length(self, seq_len: int) -> None:
        key = self.length_key(seq_len)
        if key == self._current:
            return
        buf = self.rotary.inv_freq
        buf.copy_(inv_freq(self.cfg, seq_len).to(device=buf.device, dtype=buf.dtype))
        self._current = key

    def _pre_hook(self, module: Any, args: tuple, kwargs: dict) -> None:
        if self.pinned is not None:
            seq_len = self.pinned
        else:
            position_ids = kwargs.get("position_ids", args[1] if len(args) > 1 else None)
            seq_len = int(position_ids.max()) + 1 if position_ids is not None else 0
        self.set_length(seq_len)


def install_ntk_hook(model: Any, cfg: RopeConfig) -> NtkHook | None:
    if not cfg.ntk:
        return None
    rotary = getattr(getattr(model, "model", model), "rotary_emb", None)
    if rotary is None or not hasattr(rotary, "inv_freq"):
        raise ValueError(f"{type(model).__name__} has no rotary embedding to extend with NTK")
    return NtkHook(rotary, cfg)


# --- llama.cpp ----------------------------------------------------------------------------------

def llamacpp_kwargs(cfg: RopeConfig, n_ctx: int, explicit: bool = True) -> dict[str, Any]:
    """``llama_cpp.Llama`` keyword arguments for ``cfg`` at context ``n_ctx``.

    ``explicit=False`` (a GGUF we trust to carry its own scaling metadata): only the NTK base is
    passed, nothing else, so llama.cpp keeps what the file says.
    """
    kw: dict[str, Any] = {}
    if explicit:
        if cfg.kind == "none":
            kw.update(rope_scaling_type=LLAMA_ROPE_SCALING_TYPE_NONE, rope_freq_scale=1.0)
        elif cfg.kind == "linear":
            kw.update(rope_scaling_type=LLAMA_ROPE_SCALING_TYPE_LINEAR, rope_freq_scale=1.0 / cfg.factor)
        else:
            kw.update(
                rope_scaling_type=LLAMA_ROPE_SCALING_TYPE_YARN,
                rope_freq_scale=1.0 / cfg.factor,
                yarn_orig_ctx=int(cfg.original_max_positions),
                yarn_ext_factor=1.0,
                yarn_attn_factor=1.0,
                yarn_beta_fast=YARN_BETA_FAST,
                yarn_beta_slow=YARN_BETA_SLOW,
            )
        kw["rope_freq_base"] = cfg.theta
    if cfg.ntk and n_ctx > cfg.max_positions:
        kw["rope_freq_base"] = effective_base(cfg, n_ctx)
    return kw


def rope_config_from_gguf(metadata: dict[str, str], ntk: bool = False) -> RopeConfig:
    """What a GGUF's own metadata declares (``{arch}.rope.*``, ``{arch}.context_length``)."""
    arch = metadata.get("general.architecture", "llama")

    def get(key: str, default: Any = None) -> Any:
        return metadata.get(f"{arch}.{key}", default)

    n_ctx_train = int(get("context_length", TRAINED_CONTEXT))
    theta = float(get("rope.freq_base", ROPE_THETA))
    n_embd = int(get("embedding_length", 4096))
    n_head = int(get("attention.head_count", 32))
    head_dim = int(get("rope.dimension_count", n_embd // max(n_head, 1)))
    stype = str(get("rope.scaling.type", "") or "")
    # rope.scale_linear: the legacy (2023) key for the linear factor, still read by llama.cpp
    factor = float(get("rope.scaling.factor", 0) or 0) or float(get("rope.scale_linear", 0) or 0)
    if stype == "linear" or (not stype and factor > 1):
        return RopeConfig("linear", factor, n_ctx_train, n_ctx_train, theta, head_dim, ntk).checked()
    if stype == "yarn" and factor > 1:
        orig = int(get("rope.scaling.original_context_length", TRAINED_CONTEXT))
        return RopeConfig("yarn", factor, orig, max(n_ctx_train, int(orig * factor)), theta, head_dim, False).checked()
    return RopeConfig("none", 1.0, n_ctx_train, n_ctx_train, theta, head_dim, ntk).checked()

"""RoPE scaling proven on both backends against an independent reference.

The reference below is written from the formulas (PI, upstream's adaptive NTK, YaRN as in its
paper with the ramp over correction dimensions), in float64 numpy, sharing no code with
rag.models.rope.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tests.helpers_models import HEAD_DIM, THETA, VOCAB, llama_last_logits, make_tiny_llama, write_gguf

from rag.models.hf_backend import load_causal_lm
from rag.models.rope import RopeConfig, install_ntk_hook, llamacpp_kwargs

L = 4600  # beyond Llama-2's 4096
LAST = 8


# --- reference -----------------------------------------------------------------------------------
def ref_inv_freq(theta: float, d: int) -> np.ndarray:
    return np.array([theta ** (-(2 * i) / d) for i in range(d // 2)], dtype=np.float64)


def ref_linear(theta, d, factor):
    return ref_inv_freq(theta, d) / factor


def ref_ntk(theta, d, seq_len, max_pos, factor=1.0):
    if seq_len <= max_pos:
        return ref_inv_freq(theta, d) / factor
    alpha = seq_len / (max_pos / 2) - 1
    return ref_inv_freq(theta * alpha ** (d / (d - 2)), d) / factor


def ref_yarn(theta, d, factor, orig, beta_fast=32.0, beta_slow=1.0):
    """(inv_freq, attention scale): interpolate low frequencies, keep high ones, ramp between."""
    def dim_for(rotations):  # the dimension whose wavelength fits `rotations` times in orig
        return d * math.log(orig / (rotations * 2 * math.pi)) / (2 * math.log(theta))

    low = max(math.floor(dim_for(beta_fast)), 0)
    high = min(math.ceil(dim_for(beta_slow)), d - 1)
    base = ref_inv_freq(theta, d)
    out = np.empty_like(base)
    for i in range(d // 2):
        ramp = min(max((i - low) / max(high - low, 0.001), 0.0), 1.0)  # 0: extrapolate, 1: interpolate
        out[i] = base[i] * (1 - ramp) + (base[i] / factor) * ramp
    return out, 0.1 * math.log(factor) + 1.0


CONFIGS = {
    "none": RopeConfig("none", 1.0, 4096, 4096, THETA, HEAD_DIM, False),
    "linear4": RopeConfig("linear", 4.0, 4096, 16384, THETA, HEAD_DIM, False),
    "yarn16": RopeConfig("yarn", 16.0, 4096, 65536, THETA, HEAD_DIM, False),
    "ntk": RopeConfig("none", 1.0, 4096, 4096, THETA, HEAD_DIM, True),
}


def expected(name: str, seq_len: int = L):
    if name == "none":
        return ref_inv_freq(THETA, HEAD_DIM), 1.0
    if name == "linear4":
        return ref_linear(THETA, HEAD_DIM, 4.0), 1.0
    if name == "yarn16":
        return ref_yarn(THETA, HEAD_DIM, 16.0, 4096)
    return ref_ntk(THETA, HEAD_DIM, seq_len, 4096), 1.0


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny")
    model = make_tiny_llama(d / "hf")
    gguf_path = write_gguf(model, d / "tiny-f32.gguf")
    ids = np.random.default_rng(0).integers(3, VOCAB, size=L).tolist()
    return {"dir": d, "hf": d / "hf", "gguf": gguf_path, "ids": ids, "model": model}


def _hf(tiny, name):
    cfg = CONFIGS[name]
    model, _, _ = load_causal_lm(str(tiny["hf"]), rope=cfg, device="cpu", dtype=torch.float32)
    hook = install_ntk_hook(model, cfg)
    return model, hook


def test_reference_yarn_matches_known_values():
    # the ramp bounds for Llama-2 (d=128, base 1e4, orig 4096): dims 20..46 (ceil/floor of 20.9/45.4)
    inv, scale = ref_yarn(1e4, 128, 16.0, 4096)
    base = ref_inv_freq(1e4, 128)
    assert np.allclose(inv[:20], base[:20]) and np.allclose(inv[46:], base[46:] / 16)
    assert scale == pytest.approx(1.2772588722239781)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_hf_rotary_uses_reference_frequencies(tiny, name):
    model, hook = _hf(tiny, name)
    rotary = model.model.rotary_emb
    if hook is not None:
        hook.set_length(L)
    inv, scale = expected(name)
    np.testing.assert_allclose(rotary.inv_freq.double().numpy(), inv, rtol=2e-6)
    assert rotary.attention_scaling == pytest.approx(scale, rel=1e-6)
    if hook is not None:  # inside the trained window NTK is off again
        hook.set_length(4000)
        np.testing.assert_allclose(rotary.inv_freq.double().numpy(), ref_inv_freq(THETA, HEAD_DIM), rtol=2e-6)


def test_hf_ntk_hook_follows_the_forward_length(tiny):
    model, hook = _hf(tiny, "ntk")
    with torch.no_grad():
        model(torch.tensor([tiny["ids"][:4500]]), logits_to_keep=1)
    np.testing.assert_allclose(model.model.rotary_emb.inv_freq.double().numpy(), ref_ntk(THETA, HEAD_DIM, 4500, 4096), rtol=2e-6)


def test_ntk_on_top_of_linear_matches_reference():
    cfg = RopeConfig("linear", 4.0, 16384, 16384, THETA, 128, True)
    from rag.models.rope import inv_freq

    np.testing.assert_allclose(inv_freq(cfg, 24000).double().numpy(), ref_ntk(THETA, 128, 24000, 16384, 4.0), rtol=2e-6)
    kw = llamacpp_kwargs(cfg, 24000)
    alpha = 24000 / 8192 - 1
    assert kw["rope_freq_base"] == pytest.approx(THETA * alpha ** (128 / 126))
    assert kw["rope_freq_scale"] == pytest.approx(0.25)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_llamacpp_context_params_match_reference(tiny, name):
    from rag.models.llamacpp_backend import open_llama

    cfg = CONFIGS[name]
    llm, report = open_llama(str(tiny["gguf"]), n_ctx=L, rope=cfg, explicit_rope=True, n_batch=64)
    freq_scale = {"none": 1.0, "linear4": 0.25, "yarn16": 1 / 16, "ntk": 1.0}[name]
    assert report["rope_freq_scale"] == pytest.approx(freq_scale)
    assert report["ok"]
    if name == "ntk":  # base' = base * alpha^(d/(d-2)), alpha for n_ctx
        ref_base = THETA * (L / 2048 - 1) ** (HEAD_DIM / (HEAD_DIM - 2))
        assert report["rope_freq_base"] == pytest.approx(ref_base, rel=1e-6)
        np.testing.assert_allclose(ref_inv_freq(report["rope_freq_base"], HEAD_DIM), expected("ntk")[0], rtol=1e-6)
    else:
        assert report["rope_freq_base"] == pytest.approx(THETA)
    if name == "yarn16":
        assert report["yarn_orig_ctx"] == 4096 and report["yarn_ext_factor"] == 1.0
        assert report["rope_scaling_type"] == 2
    del llm


@pytest.fixture(scope="module")
def logits(tiny):
    """Logits of the last positions of a 4600-token sequence, per setting and backend."""
    from rag.models.llamacpp_backend import open_llama

    out = {}
    ids = tiny["ids"]
    for name, cfg in CONFIGS.items():
        model, _ = _hf(tiny, name)
        with torch.no_grad():
            hf = model(torch.tensor([ids]), logits_to_keep=LAST).logits[0].numpy()
        llm, _ = open_llama(str(tiny["gguf"]), n_ctx=L, rope=cfg, explicit_rope=True,
                            n_batch=L, n_ubatch=1024, type_k=0, type_v=0)  # GGML_TYPE_F32 KV cache
        out[name] = (hf, llama_last_logits(llm, ids, LAST))
        del llm, model
    return out


@pytest.mark.parametrize("name", list(CONFIGS))
def test_backends_agree_beyond_4096(logits, name):
    hf, lc = logits[name]
    assert np.abs(hf - lc).max() < 1e-3


@pytest.mark.parametrize("name", ["linear4", "yarn16", "ntk"])
def test_scaling_changes_the_output(logits, name):
    assert np.abs(logits[name][0] - logits["none"][0]).max() > 0.1
    assert np.abs(logits[name][1] - logits["none"][1]).max() > 0.1


def test_gguf_scaling_metadata_is_kept_when_nothing_is_passed(tiny, logits):
    """A GGUF declaring linear x4 loads with no rope arguments and matches explicit PI."""
    from rag.models.llamacpp_backend import open_llama, read_gguf_metadata
    from rag.models.rope import rope_config_from_gguf

    path = write_gguf(tiny["model"], tiny["dir"] / "tiny-linear.gguf", rope_scaling=("linear", 4.0, 4096))
    declared = rope_config_from_gguf(read_gguf_metadata(path))
    assert (declared.kind, declared.factor) == ("linear", 4.0)
    llm, report = open_llama(str(path), n_ctx=L, rope=declared, explicit_rope=False,
                             n_batch=L, n_ubatch=1024, type_k=0, type_v=0)
    assert report["passed"] == {} and report["freq_scale_train"] == pytest.approx(0.25) and report["ok"]
    got = llama_last_logits(llm, tiny["ids"], LAST)
    assert np.abs(got - logits["linear4"][1]).max() < 1e-4


def test_registry_64k_passes_yarn_explicitly(tiny, logits):
    """The registry's 64K variant on a GGUF without scaling metadata: YaRN is passed explicitly."""
    from rag.models.llamacpp_backend import build_llamacpp_chat_model
    from rag.models.registry import get_model
    from rag.settings import ModelSettings

    chat, notes = build_llamacpp_chat_model(
        str(tiny["gguf"]), name="t", variant=get_model("chinese-alpaca-2-7b-64k"),
        settings=ModelSettings(context_length=L), prompt_format="llama2-chat",
    )
    rep = chat.rope_report
    assert rep["passed"]["rope_scaling_type"] == 2 and rep["rope_freq_scale"] == pytest.approx(1 / 16)
    assert rep["yarn_orig_ctx"] == 4096 and rep["ok"]
    assert chat.context_window == L


def test_llamacpp_ntk_base_is_chosen_per_request_like_transformers(tiny, logits):
    """NTK on llama.cpp: the trained base while prompt + new tokens fit the 4K window, the NTK
    base for the request's own length beyond it; a short prompt gives the transformers
    backend's logits (before, the base for the whole n_ctx was used at every length)."""
    from rag.models.llamacpp_backend import build_llamacpp_chat_model, context_rope_base
    from rag.models.registry import get_model
    from rag.settings import ModelSettings

    chat, _ = build_llamacpp_chat_model(
        str(tiny["gguf"]), name="t", variant=get_model("chinese-alpaca-2-7b"),
        settings=ModelSettings(rope_ntk=True, context_length=L, max_new_tokens=16), prompt_format="llama2-chat",
    )
    short = tiny["ids"][:48]
    base = lambda: context_rope_base(chat.llm, THETA)  # noqa: E731
    chat._fit_rope_to_request(len(short) + 16)
    assert base() == pytest.approx(THETA)
    llama = llama_last_logits(chat.llm, short, LAST)
    model, hook = _hf(tiny, "ntk")
    hook.pin(len(short) + 16)  # what the transformers backend pins for this request
    with torch.no_grad():
        hf = model(torch.tensor([short]), logits_to_keep=LAST).logits[0].numpy()
    assert np.abs(hf - llama).max() < 1e-2

    # beyond the window: the base for this request's length, from the reference formula
    chat._fit_rope_to_request(L)
    np.testing.assert_allclose(ref_inv_freq(base(), HEAD_DIM), expected("ntk", L)[0], rtol=1e-6)
    assert chat.rope_report["request"] == {"tokens": L, "rope_freq_base": pytest.approx(base()),
                                           "context_rope_freq_base": pytest.approx(base())}
    # and back: a real generation with a short prompt runs at the trained base again
    assert chat.invoke("你好").content is not None
    assert chat.rope_report["request"]["rope_freq_base"] == pytest.approx(THETA)
    assert base() == pytest.approx(THETA)
    chat.llm._ctx.kv_cache_clear()
    assert np.abs(llama_last_logits(chat.llm, short, LAST) - llama).max() < 1e-4

"""Shared fixtures for the rag.models tests (no tests here): tiny random models built on the spot.

* :func:`make_tiny_llama` — a LlamaForCausalLM with Chinese-LLaMA-2's vocabulary size (55296),
  hidden 64, 2 layers, 4 heads (head_dim 16), 4096 positions, fixed seed, saved as safetensors
  with a character-level tokenizer.
* :func:`write_gguf` — the same weights as an f32 GGUF (llama architecture, SPM-style dummy
  vocabulary of 55296 tokens), Q/K rows permuted to llama.cpp's rope layout.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

VOCAB = 55296
HIDDEN = 64
LAYERS = 2
HEADS = 4
HEAD_DIM = HIDDEN // HEADS
FFN = 128
MAX_POS = 4096
THETA = 10000.0
EPS = 1e-5

# characters the HF tokenizer knows, one token each (ids 3..)
_CHARS = [chr(c) for c in range(32, 127)] + ["\n"] + [chr(c) for c in range(0x4E00, 0x4E00 + 3000)] + list("，。！？：；、")


def _tokenizer():
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for ch in _CHARS:
        vocab.setdefault(ch, len(vocab))
    i = 0
    while len(vocab) < VOCAB:
        vocab[f"<x{i}>"] = len(vocab)
        i += 1
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", 1)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    return fast


def make_tiny_llama(folder: Path, seed: int = 0, init_std: float = 0.1, vocab: int = VOCAB):
    """Build, save (safetensors) and return the tiny random model (float32, eval mode)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=HIDDEN,
        intermediate_size=FFN,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        num_key_value_heads=HEADS,
        head_dim=HEAD_DIM,
        max_position_embeddings=MAX_POS,
        rms_norm_eps=EPS,
        rope_theta=THETA,
        initializer_range=init_std,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
    )
    model = LlamaForCausalLM(config).float().eval()
    with torch.no_grad():  # sharper attention so that positions matter
        for layer in model.model.layers:
            layer.self_attn.q_proj.weight.mul_(2.0)
            layer.self_attn.k_proj.weight.mul_(2.0)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    _tokenizer().save_pretrained(folder)
    return model


def _permute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """HF's rotate-half layout → GGML's adjacent-pair (NORM) rope layout, per head."""
    rows = w.shape[0]
    return w.reshape(n_head, 2, rows // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_gguf(model, path: Path, *, rope_scaling: tuple[str, float, int] | None = None, chat_template: str | None = None) -> Path:
    """Write ``model`` (the tiny HF Llama) as an f32 GGUF. ``rope_scaling``: (type, factor,
    original_ctx) to store as metadata, e.g. ("linear", 4.0, 4096); None stores none."""
    import gguf

    cfg = model.config
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny-random-llama")
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_rope_dimension_count(HEAD_DIM)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_rope_freq_base(THETA)
    w.add_vocab_size(cfg.vocab_size)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    if rope_scaling is not None:
        kind, factor, orig = rope_scaling
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR if kind == "linear" else gguf.RopeScalingType.YARN)
        w.add_rope_scaling_factor(factor)
        if kind == "yarn":
            w.add_rope_scaling_orig_ctx_len(orig)
    # SPM-style vocabulary: <unk> <s> </s>, 256 byte tokens, then dummy pieces
    tokens: list[bytes] = [b"<unk>", b"<s>", b"</s>"] + [f"<0x{b:02X}>".encode() for b in range(256)]
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL] + [gguf.TokenType.BYTE] * 256
    i = 0
    while len(tokens) < cfg.vocab_size:
        tokens.append(f"\u2581t{i}".encode())
        types.append(gguf.TokenType.NORMAL)
        i += 1
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores([-float(j) for j in range(len(tokens))])
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    if chat_template:
        w.add_chat_template(chat_template)

    sd = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    w.add_tensor("token_embd.weight", sd["model.embed_tokens.weight"])
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}."
        w.add_tensor(f"blk.{i}.attn_norm.weight", sd[p + "input_layernorm.weight"])
        w.add_tensor(f"blk.{i}.attn_q.weight", _permute_qk(sd[p + "self_attn.q_proj.weight"], cfg.num_attention_heads))
        w.add_tensor(f"blk.{i}.attn_k.weight", _permute_qk(sd[p + "self_attn.k_proj.weight"], cfg.num_key_value_heads))
        w.add_tensor(f"blk.{i}.attn_v.weight", sd[p + "self_attn.v_proj.weight"])
        w.add_tensor(f"blk.{i}.attn_output.weight", sd[p + "self_attn.o_proj.weight"])
        w.add_tensor(f"blk.{i}.ffn_norm.weight", sd[p + "post_attention_layernorm.weight"])
        w.add_tensor(f"blk.{i}.ffn_gate.weight", sd[p + "mlp.gate_proj.weight"])
        w.add_tensor(f"blk.{i}.ffn_up.weight", sd[p + "mlp.up_proj.weight"])
        w.add_tensor(f"blk.{i}.ffn_down.weight", sd[p + "mlp.down_proj.weight"])
    w.add_tensor("output_norm.weight", sd["model.norm.weight"])
    w.add_tensor("output.weight", sd["lm_head.weight"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return Path(path)


def llama_last_logits(llm, ids: list[int], last: int) -> np.ndarray:
    """Evaluate ``ids`` in one llama_decode call; logits of the last ``last`` positions."""
    import llama_cpp

    n = len(ids)
    batch = llama_cpp.llama_batch_init(n, 0, 1)
    try:
        batch.n_tokens = n
        for i, t in enumerate(ids):
            batch.token[i] = int(t)
            batch.pos[i] = i
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = 0
            batch.logits[i] = i >= n - last
        rc = llama_cpp.llama_decode(llm.ctx, batch)
        assert rc == 0, f"llama_decode returned {rc}"
        n_vocab = llm.n_vocab()
        out = np.empty((last, n_vocab), dtype=np.float32)
        for j, i in enumerate(range(n - last, n)):
            ptr = llama_cpp.llama_get_logits_ith(llm.ctx, i)
            out[j] = np.ctypeslib.as_array(ptr, shape=(n_vocab,))
        return out
    finally:
        llama_cpp.llama_batch_free(batch)


def smollm2_gguf() -> Path:
    from rag.models.loader import stand_in_gguf

    return stand_in_gguf()

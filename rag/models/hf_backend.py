"""transformers backend: a LangChain chat model around ``AutoModelForCausalLM.generate``.

Device and dtype are picked automatically (cuda → bf16, or fp16 without bf16 support; mps →
fp16; cpu → fp32); 8/4-bit loading through bitsandbytes where it is installed; streaming from a
generation thread (``TextIteratorStreamer``); cancellation through a ``StoppingCriteria`` that
watches an event; optional speculative (assisted) decoding with a small draft model. Only
safetensors weights are read and ``trust_remote_code`` is never enabled.
"""

from __future__ import annotations

import importlib.util
import threading
from dataclasses import replace
from typing import Any, Iterator, Literal, Sequence

from langchain_core.messages import BaseMessage
from pydantic import Field

from rag.models import prompts
from rag.models.common import Cancel, LocalChatModel, generation_settings
from rag.models.errors import BackendUnavailable
from rag.models.rope import (
    NtkHook,
    RopeConfig,
    apply_to_hf_config,
    effective_base,
    inv_freq,
    install_ntk_hook,
    rope_config_from_hf,
)

PromptFormat = Literal["llama2-chat", "template", "plain"]


def pick_device(requested: str | None = None) -> str:
    import torch

    if requested:
        return requested
    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


def pick_dtype(device: str):
    import torch

    kind = device.split(":")[0]
    if kind == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if kind == "mps":
        return torch.float16
    return torch.float32


class _CancelCriteria:
    """A transformers StoppingCriteria: stop every sequence once the event is set."""

    def __init__(self, cancel: Cancel):
        self.cancel = cancel

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        return torch.full((input_ids.shape[0],), self.cancel.is_set(), dtype=torch.bool, device=input_ids.device)


class HFChatModel(LocalChatModel):
    model: Any = Field(exclude=True)
    tokenizer: Any = Field(exclude=True)
    draft_model: Any = Field(default=None, exclude=True)
    prompt_format: PromptFormat = "template"
    ntk_hook: Any = Field(default=None, exclude=True)
    context_window: int = 4096
    rope_report: dict = Field(default_factory=dict)
    """What the loaded model really uses, read back from its config and rotary embedding."""

    def generation_engine(self) -> Any:
        return self.model

    @property
    def _llm_type(self) -> str:
        return "docqa-transformers"

    def format_prompt(self, messages: Sequence[BaseMessage]) -> str:
        fixed = prompts.format_fixed(messages, self.prompt_format, self.system_prompt)
        if fixed is not None:
            return fixed
        return self.tokenizer.apply_chat_template(
            prompts.to_role_dicts(messages, self.system_prompt), tokenize=False, add_generation_prompt=True
        )

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    def encode_prompt(self, messages: Sequence[BaseMessage]):
        prompt = self.format_prompt(messages)
        # Chat templates write their own special tokens; the Llama-2 layout relies on the
        # tokenizer's leading <s> (and writes the inner </s><s> itself).
        return self.tokenizer(prompt, return_tensors="pt", add_special_tokens=self.prompt_format != "template")

    def generation_kwargs(self, max_new_tokens: int | None = None) -> dict[str, Any]:
        kw: dict[str, Any] = {
            "max_new_tokens": max_new_tokens or self.max_new_tokens,
            "repetition_penalty": self.repetition_penalty,
            "pad_token_id": self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id,
        }
        if self.temperature > 0:
            kw.update(do_sample=True, temperature=self.temperature, top_k=self.top_k, top_p=self.top_p)
        else:
            kw.update(do_sample=False, temperature=None, top_k=None, top_p=None)
        if self.draft_model is not None:
            kw["assistant_model"] = self.draft_model
        return kw

    def _stream_text(self, messages: list[BaseMessage], stop: list[str], cancel: Cancel, **kwargs: Any) -> Iterator[str]:
        import torch
        from transformers import StoppingCriteriaList, TextIteratorStreamer

        enc = self.encode_prompt(messages).to(self.model.device)
        n_prompt = int(enc["input_ids"].shape[1])
        room = self.context_window - n_prompt
        if room <= 0:  # the same refusal as llama.cpp's: past the window the output is garbage
            raise ValueError(f"prompt has {n_prompt} tokens; the context window is {self.context_window}")
        max_new = min(int(kwargs.get("max_new_tokens") or self.max_new_tokens), room)
        if self.ntk_hook is not None:
            self.ntk_hook.pin(n_prompt + max_new)
            self.rope_report["request"] = {
                "tokens": n_prompt + max_new,
                "rope_freq_base": effective_base(self.ntk_hook.cfg, n_prompt + max_new),
            }
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        gen = dict(enc, streamer=streamer, stopping_criteria=StoppingCriteriaList([_CancelCriteria(cancel)]))
        gen.update(self.generation_kwargs(max_new))
        error: list[BaseException] = []

        def run() -> None:
            try:
                with torch.inference_mode():
                    self.model.generate(**gen)
            except BaseException as exc:  # surfaced in the consumer's thread
                error.append(exc)
            finally:
                streamer.end()

        thread = threading.Thread(target=run, name="hf-generate", daemon=True)
        thread.start()
        try:
            for text in streamer:
                if text:
                    yield text
                if cancel.is_set():
                    break
        finally:
            cancel.set()
            thread.join()
            if self.ntk_hook is not None:
                self.ntk_hook.pin(None)
        if error:
            raise error[0]


def _quantization(load_in_8bit: bool, load_in_4bit: bool, dtype):
    if not (load_in_8bit or load_in_4bit):
        return None
    if load_in_8bit and load_in_4bit:
        raise ValueError("choose one of load_in_8bit and load_in_4bit")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise BackendUnavailable(
            "8/4-bit loading needs bitsandbytes, which is not installed: pip install bitsandbytes "
            "(CUDA GPUs), or use a quantised GGUF with the llamacpp backend instead"
        )
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_8bit=load_in_8bit, load_in_4bit=load_in_4bit, bnb_4bit_compute_dtype=dtype)


def load_causal_lm(path: str, *, rope: RopeConfig | None, device: str, dtype, quantization=None, ntk: bool = False):
    """Model + tokenizer from a local HF folder, with ``rope`` written into its config.

    ``rope=None``: keep the scaling the config declares. Returns (model, tokenizer, rope_config).
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    config = AutoConfig.from_pretrained(path, trust_remote_code=False)
    if rope is None:
        try:
            rope = rope_config_from_hf(config, ntk)
        except ValueError:
            if ntk:
                raise
            rope = None  # another rope type (e.g. llama3): left to transformers as declared
    if rope is not None:
        # the model file is the authority on its head dimension (NTK's exponent uses it)
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        rope = replace(rope, head_dim=int(head_dim))
        apply_to_hf_config(config, rope)
    kw: dict[str, Any] = dict(config=config, dtype=dtype, use_safetensors=True, trust_remote_code=False)
    if quantization is not None:
        kw.update(quantization_config=quantization, device_map=device)
    model = AutoModelForCausalLM.from_pretrained(path, **kw)
    if quantization is None:
        model.to(device)
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    return model, tokenizer, rope


def build_hf_chat_model(
    path: str,
    *,
    name: str,
    rope: RopeConfig | None,
    prompt_format: PromptFormat | None,
    settings: Any,
    draft_path: str | None = None,
    ntk: bool = False,
) -> tuple[HFChatModel, RopeConfig | None]:
    device = pick_device(settings.device)
    dtype = pick_dtype(device)
    quant = _quantization(settings.load_in_8bit, settings.load_in_4bit, dtype)
    model, tokenizer, rope = load_causal_lm(path, rope=rope, device=device, dtype=dtype, quantization=quant, ntk=ntk)
    draft = None
    if draft_path:
        draft, draft_tok, _ = load_causal_lm(draft_path, rope=None, device=device, dtype=dtype)
        if len(draft_tok) != len(tokenizer):
            raise ValueError(
                f"draft model {draft_path} has a {len(draft_tok)}-token vocabulary, the main model "
                f"{len(tokenizer)}: speculative decoding needs the same tokenizer"
            )
    hook: NtkHook | None = install_ntk_hook(model, rope) if rope is not None else None
    if prompt_format is None:
        prompt_format = "template" if getattr(tokenizer, "chat_template", None) else "plain"
    window = settings.context_length or (rope.context_window() if rope else getattr(model.config, "max_position_embeddings", 2048))
    chat = HFChatModel(
        rope_report=hf_rope_report(model, rope, int(window)),
        model=model,
        tokenizer=tokenizer,
        draft_model=draft,
        prompt_format=prompt_format,
        ntk_hook=hook,
        context_window=int(window),
        model_name=name,
        **generation_settings(settings),
    )
    return chat, rope


def hf_rope_report(model: Any, rope: RopeConfig | None, window: int) -> dict[str, Any]:
    """What transformers resolved: the config's rope parameters and the rotary embedding's own
    frequencies, checked against ``rope`` (for none/linear the exact inverse frequencies)."""
    config = model.config
    params = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    rotary = getattr(getattr(model, "model", model), "rotary_emb", None)
    report: dict[str, Any] = {
        "n_ctx": window,
        "max_position_embeddings": int(getattr(config, "max_position_embeddings", 0) or 0),
        "rope_parameters": {k: v for k, v in dict(params).items() if isinstance(v, (int, float, str))},
        "rope_type": getattr(rotary, "rope_type", None),
        "attention_scaling": float(getattr(rotary, "attention_scaling", 1.0) or 1.0),
        "wanted": rope.describe() if rope else "as the model declares",
        "ntk_per_request": bool(rope and rope.ntk),
    }
    ok = True
    if rope is not None and rotary is not None and hasattr(rotary, "inv_freq"):
        got = rotary.inv_freq.detach().float().cpu()
        report["inv_freq_first_last"] = [float(got[0]), float(got[-1])]
        if rope.kind == "yarn":
            ok = report["rope_type"] == "yarn" and abs(float(params.get("factor", 0)) - rope.factor) < 1e-6
        else:
            want = inv_freq(rope, 0)  # inside the window (NTK adds its base only beyond it)
            ok = got.shape == want.shape and bool(((got - want).abs() <= 1e-6 * want.abs() + 1e-12).all())
    report["ok"] = ok
    return report

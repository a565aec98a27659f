"""llama.cpp backend: our own LangChain chat model around ``llama_cpp.Llama``.

LangChain's ``LlamaCpp`` wrapper is not used: it always passes ``rope_freq_scale=1.0``, which
silently undoes the 16K/64K scaling a GGUF declares. Here rope values are passed only where the
registry prescribes them for a GGUF that lacks (or contradicts) them, or where NTK is on; what the
loaded model really uses is read back and kept in ``rope_report``.

Prompts: Chinese-Alpaca-2 models get our Llama-2-chat formatter (tokenised with special tokens
parsed, so the inner ``</s><s>`` become real tokens); other models the GGUF's own
``tokenizer.chat_template`` (rendered by llama_cpp's Jinja2 chat formatter, as
``create_chat_completion`` would); base models plain text.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator, Literal, Sequence

from langchain_core.messages import BaseMessage
from pydantic import Field

from rag.models import prompts
from rag.models.common import Cancel, LocalChatModel, generation_settings
from rag.models.errors import BackendUnavailable
from rag.models.registry import ModelVariant
from rag.models.rope import RopeConfig, effective_base, llamacpp_kwargs, rope_config_from_gguf

PromptFormat = Literal["llama2-chat", "template", "plain"]

GGML_TYPE_F32 = 0
GGML_TYPE_F16 = 1


def require_llama_cpp():
    try:
        import llama_cpp
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise BackendUnavailable(
            "the llamacpp backend needs llama-cpp-python: pip install 'alpaca-docqa[llamacpp]' "
            "(or pip install llama-cpp-python)"
        ) from exc
    return llama_cpp


def read_gguf_metadata(path: str | Path) -> dict[str, str]:
    """Scalar GGUF metadata as strings (the form ``Llama.metadata`` uses), without loading tensors."""
    import gguf

    reader = gguf.GGUFReader(str(path), "r")
    out: dict[str, str] = {}
    for name, f in reader.fields.items():
        if not f.types or f.types[0] == gguf.GGUFValueType.ARRAY:
            continue
        value = f.contents()
        if isinstance(value, bool):
            value = str(value).lower()
        out[name] = str(value)
    return out


class LlamaCppChatModel(LocalChatModel):
    llm: Any = Field(exclude=True)
    prompt_format: PromptFormat = "template"
    chat_template: str | None = None
    context_window: int = 4096
    rope: Any = Field(default=None, exclude=True)
    """The RopeConfig in force; with NTK on, the rotary base is chosen per request."""
    rope_report: dict = Field(default_factory=dict)
    _formatter: Any = None

    def generation_engine(self) -> Any:
        return self.llm

    @property
    def _llm_type(self) -> str:
        return "docqa-llamacpp"

    # --- prompt -------------------------------------------------------------------------------
    def _template_formatter(self):
        if self._formatter is None:
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter

            llm = self.llm
            eos = llm.detokenize([llm.token_eos()], special=True).decode("utf-8", "ignore")
            bos = llm.detokenize([llm.token_bos()], special=True).decode("utf-8", "ignore") if llm.token_bos() >= 0 else ""
            self._formatter = Jinja2ChatFormatter(template=self.chat_template, eos_token=eos, bos_token=bos)
        return self._formatter

    def _render(self, messages: Sequence[BaseMessage]) -> tuple[str, list[str], bool]:
        """(prompt text, template stop strings, whether the text already holds BOS)."""
        prompt_format = self.prompt_format
        if prompt_format == "template" and not self.chat_template:
            prompt_format = "plain"  # a GGUF without a chat template
        fixed = prompts.format_fixed(messages, prompt_format, self.system_prompt)
        if fixed is not None:
            return fixed, [], False
        result = self._template_formatter()(messages=prompts.to_role_dicts(messages, self.system_prompt))
        stops = result.stop if isinstance(result.stop, list) else ([result.stop] if result.stop else [])
        return result.prompt, stops, bool(getattr(result, "added_special", False))

    def format_prompt(self, messages: Sequence[BaseMessage]) -> str:
        return self._render(messages)[0]

    def prompt_tokens(self, messages: Sequence[BaseMessage]) -> tuple[list[int], list[str]]:
        text, stops, has_bos = self._render(messages)
        add_bos = not has_bos and self.llm._model.add_bos_token()
        tokens = self.llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True)
        bos = self.llm.token_bos()
        if has_bos and len(tokens) > 1 and tokens[0] == bos and tokens[1] == bos:
            tokens = tokens[1:]
        return tokens, stops

    def count_tokens(self, text: str) -> int:
        return len(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    # --- generation ---------------------------------------------------------------------------
    def completion_kwargs(self, max_new_tokens: int | None = None) -> dict[str, Any]:
        return dict(
            max_tokens=int(max_new_tokens or self.max_new_tokens),
            temperature=self.temperature,
            top_k=self.top_k if self.temperature > 0 else 1,
            top_p=self.top_p,
            min_p=0.0,  # HF's sampler has no min-p; keep the two backends alike
            repeat_penalty=self.repetition_penalty,
        )

    def _stream_text(self, messages: list[BaseMessage], stop: list[str], cancel: Cancel, **kwargs: Any) -> Iterator[str]:
        tokens, template_stops = self.prompt_tokens(messages)
        room = self.context_window - len(tokens)
        if room <= 0:
            raise ValueError(f"prompt has {len(tokens)} tokens; the context window is {self.context_window}")
        max_new = min(int(kwargs.get("max_new_tokens") or self.max_new_tokens), room)
        self._fit_rope_to_request(len(tokens) + max_new)
        from llama_cpp import StoppingCriteriaList

        stream = self.llm.create_completion(
            prompt=tokens,
            stream=True,
            stop=list(stop) + template_stops,
            stopping_criteria=StoppingCriteriaList([lambda ids, logits: cancel.is_set()]),
            **self.completion_kwargs(max_new),
        )
        try:
            for part in stream:
                if cancel.is_set():
                    break
                text = part["choices"][0]["text"]
                if text:
                    yield text
        finally:
            stream.close()

    def _fit_rope_to_request(self, n_tokens: int) -> None:
        """Adaptive NTK per request, as upstream and our transformers backend do: the trained
        base while prompt + new tokens fit the trained window, the NTK base for this length
        beyond it. A llama.cpp context has one base, so a change means a new context on the
        same loaded weights (the KV cache starts empty)."""
        if self.rope is None or not self.rope.ntk:
            return
        base = effective_base(self.rope, n_tokens)
        use_rope_base(self.llm, base, trained_base=self.rope.theta)
        self.rope_report["request"] = {"tokens": int(n_tokens), "rope_freq_base": base,
                                       "context_rope_freq_base": context_rope_base(self.llm, self.rope.theta)}


def context_rope_base(llm: Any, trained_base: float) -> float:
    """The rotary base ``llm``'s context runs with (its parameter 0 means the model's own)."""
    return float(llm.context_params.rope_freq_base) or trained_base


def use_rope_base(llm: Any, base: float, trained_base: float) -> bool:
    """Make ``llm``'s context use rotary base ``base``; True when a new context was made."""
    if abs(context_rope_base(llm, trained_base) - base) <= 1e-7 * base:
        return False
    from llama_cpp import _internals

    params = llm.context_params
    llm._ctx.close()  # first, so two KV caches never coexist
    params.rope_freq_base = base
    llm._ctx = _internals.LlamaContext(model=llm._model, params=params, verbose=llm.verbose)
    llm.reset()  # no cached prefix from the old base may be reused
    return True


def _verify(llm: Any, wanted: RopeConfig, passed: dict[str, Any]) -> dict[str, Any]:
    """What the loaded model really uses, read back from llama.cpp."""
    import llama_cpp

    cp = llm.context_params
    report = {
        "n_ctx": llm.n_ctx(),
        "n_ctx_train": llama_cpp.llama_model_n_ctx_train(llm.model),
        "freq_scale_train": float(llama_cpp.llama_model_rope_freq_scale_train(llm.model)),
        "rope_scaling_type": int(cp.rope_scaling_type),
        "rope_freq_base": float(cp.rope_freq_base),
        "rope_freq_scale": float(cp.rope_freq_scale),
        "yarn_orig_ctx": int(cp.yarn_orig_ctx),
        "yarn_ext_factor": float(cp.yarn_ext_factor),
        "yarn_attn_factor": float(cp.yarn_attn_factor),
        "passed": dict(passed),
        "wanted": wanted.describe(),
    }
    # the scale in force: what we passed, else the model's trained one
    scale = report["rope_freq_scale"] or report["freq_scale_train"]
    expected = 1.0 if wanted.kind == "none" else 1.0 / wanted.factor
    report["effective_freq_scale"] = scale
    report["ok"] = abs(scale - expected) < 1e-6
    return report


def open_llama(path: str, *, n_ctx: int, rope: RopeConfig, explicit_rope: bool, n_threads: int | None = None,
               n_gpu_layers: int = 0, verbose: bool = False, **extra: Any):
    """``llama_cpp.Llama`` with the rope values ``rope`` needs; returns (llm, rope_report)."""
    llama_cpp = require_llama_cpp()
    rope_kw = llamacpp_kwargs(rope, n_ctx, explicit=explicit_rope)
    llm = llama_cpp.Llama(
        model_path=str(path),
        n_ctx=n_ctx,
        n_threads=n_threads,
        n_threads_batch=n_threads,
        n_gpu_layers=n_gpu_layers,
        verbose=verbose,
        **rope_kw,
        **extra,
    )
    return llm, _verify(llm, rope, rope_kw)


def build_llamacpp_chat_model(
    path: str,
    *,
    name: str,
    variant: ModelVariant | None,
    settings: Any,
    prompt_format: PromptFormat | None = None,
) -> tuple[LlamaCppChatModel, list[str]]:
    """Load a GGUF; returns the chat model and notes for the user."""
    notes: list[str] = []
    meta = read_gguf_metadata(path)
    declared = rope_config_from_gguf(meta, ntk=False)
    if variant is not None:
        rope = RopeConfig.for_variant(variant, ntk=settings.rope_ntk and variant.rope.kind != "yarn")
        rope = replace(rope, head_dim=declared.head_dim)  # the file's own head dimension
        agrees = declared.kind == rope.kind and abs(declared.factor - rope.factor) < 1e-6
        explicit = not (variant.gguf_has_rope_metadata and agrees)
        if not agrees and variant.gguf_has_rope_metadata:
            notes.append(
                f"{Path(path).name} declares rope {declared.describe()} but {variant.key} needs "
                f"{rope.describe()}: passing the registry's values to llama.cpp."
            )
    else:
        rope = declared if declared.kind == "yarn" else declared.with_ntk(settings.rope_ntk)
        explicit = False
    if settings.rope_ntk and rope.kind == "yarn":
        notes.append("rope_ntk is ignored for YaRN (64K) models.")
    n_ctx = int(settings.context_length or rope.context_window())
    # With NTK the context opens with the trained base; each request then picks its own.
    llm, report = open_llama(
        path, n_ctx=n_ctx, rope=replace(rope, ntk=False), explicit_rope=explicit,
        n_threads=settings.n_threads, n_gpu_layers=settings.n_gpu_layers,
    )
    report["wanted"] = rope.describe()
    report["ntk_per_request"] = rope.ntk
    if not report["ok"]:
        notes.append(f"llama.cpp uses rope scale {report['effective_freq_scale']:g}, expected {rope.describe()}.")
    template = meta.get("tokenizer.chat_template") or llm.metadata.get("tokenizer.chat_template")
    if prompt_format is None:
        prompt_format = "template" if template else "plain"
    chat = LlamaCppChatModel(
        llm=llm,
        prompt_format=prompt_format,
        chat_template=template,
        context_window=n_ctx,
        rope=rope,
        rope_report=report,
        model_name=name,
        **generation_settings(settings),
    )
    return chat, notes

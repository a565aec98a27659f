"""OpenAI-compatible server backend (vLLM, llama.cpp's server, ``python -m llama_cpp.server``).

A thin LangChain chat model on the ``openai`` client. Chinese-Alpaca-2 models are sent our own
Llama-2-chat prompt through ``/v1/completions`` (servers often lack a chat template for them);
other models go through ``/v1/chat/completions`` and the server's template.

Context window: ``settings.context_length``, else what the server reports (vLLM's
``max_model_len`` in ``/v1/models``, llama.cpp server's ``/props`` ``n_ctx``), else the
registry's window for a registry model, else a conservative 2048 with a note.

Token counting: the model's own tokenizer where one is reachable — the registry model's HF
tokenizer if it is in the local Hub cache, else the server's tokenize endpoint (llama_cpp.server
``/extras/tokenize``, llama.cpp/vLLM ``/tokenize``) — otherwise an estimate (one token per CJK
character, one per 3 other characters), which the notice then says.
"""

from __future__ import annotations

import json
import re
import urllib.request
from typing import Any, Callable, Iterator, Sequence

from langchain_core.messages import BaseMessage
from pydantic import Field

from rag.models import prompts
from rag.models.common import Cancel, LocalChatModel, generation_settings
from rag.models.registry import ModelVariant

DEFAULT_SERVER_CONTEXT = 2048
_CJK = re.compile(r"[\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef]")


def estimate_tokens(text: str) -> int:
    """Rough count for when no tokenizer is reachable: CJK chars 1 each, other chars 1 per 3."""
    cjk = len(_CJK.findall(text))
    return cjk + -(-(len(text) - cjk) // 3)


def _root(base_url: str) -> str:
    root = base_url.rstrip("/")
    return root[: -len("/v1")] if root.endswith("/v1") else root


def _http_json(url: str, payload: dict | None = None, api_key: str = "", timeout: float = 10.0) -> Any:
    data = json.dumps(payload).encode() if payload is not None else None
    req = urllib.request.Request(url, data=data, method="POST" if data else "GET")
    req.add_header("Content-Type", "application/json")
    if api_key:
        req.add_header("Authorization", f"Bearer {api_key}")
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read().decode("utf-8"))


def server_models(base_url: str, api_key: str) -> list[dict]:
    return list(_http_json(_root(base_url) + "/v1/models", api_key=api_key).get("data", []))


def server_context_window(base_url: str, api_key: str, models: list[dict]) -> int | None:
    for m in models:
        for key in ("max_model_len", "n_ctx", "context_length"):
            if isinstance(m.get(key), int):
                return m[key]
    try:
        props = _http_json(_root(base_url) + "/props", api_key=api_key)
        n = (props.get("default_generation_settings") or {}).get("n_ctx") or props.get("n_ctx")
        if isinstance(n, int) and n > 0:
            return n
    except Exception:
        pass
    return None


def server_tokenizer(base_url: str, api_key: str, model: str) -> Callable[[str], int] | None:
    """A counter using the server's tokenize endpoint, or None if it has none."""
    root = _root(base_url)
    probes = [
        (root + "/extras/tokenize", lambda t: {"input": t, "model": model}, lambda r: len(r["tokens"])),
        (root + "/tokenize", lambda t: {"content": t, "add_special": False}, lambda r: len(r["tokens"])),
        (root + "/tokenize", lambda t: {"model": model, "prompt": t, "add_special_tokens": False}, lambda r: int(r["count"])),
    ]
    for url, body, read in probes:
        try:
            read(_http_json(url, body("probe"), api_key))
            # some servers add BOS when tokenising (llama_cpp.server does): measure and drop it
            offset = read(_http_json(url, body(""), api_key))
        except Exception:
            continue

        def count(text: str, url=url, body=body, read=read, offset=offset) -> int:
            return max(read(_http_json(url, body(text), api_key)) - offset, 0) if text else 0

        return count
    return None


class OpenAICompatChatModel(LocalChatModel):
    base_url: str
    api_key: str = "not-needed"
    server_model: str = ""
    prompt_format: str = "chat"
    """``llama2-chat``: our prompt via /v1/completions; ``chat``: the server's template."""
    counter: Any = Field(default=None, exclude=True)
    context_window: int = DEFAULT_SERVER_CONTEXT
    client: Any = Field(default=None, exclude=True)

    @property
    def _llm_type(self) -> str:
        return "docqa-openai-compatible"

    def _client(self):
        if self.client is None:
            from openai import OpenAI

            url = self.base_url.rstrip("/")
            self.client = OpenAI(base_url=url if url.endswith("/v1") else url + "/v1", api_key=self.api_key, max_retries=0)
        return self.client

    def format_prompt(self, messages: Sequence[BaseMessage]) -> str:
        fixed = prompts.format_fixed(messages, self.prompt_format, self.system_prompt)
        if fixed is not None:
            return fixed
        # the server applies its own template; this is what we can see of it
        return "\n".join(f"{d['role']}: {d['content']}" for d in prompts.to_role_dicts(messages, self.system_prompt))

    def count_tokens(self, text: str) -> int:
        return self.counter(text) if self.counter else estimate_tokens(text)

    def _sampling(self, max_new: int) -> dict[str, Any]:
        return dict(
            max_tokens=max_new,
            temperature=self.temperature,
            top_p=self.top_p,
            # not in the OpenAI schema; vLLM and llama.cpp servers read them from the body
            extra_body={"top_k": self.top_k, "repeat_penalty": self.repetition_penalty,
                        "repetition_penalty": self.repetition_penalty},
        )

    def _stream_text(self, messages: list[BaseMessage], stop: list[str], cancel: Cancel, **kwargs: Any) -> Iterator[str]:
        max_new = int(kwargs.get("max_new_tokens") or self.max_new_tokens)
        client = self._client()
        stop_arg = list(stop)[:4] or None  # the OpenAI schema allows up to 4; the rest we cut locally
        if self.prompt_format in ("llama2-chat", "plain"):
            stream = client.completions.create(
                model=self.server_model, prompt=self.format_prompt(messages), stream=True, stop=stop_arg,
                **self._sampling(max_new),
            )
            read = lambda ev: ev.choices[0].text if ev.choices else ""  # noqa: E731
        else:
            stream = client.chat.completions.create(
                model=self.server_model, messages=prompts.to_role_dicts(messages, self.system_prompt),
                stream=True, stop=stop_arg, **self._sampling(max_new),
            )
            read = lambda ev: (ev.choices[0].delta.content or "") if ev.choices else ""  # noqa: E731
        try:
            for event in stream:
                if cancel.is_set():
                    break
                text = read(event)
                if text:
                    yield text
        finally:
            stream.close()  # drops the connection: the server stops generating


def build_openai_chat_model(url: str, *, variant: ModelVariant | None, settings: Any,
                            hf_counter: Callable[[str], int] | None = None,
                            ) -> tuple[OpenAICompatChatModel, list[str], ModelVariant | None]:
    notes: list[str] = []
    try:
        models = server_models(url, settings.api_key)
    except Exception as exc:
        from rag.models.errors import ModelUnavailable

        raise ModelUnavailable(url, f"the server did not answer /v1/models ({exc}); start it, e.g. "
                                    "`python -m llama_cpp.server --model <file.gguf>`, or fix DOCQA_MODEL__NAME") from exc
    server_model = models[0]["id"] if models else "default"
    if variant is None:
        from rag.models.registry import find_model, match_variant_by_path

        variant = find_model(server_model) or match_variant_by_path(server_model)
    window = settings.context_length or server_context_window(url, settings.api_key, models)
    if not window:
        if variant is not None:
            window = variant.context_length
            notes.append(f"The server does not report its context window; assuming {variant.key}'s {window}.")
        else:
            window = DEFAULT_SERVER_CONTEXT
            notes.append(f"The server does not report its context window; assuming {window} tokens "
                         "(set DOCQA_MODEL__CONTEXT_LENGTH).")
    counter = hf_counter or server_tokenizer(url, settings.api_key, server_model)
    if counter is None:
        notes.append("No tokenizer for the server's model is reachable: token counts are estimates.")
    chat = OpenAICompatChatModel(
        base_url=url,
        api_key=settings.api_key,
        server_model=server_model,
        prompt_format="chat" if variant is None else ("llama2-chat" if variant.is_chat else "plain"),
        counter=counter,
        context_window=int(window),
        model_name=server_model,
        **generation_settings(settings),
    )
    return chat, notes, variant

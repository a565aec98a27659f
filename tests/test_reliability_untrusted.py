"""Untrusted model files: only safetensors and GGUF weights are loaded, pickles are refused before
anything reads them, ``trust_remote_code`` is never on, and retrieved text goes into prompts as
quoted data."""

from __future__ import annotations

import ast
import json
import os
import pickle
from pathlib import Path

import pytest

from tests.helpers_reliability import REPO

SOURCE_DIRS = ("ingest", "rag", "ui")


class _Payload:
    """Unpickling this creates a directory: proof that a pickle was executed."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def write_pickle(path: Path, marker: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps({"weight": _Payload(marker)}))
    return path


TINY_BERT = {
    "architectures": ["BertModel"], "model_type": "bert", "hidden_size": 8, "num_hidden_layers": 1,
    "num_attention_heads": 2, "intermediate_size": 16, "vocab_size": 32, "max_position_embeddings": 16,
}
TINY_LLAMA = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 8,
    "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 2,
    "intermediate_size": 16, "vocab_size": 32, "max_position_embeddings": 64,
}


def pickle_only_folder(folder: Path, config: dict, marker: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config))
    write_pickle(folder / "pytorch_model.bin", marker)
    return folder


# --------------------------------------------------------------------------------------------
# The embedder (ingest/embeddings.py)


def test_embedder_folder_with_only_a_pickle_is_refused(tmp_path):
    from ingest.embeddings import load_embedder
    from ingest.errors import EmbedderUnavailable
    from rag.settings import EmbeddingSettings

    marker = tmp_path / "PWNED"
    folder = pickle_only_folder(tmp_path / "evil-embedder", TINY_BERT, marker)
    (folder / "modules.json").write_text(json.dumps(
        [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}]))
    with pytest.raises(EmbedderUnavailable) as err:
        load_embedder(EmbeddingSettings(model=str(folder)))
    message = str(err.value)
    assert "pytorch_model.bin" in message and "safetensors" in message and "pickle" in message.lower()
    assert not marker.exists(), "the pickle was executed"


def test_embedder_module_subfolder_with_a_pickle_is_refused(tmp_path):
    """A safetensors transformer, but a Dense layer stored as a pickle (sentence-transformers
    would torch.load it): refused as well."""
    from ingest.embeddings import refuse_pickle_weights
    from ingest.errors import EmbedderUnavailable

    marker = tmp_path / "PWNED"
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(TINY_BERT))
    (folder / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    write_pickle(folder / "2_Dense" / "pytorch_model.bin", marker)
    with pytest.raises(EmbedderUnavailable, match="2_Dense"):
        refuse_pickle_weights(folder)
    # A pickle beside a safetensors file is never read (safetensors wins), so it is allowed.
    (folder / "2_Dense" / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    refuse_pickle_weights(folder)
    assert not marker.exists()


def test_sentence_transformer_is_loaded_safetensors_only_without_remote_code(monkeypatch, tmp_path):
    """The arguments the embedder passes, also for Hub names (where no folder can be checked
    before loading): use_safetensors=True and trust_remote_code=False."""
    import sentence_transformers

    from ingest.embeddings import SentenceTransformerEmbedder
    from ingest.errors import EmbedderUnavailable

    seen = {}

    def fake(*args, **kwargs):
        seen.update(kwargs)
        raise OSError("stop here")

    monkeypatch.setattr(sentence_transformers, "SentenceTransformer", fake)
    with pytest.raises(EmbedderUnavailable):
        SentenceTransformerEmbedder("some-org/some-model")
    assert seen["trust_remote_code"] is False
    assert seen["model_kwargs"]["use_safetensors"] is True


# --------------------------------------------------------------------------------------------
# The chat model (rag/models)


def test_chat_model_folder_with_only_a_pickle_is_refused(tmp_path):
    pytest.importorskip("transformers")
    from rag.models.loader import load_chat_model
    from rag.settings import Settings

    marker = tmp_path / "PWNED"
    folder = pickle_only_folder(tmp_path / "evil-llm", TINY_LLAMA, marker)
    settings = Settings(model={"name": str(folder), "backend": "transformers"})
    with pytest.raises(Exception) as err:
        load_chat_model(settings)
    assert "safetensors" in str(err.value), f"unclear error: {type(err.value).__name__}: {err.value}"
    assert not marker.exists(), "the pickle was executed"


def test_chat_model_weights_file_that_is_not_gguf_is_refused(tmp_path):
    from rag.models.loader import load_chat_model
    from rag.settings import Settings

    marker = tmp_path / "PWNED"
    weights = write_pickle(tmp_path / "model.bin", marker)
    with pytest.raises(ValueError, match="not a .gguf"):
        load_chat_model(Settings(model={"name": str(weights)}))
    assert not marker.exists()


def test_hf_backend_loads_safetensors_only_without_remote_code(monkeypatch, tmp_path):
    transformers = pytest.importorskip("transformers")
    from rag.models import hf_backend

    seen: dict[str, dict] = {}

    class Stop(Exception):
        pass

    def record(name):
        def from_pretrained(*args, **kwargs):
            seen[name] = kwargs
            if name == "model":
                raise Stop
            return transformers.LlamaConfig(**{k: v for k, v in TINY_LLAMA.items() if k != "architectures"})
        return from_pretrained

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", record("config"))
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", record("model"))
    with pytest.raises(Stop):
        hf_backend.load_causal_lm(str(tmp_path), rope=None, device="cpu", dtype=None)
    assert seen["model"]["use_safetensors"] is True
    assert seen["model"]["trust_remote_code"] is False
    assert seen["config"]["trust_remote_code"] is False


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            owner = getattr(func.value, "id", "") if isinstance(func, ast.Attribute) else ""
            yield node, name, owner


def test_no_code_turns_on_remote_code_or_loads_pickles():
    """Static guard over ingest/, rag/, ui/: trust_remote_code is only ever passed as False;
    no pickle.load(s), no torch.load without weights_only=True, no np.load(allow_pickle=True),
    no from_pretrained(use_safetensors=False)."""
    problems = []
    for folder in SOURCE_DIRS:
        for path in sorted((REPO / folder).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            where = lambda node: f"{path.relative_to(REPO)}:{node.lineno}"  # noqa: E731
            for node, name, owner in _calls(tree):
                kw = {k.arg: k.value for k in node.keywords if k.arg}
                if "trust_remote_code" in kw and not (
                    isinstance(kw["trust_remote_code"], ast.Constant) and kw["trust_remote_code"].value is False
                ):
                    problems.append(f"{where(node)} trust_remote_code is not the constant False")
                if "use_safetensors" in kw and not (
                    isinstance(kw["use_safetensors"], ast.Constant) and kw["use_safetensors"].value is True
                ):
                    problems.append(f"{where(node)} use_safetensors is not the constant True")
                if owner in ("pickle", "cPickle", "dill", "joblib", "cloudpickle") and name in ("load", "loads"):
                    problems.append(f"{where(node)} {owner}.{name}")
                if owner == "torch" and name == "load":
                    wo = kw.get("weights_only")
                    if not (isinstance(wo, ast.Constant) and wo.value is True):
                        problems.append(f"{where(node)} torch.load without weights_only=True")
                if owner in ("np", "numpy") and name == "load":
                    ap = kw.get("allow_pickle")
                    if isinstance(ap, ast.Constant) and ap.value is True:
                        problems.append(f"{where(node)} np.load(allow_pickle=True)")
    assert not problems, "\n".join(problems)

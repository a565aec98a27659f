"""The installed llama.cpp is the portable build (rag/models/llamacpp_build.py), on any CPU.

A native build compiles every kernel the build machine's CPUID claims; inside VMs that list AMX
without running it, the AMX kernels die with SIGILL on the first token. These tests read what
the installed library was compiled with, and its machine code, so CI catches a native build on
a CPU without AMX too.
"""

from __future__ import annotations

import importlib.util
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "rag" / "models"))
import llamacpp_build as build  # noqa: E402  (a plain script: importable without the project)

pytest.importorskip("llama_cpp")
X86 = platform.machine().lower() in ("x86_64", "amd64")


def _cpu_libraries() -> list[Path]:
    spec = importlib.util.find_spec("llama_cpp")
    folder = Path(spec.origin).parent
    return sorted(p for p in folder.rglob("libggml*.so*") if p.is_file() and not p.is_symlink())


@pytest.mark.skipif(not X86, reason="the feature list is x86-64's")
def test_installed_build_reports_no_avx512_or_amx_kernels():
    features = build.compiled_features()
    assert features is not None, "llama_cpp does not import"
    assert features.get("AVX2") and features.get("FMA") and features.get("F16C")
    assert build.forbidden_in(features) == [], features


@pytest.mark.skipif(not X86 or shutil.which("objdump") is None, reason="needs x86-64 and objdump")
def test_installed_machine_code_has_no_amx_or_avx512_instructions():
    """What the CPU will run: no AMX tile instruction and no 512-bit (zmm) register anywhere."""
    libraries = [p for p in _cpu_libraries() if "cpu" in p.name or p.name.startswith("libggml.so")]
    assert libraries, _cpu_libraries()
    for lib in libraries:
        asm = subprocess.run(["objdump", "-d", "--no-show-raw-insn", str(lib)], capture_output=True,
                             text=True, check=True).stdout
        assert len(asm) > 100_000, f"{lib.name}: nothing disassembled"
        amx = re.findall(r"\b(tilezero|tileloadd|tdpbssd|tdpbf16ps|ldtilecfg)\b", asm)
        zmm = re.findall(r"%zmm\d+", asm)
        assert not amx and not zmm, f"{lib.name}: {len(amx)} AMX and {len(zmm)} AVX-512 operands"


def test_install_stamp_matches_the_portable_flags():
    stamp = build.build_stamp()
    assert stamp is not None and stamp.is_file(), "llama-cpp-python was not installed by llamacpp_build.py"
    assert stamp.read_text().split() == build.cmake_flags("portable")


def test_portable_flags_turn_off_native_and_every_claimed_extension():
    flags = build.cmake_flags("portable")
    assert "-DGGML_NATIVE=OFF" in flags
    if X86:
        for off in ("AVX512", "AVX512_VNNI", "AVX512_BF16", "AVX_VNNI", "AMX_TILE", "AMX_INT8", "AMX_BF16"):
            assert f"-DGGML_{off}=OFF" in flags
        assert "-DGGML_AVX2=ON" in flags
    assert "-DGGML_CUDA=ON" in build.cmake_flags("cuda")
    assert "-DGGML_NATIVE=ON" in build.cmake_flags("native")
    # each flag set has its own wheel folder: a wheel built one way never stands in for another
    folders = {build.wheel_cache_dir("0.3.36", build.cmake_flags(v)) for v in ("portable", "cuda", "native")}
    assert len(folders) == 3


def test_pip_never_builds_or_caches_the_wheel(monkeypatch, tmp_path):
    """pip hands a wheel it built before back from its cache whatever CMAKE_ARGS say; so the
    script builds with --no-cache-dir into its own folder and installs that exact file."""
    calls: list[tuple[list[str], dict]] = []

    def fake_run(cmd, env=None, check=False, **kw):
        calls.append((list(cmd), dict(env or {})))
        if "wheel" in cmd:
            out = Path(cmd[cmd.index("-w") + 1])
            (out / "llama_cpp_python-0.3.36-cp311-cp311-linux_x86_64.whl").write_bytes(b"wheel")
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(build.subprocess, "run", fake_run)
    monkeypatch.setattr(build, "installed_version", lambda: None)
    monkeypatch.setattr(build, "build_stamp", lambda: None)
    monkeypatch.setattr(build, "check_portable", lambda: 0)
    assert build.install("portable") == 0
    wheel_cmd, wheel_env = calls[0]
    assert wheel_cmd[3] == "wheel" and "--no-cache-dir" in wheel_cmd and "--no-binary" in wheel_cmd
    assert wheel_env["CMAKE_ARGS"].split() == build.cmake_flags("portable")
    installs = [c for c, _ in calls[1:]]
    cached = build.wheel_cache_dir(build.pinned_version(), build.cmake_flags("portable"))
    assert all("--no-cache-dir" in c and str(c[-1]).startswith(str(cached)) for c in installs)
    # a second install reuses our own wheel and builds nothing
    calls.clear()
    assert build.install("portable") == 0
    assert not any("wheel" in c for c, _ in calls) and calls


def test_version_is_pinned_in_one_place():
    text = (ROOT / "pyproject.toml").read_text()
    assert f'"llama-cpp-python[server]=={build.pinned_version()}"' in text
    from importlib.metadata import version

    assert version("llama-cpp-python") == build.pinned_version()

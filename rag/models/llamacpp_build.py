"""Build and install llama-cpp-python with a fixed, portable instruction set.

Run by ``make install`` as a plain script (standard library only, so it works before the project
is installed)::

    python rag/models/llamacpp_build.py            # portable CPU build (default)
    python rag/models/llamacpp_build.py --variant cuda
    python rag/models/llamacpp_build.py --check    # exit 1 when the installed build is not portable

Why: llama.cpp's default ``GGML_NATIVE=ON`` compiles every kernel the build CPU's CPUID claims.
Inside VMs that advertise AMX without enabling it the AMX kernels die with SIGILL (``tilezero``)
on the first token, and a wheel built natively on one CPU crashes on an older one. pip also
caches the wheel it built and hands it back on later installs whatever ``CMAKE_ARGS`` say, so
this script never lets pip build or cache llama-cpp-python: it builds the wheel itself with
``--no-cache-dir`` into its own cache folder whose name holds the version and the exact CMake
flags, and installs that file. A native wheel in pip's cache is therefore never picked up.

Variants (``DOCQA_LLAMA_VARIANT`` or ``--variant``):

- ``portable`` (default): x86-64 with AVX2/FMA/F16C/BMI2 (any x86-64 CPU since 2013-2015),
  no AVX-512 and no AMX; on ARM the baseline ARMv8 build (no ``-mcpu=native``).
- ``cuda``: NVIDIA GPUs (needs the CUDA toolkit, ``nvcc``); the CPU part stays portable.
- ``metal``: Apple GPUs (macOS on Apple silicon).
- ``native``: tuned to this CPU. Only for machines that build and run on the same CPU; not for
  VMs whose CPUID over-reports, and never what ``make`` chooses by itself.

Extra CMake flags can be appended with ``DOCQA_LLAMA_CMAKE_ARGS``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

# CPU features a portable x86-64 build may carry (llama_print_system_info names).
X86_PORTABLE_FLAGS = (
    "-DGGML_NATIVE=OFF",
    "-DGGML_AVX=ON",
    "-DGGML_AVX2=ON",
    "-DGGML_FMA=ON",
    "-DGGML_F16C=ON",
    "-DGGML_BMI2=ON",
    "-DGGML_AVX_VNNI=OFF",
    "-DGGML_AVX512=OFF",
    "-DGGML_AVX512_VBMI=OFF",
    "-DGGML_AVX512_VNNI=OFF",
    "-DGGML_AVX512_BF16=OFF",
    "-DGGML_AMX_TILE=OFF",
    "-DGGML_AMX_INT8=OFF",
    "-DGGML_AMX_BF16=OFF",
)
ARM_PORTABLE_FLAGS = ("-DGGML_NATIVE=OFF",)
# Features a portable build must not report as compiled in (checked by ``--check`` and the tests).
FORBIDDEN_FEATURES = (
    "AVX512",
    "AVX512_VBMI",
    "AVX512_VNNI",
    "AVX512_BF16",
    "AVX_VNNI",
    "AMX_INT8",
    "AMX_BF16",
    "AMX_TILE",
)

PACKAGE = "llama-cpp-python"
ROOT = Path(__file__).resolve().parents[2]


def pinned_version(pyproject: Path = ROOT / "pyproject.toml") -> str:
    """The llama-cpp-python version pinned in pyproject.toml: the one place it is written."""
    match = re.search(r'"llama-cpp-python(?:\[[^\]]*\])?==([0-9][^"]*)"', pyproject.read_text())
    if not match:
        raise SystemExit(f"{pyproject}: no pinned llama-cpp-python==VERSION in the dependencies")
    return match.group(1)


def is_x86() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64", "i686", "x86")


def cmake_flags(variant: str) -> list[str]:
    portable = list(X86_PORTABLE_FLAGS if is_x86() else ARM_PORTABLE_FLAGS)
    if variant == "portable":
        flags = portable
    elif variant == "cuda":
        flags = portable + ["-DGGML_CUDA=ON"]
    elif variant == "metal":
        flags = ["-DGGML_METAL=ON"]
    elif variant == "native":
        flags = ["-DGGML_NATIVE=ON"]
    else:
        raise SystemExit(f"unknown llama.cpp variant {variant!r}: portable, cuda, metal or native")
    flags += os.environ.get("DOCQA_LLAMA_CMAKE_ARGS", "").split()
    return flags


def wheel_cache_dir(version: str, flags: list[str]) -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    key = hashlib.sha256(" ".join([version, platform.machine(), sys.version, *flags]).encode())
    return base / "alpaca-docqa" / "llama-cpp-wheels" / f"{version}-{key.hexdigest()[:16]}"


def installed_version() -> str | None:
    try:
        from importlib.metadata import PackageNotFoundError, version
    except ImportError:  # pragma: no cover
        return None
    try:
        return version(PACKAGE)
    except PackageNotFoundError:
        return None


def build_stamp() -> Path | None:
    """A file next to the installed package recording the flags it was built with."""
    try:
        import importlib.util

        spec = importlib.util.find_spec("llama_cpp")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin:
        return None
    return Path(spec.origin).parent / "docqa-build-flags.txt"


def compiled_features() -> dict[str, bool] | None:
    """CPU features the installed llama.cpp was compiled with, from llama_print_system_info()
    (run in a child process: a broken build must not take this script down); None when
    llama_cpp does not import."""
    code = (
        "import llama_cpp, sys;"
        "sys.stdout.write(llama_cpp.llama_print_system_info().decode('utf-8', 'replace'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if out.returncode != 0:
        return None
    return {name: value == "1" for name, value in re.findall(r"([A-Z0-9_]+) = ([01])", out.stdout)}


def forbidden_in(features: dict[str, bool]) -> list[str]:
    return [name for name in FORBIDDEN_FEATURES if features.get(name)]


def check_portable() -> int:
    if installed_version() is None:
        print(f"{PACKAGE} is not installed", file=sys.stderr)
        return 1
    features = compiled_features()
    if features is None:
        print(f"{PACKAGE} {installed_version()} is installed but does not import", file=sys.stderr)
        return 1
    if not is_x86():
        print("not x86-64: the portable ARM build has no feature list to check")
        return 0
    bad = forbidden_in(features)
    if bad:
        print(
            f"{PACKAGE} {installed_version()} carries CPU kernels a portable build must not have: "
            f"{', '.join(bad)}. Reinstall with: python rag/models/llamacpp_build.py --force",
            file=sys.stderr,
        )
        return 1
    print(f"{PACKAGE} {installed_version()}: portable build (no AVX-512, no AMX kernels)")
    return 0


def _imports_and_fits(variant: str) -> bool:
    features = compiled_features()
    if features is None:
        return False
    return variant != "portable" or not is_x86() or not forbidden_in(features)


def build_wheel(version: str, flags: list[str], out_dir: Path) -> Path:
    env = dict(os.environ, CMAKE_ARGS=" ".join(flags), FORCE_CMAKE="1")
    env.setdefault("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 2))
    tmp = Path(tempfile.mkdtemp(prefix="llama-wheel-"))
    print(f"Building {PACKAGE} {version} from source with {' '.join(flags)} (several minutes)...")
    cmd = [
        sys.executable, "-m", "pip", "wheel", "--no-cache-dir", "--no-deps",
        "--no-binary", PACKAGE, "-w", str(tmp), f"{PACKAGE}=={version}",
    ]  # fmt: skip
    subprocess.run(cmd, env=env, check=True)
    wheels = list(tmp.glob("llama_cpp_python-*.whl"))
    if len(wheels) != 1:
        raise SystemExit(f"building {PACKAGE} produced {len(wheels)} wheels in {tmp}")
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / wheels[0].name
    shutil.move(str(wheels[0]), target)
    (out_dir / "cmake-flags.txt").write_text(" ".join(flags) + "\n")
    shutil.rmtree(tmp, ignore_errors=True)
    return target


def install(variant: str, force: bool = False) -> int:
    version = pinned_version()
    flags = cmake_flags(variant)
    stamp = build_stamp()
    wanted = " ".join(flags)
    if (
        not force
        and installed_version() == version
        and stamp is not None
        and stamp.is_file()
        and stamp.read_text().strip() == wanted
        and _imports_and_fits(variant)
    ):
        print(f"{PACKAGE} {version} ({variant}) already installed")
        return 0
    cache = wheel_cache_dir(version, flags)
    wheels = sorted(cache.glob("llama_cpp_python-*.whl")) if cache.is_dir() else []
    wheel = wheels[0] if wheels and not force else build_wheel(version, flags, cache)
    print(f"Installing {wheel}")
    pip = [sys.executable, "-m", "pip", "install", "--no-cache-dir"]
    # the wheel itself replaces whatever build is there; a second call adds its dependencies
    subprocess.run([*pip, "--no-deps", "--force-reinstall", str(wheel)], check=True)
    subprocess.run([*pip, str(wheel)], check=True)
    stamp = build_stamp()
    if stamp is not None:
        stamp.write_text(wanted + "\n")
    if variant == "portable" and is_x86():
        return check_portable()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--variant",
        default=os.environ.get("DOCQA_LLAMA_VARIANT", "portable"),
        help="portable (default), cuda, metal or native",
    )
    parser.add_argument("--force", action="store_true", help="rebuild even when cached")
    parser.add_argument(
        "--check", action="store_true", help="only check the installed build is portable"
    )
    args = parser.parse_args(argv)
    if args.check:
        return check_portable()
    return install(args.variant, force=args.force)


if __name__ == "__main__":
    sys.exit(main())

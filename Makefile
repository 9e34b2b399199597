# Two commands set up and run everything on a fresh machine: `make demo` and `make test`.
# Both create .venv and install what they need. torch is pinned to the CPU build 2.13.0 when the
# venv has no torch yet, so pip never pulls a multi-GB CUDA build for a bare `torch` requirement.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check
TORCH  := torch==2.13.0

.PHONY: demo test lint bench full readme clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(VENV)/.torch: | $(PY)
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install $(TORCH)
	touch $@

$(VENV)/.base: pyproject.toml $(VENV)/.torch
	$(PIP) install -e .
	touch $@

$(VENV)/.dev: pyproject.toml $(VENV)/.torch
	$(PIP) install -e '.[dev,speech,bench]'
	touch $@ $(VENV)/.base

demo: $(VENV)/.base
	$(VENV)/bin/tying run all --preset quick --out runs/demo
	$(VENV)/bin/tying report runs/demo

test: $(VENV)/.dev
	$(VENV)/bin/ruff check src tests benchmarks
	$(PY) -m pytest -n 2 --dist loadgroup

lint: $(VENV)/.dev
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

bench: $(VENV)/.dev
	for b in benchmarks/bench_*.py; do $(PY) $$b || exit 1; done

# Full runs whose numbers the README quotes (long: hours on 2 cores).
full: $(VENV)/.base
	$(VENV)/bin/tying run all --preset full --out results

readme: $(VENV)/.base
	$(VENV)/bin/tying report results --readme README.md --bench benchmarks/results

clean:
	rm -rf $(VENV) runs .pytest_cache

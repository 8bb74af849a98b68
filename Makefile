# Both targets create .venv when missing and install into it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
OUT ?= demo_output

.PHONY: demo test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

demo: $(VENV)/.installed
	$(BIN)/keras-mle demo --out $(OUT)

# Two workers: the suite takes about 3 minutes on 2 cores (5+ in one process).
test: $(VENV)/.installed-test
	$(BIN)/python -m pytest -q -n 2

lint: $(VENV)/.installed-test
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

# The training paths, the file readers, memory and scale (streamed inference, two workers; about
# 18 minutes on 2 idle cores); the other scripts in benchmarks/ run one by one (see
# docs/benchmarks.md).
bench: $(VENV)/.installed
	$(BIN)/python benchmarks/bench_training.py
	$(BIN)/python benchmarks/bench_files.py
	$(BIN)/python benchmarks/bench_memory.py
	$(BIN)/python benchmarks/bench_scale.py

clean:
	rm -rf $(VENV) $(OUT) build *.egg-info

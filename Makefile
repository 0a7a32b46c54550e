# Two commands do all the set-up on a fresh machine with python3 and make: `make demo`, `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python

.PHONY: demo test lint typecheck unit bench arena clean install dev

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/activate
	$(PY) -m pip install --quiet -e .
	touch $@

$(VENV)/.dev-installed: pyproject.toml | $(BIN)/activate
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[dev,mcp,torch,ray]"
	touch $(VENV)/.installed $@

install: $(VENV)/.installed

dev: $(VENV)/.dev-installed

demo: install
	$(BIN)/velocity run examples/quickstart.toml

lint: dev
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

typecheck: dev
	$(BIN)/mypy src

unit: dev
	$(BIN)/pytest -n 2 --dist loadgroup

test: lint typecheck unit

bench: dev
	$(PY) benchmarks/bench_round.py
	$(PY) benchmarks/bench_aggregators.py
	$(PY) benchmarks/bench_sweep.py

# The strategy x attack arena of docs/attacks.md (288 runs, about a minute on 2 cores).
arena: install
	rm -rf out/attack-arena
	$(BIN)/velocity sweep examples/attack_arena.toml --out out/attack-arena
	$(PY) benchmarks/attack_arena.py out/attack-arena

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache out

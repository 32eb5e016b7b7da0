# The two commands of the README: `make demo` (serve the demo) and `make test` (lint + unit suite).
# Both do their own set-up: a virtual environment in .venv with the project installed.
# `make demo TRAIN=1` retrains the demo models here instead of using the ones in models/;
# DATA (or RETRO_DATA_DIR) is where the demo caches its index and runs.
VENV ?= .venv
DATA ?= $(or $(RETRO_DATA_DIR),data)
TRAIN ?=
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test lint demo clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# Machines without CUDA take the CPU build of torch that lies on local disk (seconds, not GBs).
	if ! command -v nvidia-smi >/dev/null 2>&1; then $(PY) -m pip install -q torch==2.13.0; fi
	$(PY) -m pip install -q -e '.[dev,data]'
	touch $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: lint
	$(VENV)/bin/pytest -q

demo: $(STAMP)
	$(VENV)/bin/retro demo --data-dir $(DATA) $(if $(filter-out 0,$(TRAIN)),--train,)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

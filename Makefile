# Two commands set everything up on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: install testbins crds lint test unit demo bench clean

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

install: $(BIN)/.installed

# Real kube-apiserver, kube-controller-manager and etcd, and helm, built from Go modules, cached by version.
testbins:
	./hack/build-testbins.sh >/dev/null
	./hack/build-helm.sh >/dev/null
	./hack/install-postgres.sh

# The CRDs (crds/, the chart's and the package's copies), generated from the pydantic models.
crds: install
	$(BIN)/python hack/gen-crds.py

lint: install
	$(BIN)/ruff check operator tests e2e bench
	$(BIN)/ruff format --check operator tests e2e bench
	$(BIN)/mypy
	$(BIN)/lint-imports

unit: install
	$(BIN)/pytest tests/unit -q

test: install testbins lint
	$(BIN)/pytest tests e2e $(PYTEST_ARGS)

demo: install testbins
	$(BIN)/python e2e/demo.py

bench: install testbins
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache

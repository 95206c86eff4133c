# Two commands for a fresh machine: `make run` (the service on the embedded default) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

.PHONY: install run test test-system lint openapi bench
install: $(VENV)/.installed

run: install
	$(VENV)/bin/rewards serve --host 127.0.0.1 --port 8000

test: install
	$(PY) -m pytest -q -p no:cacheprovider

# The same suite against the machine's PostgreSQL and Redis instead of embedded ones; the suites that
# do not depend on the stack (browser, schemathesis, faults) already ran in `make test`.
test-system: install
	DATABASE_URL=$${DATABASE_URL:-postgresql://postgres@127.0.0.1:5432/test} \
	REDIS_URL=$${REDIS_URL:-redis://127.0.0.1:6379/15} \
	$(PY) -m pytest -q -p no:cacheprovider -m "not browser and not schemathesis and not faults"

# ruff (style, imports, bugbear, no late imports in domain code) and mypy, as configured in pyproject.toml.
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

openapi: install
	$(VENV)/bin/rewards openapi --output openapi/openapi.json

bench: install
	$(PY) bench/import_codes.py

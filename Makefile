# Two commands for a fresh machine: `make run` (the service on the embedded default) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

# Installs come from the lock file (hash-checked, the pip a fresh venv brings is enough); the project
# itself goes in editable, with --no-deps: everything it needs is already there, exactly as locked.
$(VENV)/.installed: pyproject.toml requirements-dev.lock
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --require-hashes -r requirements-dev.lock
	$(PY) -m pip install -q --no-deps -e .
	touch $@

.PHONY: install run test test-system lint openapi bench lock
install: $(VENV)/.installed

run: install
	$(VENV)/bin/rewards serve --host 127.0.0.1 --port 8000

# TEST_MARKERS / SYSTEM_MARKERS: which suites each run takes (pytest -m). `make test` runs them all;
# CI (.ci/run) runs the suites whose outcome does not depend on the stack (browser, schemathesis,
# faults) once, split between its two runs so that both end at about the same time.
TEST_MARKERS ?=
SYSTEM_MARKERS ?= not browser and not schemathesis and not faults

test: install
	$(PY) -m pytest -q -p no:cacheprovider $(if $(TEST_MARKERS),-m "$(TEST_MARKERS)",)

# The same suite against the machine's PostgreSQL and Redis instead of embedded ones.
test-system: install
	DATABASE_URL=$${DATABASE_URL:-postgresql://postgres@127.0.0.1:5432/test} \
	REDIS_URL=$${REDIS_URL:-redis://127.0.0.1:6379/15} \
	$(PY) -m pytest -q -p no:cacheprovider -m "$(SYSTEM_MARKERS)"

# ruff (style, imports, bugbear, no late imports in domain code), mypy and the import-linter contracts
# (the layers of docs/architecture.md), as configured in pyproject.toml.
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

openapi: install
	$(VENV)/bin/rewards openapi --output openapi/openapi.json

bench: install
	$(PY) bench/import_codes.py

# After a dependency change in pyproject.toml: both lock files again (the image's: core + tracing; the
# developers' and CI's: + test). `make lock UPGRADE=1` also moves every pin to its newest release.
COMPILE = $(VENV)/bin/pip-compile -q --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url \
	--no-emit-find-links $(if $(UPGRADE),--upgrade)
# The developers' lock is resolved first and the image's is held to its pins, so that tests and
# production run the same versions (the test tools cap some shared packages, e.g. httpx and typer).
lock: install
	$(PY) -m pip install -q pip-tools
	$(COMPILE) --extra tracing --extra test -o requirements-dev.lock pyproject.toml
	sed -n 's/^\([A-Za-z0-9._-]*==[^ ]*\).*/\1/p' requirements-dev.lock > $(VENV)/dev-pins.txt
	$(COMPILE) --extra tracing -c $(VENV)/dev-pins.txt -o requirements.lock pyproject.toml

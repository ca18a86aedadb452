# The two commands of the README:
#   make pipeline   set up, then run the pipeline on the built-in avdigits dataset
#   make test       set up, then run the test suite (what .ci/run calls)
# Set-up is a venv in .venv, rebuilt only when pyproject.toml or constraints.txt change.

PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed
ARGS ?=
PYTEST_ARGS ?=
TESTS ?= tests

# Nothing here may phone home: this tool runs offline.
export MLFLOW_DISABLE_TELEMETRY := true
# MLflow's own default when unset, made explicit so that a stray ./mlruns cannot flip it.
export MLFLOW_TRACKING_URI ?= sqlite:///$(CURDIR)/mlflow.db

.PHONY: setup chromium pipeline test bench lint ui server constraints clean-venv

setup: $(STAMP) chromium

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev,postgres,text,launchers,browser]"
	touch $@

# The UI test drives Debian's Chromium (Playwright downloads no browser here). As root it
# is installed with apt; otherwise the command to run is printed.
chromium:
	@command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	      --no-install-recommends chromium fonts-dejavu-core >/dev/null; \
	  else echo "the UI test needs Chromium: sudo apt-get install chromium" >&2; exit 1; fi; }

pipeline: $(STAMP)
	PATH="$(BIN):$$PATH" mlflow run . -e pipeline --env-manager local --experiment-name avdigits $(ARGS)

# Every tier (-m "" lifts the quick tier's `not slow`), one pytest worker per core
# (pytest-xdist); tests/conftest.py splits the cores' threads. A plain `pytest` is the
# quick tier.
test: setup
	PATH="$(BIN):$$PATH" python -m pytest -n auto --dist worksteal -m "" $(PYTEST_ARGS) $(TESTS)

# Every benchmark, side by side (~15 min); rewrites bench/results and docs/benchmarks.md.
bench: $(STAMP)
	PATH="$(BIN):$$PATH" python -m bench $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check tsp_mlflow analysis tests bench
	$(BIN)/ruff format --check tsp_mlflow analysis tests bench

# A tracking server on a private PostgreSQL in ./tsp-server (docs/deploy.md); Ctrl-C stops it.
server: $(STAMP)
	$(BIN)/tsp server $(ARGS)

ui: $(STAMP)
	$(BIN)/mlflow ui --backend-store-uri "$(MLFLOW_TRACKING_URI)" --workers 1

# Re-pin after editing pyproject.toml: resolve into a scratch venv and freeze it.
constraints:
	rm -rf /tmp/tsp-pin && $(PYTHON) -m venv /tmp/tsp-pin
	/tmp/tsp-pin/bin/pip install --quiet torch==2.13.0 -e ".[dev,postgres,text,launchers,browser]"
	{ sed -n '1,/^# torch stays/p' constraints.txt; /tmp/tsp-pin/bin/pip freeze --exclude-editable \
	  | sed 's/^torch==\(.*\)+cpu/torch==\1/'; } > constraints.txt.new && mv constraints.txt.new constraints.txt

clean-venv:
	rm -rf $(VENV)

# `make demo` and `make test` create .venv on first use (pip + venv: they take torch from the local wheels).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export DO_NOT_TRACK := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 300
export HF_HUB_OFFLINE := 1

.PHONY: demo test test-fast reliability bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/ortho demo

# Two workers (one per core here); a module's tests stay on one worker, so its fixtures are built once.
test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadscope

# Leaves out slow tests, the reliability suite and every test that starts a Prefect server (marked by its fixture).
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow and not reliability and not prefect"

reliability: $(STAMP)
	$(BIN)/python -m pytest -q -m reliability

bench: $(STAMP)
	$(BIN)/python bench/ingest.py

clean:
	rm -rf workspace demo-data .pytest_cache

# make run   set up a virtualenv and run the server (private InfluxDB if influxd is installed);
#            ARGS="--devices devices.toml" passes server options; PORT, STATUS_PORT
#            and INFLUX_PORT (make run PORT=8267) replace the ports 8266, 9266 and 8086
# make test       set up a virtualenv and run the whole test suite (lint, unit, integration)
# make test-unit  the fast tier only (fakes, in-process, no real processes)

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-unit test-integration lint clean

# Strict editable installs link each file: new modules need a reinstall.
$(STAMP): setup.cfg pyproject.toml $(wildcard weather/*.py weather/*/*.py twisted/plugins/*.py)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]' --config-settings editable_mode=strict
	touch $(STAMP)

# Empty: quickstart's defaults.  Not taken from the environment (no ?=): a
# PORT set for something else must not move the server.
PORT =
STATUS_PORT =
INFLUX_PORT =

run: $(STAMP)
	$(BIN)/python -m weather.tools.quickstart $(addprefix --port=,$(PORT)) \
	  $(addprefix --status-port=,$(STATUS_PORT)) $(addprefix --influx-port=,$(INFLUX_PORT)) \
	  -- $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint test-unit test-integration

test-unit: $(STAMP)
	$(BIN)/python -m twisted.trial tests.unit

test-integration: $(STAMP)
	$(BIN)/python -m twisted.trial -j2 tests.integration

clean:
	rm -rf $(VENV) _trial_temp build *.egg-info twisted/plugins/dropin.cache

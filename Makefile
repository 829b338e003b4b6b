# Quick start: `make run` starts the daemon on its defaults; `make test` runs the whole suite.
PYTHON ?= python3
VENV := .venv
BOOKWORM := .venv-bookworm
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: run test test-current test-bookworm bench clean

run: $(VENV)/.installed
	$(VENV)/bin/twistd --nodaemon --pidfile= pypicached $(ARGS)

test: test-current test-bookworm

test-current: $(VENV)/.test-installed
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

# The same suite on the library versions Debian bookworm packages.
test-bookworm: $(BOOKWORM)/.test-installed
	$(BOOKWORM)/bin/python -m pytest $(PYTEST_ARGS)

# How long a housekeeping pass over 100,000 cached files stalls the event loop.
bench: $(VENV)/.installed
	$(VENV)/bin/python bench/eviction_stall.py

$(VENV)/bin/python $(BOOKWORM)/bin/python:
	$(PYTHON) -m venv $(@D)/..
	$(@D)/pip install --quiet --upgrade pip setuptools wheel

$(VENV)/.installed: $(VENV)/bin/python setup.cfg pyproject.toml
	$(VENV)/bin/pip install --quiet -e . --config-settings editable_mode=compat
	touch $@

$(VENV)/.test-installed: $(VENV)/.installed
	$(VENV)/bin/pip install --quiet -e '.[test]' --config-settings editable_mode=compat
	touch $@

$(BOOKWORM)/.test-installed: $(BOOKWORM)/bin/python setup.cfg pyproject.toml tests/bookworm-pins.txt
	$(BOOKWORM)/bin/pip install --quiet -r tests/bookworm-pins.txt -e '.[test]' --config-settings editable_mode=compat
	touch $@

clean:
	rm -rf $(VENV) $(BOOKWORM) build *.egg-info

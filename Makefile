# Quick start: `make run` starts the daemon on its defaults; `make test` runs the whole suite.
PYTHON ?= python3
VENV := .venv
BOOKWORM := .venv-bookworm
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: run test test-current test-bookworm tools e2e browser haproxy wrk bench bench-cluster deb deb-deps deb-test clean

run: $(VENV)/.installed
	$(VENV)/bin/twistd --nodaemon --pidfile= pypicached $(ARGS)

test: test-current test-bookworm

test-current: $(VENV)/.test-installed browser haproxy tools
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

# The same suite on the library versions Debian bookworm packages.
test-bookworm: $(BOOKWORM)/.test-installed browser haproxy tools
	$(BOOKWORM)/bin/python -m pytest $(PYTEST_ARGS)

# The installers of the compatibility matrix (tests/test_matrix.py), each in its own virtual
# environment, at the versions pinned in tests/installer-pins/<tool>.txt.
TOOLS := $(CURDIR)/.venv-tools
INSTALLERS := pip pip-23 uv poetry pdm
export PYPICACHED_TOOLS := $(TOOLS)

tools: $(INSTALLERS:%=$(TOOLS)/%/.installed)

$(TOOLS)/%/.installed: tests/installer-pins/%.txt
	rm -rf $(TOOLS)/$*
	$(PYTHON) -m venv $(TOOLS)/$*
	$(TOOLS)/$*/bin/python -m pip install --quiet -r $<
	touch $@

# pip, uv, poetry and pdm through the daemon (on its defaults) against the public index, for a
# dozen popular projects, cold then warm: needs the network, so not part of `make test`.
e2e: $(VENV)/.installed tools
	$(VENV)/bin/python tests/e2e.py $(E2E_ARGS)

# Debian's headless Chromium, for the test that renders the status page in a real browser.
browser:
	@command -v chromium >/dev/null || { DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium || \
	  { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; }; }

# Debian's HAProxy, for the tests that run deploy/haproxy.cfg in front of several nodes.
haproxy:
	@test -x /usr/sbin/haproxy || { DEBIAN_FRONTEND=noninteractive apt-get install -y -q haproxy || \
	  { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q haproxy; }; }

# Debian's wrk, the load generator of bench/cluster.py.
wrk:
	@command -v wrk >/dev/null || { DEBIAN_FRONTEND=noninteractive apt-get install -y -q wrk || \
	  { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q wrk; }; }

# How long a housekeeping pass over 100,000 cached files stalls the event loop.
bench: $(VENV)/.installed
	$(VENV)/bin/python bench/eviction_stall.py

# Warm pages per second and 512 MB file throughput through HAProxy and two nodes, against one
# node directly, in the same run (loopback only; about 4 GB of scratch disk, a few minutes).
bench-cluster: $(VENV)/.installed haproxy wrk
	$(VENV)/bin/python bench/cluster.py $(BENCH_ARGS)

# The Debian package, built with Debian's own Python and libraries (not a venv's).
DEB_PATH := /usr/sbin:/usr/bin:/sbin:/bin
DEB_BUILD_DEPS := debhelper dh-python dh-sequence-python3 pybuild-plugin-pyproject python3-all \
	python3-setuptools python3-attr python3-openssl python3-packaging python3-prometheus-client python3-pytest \
	python3-pytest-twisted python3-service-identity python3-treq python3-twisted lintian fakeroot

deb-deps:
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(DEB_BUILD_DEPS) || \
	  { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(DEB_BUILD_DEPS); }

deb: deb-deps
	env PATH=$(DEB_PATH) dpkg-buildpackage -us -uc -b
	mkdir -p build/deb
	mv ../pypicached_*_all.deb ../pypicached_*.buildinfo ../pypicached_*.changes build/deb/
	env PATH=$(DEB_PATH) lintian --fail-on error,warning --pedantic build/deb/pypicached_*_all.deb

deb-test: deb haproxy $(VENV)/.installed
	env PATH=$(DEB_PATH) python3 tests/deb_check.py $(CURDIR)/$$(ls build/deb/pypicached_*_all.deb) $(CURDIR)/$(VENV)/bin/python

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
	rm -rf $(VENV) $(BOOKWORM) $(TOOLS) build *.egg-info .pybuild debian/pypicached debian/.debhelper debian/files debian/*.substvars debian/*.log

# Quick start: `make run` starts the daemon on its defaults; `make test` runs the whole suite.
PYTHON ?= python3
VENV := .venv
BOOKWORM := .venv-bookworm
TRIXIE := .venv-trixie
# Debian 13's Python is 3.13: this machine's python3.13 (on PATH, or pyenv's), else $(PYTHON).
ifndef PYTHON_TRIXIE
PYTHON_TRIXIE := $(shell for p in python3.13 $${PYENV_ROOT:-$$HOME/.pyenv}/versions/3.13*/bin/python3.13; do \
	"$$p" -c '' 2>/dev/null && { echo "$$p"; break; }; done)
endif
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: run test test-current lint test-bookworm test-trixie tools e2e browser haproxy pebble wrk bench bench-memory \
	bench-outage bench-cluster bench-rps bench-cold bench-bundle deb deb-deps deb-test apt-repo deb-test-trixie \
	image-tools image image-save image-test clean

run: $(VENV)/.installed
	$(VENV)/bin/twistd --nodaemon --pidfile= pypicached $(ARGS)

test: test-current test-bookworm test-trixie

test-current: lint $(VENV)/.test-installed browser haproxy pebble tools
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

# ruff and mypy (config in pyproject.toml), first in test-current: only in $(VENV), never in the
# bookworm and trixie venvs nor the Debian build, which use Debian's tools.
lint: $(VENV)/.test-installed
	$(VENV)/bin/ruff check pypicached tests bench twisted
	$(VENV)/bin/ruff format --check pypicached tests bench twisted
	$(VENV)/bin/mypy

# The same suite on the library versions Debian bookworm packages.
test-bookworm: $(BOOKWORM)/.test-installed browser haproxy pebble tools
	$(BOOKWORM)/bin/python -m pytest $(PYTEST_ARGS)

# And on the versions Debian trixie packages, on Python 3.13 as trixie has it.
test-trixie: $(TRIXIE)/.test-installed browser haproxy pebble tools
	$(TRIXIE)/bin/python -m pytest $(PYTEST_ARGS)

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

# apt_install PACKAGES,COMMANDS: install Debian's PACKAGES unless every one of COMMANDS is there (none
# given: always), waiting for apt's lock (make -j runs several at once), the lists refreshed once if a
# package is not found.
APT := DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 -y -q
apt_install = @(for c in $(2); do command -v $$c >/dev/null || exit 1; done; test -n "$(2)") 2>/dev/null || $(APT) install $(1) || { $(APT) update && $(APT) install $(1); }

# Debian's headless Chromium, for the test that renders the status page in a real browser.
browser:
	$(call apt_install,chromium,chromium)

# Debian's pebble (Let's Encrypt's test CA), for the tests of certificates from an ACME CA.
pebble:
	$(call apt_install,pebble,/usr/bin/pebble)

# Debian's HAProxy, for the tests that run deploy/haproxy.cfg in front of several nodes.
haproxy:
	$(call apt_install,haproxy,/usr/sbin/haproxy)

# Debian's wrk, the load generator of bench/cluster.py.
wrk:
	$(call apt_install,wrk,wrk)

# How long a housekeeping pass over 100,000 cached files stalls the event loop.
bench: $(VENV)/.installed
	$(VENV)/bin/python bench/eviction_stall.py

# Peak memory with slow clients of a 700,000-name project list and 50 of a big project page,
# against the version before pages were sent from disk (BENCH_ARGS="--only current" skips it).
bench-memory: $(VENV)/.installed
	$(VENV)/bin/python bench/page_memory.py $(BENCH_ARGS)

# Warm page and file requests per second for one daemon process, against the version before this
# work and nginx serving the same bytes, in one run (installs wrk and nginx).
bench-rps: $(VENV)/.installed
	$(VENV)/bin/python bench/page_rps.py $(BENCH_ARGS)

# A big project page's first request (1, 6 and 20 MB, HTML and JSON) against nginx serving the
# same bytes, the event loop's longest hold meanwhile, and cold pip through the proxy against
# straight at the upstream, in one run (installs nginx; a few minutes).
bench-cold: $(VENV)/.installed tools
	$(VENV)/bin/python bench/cold.py $(BENCH_ARGS)

# Export and import of a 1.1 GB bundle (zstd, then gzip): time and peak RSS of each, against GNU
# tar writing and reading the same files with the same compression (about 4 GB of scratch disk).
bench-bundle: $(VENV)/.test-installed
	$(VENV)/bin/python bench/bundle.py $(BENCH_ARGS)

# pip's wall time with the upstream killed or hanging and every page expired, against warm.
bench-outage: $(VENV)/.installed tools
	$(VENV)/bin/python bench/outage.py $(BENCH_ARGS)

# Warm pages per second and 512 MB file throughput through HAProxy and two nodes, against one
# node directly, in the same run (loopback only; about 4 GB of scratch disk, a few minutes).
bench-cluster: $(VENV)/.installed haproxy wrk
	$(VENV)/bin/python bench/cluster.py $(BENCH_ARGS)

# The Debian package, built with Debian's own Python and libraries (not a venv's).
DEB_PATH := /usr/sbin:/usr/bin:/sbin:/bin
DEB_BUILD_DEPS := debhelper dh-python dh-sequence-python3 pybuild-plugin-pyproject python3-all \
	python3-setuptools python3-acme python3-attr python3-josepy python3-openssl python3-packaging python3-prometheus-client python3-pytest \
	python3-pytest-twisted python3-service-identity python3-treq python3-twisted lintian fakeroot

deb-deps:
	$(call apt_install,$(DEB_BUILD_DEPS),)

deb: deb-deps
	env PATH=$(DEB_PATH) dpkg-buildpackage -us -uc -b
	mkdir -p build/deb
	mv ../pypicached_*_all.deb ../pypicached_*.buildinfo ../pypicached_*.changes build/deb/
	env PATH=$(DEB_PATH) lintian --fail-on error,warning --pedantic build/deb/pypicached_*_all.deb

# A signed apt repository of the package in build/apt/ (apt-ftparchive, gpg), for any static web
# server. Signed with APT_SIGNING_KEY from APT_GNUPGHOME; without it, with a key made for the test.
APT_GNUPGHOME ?= $(CURDIR)/.deb-test/gnupg
APT_SIGNING_KEY ?=
APT_TOOLS := apt-utils gpg xz-utils
apt-repo deb-test deb-test-trixie: export GNUPGHOME := $(APT_GNUPGHOME)
apt-repo deb-test deb-test-trixie: export APT_SIGNING_KEY := $(APT_SIGNING_KEY)

apt-repo: deb
	$(call apt_install,$(APT_TOOLS),apt-ftparchive gpg)
	env PATH=$(DEB_PATH) deploy/apt-repo.sh build/apt build/deb/pypicached_*_all.deb

# On this Debian 12 machine: `apt install pypicached` from that repository, the package's tests on
# what was installed, the daemon as its unit runs it, pip through it, an upgrade, a purge.
deb-test: apt-repo haproxy
	env PATH=$(DEB_PATH) python3 tests/deb_check.py --repo build/apt

# The same on Debian 13, in a chroot: .deb-test/trixie-root is debootstrapped once and kept (not in
# build/, which every Debian build empties); each run works on an overlay of it. Then trixie's
# lintian on the package.
DEBIAN_MIRROR ?= http://deb.debian.org/debian
deb-test-trixie: export DEBIAN_MIRROR := $(DEBIAN_MIRROR)

deb-test-trixie: apt-repo
	$(call apt_install,debootstrap,debootstrap)
	env PATH=$(DEB_PATH) tests/deb_chroot.sh trixie .deb-test/trixie-root \
	  sh -c 'python3 tests/deb_check.py --repo build/apt --root "$$CHROOT" --lintian'

# The container image pypicached:<version>: the package from the apt repository above, on a copy
# of deb-test-trixie's debootstrapped rootfs cut down to minbase (debootstrapped here if missing),
# committed with buildah (docs/image.md). One make with deb-test-trixie builds the .deb once.
VERSION := $(shell sed -n 's/^__version__ = "\(.*\)"$$/\1/p' pypicached/__init__.py)
IMAGE := pypicached:$(VERSION)
IMAGE_TOOLS := podman buildah runc catatonit debootstrap
TRIXIE_ROOT := .deb-test/trixie-root

image-tools:
	$(call apt_install,$(IMAGE_TOOLS),podman buildah runc debootstrap)

$(TRIXIE_ROOT): | image-tools
	mkdir -p $(@D)
	env PATH=$(DEB_PATH) tests/deb_chroot.sh trixie $@ true

image: apt-repo image-tools | $(TRIXIE_ROOT)
	env PATH=$(DEB_PATH) IMAGE=$(IMAGE) IMAGE_REVISION=$$(git rev-parse HEAD 2>/dev/null || echo unknown) \
	  deploy/image/build.sh $(VERSION) $(TRIXIE_ROOT) build/apt

image-save: image
	mkdir -p build
	rm -f build/pypicached-$(VERSION).oci.tar
	podman save --format oci-archive -o build/pypicached-$(VERSION).oci.tar $(IMAGE)

# The image run with podman as docs/image.md says (runc, --init, ulimits within this host's hard
# limits), against a fake upstream on loopback: pip through it, a restart, SIGTERM mid-download,
# a bad config, /health, pypicached-admin.
image-test: image $(VENV)/.test-installed
	$(VENV)/bin/python tests/image_check.py --image $(IMAGE) --nofile-hard "$$(ulimit -Hn)"

$(VENV)/bin/python $(BOOKWORM)/bin/python:
	$(PYTHON) -m venv $(@D)/..
	$(@D)/pip install --quiet --upgrade pip setuptools wheel

$(TRIXIE)/bin/python:
	@test -n "$(PYTHON_TRIXIE)" || echo "No Python 3.13 here: $(TRIXIE) runs trixie's libraries on $(PYTHON)" >&2
	$(or $(PYTHON_TRIXIE),$(PYTHON)) -m venv $(TRIXIE)
	$(@D)/pip install --quiet --upgrade pip setuptools wheel

$(VENV)/.installed: $(VENV)/bin/python setup.cfg pyproject.toml
	$(VENV)/bin/pip install --quiet -e . --config-settings editable_mode=compat
	touch $@

$(VENV)/.test-installed: $(VENV)/.installed
	$(VENV)/bin/pip install --quiet -e '.[test,lint]' --config-settings editable_mode=compat
	touch $@

$(BOOKWORM)/.test-installed: $(BOOKWORM)/bin/python setup.cfg pyproject.toml tests/bookworm-pins.txt
	$(BOOKWORM)/bin/pip install --quiet -r tests/bookworm-pins.txt -e '.[test]' --config-settings editable_mode=compat
	touch $@

$(TRIXIE)/.test-installed: $(TRIXIE)/bin/python setup.cfg pyproject.toml tests/trixie-pins.txt
	$(TRIXIE)/bin/pip install --quiet -r tests/trixie-pins.txt -e '.[test]' --config-settings editable_mode=compat
	touch $@

# --one-file-system: never into a chroot's mounts, should one be left
clean:
	rm -rf --one-file-system $(VENV) $(BOOKWORM) $(TRIXIE) $(TOOLS) .deb-test build *.egg-info .pybuild debian/pypicached debian/.debhelper debian/files debian/*.substvars debian/*.log

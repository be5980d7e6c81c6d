# Relay: `make run` sets everything up and serves; `make test` sets everything up and tests.
# Both are idempotent: a second run only does what changed.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMPS := .make
# The toolchain, and the Debian packages the tests drive as real peers: ffmpeg is the
# encoder (RTMP/RTMPS publishing, test media), openssl makes the RTMPS test certificate.
APT_PACKAGES := build-essential python3-dev ffmpeg openssl
PYTEST_ARGS ?=

.PHONY: run test lint typecheck pytest setup apt clean help

help:
	@echo "make run    - install Relay into $(VENV) and run 'relay serve' (data in ./relay-data)"
	@echo "make test   - install everything the tests need, then ruff, mypy --strict and pytest"
	@echo "make clean  - remove the venv, build outputs and stamps"

run: $(STAMPS)/venv
	$(BIN)/relay serve

test: $(STAMPS)/apt $(STAMPS)/venv lint typecheck pytest

lint: $(STAMPS)/venv
	$(BIN)/ruff check relay tests benchmarks setup.py

typecheck: $(STAMPS)/venv
	$(BIN)/mypy --strict relay

# pytest exits 5 when it collects no tests; that fails the target like any other error.
pytest: $(STAMPS)/venv
	$(BIN)/pytest -n auto $(PYTEST_ARGS)

setup: $(STAMPS)/apt $(STAMPS)/venv

# Install missing Debian packages only (apt-get update runs only when one is missing).
$(STAMPS)/apt: Makefile
	@mkdir -p $(STAMPS)
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null \
		| grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:" $$missing; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	@touch $@

# The venv, with Relay installed editable (native/ compiled in place) and the test tools.
# Re-runs when the packaging or any native source changes.
$(STAMPS)/venv: pyproject.toml setup.py $(wildcard native/*.pyx native/*.pxd native/relay/_native/*.pxd)
	@mkdir -p $(STAMPS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	@touch $@

clean:
	rm -rf $(VENV) $(STAMPS) build dist *.egg-info native/*.c native/*.html
	find relay -name '*.so' -delete

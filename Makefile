# Relay: `make run` sets everything up and serves; `make test` sets everything up and tests.
# Both are idempotent: a second run only does what changed.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMPS := .make
# What building and running Relay needs (`make run` installs these too): the C toolchain for
# the Cython extensions (and venv), and libsrt-openssl-dev, the headers and library the SRT binding
# (relay/srt/) compiles against (it pulls in libsrt1.5-openssl, which `relay serve` loads).
BUILD_APT_PACKAGES := build-essential python3-dev python3-venv libsrt-openssl-dev
# The Debian packages the tests drive as real peers: ffmpeg is the
# encoder (RTMP/RTMPS publishing, test media) and ffprobe the decoder that checks HLS output,
# openssl makes the RTMPS test certificate, chromium runs hls.js in the player tests.
# srt-tools: srt-live-transmit, the second SRT caller of the tests; GStreamer (x264enc,
# voaacenc, mpegtsmux, srtsink) the third, an encoder that shares no code with ffmpeg.
GSTREAMER_PACKAGES := gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good \
	gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly
# nginx with its RTMP module: the simulcast target of the tests (started on a free port with
# a config of the test's own; installing nginx may also start its system service on port 80).
# libnginx-mod-stream: nginx's TCP proxy with `proxy_protocol on`, the load balancer of the
# trusted-proxy tests (tests/integration/test_trusted_proxy.py).
# nodejs runs the official Mux Node SDK's webhook verification (tests/node/). Not npm: the SDK
# has no dependencies and comes as a checksummed tarball (below), and Debian's npm conflicts
# with NodeSource's nodejs (which bundles its own npm), so listing it would break those hosts.
# prometheus: for its promtool, which checks deploy/prometheus/relay-alerts.yml
# (tests/integration/test_metrics_docs.py). The package also installs a Prometheus service
# (port 9090) that the tests do not need: `$(STAMPS)/apt` disables and stops it right after
# installing (`systemctl disable --now prometheus`; where systemd is not running, as in
# containers, it was never started and only its boot-time link is removed).
# postgresql: the server binaries (initdb, pg_ctl) of the throwaway clusters the store's tests
# start as an unprivileged user in a temp dir (testkit/postgres.py). Debian's package would also create
# a cluster "main" and start it on port 5432, which the tests do not need: `$(STAMPS)/apt`
# first drops in `create_main_cluster = false` (postgresql-common's createcluster.d), so no
# cluster is made and its service has nothing to run.
APT_PACKAGES := ffmpeg openssl chromium srt-tools $(GSTREAMER_PACKAGES) nginx libnginx-mod-rtmp \
	libnginx-mod-stream nodejs prometheus postgresql
PYTEST_ARGS ?=
# hls.js for the player page, shipped inside the package (relay/hls/static/, gitignored).
# The tarball is the npm registry's; its sha512 is pinned here and equals, in hex, the base64
# `dist.integrity` that `npm view hls.js@$(HLS_JS_VERSION) dist.integrity` prints.
HLS_JS_VERSION := 1.7.4
HLS_JS_SHA512 := dc697119d3ef4f6607bd060eb7ec8ecd3fc3122a2bfea255348ca51c0efb9207a805375042a8bbd06c1e7cd11498741e346ca30bc53adbe6ebbaa5bf4e99beb6
HLS_JS_TARBALL := $(STAMPS)/hls.js-$(HLS_JS_VERSION).tgz
HLS_JS_STATIC := relay/hls/static
HLS_JS := $(HLS_JS_STATIC)/hls.min.js $(HLS_JS_STATIC)/hls.js.LICENSE
# The official Mux Node SDK (`@mux/mux-node`), whose `webhooks.unwrap` the tests run on what
# Relay delivers (tests/node/verify_webhook.mjs). Pinned the same way as hls.js; unpacked as
# $(MUX_NODE_PREFIX)/node_modules/@mux/mux-node, where Node's require() finds it. It declares
# no dependencies (checked when unpacking), so no npm install is needed.
MUX_NODE_VERSION := 15.3.0
MUX_NODE_SHA512 := 829b128f22fd691795d5c687a0d2daa7579dc80b35bc9275fed26e150b97555814f234b04a98feca16be6c1fc4b1b856268b554052fa392d47f7e89904bc6ee4
MUX_NODE_TARBALL := $(STAMPS)/mux-node-$(MUX_NODE_VERSION).tgz
MUX_NODE_PREFIX := $(STAMPS)/mux-node
MUX_NODE := $(MUX_NODE_PREFIX)/node_modules/@mux/mux-node/package.json
# The official Mux Player (`@mux/mux-player`), which the HTTPS/custom-domain tests embed
# (tests/integration/test_mux_player.py). Pinned the same way. The package declares
# dependencies (@mux/mux-video, @mux/playback-core, media-chrome, player.style), but its
# dist/mux-player.js is a self-contained IIFE bundle with them inlined (no import, no
# require), so only that file is unpacked (MIT; used by the tests only, never shipped).
MUX_PLAYER_VERSION := 3.14.0
MUX_PLAYER_SHA512 := bdbd5ccd938bf8bd4f03884d6e22c13bdd7708cb49e4b4ef279863724f9b6bddcc34da6ffc87bce93c6dbeca5758ae9fb9f116882a021f918af3503f68459087
MUX_PLAYER_TARBALL := $(STAMPS)/mux-player-$(MUX_PLAYER_VERSION).tgz
MUX_PLAYER := $(STAMPS)/mux-player/mux-player.js

# The benchmark peers (`make bench`): nginx with Debian's RTMP module (installing nginx may
# also start its system service on port 80; the suite runs its own instance on a free port)
# and pyrtmp, in a venv of its own so it never touches Relay's dependencies.
BENCH_APT_PACKAGES := nginx libnginx-mod-rtmp
PYRTMP_VERSION := 0.3.1
PYRTMP_VENV := $(STAMPS)/pyrtmp-venv

.PHONY: run test lint typecheck pytest setup apt clean help bench bench-quick soak fuzz

help:
	@echo "make run    - install Relay into $(VENV) and run 'relay serve' (data in ./relay-data)"
	@echo "make test   - install everything the tests need, then ruff, mypy --strict and pytest"
	@echo "make bench  - install the benchmark peers, run the full suite (about 45 minutes)"
	@echo "make bench-quick - the same, a few minutes"
	@echo "make soak   - the 30-minute hostile-peer soak (SECURITY.md); make test runs 90 s of it"
	@echo "make fuzz   - every fuzz harness, 10^7 executions or an hour each (up to ~12 hours)"
	@echo "make clean  - remove the venv, build outputs and stamps"

run: $(STAMPS)/venv $(HLS_JS)
	$(BIN)/relay serve

test: $(STAMPS)/apt $(STAMPS)/venv $(PYRTMP_VENV)/stamp $(MUX_NODE) $(MUX_PLAYER) lint typecheck pytest

lint: $(STAMPS)/venv
	$(BIN)/ruff check relay testkit tests benchmarks fuzz setup.py

typecheck: $(STAMPS)/venv
	$(BIN)/mypy --strict relay testkit benchmarks fuzz

# pytest exits 5 when it collects no tests; that fails the target like any other error.
pytest: $(STAMPS)/venv $(HLS_JS) $(MUX_NODE) $(MUX_PLAYER)
	$(BIN)/pytest -n auto $(PYTEST_ARGS)

setup: $(STAMPS)/apt $(STAMPS)/venv $(HLS_JS) $(MUX_NODE) $(MUX_PLAYER)

bench: $(STAMPS)/apt $(STAMPS)/bench-apt $(STAMPS)/venv $(HLS_JS) $(PYRTMP_VENV)/stamp
	$(BIN)/python benchmarks/suite.py

bench-quick: $(STAMPS)/apt $(STAMPS)/bench-apt $(STAMPS)/venv $(HLS_JS) $(PYRTMP_VENV)/stamp
	$(BIN)/python benchmarks/suite.py --quick

# The hostile-peer soak at full length: 20 honest ffmpeg publishers beside every attack of
# SECURITY.md for 30 minutes; the figures land in SOAK_REPORT.
SOAK_SECONDS ?= 1800
SOAK_REPORT ?= soak-report.json
soak: $(STAMPS)/apt $(STAMPS)/venv $(HLS_JS)
	RELAY_SOAK_SECONDS=$(SOAK_SECONDS) RELAY_SOAK_PUBLISHERS=20 RELAY_SOAK_HEALTHZ_P99_MS=100 \
		RELAY_SOAK_RSS_GROWTH=0.10 RELAY_SOAK_REPORT=$(SOAK_REPORT) \
		$(BIN)/pytest --timeout=0 -q tests/hostile

# `make fuzz`: every harness in fuzz/ for FUZZ_RUNS executions or FUZZ_SECONDS, whichever
# comes first (issue 12: at least 10^7 executions or one hour each), FUZZ_JOBS at a time. With
# the defaults that is up to 9 hours (nine harnesses, one at a time; the fast ones reach 10^7
# sooner; the API ones run the hour). clang and its sanitizer runtimes build the instrumented
# relay._native (coverage + AddressSanitizer). --keep-going: a finding does not end a harness's
# run (libFuzzer fork mode); findings are grouped in fuzz/results.json with the figures, their
# inputs are in fuzz/work/artifacts/, corpora grow in fuzz/work/corpus/ from run to run.
FUZZ_RUNS ?= 10000000
FUZZ_SECONDS ?= 3600
FUZZ_JOBS ?= 1
FUZZ_APT_PACKAGES := clang-14 libclang-rt-14-dev

fuzz: $(STAMPS)/venv
	$(call apt_install,$(FUZZ_APT_PACKAGES))
	$(BIN)/python -m fuzz.run all --runs $(FUZZ_RUNS) --seconds $(FUZZ_SECONDS) \
		--jobs $(FUZZ_JOBS) --native asan --keep-going

$(PYRTMP_VENV)/stamp:
	test -x $(PYRTMP_VENV)/bin/python || $(PYTHON) -m venv $(PYRTMP_VENV)
	$(PYRTMP_VENV)/bin/python -m pip install -q pyrtmp==$(PYRTMP_VERSION)
	@touch $@

# Install the missing ones of the Debian packages $(1) (apt-get update runs only then).
define apt_install
	@missing=$$(for p in $(1); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null \
		| grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:" $$missing; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi
endef

$(STAMPS)/apt: Makefile
	@mkdir -p $(STAMPS)
	@SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	$$SUDO mkdir -p /etc/postgresql-common/createcluster.d && \
	echo 'create_main_cluster = false' | \
		$$SUDO tee /etc/postgresql-common/createcluster.d/relay-no-main-cluster.conf >/dev/null
	$(call apt_install,$(APT_PACKAGES))
	@SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	if [ -d /run/systemd/system ]; then \
		$$SUDO systemctl disable --now prometheus 2>/dev/null || true; \
	else \
		$$SUDO rm -f /etc/systemd/system/multi-user.target.wants/prometheus.service; \
	fi
	@touch $@

$(STAMPS)/build-apt: Makefile
	@mkdir -p $(STAMPS)
	$(call apt_install,$(BUILD_APT_PACKAGES))
	@touch $@

$(STAMPS)/bench-apt: Makefile
	@mkdir -p $(STAMPS)
	$(call apt_install,$(BENCH_APT_PACKAGES))
	@touch $@

# The venv, with Relay installed editable (native/ compiled in place), the test tools and the
# PostgreSQL driver (asyncpg: the store's tests run on PostgreSQL too).
# Re-runs when the packaging or any native source changes.
$(STAMPS)/venv: $(STAMPS)/build-apt pyproject.toml setup.py relay/srt/_build_binding.py $(wildcard native/*.pyx native/*.pxd native/relay/_native/*.pxd)
	@mkdir -p $(STAMPS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test,postgres]'
	@touch $@

# Download the npm tarball at URL $(1) to $@, kept only when its sha512 equals $(2) (the name
# of the variable that pins it): with Python's urllib, the one tool `make run` already needs.
# A new version is a new file name.
define npm_tarball
	@mkdir -p $(STAMPS)
	$(PYTHON) -c 'import shutil, sys, urllib.request; \
		shutil.copyfileobj(urllib.request.urlopen(sys.argv[1], timeout=60), open(sys.argv[2], "wb"))' \
		$(1) $@.part
	@echo "$($(2))  $@.part" | sha512sum --check --quiet - || { \
		echo "$(1): the downloaded tarball does not match $(2); not using it" >&2; \
		rm -f $@.part; exit 1; }
	mv $@.part $@
endef

$(HLS_JS_TARBALL):
	$(call npm_tarball,https://registry.npmjs.org/hls.js/-/hls.js-$(HLS_JS_VERSION).tgz,HLS_JS_SHA512)

$(MUX_NODE_TARBALL):
	$(call npm_tarball,https://registry.npmjs.org/@mux/mux-node/-/mux-node-$(MUX_NODE_VERSION).tgz,MUX_NODE_SHA512)

$(MUX_PLAYER_TARBALL):
	$(call npm_tarball,https://registry.npmjs.org/@mux/mux-player/-/mux-player-$(MUX_PLAYER_VERSION).tgz,MUX_PLAYER_SHA512)

# Extracted through stdout (fresh mtime); the check keeps a bundle that grew imports out.
$(MUX_PLAYER): $(MUX_PLAYER_TARBALL)
	@mkdir -p $(dir $@)
	tar -xzOf $< package/dist/mux-player.js > $@.part
	$(PYTHON) -c 'import re, sys; text = open(sys.argv[1]).read(); \
		re.search(r"^\s*import[\s{*]|\brequire\(", text, re.M) and \
		sys.exit("@mux/mux-player dist/mux-player.js imports modules now: install its dependencies")' $@.part
	mv $@.part $@

# Unpacked whole into a fresh directory that replaces the old one; the touch gives package.json
# a fresh mtime (npm tarballs carry 1985 ones). A version that gains dependencies needs a real
# npm install: the check says so rather than leaving an SDK that fails at import.
$(MUX_NODE): $(MUX_NODE_TARBALL)
	rm -rf $(MUX_NODE_PREFIX).part
	mkdir -p $(MUX_NODE_PREFIX).part/node_modules/@mux/mux-node
	tar -xzf $< -C $(MUX_NODE_PREFIX).part/node_modules/@mux/mux-node --strip-components=1
	$(PYTHON) -c 'import json, sys; package = json.load(open(sys.argv[1])); \
		needs = sorted(package.get("dependencies") or {}); \
		needs and sys.exit("@mux/mux-node %s depends on %s now: install it with npm instead" \
			% (package["version"], ", ".join(needs)))' \
		$(MUX_NODE_PREFIX).part/node_modules/@mux/mux-node/package.json
	rm -rf $(MUX_NODE_PREFIX)
	mv $(MUX_NODE_PREFIX).part $(MUX_NODE_PREFIX)
	touch $@

# Extracted through stdout, so each file gets a fresh mtime (npm tarballs carry 1985 ones).
$(HLS_JS) &: $(HLS_JS_TARBALL)
	@mkdir -p $(HLS_JS_STATIC)
	tar -xzOf $< package/dist/hls.min.js > $(HLS_JS_STATIC)/hls.min.js.part
	tar -xzOf $< package/LICENSE > $(HLS_JS_STATIC)/hls.js.LICENSE.part
	mv $(HLS_JS_STATIC)/hls.min.js.part $(HLS_JS_STATIC)/hls.min.js
	mv $(HLS_JS_STATIC)/hls.js.LICENSE.part $(HLS_JS_STATIC)/hls.js.LICENSE

clean:
	rm -rf $(VENV) $(STAMPS) build dist *.egg-info native/*.c native/*.html $(HLS_JS)
	find relay -name '*.so' -delete

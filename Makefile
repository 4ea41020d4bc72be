# meg-decoder: every set-up step lives here, idempotent, for a fresh Debian 12 with Rust
# and Python. `make demo` runs the main job; `make test` runs every test.
SHELL := /bin/bash
ROOT := $(CURDIR)
VENV := $(ROOT)/.venv
PY := $(VENV)/bin/python
export LSLAPICFG := $(ROOT)/deploy/lsl_api.loopback.cfg
export CARGO_TERM_COLOR := never
DURATION ?= 0
CARGO_TEST_THREADS ?= 2

.PHONY: all native venv build test test-python bench demo models clean soak viewer viewer-check

all: build

# System packages the build needs (only what a fresh Debian may lack).
.stamp-apt:
	@need=""; \
	python3 -c 'import ensurepip' 2>/dev/null || need="$$need python3-venv"; \
	python3 -m pip --version >/dev/null 2>&1 || need="$$need python3-pip"; \
	command -v cc >/dev/null || need="$$need gcc"; \
	command -v unzip >/dev/null || need="$$need unzip"; \
	command -v npm >/dev/null || need="$$need nodejs npm"; \
	command -v chromium >/dev/null || need="$$need chromium"; \
	command -v chromedriver >/dev/null || need="$$need chromium-driver"; \
	if [ -n "$$need" ]; then \
	  echo "installing:$$need"; \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq $$need; \
	  else sudo apt-get update -qq && sudo apt-get install -y -qq $$need; fi; \
	fi
	@touch $@

# liblsl and ONNX Runtime from their PyPI wheels (pinned in native/versions.env).
native: .stamp-apt
	@./tools/fetch-native.sh

# Python for the client package (editable) and the tests' peers: pyxdf, MNE, MNE-LSL,
# onnx, scipy, pylsl (pinned).
venv: $(VENV)/.ok
$(VENV)/.ok: clients/python/requirements.txt tests/requirements.txt clients/python/pyproject.toml .stamp-apt
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r clients/python/requirements.txt -r tests/requirements.txt
	$(PY) -m pip install --quiet -e './clients/python[mne,test]'
	@touch $@

build: native
	cargo build --release --locked

test: native venv viewer-check
	@mkdir -p out
	cargo fmt --all -- --check
	cargo clippy --release --locked --all-targets -- -D warnings
	$(PY) bench/peer/peer.py --self-test
	set -o pipefail; MEG_DECODER_PYTHON=$(PY) cargo test --release --locked --lib --bins --tests -- --test-threads=$(CARGO_TEST_THREADS) 2>&1 | tee out/test.log
	$(MAKE) --no-print-directory test-python
	@awk '/^test result:/ {p += $$4; f += $$6} END {printf "rust tests: %d passed, %d failed\n", p, f}' out/test.log
	@tail -n 1 out/test-python.log

# The Python client as a lab installs it: a fresh venv, `pip install ./clients/python[mne,test]`
# (a wheel build, not editable), its stubs checked against the proto, its tests against
# the release binary that `cargo test --release` just built.
CLIENT_VENV := $(ROOT)/out/venv-client
test-python: venv
	rm -rf $(CLIENT_VENV)
	python3 -m venv $(CLIENT_VENV)
	$(CLIENT_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(CLIENT_VENV)/bin/python -m pip install --quiet './clients/python[mne,test]'
	$(CLIENT_VENV)/bin/python clients/python/generate_stubs.py --check
	set -o pipefail; cd clients/python && MEG_DECODER_BIN=$(ROOT)/target/release/meg-decoder \
	  $(CLIENT_VENV)/bin/python -m pytest -q -p no:cacheprovider tests 2>&1 | tee $(ROOT)/out/test-python.log

# The browser viewer (viewer/): a TypeScript client generated from the proto by
# protoc-gen-es, type-checked by tsc and bundled by esbuild into viewer/dist/viewer.js,
# which is committed and embedded in the binary with the page and stylesheet of
# viewer/src (the page needs no network). `make viewer` rebuilds
# it after a change; `make viewer-check` (part of `make test`) rebuilds it into out/ and
# fails if the committed files differ.
PROTOC_ES := $(PY) -m grpc_tools.protoc --plugin=protoc-gen-es=viewer/node_modules/.bin/protoc-gen-es \
  --es_opt=target=ts -I proto megdecoder/v1/decoder.proto
viewer/node_modules/.ok: viewer/package-lock.json .stamp-apt
	cd viewer && npm ci --no-audit --no-fund --loglevel=error
	@touch $@
viewer: viewer/node_modules/.ok venv
	$(PROTOC_ES) --es_out=viewer/src/gen
	cd viewer && node_modules/.bin/tsc -p . && node build.mjs dist
viewer-check: viewer/node_modules/.ok venv
	rm -rf out/viewer-check && mkdir -p out/viewer-check/gen
	$(PROTOC_ES) --es_out=out/viewer-check/gen
	@diff -r viewer/src/gen out/viewer-check/gen || { echo "viewer/src/gen is stale: run make viewer"; exit 1; }
	cd viewer && node_modules/.bin/tsc -p . && node build.mjs ../out/viewer-check/dist
	@cmp -s viewer/dist/viewer.js out/viewer-check/dist/viewer.js || { echo "viewer/dist/viewer.js differs from its sources: run make viewer and commit it"; exit 1; }
	@echo "viewer: generated client and bundle match their sources"

# Benchmarks (not part of `make test`): criterion micro-benchmarks, then the harnesses,
# then the side-by-side comparison with the Python peer (bench/, ~8 min), which writes
# BENCHMARKS.md and out/bench/bench.json.
bench: build venv $(VENV)/.bench-ok
	cargo bench --locked --bench pipeline
	cargo run --release --locked --example pipeline_overhead
	cargo run --release --locked --example ingest_bench -- --seconds 60
	cargo run --release --locked --example hub_bench
	cargo run --release --locked --example xdf_bench
	./tools/fanout.sh
	./tools/latency_profiles.sh
	$(PY) tools/bench_compare.py

# The peer's own dependencies (onnxruntime, pinned to the service's native version), once.
$(VENV)/.bench-ok: bench/requirements.txt $(VENV)/.ok
	$(PY) -m pip install --quiet --find-links native/wheels -r bench/requirements.txt
	@touch $@

demo: build
	@./tools/demo.sh $(DURATION)

# One hour under a lab's load (not in CI): SOAK_S=seconds to shorten; out/soak/.
soak: build venv
	@./tools/soak.sh

# Rebuild the demo world, model, gallery and generator (heavy: not run in CI).
models:
	cd models && $(MAKE)

clean:
	cargo clean
	rm -rf native/lib native/wheels $(VENV) .stamp-apt

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

.PHONY: all native venv build test test-rust test-python lint bench demo models clean soak

all: build

# System packages the build needs (only what a fresh Debian may lack).
.stamp-apt:
	@need=""; \
	python3 -c 'import ensurepip' 2>/dev/null || need="$$need python3-venv"; \
	python3 -m pip --version >/dev/null 2>&1 || need="$$need python3-pip"; \
	command -v cc >/dev/null || need="$$need gcc"; \
	command -v unzip >/dev/null || need="$$need unzip"; \
	if [ -n "$$need" ]; then \
	  echo "installing:$$need"; \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq $$need; \
	  else sudo apt-get update -qq && sudo apt-get install -y -qq $$need; fi; \
	fi
	@touch $@

# liblsl and ONNX Runtime from their PyPI wheels (pinned in native/versions.env).
native: .stamp-apt
	@./tools/fetch-native.sh

# Python for the example client and the tests' peers: pyxdf, MNE, MNE-LSL, onnx, scipy (pinned).
venv: $(VENV)/.ok
$(VENV)/.ok: clients/python/requirements.txt tests/requirements.txt proto/megdecoder/v1/decoder.proto .stamp-apt
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r clients/python/requirements.txt -r tests/requirements.txt
	$(PY) clients/python/generate_stubs.py
	@touch $@

build: native
	cargo build --release --locked

test: native venv
	@mkdir -p out
	cargo fmt --all -- --check
	cargo clippy --release --locked --all-targets -- -D warnings
	set -o pipefail; MEG_DECODER_PYTHON=$(PY) cargo test --release --locked --lib --bins --tests -- --test-threads=$(CARGO_TEST_THREADS) 2>&1 | tee out/test.log
	@awk '/^test result:/ {p += $$4; f += $$6} END {printf "all tests: %d passed, %d failed\n", p, f}' out/test.log

# Benchmarks (not part of `make test`): criterion micro-benchmarks, then the harnesses.
bench: native
	cargo bench --locked --bench pipeline
	cargo run --release --locked --example pipeline_overhead
	cargo run --release --locked --example ingest_bench -- --seconds 60
	cargo run --release --locked --example hub_bench
	cargo run --release --locked --example xdf_bench

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

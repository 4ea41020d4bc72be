#!/usr/bin/env bash
# Fan-out under load, subscribers in a process of their own: simulate (demo world,
# Neuromag 306 x 1000 Hz) -> serve (demo-brain, 25 ms hop) -> examples/fanout_load with
# 1, 100 and 1000 subscribers (SUBSCRIBERS, SECONDS to change). Not part of `make test`.
set -euo pipefail
cd "$(dirname "$0")/.."
export LSLAPICFG=${LSLAPICFG:-$PWD/deploy/lsl_api.loopback.cfg} MEG_DECODER_LOG=${MEG_DECODER_LOG:-warn}
cargo build --release --locked --bin meg-decoder --example fanout_load
NAME=fanout-$$
PORT=${PORT:-50099}
pids=()
trap 'for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait 2>/dev/null' EXIT
./target/release/meg-decoder simulate --model models/demo --name "$NAME" --source-id "$NAME" >/dev/null 2>&1 &
pids+=($!)
./target/release/meg-decoder serve --model models/demo-brain --stream-name "$NAME" --no-markers \
  --listen 127.0.0.1:$PORT --set server.hub_capacity=1024 >/dev/null 2>&1 &
pids+=($!)
serve=$!
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.2; done
sleep 15  # filters settle, the scaler fits
./target/release/examples/fanout_load --addr 127.0.0.1:$PORT --server-pid "$serve" \
  --subscribers "${SUBSCRIBERS:-1,100,1000}" --seconds "${SECONDS_PER_ROUND:-20}"

#!/usr/bin/env bash
# `make demo`: simulated MEG source (demo world) -> meg-decoder serve (bundled demo model,
# browser viewer on HTTP_PORT) -> console subscriber. Ctrl-C stops everything;
# DURATION=seconds stops by itself.
set -uo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-0}
BIN=./target/release/meg-decoder
export LSLAPICFG=${LSLAPICFG:-$PWD/deploy/lsl_api.loopback.cfg}
export MEG_DECODER_LOG=${MEG_DECODER_LOG:-warn}
OUT=out/demo
mkdir -p "$OUT/images"
PORT=${DEMO_PORT:-50051}
HTTP_PORT=${HTTP_PORT:-8080}
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
  wait 2>/dev/null
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "== viewer: open http://127.0.0.1:$HTTP_PORT/ in a browser (from another machine: ssh -L $HTTP_PORT:127.0.0.1:$HTTP_PORT this-host)"
echo "== meg-decoder demo: simulated Neuromag 306 MEG at 1000 Hz, an image every isi_s +- isi_jitter_s of models/demo/world/world.json"
echo "   (SIMULATED brain responses; see models/demo/REPORT.md). Logs in $OUT/."
$BIN simulate --model models/demo --markers MEG-sim-markers > "$OUT/simulate.log" 2>&1 &
pids+=($!)
$BIN serve --model models/demo-brain --stream-name MEG-sim --markers-name MEG-sim-markers \
  --listen 127.0.0.1:$PORT --http-listen 127.0.0.1:$HTTP_PORT > "$OUT/serve.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
  (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break
  if ! kill -0 "${pids[1]}" 2>/dev/null; then echo "serve failed:"; cat "$OUT/serve.log"; exit 1; fi
  sleep 0.2
done
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$HTTP_PORT) 2>/dev/null && break; sleep 0.1; done
echo "== decoder up: gRPC on 127.0.0.1:$PORT, viewer on http://127.0.0.1:$HTTP_PORT/ (metrics: /metrics); subscribing"
args=(client --addr http://127.0.0.1:$PORT --images "$OUT/images" --max-rate 1 --held-out models/demo/world/held_out.txt)
[ "$DURATION" != "0" ] && args+=(--duration "$DURATION")
$BIN "${args[@]}" | tee "$OUT/decodings.txt"
echo "== generated images in $OUT/images ($(ls "$OUT/images" | wc -l) files)"

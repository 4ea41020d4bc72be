#!/usr/bin/env bash
# End-to-end latency of the two resampler profiles, side by side on one simulated stream
# (Neuromag 306 x 1000 Hz, demo world, 10-sample chunks as an acquisition PC pushes them):
# `serve` with models/demo (Kaiser sinc, 50 ms look-ahead) and with models/demo-lowlat
# (causal anti-alias + linear interpolation), one after the other, each with a `client`
# subscriber for SECONDS (default 60). End-to-end = arrival at the client - window_end,
# both on this machine's LSL clock. Writes out/bench/latency_profiles.json. Not in CI.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${MEG_DECODER_BIN:-./target/release/meg-decoder}
PY=${PY:-.venv/bin/python}
SECONDS_EACH=${SECONDS:-60}
export LSLAPICFG=${LSLAPICFG:-$PWD/deploy/lsl_api.loopback.cfg} MEG_DECODER_LOG=${MEG_DECODER_LOG:-warn}
mkdir -p out/bench
NAME=lowlat-$$
pids=()
trap 'for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait 2>/dev/null' EXIT
$BIN simulate --model models/demo --name "$NAME" --source-id "$NAME" --chunk 10 >/dev/null 2>&1 &
pids+=($!)
PORT=${PORT:-50231}
for model in demo demo-lowlat; do
  $BIN serve --model models/$model --stream-name "$NAME" --no-markers --hop 0.025 \
    --listen 127.0.0.1:$PORT >/dev/null 2>&1 &
  serve=$!
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.2; done
  sleep 5  # filters settle (3 s)
  $BIN client --addr http://127.0.0.1:$PORT --json --duration "$SECONDS_EACH" --max-rate 0 \
    > out/bench/latency_$model.jsonl 2>/dev/null
  kill -TERM $serve; wait $serve 2>/dev/null || true
  PORT=$((PORT + 1))
done
$PY - <<'PY'
import json, numpy as np
rows = {}
for model in ("demo", "demo-lowlat"):
    d = [json.loads(l) for l in open(f"out/bench/latency_{model}.jsonl")]
    e2e = np.array([x["received_at"] - x["window_end"] for x in d]) * 1e3
    enc = np.array([x["encoder_ms"] for x in d])
    rows[model] = {"decodings": len(d), "e2e_p50_ms": float(np.percentile(e2e, 50)), "e2e_p99_ms": float(np.percentile(e2e, 99)),
                   "encoder_p50_ms": float(np.percentile(enc, 50)), "encoder_p99_ms": float(np.percentile(enc, 99))}
json.dump(rows, open("out/bench/latency_profiles.json", "w"), indent=2)
print("model         decodings  end-to-end p50  p99 ms   encoder p50  p99 ms   p99 - encoder p99")
for m, r in rows.items():
    print(f"{m:12s}  {r['decodings']:9d}  {r['e2e_p50_ms']:14.1f}  {r['e2e_p99_ms']:6.1f}   {r['encoder_p50_ms']:11.2f}  {r['encoder_p99_ms']:6.2f}   {r['e2e_p99_ms'] - r['encoder_p99_ms']:6.1f}")
PY

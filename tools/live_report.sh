#!/usr/bin/env bash
# The live figure of the bundled models: `simulate` (the demo world, held-out images only)
# -> `serve` (one per model, all on the same stream, so they see the same trials) ->
# `client --json --embedding`, for N stimuli (default 200; SOA 1.5 s: about 5 minutes);
# a model with progressive stages is scored per stage too, and the continuous decodings
# (every 25 ms) against the image on screen.
# tools/live_report.py then scores each model's event-locked decodings (single trials:
# among the whole gallery, as the service ranks them, and among the 200 held-out images,
# re-ranked from the embedding as REPORT.md's offline figures are) and the time from
# onset to decoding, and writes the "Live" section of each model's REPORT.md.
# `make models` runs it after building; not in CI (5 minutes of real time).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${MEG_DECODER_BIN:-./target/release/meg-decoder}
PY=${PY:-.venv/bin/python}
N=${N:-200}
MODELS=${MODELS:-"demo demo-brain"}
export LSLAPICFG=${LSLAPICFG:-$PWD/deploy/lsl_api.loopback.cfg} MEG_DECODER_LOG=${MEG_DECODER_LOG:-warn}
OUT=out/live
mkdir -p "$OUT"
NAME=live-$$
pids=()
trap 'for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait 2>/dev/null' EXIT
# The source first (serve waits 10 s for its stream); stimuli shown before the clients
# subscribe are not counted: the clients listen long enough for N stimuli.
$BIN simulate --model models/demo --stimuli held-out --name "$NAME" --source-id "$NAME" \
  --markers "$NAME-markers" --duration $((N * 3 / 2 + 60)) >"$OUT/simulate.log" 2>&1 &
pids+=($!)
sleep 1
PORT=${PORT:-50271}
ports=()
for model in $MODELS; do
  $BIN serve --model "models/$model" --stream-name "$NAME" --markers-name "$NAME-markers" \
    --listen 127.0.0.1:$PORT >"$OUT/serve_$model.log" 2>&1 &
  pids+=($!)
  ports+=($PORT)
  PORT=$((PORT + 1))
done
for p in "${ports[@]}"; do
  for _ in $(seq 150); do (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null && break; sleep 0.2; done
done
i=0
for model in $MODELS; do
  $BIN client --addr "http://127.0.0.1:${ports[$i]}" --json --embedding --max-rate 0 --duration $((N * 3 / 2 + 15)) \
    --held-out models/demo/world/held_out.txt >"$OUT/decodings_$model.jsonl" 2>"$OUT/client_$model.log" &
  pids+=($!)
  i=$((i + 1))
done
wait "${pids[@]:$((${#ports[@]} + 1)):${#ports[@]}}" || true
$PY tools/live_report.py --out "$OUT" -n "$N" $MODELS

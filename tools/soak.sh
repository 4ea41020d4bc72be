#!/usr/bin/env bash
# `make soak` (not in CI): the service under a lab's load for SOAK_S seconds (default one
# hour): the simulator (float64, push-stamped, 1% off nominal, trigger channel, jittered
# markers), `serve` recording the session, three subscribers of different speeds (a full
# console client, one limited to 2 decodings/s, a script using the Python client package
# that reads one decoding per second with max_age_s = 2). Samples serve's RSS and open fds every 10 s, stops it with SIGTERM,
# checks the recording with pyxdf and prints a summary.
set -uo pipefail
cd "$(dirname "$0")/.."
SOAK_S=${SOAK_S:-3600}
BIN=${BIN:-./target/release/meg-decoder}
PY=${PY:-.venv/bin/python}
export LSLAPICFG=${LSLAPICFG:-$PWD/deploy/lsl_api.loopback.cfg}
export MEG_DECODER_LOG=${MEG_DECODER_LOG:-warn}
OUT=out/soak
rm -rf "$OUT" && mkdir -p "$OUT/rec"
PORT=${SOAK_PORT:-50071}
NAME=soak-$$
pids=()
cleanup() { for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done; wait 2>/dev/null; }
trap cleanup EXIT

$BIN simulate --name $NAME --source-id $NAME --model models/demo --markers $NAME-m \
  --true-rate 1010 --trigger-channel --marker-jitter 0.02 > "$OUT/simulate.log" 2>&1 &
pids+=($!)
$BIN serve --model models/demo-brain --stream-name $NAME --markers-name $NAME-m \
  --trigger-channel "STI 014" --listen 127.0.0.1:$PORT --record-dir "$OUT/rec" --record \
  > "$OUT/serve.log" 2>&1 &
SERVE=$!
for _ in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.1; done
$BIN client --addr http://127.0.0.1:$PORT --json --max-rate 0 > "$OUT/fast.jsonl" 2>"$OUT/fast.err" &
pids+=($!)
$BIN client --addr http://127.0.0.1:$PORT --json --max-rate 2 > "$OUT/slow.jsonl" 2>"$OUT/slow.err" &
pids+=($!)
$PY - "$PORT" > "$OUT/python.jsonl" 2>"$OUT/python.err" <<'PYEOF' &
import json, sys, time
import grpc, pylsl
import meg_decoder_client as mdc
try:
    with mdc.Client(f"127.0.0.1:{sys.argv[1]}") as c, c.subscribe(max_age_s=2.0) as sub:
        for d in sub:
            age = pylsl.local_clock() - d.window_end
            print(json.dumps({"sequence": d.sequence, "missed": d.missed, "age_s": age}), flush=True)
            time.sleep(1.0)
except grpc.RpcError as e:
    print(json.dumps({"end": str(e.code())}), flush=True)
PYEOF
pids+=($!)
echo "t_s,rss_kb,fds" > "$OUT/samples.csv"
start=$(date +%s)
while [ $(( $(date +%s) - start )) -lt "$SOAK_S" ]; do
  kill -0 $SERVE 2>/dev/null || { echo "serve died"; cat "$OUT/serve.log"; exit 1; }
  echo "$(( $(date +%s) - start )),$(awk '/VmRSS/ {print $2}' /proc/$SERVE/status),$(ls /proc/$SERVE/fd | wc -l)" >> "$OUT/samples.csv"
  sleep 10
done
$BIN client --addr http://127.0.0.1:$PORT --status > "$OUT/status.txt" 2>&1
kill -TERM $SERVE; wait $SERVE; echo "serve exit status $?"
$PY - "$OUT" <<'PYEOF'
import csv, glob, json, sys
import numpy as np, pyxdf
out = sys.argv[1]
rows = list(csv.DictReader(open(f"{out}/samples.csv")))
rss = [int(r["rss_kb"]) for r in rows]; fds = [int(r["fds"]) for r in rows]
warm = min(len(rows) - 1, 6)  # after the first minute
path = glob.glob(f"{out}/rec/**/*.xdf", recursive=True)[0]
streams, _ = pyxdf.load_xdf(path, synchronize_clocks=False, dejitter_timestamps=False)
meg = [s for s in streams if s["info"]["type"][0] == "MEG"][0]
footer = int(meg["footer"]["info"]["sample_count"][0]) if meg.get("footer") else None
lines = lambda f: [json.loads(l) for l in open(f"{out}/{f}") if l.strip().startswith("{")]
fast, slow, py = lines("fast.jsonl"), lines("slow.jsonl"), lines("python.jsonl")
pys = [d for d in py if "sequence" in d]
print(json.dumps({
    "samples": len(rows), "rss_mb_after_warmup": rss[warm] / 1024, "rss_mb_end": rss[-1] / 1024,
    "rss_growth_mb": (rss[-1] - rss[warm]) / 1024, "fds_after_warmup": fds[warm], "fds_end": fds[-1],
    "recorded_samples": len(meg["time_stamps"]), "footer_sample_count": footer,
    "fast_received": len(fast), "fast_missed": sum(d.get("missed", 0) for d in fast),
    "slow_received": len(slow), "python_received": len([d for d in py if "sequence" in d]),
    "python_missed": sum(d.get("missed", 0) for d in py),
    "python_max_age_s": max((d["age_s"] for d in py if "age_s" in d), default=None),
    "python_received_plus_missed_vs_sequence_span": (sum(1 + d["missed"] for d in pys[1:]),
                         pys[-1]["sequence"] - pys[0]["sequence"]) if len(pys) > 1 else None,
}, indent=1))
PYEOF

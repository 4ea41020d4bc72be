"""The comparison a lab would make (issue 16): the Rust service (`meg-decoder serve`) side
by side with the Python peer (bench/peer/peer.py: MNE-LSL + scipy + onnxruntime + grpcio,
the same job scripted the way a lab would), in one run, on the same simulated stream.

    make bench                                   # installs bench/requirements.txt, then runs this
    .venv/bin/python tools/bench_compare.py      # ~8 minutes; writes BENCHMARKS.md and out/bench/bench.json
    .venv/bin/python tools/bench_compare.py --quick   # ~2 minute smoke run; writes out/bench/*.quick.*

Not part of `make test` or CI. The binary is $MEG_DECODER_BIN (default
target/release/meg-decoder). LSL stays on loopback: the run uses a copy of
deploy/lsl_api.loopback.cfg with a session id of its own, so nothing else on the machine
sees its streams.

What is measured, each target in turn (never both at once: they would share the 2 cores),
on `meg-decoder simulate` (Neuromag 306 channels, 1000 Hz, the models/demo world):

- decode-rate sweep: for each hop (0.2, 0.1, 0.05, 0.025, 0.0125, 0.0083 s; both round it
  to whole model samples, so 0.0125 s is 2 samples at 120 Hz = 60 decodings/s and 0.0083 s
  one sample, 120/s, the fastest continuous decoding there is at 120 Hz), a fresh target
  process and one subscriber (bench/peer/subscribers.py, a separate process) for the
  measuring interval: decodings/s and skipped windows (GetStatus deltas), CPU per decoded
  window (utime + stime of the target from /proc/PID/stat over the interval / windows
  decoded), end-to-end latency p50/p99 (client receive time on the LSL clock, pylsl's
  local_clock, minus window_end). A target *sustains* a hop when it delivers at least 90%
  of the expected decodings/s and its latency p99 stays under 2 x its median encoder time
  + 100 ms; the highest sustained rate is the fastest hop reached before the first failure;
- fan-out: one target process at the fan-out hop, 1 subscriber, then 100 subscribers (one
  load process, each subscriber on its own connection): the latency added by 99 more;
- ingest: the simulator restarted at 306 ch x 5000 Hz, each target with decoding
  effectively off (hop 10 s), CPU % of one core (ingest plus the filters and resampler,
  which both run on every sample) and samples received per second.

Reports medians (p50) and ratios (peer / service for costs, service / peer for rates).
"""
import argparse
import datetime
import json
import os
import platform
import queue
import signal
import socket
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEER_DIR = os.path.join(ROOT, "bench", "peer")
sys.path.insert(0, PEER_DIR)

BIN = os.environ.get("MEG_DECODER_BIN", os.path.join(ROOT, "target", "release", "meg-decoder"))
PEER = os.path.join(PEER_DIR, "peer.py")
SUBSCRIBERS = os.path.join(PEER_DIR, "subscribers.py")
TICK = os.sysconf("SC_CLK_TCK")

PROFILES = {
    "full": {"hops": [0.2, 0.1, 0.05, 0.025, 0.0125, 0.0083], "measure_s": 15.0, "fanout_hop": 0.05,
             "fanout_s": 15.0, "ingest_s": 15.0, "ingest_1k": True, "peer_manual_ingest": True},
    "quick": {"hops": [0.1, 0.025], "measure_s": 6.0, "fanout_hop": 0.05, "fanout_s": 5.0,
              "ingest_s": 6.0, "ingest_1k": False, "peer_manual_ingest": False},
}
HEADLINE_HOP = 0.1
FANOUT_SUBSCRIBERS = 100
INGEST_RATE = 5000
INGEST_HOP = 10.0
SUBSCRIBER_WARMUP_S = 2.0
INGEST_WARMUP_S = 4.0
PEER_BUFSIZE_S = 3.0  # MNE-LSL StreamLSL buffer: "a few seconds", more than the 1.5 s window


def die(msg):
    sys.exit(f"bench_compare: {msg}")


# --------------------------------------------------------------------------------------
# Processes


def cpu_seconds(pid):
    """utime + stime of a process (all its threads), from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log_tail(path, n=15):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return ""


class Child:
    """A process of the run, its output in out/bench/logs/NAME.log; stopped with SIGTERM."""

    live = []

    def __init__(self, name, argv, env, log_dir):
        self.name = name
        self.log = os.path.join(log_dir, f"{name}.log")
        self.argv = argv
        with open(self.log, "w") as f:
            f.write("$ " + " ".join(argv) + "\n")
            f.flush()
            self.proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
        self.pid = self.proc.pid
        Child.live.append(self)

    def alive(self):
        return self.proc.poll() is None

    def check(self):
        if not self.alive():
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; its log ({self.log}) ends:\n"
                               f"{log_tail(self.log)}")

    def stop(self, timeout=6.0):
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self in Child.live:
            Child.live.remove(self)

    @classmethod
    def stop_all(cls):
        for c in list(cls.live):
            c.stop(3.0)


def wait_port(child, addr, timeout=60.0):
    host, port = addr.rsplit(":", 1)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        child.check()
        try:
            with socket.create_connection((host, int(port)), 0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{child.name} did not listen on {addr} within {timeout:.0f} s; log: {child.log}")


class Status:
    """GetStatus of a target (the Rust service or the peer: the same proto)."""

    def __init__(self, addr):
        import grpc

        from stubs import load

        self.pb, pb_grpc = load()
        self.channel = grpc.insecure_channel(addr)
        self.stub = pb_grpc.DecoderStub(self.channel)

    def get(self):
        s = self.stub.GetStatus(self.pb.GetStatusRequest(), timeout=10)
        stream = s.streams[0] if s.streams else None
        return {"decoded": s.pipeline.decoded, "skipped": dict(s.pipeline.skipped_by_reason),
                "samples": stream.samples if stream else 0, "gaps": stream.gaps if stream else 0,
                "missing": stream.missing_samples if stream else 0, "model": s.model.id}

    def close(self):
        self.channel.close()


def delta(a, b):
    skipped = {k: b["skipped"].get(k, 0) - a["skipped"].get(k, 0) for k in b["skipped"]}
    return {"decoded": b["decoded"] - a["decoded"], "skipped": {k: v for k, v in skipped.items() if v},
            "samples": b["samples"] - a["samples"], "gaps": b["gaps"] - a["gaps"],
            "missing": b["missing"] - a["missing"]}


# --------------------------------------------------------------------------------------
# The run


class Run:
    def __init__(self, args, profile):
        self.args, self.p = args, profile
        self.out_dir = os.path.join(ROOT, "out", "bench")
        self.log_dir = os.path.join(self.out_dir, "logs")
        os.makedirs(self.log_dir, exist_ok=True)
        for name in os.listdir(self.log_dir):  # the previous run's
            if name.endswith((".log", ".err")):
                os.remove(os.path.join(self.log_dir, name))
        self.session = f"bench-{os.getpid()}"
        cfg = open(os.path.join(ROOT, "deploy", "lsl_api.loopback.cfg")).read()
        if "SessionID = meg-decoder-test" not in cfg:
            die("deploy/lsl_api.loopback.cfg has no 'SessionID = meg-decoder-test' line to replace: update "
                "tools/bench_compare.py to match it")
        self.cfg_path = os.path.join(self.out_dir, "lsl_api.cfg")
        with open(self.cfg_path, "w") as f:
            f.write(cfg.replace("SessionID = meg-decoder-test", f"SessionID = {self.session}"))
        self.env = dict(os.environ, LSLAPICFG=self.cfg_path, MEG_DECODER_LOG="warn", PYTHONUNBUFFERED="1")
        self.env.pop("MEG_DECODER_CONFIG", None)
        self.model = os.path.abspath(args.model)
        from peer import read_contract

        meta = read_contract(os.path.join(self.model, "encoder.onnx"))
        self.model_rate = float(meta["sample_rate_hz"])
        self.model_name = meta["name"]
        self.stream = None
        self.sim = None

    def effective_hop(self, hop):
        return max(1, round(hop * self.model_rate)) / self.model_rate

    def start_simulator(self, rate):
        if self.sim:
            self.sim.stop()
        self.stream = f"{self.session}-{rate}hz"
        self.sim = Child(f"simulate-{rate}hz", [BIN, "simulate", "--model", os.path.join(ROOT, "models", "demo"),
                                                "--name", self.stream, "--source-id", self.stream,
                                                "--rate", str(rate), "--layout", "neuromag306"],
                         self.env, self.log_dir)
        time.sleep(1.5)
        self.sim.check()

    def measure_target(self, row, kind, hop, tag, measure):
        """Starts `kind` at `hop`, adds `measure(child, addr)`'s figures to `row` (or the
        error), stops it; True when measured."""
        child = None
        try:
            child, addr = self.start_target(kind, hop, tag)
            row.update(measure(child, addr))
            return True
        except RuntimeError as e:
            row["error"] = str(e)
            print(f"  failed: {e}", flush=True)
            return False
        finally:
            if child:
                child.stop()

    def start_target(self, kind, hop, tag):
        addr = f"127.0.0.1:{free_port()}"
        if kind == "service":
            argv = [BIN, "serve", "--model", self.model, "--stream-name", self.stream, "--no-markers",
                    "--no-event-locked", "--listen", addr, "--hop", repr(hop), "--threads", str(self.args.threads),
                    "--top-k", "5"]
        else:
            argv = [sys.executable, PEER, "--model", self.model, "--stream-name", self.stream, "--listen", addr,
                    "--hop", repr(hop), "--threads", str(self.args.threads), "--top-k", "5",
                    "--bufsize", repr(PEER_BUFSIZE_S), "--log", "warning"]
            if kind == "peer-manual":
                argv += ["--acquisition-delay", "0"]
        child = Child(f"{kind}-{tag}", argv, self.env, self.log_dir)
        wait_port(child, addr)
        return child, addr

    def subscribe(self, child, addr, n, seconds):
        """Runs the load process with n subscribers; the target's CPU and counters over the
        same measuring interval."""
        sub_log = os.path.join(self.log_dir, f"{child.name}-subscribers{n}.err")
        argv = [sys.executable, SUBSCRIBERS, "--addr", addr, "--subscribers", str(n), "--seconds", str(seconds),
                "--warmup", str(SUBSCRIBER_WARMUP_S), "--connect-timeout", "60"]
        with open(sub_log, "w") as err:
            proc = subprocess.Popen(argv, cwd=ROOT, env=self.env, stdout=subprocess.PIPE, stderr=err, text=True)
        lines = queue.Queue()

        def pump():
            for line in proc.stdout:
                lines.put(line.rstrip("\n"))
            lines.put(None)

        threading.Thread(target=pump, daemon=True).start()
        status = Status(addr)
        marks = {}
        result = None
        deadline = time.monotonic() + 60 + SUBSCRIBER_WARMUP_S + seconds + 30
        try:
            while True:
                try:
                    line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
                except queue.Empty:
                    raise RuntimeError(f"{n} subscriber(s) to {child.name} gave no result in time; see {sub_log}")
                if line is None:
                    break
                word = line.split(" ", 1)[0]
                if word in ("ready", "done"):
                    marks[word] = (time.monotonic(), cpu_seconds(child.pid), status.get())
                elif line.startswith("{"):
                    result = json.loads(line)
            proc.wait(10)
        finally:
            if proc.poll() is None:
                proc.kill()
            status.close()
        child.check()
        if proc.returncode != 0 or result is None or set(marks) != {"ready", "done"}:
            raise RuntimeError(f"subscriber load on {child.name} failed (exit {proc.returncode}): "
                               f"{log_tail(sub_log, 5).strip()}")
        (t0, c0, s0), (t1, c1, s1) = marks["ready"], marks["done"]
        d = delta(s0, s1)
        dt = t1 - t0
        return {"subscribers": n, "interval_s": dt, "cpu_pct": 100 * (c1 - c0) / dt,
                "cpu_ms_per_window": 1e3 * (c1 - c0) / d["decoded"] if d["decoded"] else None,
                "decoded": d["decoded"], "decode_rate_hz": d["decoded"] / dt, "skipped": d["skipped"],
                "client": result}

    def sweep(self):
        rows = []
        for i, hop in enumerate(self.p["hops"]):
            for kind in (("service", "peer") if i % 2 == 0 else ("peer", "service")):
                print(f"[sweep] {kind}, hop {hop} s ...", flush=True)
                row = {"target": kind, "hop_s": hop, "effective_hop_s": self.effective_hop(hop),
                       "expected_rate_hz": 1 / self.effective_hop(hop)}
                self.measure_target(row, kind, hop, f"hop{hop}",
                                    lambda child, addr: self.subscribe(child, addr, 1, self.p["measure_s"]))
                rows.append(row)
                if "error" not in row:
                    c = row["client"]
                    print(f"  {row['decode_rate_hz']:.1f}/s of {row['expected_rate_hz']:.1f}, CPU {row['cpu_pct']:.1f}% "
                          f"= {row['cpu_ms_per_window']:.2f} ms/window, e2e p50 {c['e2e_ms']['p50']:.1f} / "
                          f"p99 {c['e2e_ms']['p99']:.1f} ms, skipped {row['skipped']}", flush=True)
        return rows

    def fanout(self):
        rows = []
        hop = self.p["fanout_hop"]
        for kind in ("service", "peer"):
            child = None
            try:
                child, addr = self.start_target(kind, hop, f"fanout{hop}")
                for n in (1, FANOUT_SUBSCRIBERS):
                    print(f"[fan-out] {kind}, hop {hop} s, {n} subscriber(s) ...", flush=True)
                    r = self.subscribe(child, addr, n, self.p["fanout_s"])
                    r.update(target=kind, hop_s=hop)
                    rows.append(r)
                    c = r["client"]
                    print(f"  e2e p50 {c['e2e_ms']['p50']:.1f} / p99 {c['e2e_ms']['p99']:.1f} ms, transit p50 "
                          f"{c['transit_ms']['p50']:.2f} / p99 {c['transit_ms']['p99']:.2f} ms, server CPU "
                          f"{r['cpu_pct']:.1f}%, missed {c['missed']}", flush=True)
            except RuntimeError as e:
                rows.append({"target": kind, "hop_s": hop, "error": str(e)})
                print(f"  failed: {e}", flush=True)
            finally:
                if child:
                    child.stop()
        return rows

    def ingest(self, rate, kinds):
        rows = []
        for kind in kinds:
            print(f"[ingest] {kind}, 306 ch x {rate} Hz, hop {INGEST_HOP} s ...", flush=True)
            row = {"target": kind, "rate_hz": rate, "hop_s": INGEST_HOP}

            def ingest(child, addr, kind=kind):
                status = Status(addr)
                try:
                    deadline = time.monotonic() + 30
                    while status.get()["samples"] == 0:
                        if time.monotonic() > deadline:
                            raise RuntimeError(f"{kind} received no samples in 30 s; log: {child.log}")
                        time.sleep(0.5)
                    time.sleep(INGEST_WARMUP_S)
                    t0, c0, s0, sim0 = time.monotonic(), cpu_seconds(child.pid), status.get(), cpu_seconds(self.sim.pid)
                    time.sleep(self.p["ingest_s"])
                    t1, c1, s1, sim1 = time.monotonic(), cpu_seconds(child.pid), status.get(), cpu_seconds(self.sim.pid)
                finally:
                    status.close()
                child.check()
                d = delta(s0, s1)
                return dict(interval_s=t1 - t0, cpu_pct=100 * (c1 - c0) / (t1 - t0),
                            samples_per_s=d["samples"] / (t1 - t0), gaps=d["gaps"], missing=d["missing"],
                            simulator_cpu_pct=100 * (sim1 - sim0) / (t1 - t0))

            if self.measure_target(row, kind, INGEST_HOP, f"ingest{rate}", ingest):
                print(f"  CPU {row['cpu_pct']:.1f}% of a core, {row['samples_per_s']:.0f} samples/s received",
                      flush=True)
            rows.append(row)
        return rows


# --------------------------------------------------------------------------------------
# Summary and report


def sustains(row):
    if "error" in row:
        return False
    c = row["client"]
    enc = c["encoder_ms"].get("p50", 0.0)
    return (row["decode_rate_hz"] >= 0.9 * row["expected_rate_hz"]
            and c["e2e_ms"].get("p99", 1e9) < 2 * enc + 100.0)


def summarize(result):
    s = {}
    for kind in ("service", "peer"):
        rows = sorted((r for r in result["sweep"] if r["target"] == kind), key=lambda r: -r["effective_hop_s"])
        for r in rows:
            r["sustained"] = sustains(r)
        ok = [r["expected_rate_hz"] for r in rows if r["sustained"]]
        s[f"{kind}_max_rate_hz"] = max(ok) if ok else None
        s[f"{kind}_max_rate_is_fastest_tried"] = bool(ok) and max(ok) == max(r["expected_rate_hz"] for r in rows)
        s[f"{kind}_cpu_pct_at_max_rate"] = next((r["cpu_pct"] for r in rows if r["sustained"]
                                                 and r["expected_rate_hz"] == s[f"{kind}_max_rate_hz"]), None)
        idle = next((r for r in result["ingest"] if r["target"] == kind and r["rate_hz"] == 1000
                     and "error" not in r), None)
        for r in rows:  # CPU per window above what ingest alone costs at the same stream rate
            if idle and "error" not in r and r["decoded"]:
                r["cpu_ms_per_window_above_ingest"] = (10 * (r["cpu_pct"] - idle["cpu_pct"])
                                                       / r["decode_rate_hz"])
        head = next((r for r in rows if r["hop_s"] == HEADLINE_HOP and "error" not in r), None)
        if head:
            s[f"{kind}_cpu_ms_per_window"] = head["cpu_ms_per_window"]
            s[f"{kind}_cpu_ms_per_window_above_ingest"] = head.get("cpu_ms_per_window_above_ingest")
            s[f"{kind}_e2e_p50_ms"] = head["client"]["e2e_ms"]["p50"]
            s[f"{kind}_e2e_p99_ms"] = head["client"]["e2e_ms"]["p99"]
        fan = {r["subscribers"]: r for r in result["fanout"] if r.get("target") == kind and "error" not in r}
        if 1 in fan and FANOUT_SUBSCRIBERS in fan:
            for q in ("p50", "p99"):
                s[f"{kind}_fanout_added_e2e_{q}_ms"] = (fan[FANOUT_SUBSCRIBERS]["client"]["e2e_ms"][q]
                                                        - fan[1]["client"]["e2e_ms"][q])
                s[f"{kind}_fanout_added_transit_{q}_ms"] = (fan[FANOUT_SUBSCRIBERS]["client"]["transit_ms"][q]
                                                            - fan[1]["client"]["transit_ms"][q])
        ing = next((r for r in result["ingest"] if r["target"] == kind and r["rate_hz"] == INGEST_RATE
                    and "error" not in r), None)
        if ing:
            s[f"{kind}_ingest_cpu_pct"] = ing["cpu_pct"]

    def ratio(a, b):
        va, vb = s.get(a), s.get(b)
        return va / vb if va is not None and vb not in (None, 0) else None

    s["ratio_cpu_per_window_peer_over_service"] = ratio("peer_cpu_ms_per_window", "service_cpu_ms_per_window")
    s["ratio_e2e_p50_peer_over_service"] = ratio("peer_e2e_p50_ms", "service_e2e_p50_ms")
    s["ratio_e2e_p99_peer_over_service"] = ratio("peer_e2e_p99_ms", "service_e2e_p99_ms")
    s["ratio_max_rate_service_over_peer"] = ratio("service_max_rate_hz", "peer_max_rate_hz")
    s["ratio_cpu_at_max_rate_peer_over_service"] = ratio("peer_cpu_pct_at_max_rate", "service_cpu_pct_at_max_rate")
    s["ratio_ingest_cpu_peer_over_service"] = ratio("peer_ingest_cpu_pct", "service_ingest_cpu_pct")
    s["ratio_cpu_per_window_above_ingest_peer_over_service"] = ratio("peer_cpu_ms_per_window_above_ingest",
                                                                     "service_cpu_ms_per_window_above_ingest")
    for q in ("p50", "p99"):
        s[f"ratio_fanout_added_transit_{q}_peer_over_service"] = ratio(f"peer_fanout_added_transit_{q}_ms",
                                                                       f"service_fanout_added_transit_{q}_ms")
    return s


def machine():
    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
                 platform.processor() or "unknown")
    mem = next((int(line.split()[1]) for line in open("/proc/meminfo") if line.startswith("MemTotal")), 0)
    return {"nproc": os.cpu_count(), "cpu_model": model, "memory_gib": round(mem / 2**20, 1),
            "kernel": platform.release(), "python": platform.python_version()}


def versions():
    out = {}
    for mod in ("onnxruntime", "mne_lsl", "scipy", "numpy", "grpc"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - report what is there
            out[mod] = "missing"
    try:
        out["meg-decoder"] = subprocess.run([BIN, "--version"], capture_output=True, text=True,
                                            timeout=10).stdout.strip()
    except OSError:
        out["meg-decoder"] = "unknown"
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        out["git"] = head + (" (with uncommitted changes)" if dirty else "")
    except OSError:
        out["git"] = "unknown"
    return out


def fmt(v, spec=".1f", unit=""):
    return "–" if v is None else f"{v:{spec}}{unit}"


def ratio_fmt(v):
    return "–" if v is None else f"{v:.2f}x" if v < 2 else f"{v:.1f}x"


def write_markdown(path, result):
    s, m, cfg = result["summary"], result["machine"], result["config"]
    rel = lambda p: os.path.relpath(p, ROOT)  # noqa: E731
    L = []
    L.append("# Benchmarks: the service vs the Python peer\n")
    L.append(f"Generated by `tools/bench_compare.py` ({'quick smoke run' if cfg['quick'] else 'full run'}) on "
             f"{result['started']}; every figure below comes from this one run. The service is "
             "`meg-decoder serve`; the peer is `bench/peer/peer.py`, the same job scripted the way a lab would "
             "today (MNE-LSL `StreamLSL` ingest, scipy `sosfilt` with carried state and the contract's "
             "resampler, Python `onnxruntime`, a `grpcio` server of the same proto). Both run the same encoder "
             "with 1 intra-op thread on the same simulated stream, one after the other (never together), "
             "and answer the same subscriber load process.\n")
    L.append("```")
    L.append(f"$ {result['command']}")
    L.append(f"machine: {m['nproc']} cores, {m['cpu_model']}, {m['memory_gib']} GiB, Linux {m['kernel']}, "
             f"Python {m['python']}")
    L.append(f"load average at start {result['loadavg_start']}, at end {result['loadavg_end']}")
    v = result["versions"]
    binary = cfg["binary"] if os.path.relpath(cfg["binary"], ROOT).startswith("..") else rel(cfg["binary"])
    L.append(f"{v.get('meg-decoder')} ({binary}), git {v.get('git')}; onnxruntime "
             f"{v.get('onnxruntime')}, mne-lsl {v.get('mne_lsl')}, scipy {v.get('scipy')}, numpy {v.get('numpy')}, "
             f"grpcio {v.get('grpc')}")
    L.append(f"stream: meg-decoder simulate, Neuromag 306 ch x 1000 Hz (ingest: x {INGEST_RATE} Hz), float64, "
             f"models/demo world; model: {rel(cfg['model'])} ({cfg['model_name']}, {cfg['model_rate_hz']:g} Hz)")
    L.append("```\n")
    L.append("## Side by side\n")
    L.append("| what | service | peer | ratio |")
    L.append("|---|---|---|---|")
    L.append(f"| CPU per decoded window, hop {HEADLINE_HOP} s (process CPU time / windows) | "
             f"{fmt(s.get('service_cpu_ms_per_window'), '.2f', ' ms')} | {fmt(s.get('peer_cpu_ms_per_window'), '.2f', ' ms')} | "
             f"peer {ratio_fmt(s.get('ratio_cpu_per_window_peer_over_service'))} |")
    if s.get("service_cpu_ms_per_window_above_ingest") is not None:
        L.append(f"| the same above ingest alone (sweep CPU - 1000 Hz ingest CPU, per window) | "
                 f"{fmt(s.get('service_cpu_ms_per_window_above_ingest'), '.2f', ' ms')} | "
                 f"{fmt(s.get('peer_cpu_ms_per_window_above_ingest'), '.2f', ' ms')} | "
                 f"peer {ratio_fmt(s.get('ratio_cpu_per_window_above_ingest_peer_over_service'))} |")
    L.append(f"| end-to-end latency p50, hop {HEADLINE_HOP} s (receive - window end) | "
             f"{fmt(s.get('service_e2e_p50_ms'), '.1f', ' ms')} | {fmt(s.get('peer_e2e_p50_ms'), '.1f', ' ms')} | "
             f"peer {ratio_fmt(s.get('ratio_e2e_p50_peer_over_service'))} |")
    L.append(f"| end-to-end latency p99, hop {HEADLINE_HOP} s | {fmt(s.get('service_e2e_p99_ms'), '.1f', ' ms')} | "
             f"{fmt(s.get('peer_e2e_p99_ms'), '.1f', ' ms')} | peer {ratio_fmt(s.get('ratio_e2e_p99_peer_over_service'))} |")

    def rate(kind):
        r = s.get(f"{kind}_max_rate_hz")
        if r is None:
            return "none of the hops tried"
        return f"{'≥ ' if s.get(f'{kind}_max_rate_is_fastest_tried') else ''}{r:.0f} /s"

    L.append(f"| highest decode rate sustained | {rate('service')} | {rate('peer')} | "
             f"service {ratio_fmt(s.get('ratio_max_rate_service_over_peer'))} |")
    L.append(f"| CPU while decoding at that rate (% of one core) | {fmt(s.get('service_cpu_pct_at_max_rate'), '.1f', ' %')} | "
             f"{fmt(s.get('peer_cpu_pct_at_max_rate'), '.1f', ' %')} | "
             f"peer {ratio_fmt(s.get('ratio_cpu_at_max_rate_peer_over_service'))} |")
    L.append(f"| ingest CPU, 306 ch x {INGEST_RATE} Hz, decoding off (% of one core) | "
             f"{fmt(s.get('service_ingest_cpu_pct'), '.1f', ' %')} | {fmt(s.get('peer_ingest_cpu_pct'), '.1f', ' %')} | "
             f"peer {ratio_fmt(s.get('ratio_ingest_cpu_peer_over_service'))} |")
    L.append(f"| latency added by {FANOUT_SUBSCRIBERS} subscribers vs 1, p50 / p99 (decoded_at to receive; "
             f"hop {cfg['fanout_hop_s']} s) | "
             f"{fmt(s.get('service_fanout_added_transit_p50_ms'), '.1f')} / "
             f"{fmt(s.get('service_fanout_added_transit_p99_ms'), '.1f', ' ms')} | "
             f"{fmt(s.get('peer_fanout_added_transit_p50_ms'), '.1f')} / "
             f"{fmt(s.get('peer_fanout_added_transit_p99_ms'), '.1f', ' ms')} | "
             f"peer {ratio_fmt(s.get('ratio_fanout_added_transit_p50_peer_over_service'))} / "
             f"{ratio_fmt(s.get('ratio_fanout_added_transit_p99_peer_over_service'))} |")
    L.append("")
    L.append("Ratios are peer / service for costs (CPU, latency) and service / peer for the decode rate. "
             "\"Sustained\": at least 90% of the hop's decodings per second delivered and latency p99 under "
             "2 x the median encoder time + 100 ms; the highest rate is the fastest hop sustained (≥: the fastest "
             f"hop tried; one model sample, {cfg['model_rate_hz']:g}/s, is the fastest continuous decoding "
             "there is, and the CPU it takes says how much room is left).\n")
    L.append("Reading it: the difference is in ingest and serving, not in decoding. Above ingest, the decode "
             "work per window is about the same (same onnxruntime, the same filter and resampler arithmetic), "
             "so the CPU-per-window ratio is mostly the ingest ratio. The end-to-end latencies rest on "
             "different clocks (the peer's window times come from MNE-LSL's dejittered timestamps, the "
             "service's from its own fit of the stream's timestamps): differences of a few ms between the "
             "two are within what that can shift, not evidence either way.\n")
    L.append("## Decode-rate sweep (one subscriber)\n")
    L.append("| hop (s) | target | decodings/s (expected) | skipped behind | CPU % core | CPU / window "
             "(above ingest) | e2e p50 / p99 | server latency p50 / p99 | encoder p50 | sustained |")
    L.append("|---|---|---|---|---|---|---|---|---|---|")
    for r in sorted(result["sweep"], key=lambda r: (-r["effective_hop_s"], r["target"] != "service")):
        hop = f"{r['hop_s']:g}" + (f" ({r['effective_hop_s'] * 1e3:.1f} ms)" if abs(r['effective_hop_s'] - r['hop_s']) > 1e-9 else "")
        if "error" in r:
            L.append(f"| {hop} | {r['target']} | failed: {r['error'].splitlines()[0]} | | | | | | | no |")
            continue
        c = r["client"]
        L.append(f"| {hop} | {r['target']} | {r['decode_rate_hz']:.1f} ({r['expected_rate_hz']:.1f}) | "
                 f"{r['skipped'].get('behind', 0)} | {r['cpu_pct']:.1f} | {fmt(r['cpu_ms_per_window'], '.2f', ' ms')}"
                 f"{' (' + fmt(r['cpu_ms_per_window_above_ingest'], '.2f', ' ms') + ')' if 'cpu_ms_per_window_above_ingest' in r else ''} | "
                 f"{c['e2e_ms']['p50']:.1f} / {c['e2e_ms']['p99']:.1f} ms | {c['latency_ms']['p50']:.1f} / "
                 f"{c['latency_ms']['p99']:.1f} ms | {c['encoder_ms']['p50']:.2f} ms | "
                 f"{'yes' if r.get('sustained') else 'no'} |")
    L.append("")
    L.append(f"Each row: a fresh target process, {cfg['measure_s']:g} s measured after its first decoding + "
             f"{SUBSCRIBER_WARMUP_S:g} s. CPU is the target process's utime + stime (/proc/PID/stat) over the "
             "interval, everything included (ingest, filters, resampler, encoder, gRPC); decodings and skips are "
             "its own GetStatus counters over the same interval. e2e latency is the subscriber's receive time "
             "(pylsl.local_clock) minus the window's last sample time; it includes the resampler's zero-phase "
             "kernel (50 ms at 120 Hz), which both pay. Both round the hop to whole model samples.\n")
    L.append(f"## Fan-out (hop {cfg['fanout_hop_s']} s)\n")
    L.append("| target | subscribers | e2e p50 / p99 | transit p50 / p99 | added transit p50 / p99 | server CPU % core | "
             "load process CPU % | missed |")
    L.append("|---|---|---|---|---|---|---|---|")
    base = {}
    for r in result["fanout"]:
        if "error" in r:
            L.append(f"| {r['target']} | | failed: {r['error'].splitlines()[0]} | | | | | |")
            continue
        c = r["client"]
        if r["subscribers"] == 1:
            base[r["target"]] = c
        b = base.get(r["target"])
        added = (f"{c['transit_ms']['p50'] - b['transit_ms']['p50']:+.2f} / "
                 f"{c['transit_ms']['p99'] - b['transit_ms']['p99']:+.2f} ms"
                 if b is not None and r["subscribers"] != 1 else "")
        L.append(f"| {r['target']} | {r['subscribers']} | {c['e2e_ms']['p50']:.1f} / {c['e2e_ms']['p99']:.1f} ms | "
                 f"{c['transit_ms']['p50']:.2f} / {c['transit_ms']['p99']:.2f} ms | {added} | {r['cpu_pct']:.1f} | "
                 f"{c['client_cpu_pct']:.1f} | {c['missed']} |")
    L.append("")
    L.append(f"One target process; its 1-subscriber round, then {FANOUT_SUBSCRIBERS} subscribers, "
             f"{cfg['fanout_s']:g} s each, every decoding with its embedding and top-5. The subscribers are "
             "asyncio grpcio streams in one separate process, each on its own connection; that process shares "
             "the cores with the target, so part of the added latency is the load generator's own. Transit = "
             "receive - decoded_at (the hub and gRPC path, without the decoding loop's own delays); e2e = "
             "receive - window end.\n")
    L.append(f"## Ingest (decoding effectively off: hop {INGEST_HOP:g} s)\n")
    L.append("| target | stream | CPU % of one core | samples/s received | gaps | simulator CPU % |")
    L.append("|---|---|---|---|---|---|")
    names = {"service": "service", "peer": "peer", "peer-manual": "peer, MNE-LSL `acquire()` in its own loop"}
    for r in result["ingest"]:
        if "error" in r:
            L.append(f"| {names[r['target']]} | 306 x {r['rate_hz']} Hz | failed: {r['error'].splitlines()[0]} | | | |")
            continue
        L.append(f"| {names[r['target']]} | 306 x {r['rate_hz']} Hz | {r['cpu_pct']:.1f} | {r['samples_per_s']:.0f} | "
                 f"{r['gaps']} | {r['simulator_cpu_pct']:.1f} |")
    L.append("")
    L.append(f"{cfg['ingest_s']:g} s each after {INGEST_WARMUP_S:g} s of data. Both targets still filter and resample "
             "every sample (that is part of ingest for a decoder); the service reads with its own liblsl inlet "
             "thread, the peer with MNE-LSL's background acquisition thread (every 1 ms, its default; the "
             "\"acquire() in its own loop\" row, where measured, passes `--acquisition-delay 0` so that the "
             "decoding loop calls `StreamLSL.acquire()` itself). "
             "MNE-LSL rolls its whole buffer (`np.roll`) on every acquisition, so its cost grows with "
             f"`--bufsize` ({PEER_BUFSIZE_S:g} s here) and the rate.\n")
    L.append("## How the peer is built, and what it does not do\n")
    L.append("- Filters: `contract.filter_sos` sections run by `scipy.signal.sosfilt` with the state carried "
             "between polls, started at steady state on the first sample (each sample filtered once: the careful "
             "way; a naive script refilters a longer buffer every hop). Resampling: `contract.resample`'s kernel "
             "evaluated once per model-rate sample as its support arrives; `peer.py --self-test` checks the chain "
             "equals `contract.preprocess` (about 1e-7 of the RMS).")
    L.append("- Never behind: windows are due when the model-sample count is a multiple of the hop; when "
             "several are due at once because the decode step is slower than the hop or they are older than "
             "0.25 s, it decodes the newest and counts the others as skipped (`behind`), the service's "
             "`keep_up` policy.")
    L.append("- Continuous decoding only: no markers, event-locked windows, generator images, recording, "
             "auth/TLS; the only RPCs are Subscribe and GetStatus. Each of those would add work to the peer, "
             "none would remove any.")
    L.append("- gRPC: grpcio's thread-pool server (the tutorial way), one thread per Subscribe call.\n")
    L.append(f"Raw numbers: `{rel(result['json'])}`; process logs: `{rel(result['log_dir'])}/`.")
    with open(path, "w") as f:
        f.write("\n".join(L) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="~2 minute smoke run (2 hops, short intervals)")
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "demo"), help="model directory both decode with")
    ap.add_argument("--threads", type=int, default=1, help="encoder intra-op threads (both)")
    ap.add_argument("--md", default=None, help="report path (default BENCHMARKS.md; --quick: out/bench/BENCHMARKS.quick.md)")
    ap.add_argument("--json", default=None, help="raw results (default out/bench/bench.json; --quick: bench.quick.json)")
    ap.add_argument("--from-json", metavar="JSON", help="only rewrite the report from a previous run's raw results")
    args = ap.parse_args()
    if args.from_json:
        with open(args.from_json) as f:
            result = json.load(f)
        result["summary"] = summarize(result)
        md = args.md or (os.path.join(ROOT, "out", "bench", "BENCHMARKS.quick.md") if result["config"]["quick"]
                         else os.path.join(ROOT, "BENCHMARKS.md"))
        write_markdown(md, result)
        print(f"wrote {os.path.relpath(md, ROOT)} from {args.from_json}")
        return 0
    if not (os.path.isfile(BIN) and os.access(BIN, os.X_OK)):
        die(f"{BIN} is not an executable: build it (cargo build --release) or set MEG_DECODER_BIN")
    try:
        import onnxruntime  # noqa: F401
        import grpc  # noqa: F401
        import mne_lsl  # noqa: F401
        import pylsl  # noqa: F401
    except ImportError as e:
        die(f"{e.name} is missing from {sys.executable}: run `make bench` or "
            f"`{sys.executable} -m pip install -r bench/requirements.txt` (and `make venv`)")
    pinned = dict(line.strip().split("=", 1) for line in open(os.path.join(ROOT, "native", "versions.env"))
                  if "=" in line and not line.startswith("#"))
    if onnxruntime.__version__ != pinned.get("ORT_WHEEL_VERSION"):
        print(f"bench_compare: warning: the peer's onnxruntime is {onnxruntime.__version__}, the service's is "
              f"{pinned.get('ORT_WHEEL_VERSION')} (native/versions.env): update bench/requirements.txt", flush=True)
    if not os.path.isfile(os.path.join(args.model, "encoder.onnx")):
        die(f"{args.model} has no encoder.onnx: --model must be a model directory")
    profile = PROFILES["quick" if args.quick else "full"]
    out_dir = os.path.join(ROOT, "out", "bench")
    md = args.md or (os.path.join(out_dir, "BENCHMARKS.quick.md") if args.quick else os.path.join(ROOT, "BENCHMARKS.md"))
    js = args.json or os.path.join(out_dir, "bench.quick.json" if args.quick else "bench.json")

    def on_signal(signum, _frame):
        Child.stop_all()
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    started = time.monotonic()
    run = Run(args, profile)
    result = {
        "command": " ".join(["python" if a == sys.executable else a for a in [sys.executable] + sys.argv]),
        "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "loadavg_start": " ".join(open("/proc/loadavg").read().split()[:3]),
        "machine": machine(), "versions": versions(),
        "config": {"quick": args.quick, "binary": BIN, "model": run.model, "model_name": run.model_name,
                   "model_rate_hz": run.model_rate, "threads": args.threads, "hops_s": profile["hops"],
                   "measure_s": profile["measure_s"], "fanout_hop_s": profile["fanout_hop"],
                   "fanout_s": profile["fanout_s"], "fanout_subscribers": FANOUT_SUBSCRIBERS,
                   "ingest_s": profile["ingest_s"], "ingest_rate_hz": INGEST_RATE},
        "json": js, "log_dir": run.log_dir,
    }
    print(f"bench_compare: {'quick' if args.quick else 'full'} run, binary {BIN}, model {run.model}; logs in "
          f"{run.log_dir}", flush=True)
    try:
        run.start_simulator(1000)
        result["sweep"] = run.sweep()
        result["fanout"] = run.fanout()
        result["ingest"] = []
        if profile["ingest_1k"]:
            result["ingest"] += run.ingest(1000, ("service", "peer"))
        run.start_simulator(INGEST_RATE)
        kinds = ("service", "peer", "peer-manual") if profile["peer_manual_ingest"] else ("service", "peer")
        result["ingest"] += run.ingest(INGEST_RATE, kinds)
    finally:
        Child.stop_all()
    result["loadavg_end"] = " ".join(open("/proc/loadavg").read().split()[:3])
    result["wall_s"] = time.monotonic() - started
    result["summary"] = summarize(result)
    os.makedirs(os.path.dirname(os.path.abspath(js)), exist_ok=True)
    with open(js, "w") as f:
        json.dump(result, f, indent=1)
    write_markdown(md, result)
    s = result["summary"]
    print(f"\nwrote {os.path.relpath(md, ROOT)} and {os.path.relpath(js, ROOT)} in {result['wall_s']:.0f} s")
    for k, v in s.items():
        print(f"  {k}: {v if not isinstance(v, float) else round(v, 3)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The Python peer: meg-decoder's job done the way a lab would script it today, to compare
the Rust service against (issue 16; `make bench` runs both side by side through
tools/bench_compare.py).

    .venv/bin/python bench/peer/peer.py --stream-name MEG-sim --model models/demo \
        --hop 0.1 --listen 127.0.0.1:50061

What it does, with the field's own tools:

- ingest: MNE-LSL's `StreamLSL` (a ring buffer of `--bufsize` seconds filled by MNE-LSL's
  background acquisition thread, `acquisition_delay` 1 ms by default as MNE-LSL ships it;
  `--acquisition-delay 0` pulls in the decoding loop instead), connected to the MEG stream
  by name, timestamps with processing_flags="all" (clock sync, dejitter, monotonic);
- preprocessing: the model's contract read from the encoder's ONNX metadata_props with
  `onnx` and applied as models/contract.py specifies (imported from the repository): pick
  channels by name, convert to SI, band-pass/notch with `contract.filter_sos` run by
  scipy's `sosfilt` *with its state carried from poll to poll* (the careful way: each new
  sample is filtered once, started at steady state like `sosfilt_zi` scaled by the first
  sample, exactly `contract.preprocess`; a naive script would refilter a longer buffer at
  every hop, paying for the whole buffer each time and never quite reaching steady state),
  then resampled to the model rate with `contract.resample`'s kernel, incrementally (each
  model-rate sample is computed once, when its kernel support has arrived), then robust
  scaling, baseline and clamp per window as the contract says. `--self-test` checks that
  this incremental chain equals `contract.preprocess` on random chunked data;
- decoding: the same encoder.onnx in Python `onnxruntime` (`--threads` intra-op threads,
  1 by default as the service), cosine top-k against the model's gallery
  (gallery/embeddings.npy + ids.txt);
- serving: a `grpcio` server (thread pool) of the SAME proto, `megdecoder.v1.Decoder`:
  `Subscribe` streams `Decoding` messages (sequence, mode CONTINUOUS, window_start,
  window_end, decoded_at on the LSL clock, latency_ms, encoder_ms, top_k, model, missed,
  age_ms; embedding on request); `GetStatus` answers the stream, model and pipeline
  counters the harness reads; the other RPCs answer UNIMPLEMENTED. Stubs are generated from
  proto/ at start-up (bench/peer/stubs.py).

Continuous decoding only (no markers, no event-locked windows, no generator images).

Never behind the stream, as the service: windows are due when the model-rate sample count
is a multiple of the hop (rounded to model samples, as the service rounds it); the loop
polls for new samples every `--poll` seconds and, when several windows are due at once
because decoding is slower than the hop (average decode step >= hop) or because they are
older than `--max-lag` seconds, it decodes the newest and counts the others as skipped
("behind"), the service's `pipeline.keep_up` policy. If the loop falls so far behind that
MNE-LSL's buffer overwrote samples it had not read, the filters restart at the newest
sample (counted as "overrun") and settle again before windows are decoded.
"""
import argparse
import hashlib
import json
import logging
import math
import os
import signal
import sys
import threading
import time
from collections import deque
from concurrent import futures

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "models"))
sys.path.insert(0, HERE)
import contract  # noqa: E402  (models/contract.py: the reference preprocessing)

log = logging.getLogger("peer")

SETTLE_RESIDUAL = 1e-3  # filters settled: impulse response energy left below 0.1%
SETTLE_MAX_S = 10.0


# --------------------------------------------------------------------------------------
# The model: contract, encoder, gallery


def read_contract(encoder_path):
    """The encoder's contract (models/README.md) from its ONNX metadata_props, typed and
    validated with models/contract.py."""
    import onnx

    model = onnx.load(encoder_path, load_external_data=False)
    raw = {p.key: p.value for p in model.metadata_props}
    version = raw.pop("meg_decoder.contract", None)
    if version != contract.CONTRACT_VERSION:
        raise SystemExit(f"{encoder_path} has no meg-decoder contract (meg_decoder.contract = {version!r}, "
                         f"expected {contract.CONTRACT_VERSION!r}); see models/README.md")
    types = {**contract.REQUIRED, **contract.OPTIONAL}
    meta = {}
    for k, v in raw.items():
        t = types.get(k)
        if t is list:
            meta[k] = json.loads(v)
        elif t is float:
            meta[k] = float(v)
        elif t is int:
            meta[k] = int(v)
        else:
            meta[k] = v
    contract.validate(meta)
    return meta


def settle_seconds(sos, fs, meta):
    """Seconds after a filter start before windows are decoded: the contract's settle_s, or
    the filters' own settling time (impulse response down to 0.1% of its energy, at most
    10 s), as the service computes it."""
    if "settle_s" in meta:
        return float(meta["settle_s"])
    if len(sos) == 0:
        return 0.0
    from scipy import signal

    n = int(math.ceil(SETTLE_MAX_S * fs))
    impulse = np.zeros(n)
    impulse[0] = 1.0
    energy = np.cumsum(signal.sosfilt(sos, impulse) ** 2)
    hit = np.flatnonzero(energy >= energy[-1] * (1 - SETTLE_RESIDUAL))
    return (hit[0] + 1) / fs if hit.size else SETTLE_MAX_S


class Encoder:
    """encoder.onnx in onnxruntime: meg f32[1, C, T] (+ subject i64[1]) -> embedding."""

    def __init__(self, path, threads, subject):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self.session = ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])
        names = {i.name for i in self.session.get_inputs()}
        if "meg" not in names:
            raise SystemExit(f"{path} has no input named 'meg'; see models/README.md")
        self.subject = np.array([subject], dtype=np.int64) if "subject" in names else None

    def __call__(self, window):
        feeds = {"meg": window[None]}
        if self.subject is not None:
            feeds["subject"] = self.subject
        return self.session.run(["embedding"], feeds)[0][0]


class Gallery:
    """Cosine top-k over gallery/embeddings.npy with the ids of gallery/ids.txt."""

    def __init__(self, model_dir, dim):
        d = os.path.join(model_dir, "gallery")
        emb_path, ids_path = os.path.join(d, "embeddings.npy"), os.path.join(d, "ids.txt")
        if not (os.path.exists(emb_path) and os.path.exists(ids_path)):
            log.warning("no gallery in %s: decodings carry no top-k", d)
            self.ids, self.unit = [], np.zeros((0, dim), np.float32)
            return
        emb = np.load(emb_path).astype(np.float32)
        with open(ids_path) as f:
            self.ids = [line.strip() for line in f if line.strip()]
        if emb.shape != (len(self.ids), dim):
            raise SystemExit(f"{emb_path} is {emb.shape}, expected ({len(self.ids)}, {dim}) from ids.txt and "
                             "the encoder's embedding_dim")
        self.unit = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)

    def top_k(self, embedding, k):
        if not self.ids or k == 0:
            return []
        scores = self.unit @ (embedding / max(float(np.linalg.norm(embedding)), 1e-12))
        k = min(k, len(self.ids))
        best = np.argpartition(-scores, k - 1)[:k]
        best = best[np.argsort(-scores[best])]
        return [(self.ids[i], float(scores[i])) for i in best]


# --------------------------------------------------------------------------------------
# Preprocessing: contract.preprocess, incrementally


class StreamPreprocessor:
    """contract.preprocess one chunk at a time: causal SOS with state carried between
    chunks (started at steady state on the first sample), then contract.resample's kernel
    evaluated once per model-rate sample when its support has arrived. Model sample k sits
    at input position k * fs / rate of the current segment; its time is the input
    timestamps interpolated there. `reset()` starts a new segment (after an overrun)."""

    def __init__(self, sos, fs, rate, channels, settle_s, kind="sinc"):
        from scipy import signal

        self.sos, self.fs, self.rate, self.channels = sos, fs, rate, channels
        self.kind = kind  # the contract's resampler: "sinc" or "causal" (linear interpolation)
        self.zi_unit = signal.sosfilt_zi(sos)[:, :, None] if len(sos) else None  # [sections, 2, 1]
        _, self.hw = contract.resample_kernel(0.0, fs, rate, kind)
        self.settle_inputs = settle_s * fs
        self.kernels = {}
        self.reset()

    def reset(self):
        self.zi = None
        self.hist = np.zeros((0, self.channels))
        self.hist_t = np.zeros(0)
        self.hist_bad = np.zeros(0, bool)
        self.hist0 = 0  # input index (in this segment) of hist[0]
        self.inputs = 0
        self.k = 0  # next model sample

    def kernel(self, p, lo, hi):
        """contract.resample_kernel's taps for inputs lo..hi around position p, cached by
        phase (a rational rate ratio repeats a few phases: 3 for 1000 -> 120 Hz)."""
        key = (round(p - lo, 9), hi - lo)
        h = self.kernels.get(key)
        if h is None:
            h, _ = contract.resample_kernel(p - np.arange(lo, hi + 1), self.fs, self.rate, self.kind)
            if len(self.kernels) < 4096:
                self.kernels[key] = h
        return h

    def push(self, x, t, bad=None):
        """x [n, channels] float64 in SI units, t [n]; returns (rows f32 [K, channels],
        times [K], settled [K], repaired [K]) for the model samples completed."""
        from scipy import signal

        if len(self.sos):
            if self.zi is None:
                self.zi = self.zi_unit * x[:1]  # steady state for the first sample
            x, self.zi = signal.sosfilt(self.sos, x, axis=0, zi=self.zi)
        if bad is None:
            bad = np.zeros(len(x), bool)
        self.hist = np.concatenate([self.hist, x])
        self.hist_t = np.concatenate([self.hist_t, t])
        self.hist_bad = np.concatenate([self.hist_bad, bad])
        self.inputs += len(x)
        hw = self.hw
        rows, times, settled, repaired = [], [], [], []
        while True:
            # k * fs / rate exactly as contract.resample computes it: the Kaiser window is
            # 1/I0(beta), not 0, just inside its edge, so rounding p differently moves a tap.
            p = self.k * self.fs / self.rate
            lo, hi = int(math.ceil(p - hw)), int(math.floor(p + hw))
            if hi > self.inputs - 1:
                break
            idx = np.arange(lo, hi + 1)
            h = self.kernel(p, lo, hi)
            if lo >= self.hist0:
                seg = slice(lo - self.hist0, hi - self.hist0 + 1)
                rows.append(h @ self.hist[seg])
                repaired.append(bool(self.hist_bad[seg].any()))
            else:  # segment start: inputs before the first equal the first
                take = np.clip(idx, 0, None) - self.hist0
                rows.append(h @ self.hist[take])
                repaired.append(bool(self.hist_bad[take].any()))
            j = int(math.floor(p)) - self.hist0
            frac = p - math.floor(p)
            times.append(self.hist_t[j] + frac * (self.hist_t[j + 1] - self.hist_t[j]) if frac else self.hist_t[j])
            settled.append(p >= self.settle_inputs)
            self.k += 1
        # Keep only what the next model sample's kernel still needs.
        drop = min(max(0, int(math.ceil(self.k * self.fs / self.rate - hw)) - 1 - self.hist0), len(self.hist))
        if drop:
            self.hist, self.hist_t, self.hist_bad = self.hist[drop:], self.hist_t[drop:], self.hist_bad[drop:]
            self.hist0 += drop
        if not rows:
            return np.zeros((0, self.channels), np.float32), np.zeros(0), np.zeros(0, bool), np.zeros(0, bool)
        return (np.asarray(rows, dtype=np.float32), np.asarray(times), np.asarray(settled),
                np.asarray(repaired))


class ModelRateBuffer:
    """The newest model-rate rows [time, channels] with their times and flags (filters
    settled, NaN/Inf repaired), by absolute model sample index."""

    def __init__(self, channels, window):
        self.window = window
        cap = 4 * window + 1024
        self.rows = np.zeros((cap, channels), np.float32)
        self.times = np.zeros(cap)
        self.settled = np.zeros(cap, bool)
        self.repaired = np.zeros(cap, bool)
        self.n = 0  # valid rows at the start of the arrays
        self.head = 0  # absolute index of the next row

    def clear(self):
        self.n = 0

    def extend(self, rows, times, settled, repaired):
        cap = len(self.rows)
        cols = (rows, times, settled, repaired)
        if len(rows) > cap - self.window:  # more than the buffer holds: keep the newest
            self.head += len(rows) - (cap - self.window)
            cols = tuple(c[-(cap - self.window):] for c in cols)
        k = len(cols[0])
        arrays = (self.rows, self.times, self.settled, self.repaired)
        if self.n + k > cap:
            keep = min(self.n, self.window)
            for a in arrays:
                a[:keep] = a[self.n - keep:self.n]
            self.n = keep
        for a, c in zip(arrays, cols):
            a[self.n:self.n + k] = c
        self.n += k
        self.head += k

    def available(self, end):
        """Whether the window ending at absolute index `end` (exclusive) is buffered."""
        return end <= self.head and self.head - end <= self.n - self.window

    def window_at(self, end):
        """(rows [window, channels], times, settled, repaired) of the window ending at `end`."""
        i = self.n - (self.head - end)
        s = slice(i - self.window, i)
        return self.rows[s], self.times[s], self.settled[s], self.repaired[s]


class WindowAssembler:
    """[time, channels] rows -> the encoder's [channels, time] input: robust scaling,
    baseline, clamp (the order of models/README.md)."""

    def __init__(self, meta):
        self.window = int(meta["window_samples"])
        rate, start = float(meta["sample_rate_hz"]), float(meta["window_start_s"])
        idx = lambda t: min(max(int(round((t - start) * rate)), 0), self.window)  # noqa: E731
        self.baseline = (idx(meta["baseline_s"][0]), idx(meta["baseline_s"][1]))
        self.clamp = float(meta["clamp"]) if meta.get("clamp") else None
        scaler = meta["scaler"]
        self.center = self.scale = None
        self.fit_rows = None
        if scaler == "fixed":
            self.center = np.asarray(meta["scaler_center"], np.float32)[:, None]
            self.scale = np.asarray(meta["scaler_scale"], np.float32)[:, None]
        elif scaler.startswith("fit:"):
            self.fit_rows = int(math.ceil(float(scaler[4:]) * rate))
            self.fit_data = []

    def ready(self):
        return self.fit_rows is None

    def observe(self, rows):
        """Feeds the `fit:<seconds>` scaler (median / IQR per channel) with settled rows."""
        if self.fit_rows is None or len(rows) == 0:
            return
        self.fit_data.append(rows)
        data = np.concatenate(self.fit_data)
        if len(data) >= self.fit_rows:
            q25, med, q75 = np.nanpercentile(np.where(np.isfinite(data), data, np.nan), [25, 50, 75], axis=0)
            iqr = q75 - q25
            self.center = med.astype(np.float32)[:, None]
            self.scale = np.where((iqr > 0) & np.isfinite(iqr), iqr, 1.0).astype(np.float32)[:, None]
            self.fit_rows, self.fit_data = None, None
            log.info("robust scaler fitted on the first %d model samples", len(data))

    def __call__(self, rows):
        x = np.ascontiguousarray(rows.T, dtype=np.float32)
        if self.center is not None:
            x -= self.center
            x /= self.scale
        b0, b1 = self.baseline
        if b1 > b0:
            x -= x[:, b0:b1].mean(axis=1, keepdims=True, dtype=np.float64).astype(np.float32)
        if self.clamp is not None:
            np.clip(x, -self.clamp, self.clamp, out=x)
        return x


# --------------------------------------------------------------------------------------
# Ingest: MNE-LSL


def normalize_name(name):
    """Channel names compared ignoring spaces and case, CTF serial suffix stripped
    (`MEG 0113` = `MEG0113`, `MLC11-2908` = `MLC11`), as the service's `normalized`."""
    n = name.replace(" ", "").upper()
    head, sep, tail = n.rpartition("-")
    return head if sep and tail.isdigit() and head else n


def pick_channels(stream_names, model_names):
    exact = {n: i for i, n in enumerate(stream_names)}
    norm = {}
    for i, n in enumerate(stream_names):
        norm.setdefault(normalize_name(n), i)
    picks, missing = [], []
    for n in model_names:
        i = exact.get(n, norm.get(normalize_name(n)))
        (missing.append(n) if i is None else picks.append(i))
    if missing:
        raise SystemExit(f"the stream lacks {len(missing)} of the model's {len(model_names)} channels "
                         f"(first: {missing[:5]}); is this the right stream for this model?")
    return np.asarray(picks)


class Ingest:
    """MNE-LSL StreamLSL, and the new samples since the previous call. New samples are
    found after the last processed timestamp (get_data resets n_new_samples, and samples may
    land between reading it and get_data); if that timestamp has left the buffer, samples
    were lost (an overrun) and the caller restarts its filters."""

    def __init__(self, args, model_names):
        from mne_lsl.stream import StreamLSL

        delay = args.acquisition_delay if args.acquisition_delay > 0 else None
        self.stream = StreamLSL(args.bufsize, name=args.stream_name, source_id=args.source_id)
        try:
            self.stream.connect(acquisition_delay=delay, processing_flags="all", timeout=args.resolve_timeout)
        except RuntimeError as e:
            raise SystemExit(f"cannot connect to the LSL stream {args.stream_name!r}: {e} (is the source running, "
                             "and LSLAPICFG the same as the source's?)")
        self.manual = delay is None
        self.fs = float(self.stream.info["sfreq"])
        if self.fs <= 0:
            raise SystemExit(f"stream {args.stream_name!r} has an irregular rate; the peer needs a regular one")
        self.picks = pick_channels(self.stream.ch_names, model_names)
        units = self.stream.get_channel_units()
        self.factor = np.array([10.0 ** int(units[i][1]) for i in self.picks])  # to SI (T, T/m)
        self.buffer_samples = int(math.ceil(args.bufsize * self.fs))
        self.last_t = None
        self.samples = 0
        self.overruns = 0

    def name(self):
        return self.stream.name

    def new_samples(self):
        """(x [n, channels] float64 SI, t [n], overrun) or None when nothing arrived."""
        if self.manual:
            self.stream.acquire()
        n_new = self.stream.n_new_samples
        if n_new == 0:
            return None
        want = min(n_new + 64, self.buffer_samples)
        data, t = self.stream.get_data(want / self.fs, picks=self.picks)
        overrun = False
        if self.last_t is None:
            filled = t > 0  # MNE-LSL's buffer starts as zeros stamped 0
            start = max(len(t) - n_new, int(np.argmax(filled)) if filled.any() else len(t))
        else:
            at = np.flatnonzero(t == self.last_t)
            if not at.size:
                data, t = self.stream.get_data(None, picks=self.picks)
                at = np.flatnonzero(t == self.last_t)
            if at.size:
                start = at[-1] + 1
            else:
                overrun = True
                self.overruns += 1
                start = int(np.argmax(t > 0))
        if start >= len(t):
            return None
        x = data.T[start:] * self.factor  # [n, channels], SI, float64
        t = t[start:]
        self.last_t = t[-1]
        self.samples += len(t)
        return x, np.array(t), overrun

    def close(self):
        try:
            self.stream.disconnect()
        except Exception:  # noqa: BLE001 - best effort at exit
            pass


# --------------------------------------------------------------------------------------
# Fan-out and gRPC


class Subscriber:
    """One Subscribe call: a bounded queue the decoder fills (oldest dropped, counted)."""

    def __init__(self, sid, peer, request, capacity):
        self.id, self.peer, self.request = sid, peer, request
        self.queue = deque()
        self.capacity = capacity
        self.cond = threading.Condition()
        self.missed = 0
        self.sent = 0
        self.closed = False
        self.since = time.monotonic()
        self.last_sent_t = -1e9

    def offer(self, d):
        with self.cond:
            if len(self.queue) >= self.capacity:
                self.queue.popleft()
                self.missed += 1
            self.queue.append(d)
            self.cond.notify()

    def close(self):
        with self.cond:
            self.closed = True
            self.cond.notify()


class Hub:
    def __init__(self, capacity):
        self.capacity = capacity
        self.lock = threading.Lock()
        self.subscribers = {}
        self.next_id = 1

    def add(self, peer, request):
        with self.lock:
            s = Subscriber(self.next_id, peer, request, self.capacity)
            self.subscribers[s.id] = s
            self.next_id += 1
            return s

    def remove(self, s):
        with self.lock:
            self.subscribers.pop(s.id, None)

    def publish(self, d):
        with self.lock:
            subs = list(self.subscribers.values())
        for s in subs:
            s.offer(d)

    def close_all(self):
        with self.lock:
            subs = list(self.subscribers.values())
        for s in subs:
            s.close()


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.decoded = 0
        self.skipped = {}
        self.latency_s = deque(maxlen=2000)
        self.encoder_s = deque(maxlen=2000)
        self.step_avg_s = 0.0

    def skip(self, reason, n=1):
        if n:
            with self.lock:
                self.skipped[reason] = self.skipped.get(reason, 0) + n

    def record(self, latency_s, encoder_s, step_s):
        with self.lock:
            self.decoded += 1
            self.latency_s.append(latency_s)
            self.encoder_s.append(encoder_s)
        self.step_avg_s = step_s if self.step_avg_s == 0 else 0.9 * self.step_avg_s + 0.1 * step_s


def make_servicer(pb, pb_grpc, peer):
    import grpc
    from mne_lsl.lsl import local_clock

    class Decoder(pb_grpc.DecoderServicer):
        def Subscribe(self, request, context):
            if request.max_rate_hz < 0:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, "max_rate_hz must not be negative")
            wants_continuous = request.continuous or not request.event_locked
            sub = peer.hub.add(context.peer(), request)
            context.add_callback(sub.close)
            max_age = request.max_age_s or 2.0
            min_gap = 1.0 / request.max_rate_hz if request.max_rate_hz > 0 else 0.0
            try:
                while True:
                    with sub.cond:
                        while not sub.queue and not sub.closed and not peer.stopping.is_set():
                            sub.cond.wait(0.5)
                        if sub.closed or peer.stopping.is_set():
                            return
                        if request.latest_only and len(sub.queue) > 1:
                            sub.missed += len(sub.queue) - 1
                            while len(sub.queue) > 1:
                                sub.queue.popleft()
                        d = sub.queue.popleft()
                    if not wants_continuous:
                        continue
                    now = local_clock()
                    if now - d["window_end"] > max_age:
                        sub.missed += 1
                        continue
                    if min_gap and d["decoded_at"] - sub.last_sent_t < min_gap:
                        continue
                    hits = d["top_k"] if request.top_k == 0 else d["top_k"][:request.top_k]
                    msg = pb.Decoding(
                        sequence=d["sequence"], mode=pb.MODE_CONTINUOUS, window_start=d["window_start"],
                        window_end=d["window_end"], decoded_at=d["decoded_at"], latency_ms=d["latency_ms"],
                        encoder_ms=d["encoder_ms"], model=peer.model_id, missed=sub.missed,
                        age_ms=(now - d["window_end"]) * 1e3,
                        top_k=[pb.Hit(image_id=i, score=s) for i, s in hits])
                    if request.include_embedding:
                        msg.embedding.extend(d["embedding"].tolist())
                    sub.missed = 0
                    sub.sent += 1
                    sub.last_sent_t = d["decoded_at"]
                    yield msg
            finally:
                peer.hub.remove(sub)

        def GetStatus(self, request, context):
            return peer.status(pb)

    return Decoder()


# --------------------------------------------------------------------------------------
# The peer


class Peer:
    def __init__(self, args):
        self.args = args
        self.stopping = threading.Event()
        enc_path = os.path.join(args.model, "encoder.onnx")
        if not os.path.exists(enc_path):
            raise SystemExit(f"{enc_path} does not exist: --model must be a model directory (models/README.md)")
        self.meta = read_contract(enc_path)
        with open(enc_path, "rb") as f:
            self.model_id = f"{self.meta['name']}@{hashlib.sha256(f.read()).hexdigest()[:12]}"
        self.encoder = Encoder(enc_path, args.threads, args.subject)
        self.gallery = Gallery(args.model, int(self.meta["embedding_dim"]))
        self.assembler = WindowAssembler(self.meta)
        self.window = int(self.meta["window_samples"])
        self.rate = float(self.meta["sample_rate_hz"])
        self.hop = max(1, int(round(args.hop * self.rate)))  # model samples, as the service rounds it
        self.hub = Hub(args.hub_capacity)
        self.stats = Stats()
        self.sequence = 0

    def status(self, pb):
        def pct(values, q):
            return float(np.percentile(values, q)) * 1e3 if values else 0.0

        with self.stats.lock:
            lat, enc = list(self.stats.latency_s), list(self.stats.encoder_s)
            decoded, skipped = self.stats.decoded, dict(self.stats.skipped)
        ingest = getattr(self, "ingest", None)
        streams = []
        if ingest is not None:
            streams.append(pb.StreamStatus(name=ingest.name(), type="MEG", channels=len(ingest.picks),
                                           nominal_rate_hz=ingest.fs, samples=ingest.samples, connected=True,
                                           gaps=ingest.overruns))
        with self.hub.lock:
            subs = [pb.SubscriberStatus(id=s.id, peer=s.peer, sent=s.sent, missed=s.missed,
                                        connected_s=time.monotonic() - s.since) for s in self.hub.subscribers.values()]
        return pb.Status(
            streams=streams,
            model=pb.ModelStatus(name=self.meta["name"], id=self.model_id, contract=contract.CONTRACT_VERSION,
                                 embedding_space=self.meta["embedding_space"],
                                 embedding_dim=int(self.meta["embedding_dim"]), gallery_images=len(self.gallery.ids),
                                 dir=os.path.abspath(self.args.model)),
            pipeline=pb.PipelineStatus(decoded=decoded, skipped=sum(skipped.values()), skipped_by_reason=skipped,
                                       latency_p50_ms=pct(lat, 50), latency_p90_ms=pct(lat, 90),
                                       latency_p99_ms=pct(lat, 99), encoder_p50_ms=pct(enc, 50),
                                       encoder_p99_ms=pct(enc, 99)),
            subscribers=subs, version="python peer (bench/peer/peer.py)")

    def decode(self, buf, end):
        """Decodes the window ending at absolute model sample `end` (exclusive)."""
        from mne_lsl.lsl import local_clock

        t0 = time.perf_counter()
        rows, times, _, _ = buf.window_at(end)
        x = self.assembler(rows)
        te = time.perf_counter()
        embedding = self.encoder(x)
        encoder_s = time.perf_counter() - te
        hits = self.gallery.top_k(embedding, self.args.top_k)
        decoded_at = local_clock()
        latency_s = decoded_at - times[-1]
        self.hub.publish({"sequence": self.sequence, "window_start": float(times[0]), "window_end": float(times[-1]),
                          "decoded_at": decoded_at, "latency_ms": latency_s * 1e3, "encoder_ms": encoder_s * 1e3,
                          "top_k": hits, "embedding": embedding})
        self.sequence += 1
        self.stats.record(latency_s, encoder_s, time.perf_counter() - t0)

    def run(self, ingest):
        """The decoding loop (main thread) until `stopping` is set."""
        from mne_lsl.lsl import local_clock

        self.ingest = ingest
        sos = contract.filter_sos(self.meta, ingest.fs)
        settle = settle_seconds(sos, ingest.fs, self.meta)
        pre = StreamPreprocessor(sos, ingest.fs, self.rate, len(ingest.picks), settle,
                                 self.meta.get("resampler", "sinc"))
        buf = ModelRateBuffer(len(ingest.picks), self.window)
        log.info("decoding %s (%d ch at %g Hz) with %s every %d model samples (%.4g s); filters settle in %.2f s",
                 ingest.name(), len(ingest.picks), ingest.fs, self.model_id, self.hop, self.hop / self.rate, settle)
        hop_s = self.hop / self.rate
        last_row = None
        while not self.stopping.is_set():
            got = ingest.new_samples()
            if got is None:
                time.sleep(self.args.poll)
                continue
            x, t, overrun = got
            if overrun:
                log.warning("samples were lost (MNE-LSL's buffer overwrote unread ones): filters restart")
                pre.reset()
                buf.clear()
                self.stats.skip("overrun")
            bad = None
            finite = np.isfinite(x)
            if not finite.all():  # hold NaN/Inf at the last finite value; windows over them are skipped
                bad = ~finite.all(axis=1)
                x = x.copy()
                for i in np.flatnonzero(bad):
                    prev = x[i - 1] if i else (last_row if last_row is not None else np.zeros(x.shape[1]))
                    x[i] = np.where(finite[i], x[i], prev)
            last_row = x[-1].copy()
            old = buf.head
            rows, times, settled, repaired = pre.push(x, t, bad)
            if not len(rows):
                continue
            if not self.assembler.ready():
                self.assembler.observe(rows[settled])
            buf.extend(rows, times, settled, repaired)
            # Windows due: the model sample count reached a multiple of the hop.
            first = -(-max(old + 1, self.window) // self.hop) * self.hop
            due = [e for e in range(first, buf.head + 1, self.hop) if buf.available(e)]
            if not due:
                continue
            now = local_clock()
            overloaded = self.stats.step_avg_s >= hop_s
            for n, e in enumerate(due):
                _, wt, ws, wr = buf.window_at(e)
                if n < len(due) - 1 and (overloaded or now - wt[-1] > self.args.max_lag):
                    self.stats.skip("behind")
                elif not ws.all():
                    self.stats.skip("settling")
                elif wr.any():
                    self.stats.skip("non_finite")
                elif not self.assembler.ready():
                    self.stats.skip("scaler_warmup")
                else:
                    self.decode(buf, e)


def self_test():
    """The incremental preprocessing equals contract.preprocess on random chunked data."""
    rng = np.random.default_rng(1)
    meta = {"highpass_hz": 0.1, "lowpass_hz": 40.0, "filter_order": 4, "notch_hz": [50.0],
            "sample_rate_hz": 120.0}
    ok = True
    for fs, kind in ((1000.0, "sinc"), (600.614, "sinc"), (5000.0, "sinc"), (1000.0, "causal")):
        meta["resampler"] = kind
        n, c = int(fs * 3), 7
        x = rng.standard_normal((c, n)).cumsum(axis=1) * 1e-12 + 3e-11
        ref = contract.preprocess(x, fs, meta)
        sos = contract.filter_sos(meta, fs)
        pre = StreamPreprocessor(sos, fs, 120.0, c, 0.0, kind)
        out, i = [], 0
        while i < n:
            k = int(rng.integers(1, 40))
            rows, _, _, _ = pre.push(x[:, i:i + k].T.copy(), np.arange(i, min(i + k, n)) / fs)
            out.append(rows)
            i += k
        got = np.concatenate(out).T.astype(np.float64)
        m = min(got.shape[1], ref.shape[1])
        err = np.abs(got[:, :m] - ref[:, :m]).max() / np.sqrt(np.mean(ref ** 2))
        good = got.shape[1] == ref.shape[1] and err < 1e-5
        ok &= good
        print(f"{kind} at {fs:g} Hz: {got.shape[1]} model samples (reference {ref.shape[1]}), "
              f"max error {err:.2e} of the RMS: {'ok' if good else 'FAILED'}")
    return 0 if ok else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--stream-name", help="MEG stream name (LSL)")
    ap.add_argument("--source-id", default=None, help="MEG stream source_id (optional)")
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "demo-brain"), help="model directory")
    ap.add_argument("--hop", type=float, default=0.025, help="continuous decoding hop (s), rounded to model samples")
    ap.add_argument("--listen", default="127.0.0.1:50061", help="gRPC listen address")
    ap.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads")
    ap.add_argument("--subject", type=int, default=0, help="subject index for models with a subject layer")
    ap.add_argument("--top-k", type=int, default=5, help="gallery hits per decoding")
    ap.add_argument("--bufsize", type=float, default=3.0, help="MNE-LSL buffer (s)")
    ap.add_argument("--acquisition-delay", type=float, default=0.001,
                    help="MNE-LSL background acquisition period (s; its default 0.001); 0 = pull in the decoding loop")
    ap.add_argument("--poll", type=float, default=0.002, help="sleep (s) when no new samples arrived")
    ap.add_argument("--max-lag", type=float, default=0.25, help="skip due windows older than this (s), newest kept")
    ap.add_argument("--hub-capacity", type=int, default=1024, help="decodings a subscriber may fall behind")
    ap.add_argument("--max-subscribers", type=int, default=256, help="concurrent Subscribe calls (server threads)")
    ap.add_argument("--resolve-timeout", type=float, default=10.0, help="seconds to wait for the stream")
    ap.add_argument("--log", default="info", help="log level")
    ap.add_argument("--self-test", action="store_true", help="check the incremental preprocessing and exit")
    args = ap.parse_args()
    logging.basicConfig(level=args.log.upper(), format="%(asctime)s peer %(levelname)s %(message)s", stream=sys.stderr)
    if args.self_test:
        return self_test()
    if not args.stream_name:
        ap.error("--stream-name is required")
    if args.hop <= 0:
        ap.error("--hop must be positive")
    if "LSLAPICFG" not in os.environ:
        log.warning("LSLAPICFG is not set: liblsl uses its multicast defaults (export "
                    "LSLAPICFG=%s/deploy/lsl_api.loopback.cfg on these machines)", ROOT)
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        raise SystemExit("onnxruntime is missing: pip install -r bench/requirements.txt into this venv "
                         "(make bench does it)")
    import grpc

    from stubs import load

    pb, pb_grpc = load()
    peer = Peer(args)
    ingest = Ingest(args, peer.meta["channel_names"])
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=args.max_subscribers + 4),
                         maximum_concurrent_rpcs=args.max_subscribers + 4,
                         options=[("grpc.so_reuseport", 0)])
    pb_grpc.add_DecoderServicer_to_server(make_servicer(pb, pb_grpc, peer), server)
    if server.add_insecure_port(args.listen) == 0:
        raise SystemExit(f"cannot listen on {args.listen}: address in use or invalid")
    server.start()
    log.info("serving megdecoder.v1.Decoder on %s (pid %d)", args.listen, os.getpid())

    def stop(signum, _frame):
        log.info("signal %d: stopping", signum)
        peer.stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        peer.run(ingest)
    finally:
        peer.hub.close_all()
        server.stop(1).wait(2)
        ingest.close()
        s = peer.stats
        log.info("stopped: %d decoded, skipped %s, %d samples, %d overruns", s.decoded, s.skipped, ingest.samples,
                 ingest.overruns)
    return 0


if __name__ == "__main__":
    sys.exit(main())

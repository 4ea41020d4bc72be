"""Recording start/stop from Python, and `read_session` on what was recorded: a pylsl
outlet (not our simulator) pushes float64 samples in fT with markers; the Raw holds the
pushed values in tesla, one annotation per marker on its sample (+-1), and the decodings
table equals what a subscriber received."""
import datetime
import threading
import time

import grpc
import numpy as np
import pylsl
import pytest

from conftest import model_channels, serve, unique

import meg_decoder_client as mdc

mne = pytest.importorskip("mne")
pytest.importorskip("pyxdf")

RATE = 1000.0


class Source:
    """A pylsl MEG outlet pushing N(0, 200 fT) in 10-sample chunks in real time, every
    sample stamped t0 + k / RATE, keeping what it pushed; and a marker outlet."""

    def __init__(self, name, channels):
        info = pylsl.StreamInfo(name, "MEG", len(channels), RATE, "double64", name)
        chans = info.desc().append_child("channels")
        for ch in channels:
            c = chans.append_child("channel")
            c.append_child_value("label", ch)
            c.append_child_value("type", "MAG" if ch.endswith("1") else "GRAD")
            c.append_child_value("unit", "fT" if ch.endswith("1") else "fT/cm")
        self.outlet = pylsl.StreamOutlet(info, chunk_size=10)
        self.markers = pylsl.StreamOutlet(pylsl.StreamInfo(f"{name}-m", "Markers", 1, 0, "string", f"{name}-m"))
        self.rng = np.random.default_rng(5)
        self.pushed = []
        self.t0 = pylsl.local_clock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.n = len(channels)

    def run(self):
        k = 0
        while not self.stop.is_set():
            due = int((pylsl.local_clock() - self.t0) * RATE)
            while k + 10 <= due:
                chunk = self.rng.normal(0, 200.0, size=(10, self.n))
                stamps = [self.t0 + (k + i) / RATE for i in range(10)]
                self.outlet.push_chunk(chunk.tolist(), stamps)
                self.pushed.append(chunk)
                k += 10
            time.sleep(0.005)

    def mark(self, text):
        t = pylsl.local_clock()
        self.markers.push_sample([text], t)
        return t


def test_read_session_gives_the_pushed_samples_markers_and_decodings(lsl_env, tmp_path):
    name = unique("pysess")
    src = Source(name, model_channels())
    src.thread.start()
    srv, port = serve(lsl_env, name, ["--record-dir", str(tmp_path)])
    try:
        with mdc.Client(f"127.0.0.1:{port}") as c, c.subscribe(max_age_s=30) as sub:
            assert sub.get(timeout_s=30) is not None  # decoding has started
            with pytest.raises(grpc.RpcError) as e:
                c.start_recording("../etc")
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            rec = c.start_recording("01", task="pytest")
            assert rec.recording and rec.path.endswith(".xdf")
            marks = []
            received = []
            for i in range(6):
                marks.append((f"img_{i:03d}", src.mark(f"img_{i:03d}")))
                end = time.monotonic() + 1.0
                while time.monotonic() < end:
                    d = sub.get(timeout_s=1)
                    if d is not None:
                        received.append(d)
            end = time.monotonic() + 2.0  # the last marker's window completes
            while time.monotonic() < end:
                d = sub.get(timeout_s=1)
                if d is not None:
                    received.append(d)
            stopped = c.stop_recording()
            assert not stopped.recording and stopped.path == rec.path and stopped.bytes_written > 0
    finally:
        srv.stop()
        src.stop.set()
        src.thread.join()
    assert all(d.missed == 0 for d in received[1:])

    s = mdc.read_session(rec.path)
    raw = s.raw
    assert raw.info["sfreq"] == RATE and raw.ch_names == model_channels()
    types = raw.get_channel_types()
    assert types.count("mag") == 102 and types.count("grad") == 204

    # The data are the pushed samples in SI (fT -> T, fT/cm -> T/m), float32-exact.
    pushed = np.concatenate(src.pushed)
    data = raw.get_data()
    first = data[:, 0]
    scale = np.where(np.array(types) == "mag", 1e-15, 1e-13)
    start = np.flatnonzero(np.all(np.abs(pushed * scale - first) <= 1e-6 * np.abs(first) + 1e-30, axis=1))
    assert len(start) == 1, "the first recorded sample is not one of the pushed ones"
    k0 = int(start[0])
    n = data.shape[1]
    assert k0 + n <= len(pushed)
    expected = (pushed[k0:k0 + n] * scale).T
    np.testing.assert_allclose(data, expected, rtol=1e-6, atol=0)
    # The LSL time of the first sample is kept; meas_date is its wall-clock time.
    assert abs(s.first_lsl_time - (src.t0 + k0 / RATE)) < 1.5 / RATE
    age = datetime.datetime.now(datetime.timezone.utc) - raw.info["meas_date"]
    assert datetime.timedelta(0) < age < datetime.timedelta(minutes=2), raw.info["meas_date"]

    # One annotation per marker, on the marker's sample (+-1).
    events, ids = mne.events_from_annotations(raw, regexp="^stim/", verbose="error")
    by_id = {v: k for k, v in ids.items()}
    assert [by_id[e[2]] for e in events] == [f"stim/{m}" for m, _ in marks]
    for (text, t), e in zip(marks, events):
        want = round((t - src.t0) * RATE) - k0
        assert abs((e[0] - raw.first_samp) - want) <= 1, (text, e[0] - raw.first_samp, want)
    assert list(s.markers["marker"]) == [m for m, _ in marks]

    # The decodings table holds what the subscriber received while recording.
    dec = s.decodings
    assert len(dec) > 50 and dec["sequence"].is_monotonic_increasing
    seen = [d for d in received if d.sequence in dec.index]
    assert len(seen) >= len(received) - 5 and len(seen) > 50
    lo, hi = seen[0].sequence, seen[-1].sequence
    assert list(dec.loc[lo:hi, "sequence"]) == [d.sequence for d in seen]
    for d in seen:
        row = dec.loc[d.sequence]
        assert row["mode"] == d.mode and row["marker"] == d.marker and row["top_k"] == [h.image_id for h in d.top_k]
        assert abs(row["window_end"] - d.window_end) < 1e-9
        np.testing.assert_allclose(row["embedding"], d.embedding, rtol=1e-6)
        # What each decoding refers to, as the subscriber saw it: the onset, and for the
        # default model's encoder for continuous use the instant whose on-screen image it is.
        assert abs(row["onset"] - d.onset) < 1e-9
        if d.on_screen_at is None:
            assert np.isnan(row["on_screen_at"])
        else:
            assert abs(row["on_screen_at"] - d.on_screen_at) < 1e-9
    locked = dec[dec["mode"] == "event_locked"]
    assert set(locked["marker"]) <= {m for m, _ in marks} and len(locked) >= 4
    assert s.metadata.get("model", {}).get("name") == "demo-brain-module-v2" or s.metadata
    cont = dec[dec["mode"] == "continuous"]
    assert len(cont) > 0 and cont["on_screen_at"].notna().all() and locked["on_screen_at"].isna().all()
    # The header names the model as every decoding does (its encoders' digest).
    assert s.metadata["model"]["id"] == seen[0].model
    assert any(desc.startswith("decoding/event_locked/") for desc in raw.annotations.description)
    # Every decoding overlapping the recording is an annotation (windows clipped to it).
    n_dec = sum(d.startswith("decoding/") for d in raw.annotations.description)
    assert n_dec == int((dec["window_end"] >= s.first_lsl_time).sum())
    # It saves as FIF and reads back with its annotations.
    fif = tmp_path / "session_raw.fif"
    raw.save(fif, verbose="error")
    back = mne.io.read_raw_fif(fif, verbose="error")
    assert len(back.annotations) == len(raw.annotations) and back.n_times == raw.n_times

"""Recorded sessions into MNE: `read_session(path)` turns an XDF written by meg-decoder
(`serve --record`, or StartRecording) into an `mne.io.Raw` in SI units with the stimulus
markers and the decodings as annotations, plus the decodings as a DataFrame.

Times: pyxdf applies the file's clock offsets, so every stream is on the decoder
machine's LSL clock. The Raw starts at its first sample (`first_samp` 0, so it saves as
FIF whatever the machine's uptime) and its `meas_date` is the wall-clock time of that
sample; `Session.first_lsl_time` is the same instant on the LSL clock, the origin of
the DataFrames' times (`raw time = LSL time - first_lsl_time`). Annotations are placed on
the sample whose recorded timestamp is nearest the event, so they stay right when the
source's true rate is off nominal or the recording has gaps.
"""
import datetime
import json
import os
import re
import warnings
from dataclasses import dataclass, field
from typing import Any, Dict, List

import numpy as np

from .frame import frame

# LSL channel types (as sources write them) -> MNE channel types.
_MNE_TYPES = {
    "mag": "mag", "meg": "mag", "magnetometer": "mag", "grad": "grad", "gradiometer": "grad",
    "ref_meg": "ref_meg", "refmeg": "ref_meg", "eeg": "eeg", "eog": "eog", "ecg": "ecg", "emg": "emg",
    "seeg": "seeg", "ecog": "ecog", "stim": "stim", "trigger": "stim", "trig": "stim", "misc": "misc",
    "resp": "resp", "bio": "bio", "photodiode": "misc",
}
_PREFIX = {"": 1.0, "f": 1e-15, "p": 1e-12, "n": 1e-9, "u": 1e-6, "µ": 1e-6, "μ": 1e-6, "m": 1e-3, "c": 1e-2}
_NAMED = {"": 1.0, "n/a": 1.0, "na": 1.0, "none": 1.0, "unitless": 1.0, "au": 1.0, "a.u.": 1.0,
          "samples": 1.0, "tesla": 1.0, "teslas": 1.0, "volt": 1.0, "volts": 1.0, "femtotesla": 1e-15,
          "femtoteslas": 1e-15, "picotesla": 1e-12, "picoteslas": 1e-12, "nanotesla": 1e-9,
          "nanoteslas": 1e-9, "microvolt": 1e-6, "microvolts": 1e-6, "millivolt": 1e-3, "millivolts": 1e-3}


def unit_factor(unit):
    """SI factor of an LSL channel unit (the service's own rule): names (T, fT, T/m, fT/cm,
    V, uV, microvolts...), mne-lsl's power-of-ten codes ("0" = SI, "-15" = femto), or a
    unit-less marker. None if unknown."""
    u = (unit or "").strip()
    if re.fullmatch(r"[+-]?[0-9]+", u):
        p = int(u)
        return 10.0 ** p if p in (-15, -12, -9, -6, -3, -2, -1, 0, 3, 6, 9, 12, 15) else None
    if u.lower() in _NAMED:
        return _NAMED[u.lower()]
    num, _, den = u.partition("/")
    if not (num.endswith("T") or num.endswith("V")) or num[:-1] not in _PREFIX:
        return None
    n = _PREFIX[num[:-1]]
    if not den:
        return n
    if not den.endswith("m") or den[:-1] not in _PREFIX:
        return None
    return n / _PREFIX[den[:-1]]


@dataclass
class Session:
    """A recorded session: `raw` (mne.io.Raw), `decodings` and `markers` (DataFrames on
    the LSL clock), `first_lsl_time` (the LSL time of raw's first sample), `events` (service events such as model switches, as dicts with a
    `time`), and `metadata` (what the service wrote about itself: model, config)."""

    raw: Any
    decodings: Any
    markers: Any
    metadata: Dict[str, Any]
    events: List[Dict[str, Any]] = field(default_factory=list)
    # LSL time of the Raw's first sample (the decoder machine's clock).
    first_lsl_time: float = 0.0


def _first(d, key, default=""):
    v = d.get(key) if isinstance(d, dict) else None
    # pyxdf gives [None] for an empty element (<unit/>).
    return v[0] if v and isinstance(v[0], str) else default


def _channels(info, n):
    desc = info.get("desc") or [None]
    chans = []
    try:
        chans = desc[0]["channels"][0]["channel"] if desc[0] else []
    except (KeyError, IndexError, TypeError):
        chans = []
    if len(chans) != n:
        chans = [{} for _ in range(n)]
    names, types, factors, unknown = [], [], [], []
    seen = {}
    for i, ch in enumerate(chans):
        name = (_first(ch, "label") or f"CH{i + 1:03d}").strip()
        if name in seen:  # MNE needs unique names
            seen[name] += 1
            name = f"{name}-{seen[name]}"
        seen.setdefault(name, 0)
        unit, kind = _first(ch, "unit"), _first(ch, "type").strip().lower()
        mne_type = _MNE_TYPES.get(kind, "misc")
        factor = unit_factor(unit)
        if factor is None:
            unknown.append(f"{name} {unit!r}")
            factor = 1.0
        if mne_type == "mag" and "/" in unit:  # T/m, fT/cm: a gradiometer
            mne_type = "grad"
        names.append(name)
        types.append(mne_type)
        factors.append(factor)
    if unknown:
        warnings.warn(f"{len(unknown)} channel(s) with units not known, taken as SI: {', '.join(unknown[:5])}")
    return names, types, np.asarray(factors)


def _decoding_rows(stream, events):
    rows = []
    for (text,), t in zip(stream["time_series"], stream["time_stamps"]):
        d = json.loads(text)
        if "event" in d:  # e.g. a model switch
            events.append(dict(d, time=float(t)))
            continue
        marker = d.get("marker") or {}
        hits = d.get("top_k") or []
        rows.append({
            "sequence": d["sequence"], "mode": d["mode"], "marker": marker.get("text"),
            "marker_time": marker.get("timestamp"), "window_start": d["window_start"],
            "window_end": d["window_end"], "decoded_at": d["decoded_at"],
            "latency_ms": 1000.0 * d["latency_s"], "encoder_ms": 1000.0 * d["encoder_s"],
            "top1": hits[0]["image_id"] if hits else None, "top_k": [h["image_id"] for h in hits],
            "scores": np.array([h["score"] for h in hits], np.float32),
            "embedding": np.asarray(d.get("embedding") or [], np.float32), "repaired": d["repaired"],
            "missed": 0, "age_ms": np.nan, "model": d.get("model", ""),
            "stage": d.get("stage", 0), "stages": d.get("stages", 0),
            "onset": d.get("onset", np.nan),
            "on_screen_at": np.nan if d.get("on_screen_at") is None else d["on_screen_at"],
        })
    return rows


def read_session(path, decodings="all"):
    """Reads a meg-decoder XDF recording into a `Session`.

    decodings: which decodings become annotations: "all", "event_locked" or "none" (the
    DataFrame always has all of them). Each spans its window, described as
    "decoding/<mode>/<top-1 image id>"; markers are "stim/<marker text>"."""
    try:
        import mne
        import pandas  # noqa: F401
        import pyxdf
    except ImportError as e:
        raise ImportError(f"read_session needs mne, pyxdf and pandas ({e}): pip install 'meg-decoder-client[mne]'") from e

    if decodings not in ("all", "event_locked", "none"):
        raise ValueError(f"decodings={decodings!r}: use 'all', 'event_locked' or 'none'")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such recording")
    try:
        streams, header = pyxdf.load_xdf(str(path), synchronize_clocks=True, dejitter_timestamps=False)
    except Exception as e:  # pyxdf raises bare Exceptions and XML errors on damaged files
        raise ValueError(f"{path}: not a readable XDF file ({type(e).__name__}: {e})") from e
    kind = lambda s: _first(s["info"], "type")  # noqa: E731
    fmt = lambda s: _first(s["info"], "channel_format")  # noqa: E731
    numeric = [s for s in streams if fmt(s) != "string" and len(s["time_stamps"])]
    if not numeric:
        raise ValueError(f"{path}: no numeric stream with samples (is this a meg-decoder recording?)")
    meg = max(numeric, key=lambda s: int(_first(s["info"], "channel_count", "0")))
    dec_stream = next((s for s in streams if kind(s) == "Decodings"), None)
    marker_streams = [s for s in streams if fmt(s) == "string" and s is not dec_stream
                      and _first(s["info"], "channel_count", "1") == "1"]

    info = meg["info"]
    sfreq = float(_first(info, "nominal_srate", "0"))
    if not sfreq > 0:
        raise ValueError(f"{path}: stream {_first(info, 'name')!r} has no nominal rate; MNE needs a regular one")
    data = np.asarray(meg["time_series"], dtype=np.float64)
    ts = np.asarray(meg["time_stamps"], dtype=np.float64)
    names, types, factors = _channels(info, data.shape[1])
    mne_info = mne.create_info(names, sfreq, types)
    raw = mne.io.RawArray((data * factors).T, mne_info, verbose="error")
    # The header's wall-clock time was written with the first clock-offset measurement:
    # that pairs a wall time with an LSL time, which dates the first sample.
    dt = _first(header.get("info", {}), "datetime")
    paired = [s["clock_times"][0] for s in streams if len(s.get("clock_times", []))]
    if dt and paired:
        try:
            when = datetime.datetime.strptime(dt, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc)
            raw.set_meas_date(when + datetime.timedelta(seconds=float(ts[0] - min(paired))))
        except (ValueError, OverflowError):
            pass

    index = np.arange(len(ts), dtype=np.float64)

    def onset(t):  # seconds from the first sample, on the sample nearest t
        return np.round(np.interp(t, ts, index, left=np.nan, right=np.nan)) / sfreq

    def span(t0, t1):  # a window clipped to the recording: (onset, duration)
        a, b = onset(max(t0, ts[0])), onset(min(t1, ts[-1]))
        return (a, b - a) if np.isfinite(a) and np.isfinite(b) and b >= a else (np.nan, 0.0)

    import pandas as pd
    marker_rows = []
    for s in marker_streams:
        for (text,), t in zip(s["time_series"], s["time_stamps"]):
            marker_rows.append({"time": float(t), "marker": text, "stream": _first(s["info"], "name")})
    markers = pd.DataFrame(marker_rows, columns=["time", "marker", "stream"])
    events = []
    dec = frame(_decoding_rows(dec_stream, events) if dec_stream is not None else [])

    on, dur, desc = [], [], []
    for t, text in zip(markers["time"], markers["marker"]):
        on.append(onset(t)), dur.append(0.0), desc.append(f"stim/{text}")
    if decodings != "none":
        for r in dec.itertuples(index=False):
            if decodings == "event_locked" and r.mode != "event_locked":
                continue
            a, d = span(r.window_start, r.window_end)
            on.append(a), dur.append(d)
            # Progressive stages before the last say which: decoding/event_locked/stage1of3/...
            staged = r.mode == "event_locked" and r.stages > 1 and r.stage != r.stages
            desc.append(f"decoding/{r.mode}/stage{r.stage}of{r.stages}/{r.top1}" if staged else f"decoding/{r.mode}/{r.top1}")
    for e in events:
        if e.get("event") == "model_switch":
            on.append(onset(e["time"])), dur.append(0.0), desc.append(f"model/{e.get('to')}")
    on = np.asarray(on, dtype=np.float64)
    keep = np.isfinite(on)
    if len(on):
        raw.set_annotations(mne.Annotations(on[keep], np.asarray(dur)[keep], np.asarray(desc)[keep],
                                            orig_time=None), verbose="error")
    metadata = {}
    meta_text = _first(header.get("info", {}), "meg_decoder")
    if meta_text:
        try:
            metadata = json.loads(meta_text)
        except ValueError:
            metadata = {"raw": meta_text}
    return Session(raw=raw, decodings=dec, markers=markers, metadata=metadata, events=events,
                   first_lsl_time=float(ts[0]))

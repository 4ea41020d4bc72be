"""The meg-decoder model contract: the ONNX metadata a brain encoder must carry, and the
reference training-side preprocessing.

Every key is documented in models/README.md. `write_contract` refuses to save a model
whose metadata is incomplete or inconsistent, so a lab exporting its own model finds out
at export time, not on the day of the experiment.

`preprocess` is what the service does to a stream before the encoder sees a window
(src/pipeline/preprocess.rs), in numpy/scipy: the same Butterworth/notch sections, started
at steady state for the first sample, run causally (or forward-backward for a model
declared `filter_phase = "zero-phase"`, which the service then compensates), and the same
resampler: the Kaiser-windowed sinc by default, or for `resampler = "causal"` (the
low-latency profile) a causal Butterworth anti-alias low-pass among the filters and linear
interpolation. Train on `preprocess(...)` output and the model sees live what it saw in
training (tests/real_sources.rs checks the two agree).
"""
import json

import numpy as np

CONTRACT_VERSION = "1"

REQUIRED = {
    "name": str,
    "sample_rate_hz": float,
    "window_samples": int,
    "window_start_s": float,
    "channel_names": list,
    "baseline_s": list,
    "scaler": str,
    "clamp": float,
    "embedding_space": str,
    "embedding_dim": int,
}
OPTIONAL = {
    "description": str,
    "highpass_hz": float,
    "lowpass_hz": float,
    "filter_order": int,
    "notch_hz": list,
    "notch_q": float,
    "scaler_center": list,
    "scaler_scale": list,
    "subjects": int,
    "training": str,
    "filter_phase": str,
    "evoked_band_hz": list,
    "settle_s": float,
    "resampler": str,
    "target": str,
}

# The resampler's kernel (src/dsp/resample.rs).
KAISER_BETA = 6.0
CUTOFF = 0.9
HALF_WIDTH_OUT = 6.0
# The causal profile's anti-alias low-pass (src/model/contract.rs).
CAUSAL_ANTIALIAS_ORDER = 8
CAUSAL_ANTIALIAS_FRACTION = 0.4


def validate(meta: dict) -> None:
    missing = [k for k in REQUIRED if k not in meta]
    if missing:
        raise ValueError(f"model metadata is missing {missing}; see models/README.md")
    unknown = [k for k in meta if k not in REQUIRED and k not in OPTIONAL]
    if unknown:
        raise ValueError(f"unknown metadata keys {unknown}")
    for k, t in {**REQUIRED, **OPTIONAL}.items():
        if k in meta and not isinstance(meta[k], (t, int) if t is float else t):
            raise ValueError(f"metadata {k} must be {t.__name__}, got {type(meta[k]).__name__}")
    n = len(meta["channel_names"])
    if len(set(meta["channel_names"])) != n:
        raise ValueError("channel_names has duplicates")
    s = meta["scaler"]
    if s == "fixed":
        for k in ("scaler_center", "scaler_scale"):
            if len(meta.get(k, [])) != n:
                raise ValueError(f"scaler 'fixed' needs {k} with one value per channel ({n})")
    elif not (s == "none" or (s.startswith("fit:") and float(s[4:]) > 0)):
        raise ValueError("scaler must be 'fixed', 'none' or 'fit:<seconds>'")
    if len(meta["baseline_s"]) != 2:
        raise ValueError("baseline_s must be [start, end] in seconds relative to the decoded instant")
    if meta.get("filter_phase", "causal") not in ("causal", "zero-phase"):
        raise ValueError("filter_phase must be 'causal' or 'zero-phase'")
    if meta.get("resampler", "sinc") not in ("sinc", "causal"):
        raise ValueError("resampler must be 'sinc' (the default) or 'causal'")
    if meta.get("resampler") == "causal" and meta.get("filter_phase", "causal") != "causal":
        raise ValueError("resampler 'causal' needs filter_phase 'causal'")
    if meta.get("target", "onset") not in ("onset", "on_screen"):
        raise ValueError("target must be 'onset' (the default: windows locked to an image onset) or 'on_screen' "
                         "(a model for continuous use: the image on screen at the decoded instant)")
    band = meta.get("evoked_band_hz", [1.0, 30.0])
    if len(band) != 2 or not 0 <= band[0] < band[1]:
        raise ValueError("evoked_band_hz must be [low, high] with 0 <= low < high")
    if not 0 <= meta.get("settle_s", 0.0) <= 600:
        raise ValueError("settle_s must be 0..600 seconds")


def write_contract(model: "onnx.ModelProto", meta: dict, path: str) -> None:
    import onnx

    validate(meta)
    inputs = {i.name: i for i in model.graph.input}
    outputs = {o.name for o in model.graph.output}
    if "meg" not in inputs or "embedding" not in outputs:
        raise ValueError("the encoder needs an input named 'meg' and an output named 'embedding'")
    del model.metadata_props[:]
    entries = {"meg_decoder.contract": CONTRACT_VERSION}
    for k, v in meta.items():
        entries[k] = json.dumps(v) if isinstance(v, list) else str(v)
    for k, v in entries.items():
        p = model.metadata_props.add()
        p.key, p.value = k, v
    onnx.checker.check_model(model)
    onnx.save(model, path)


def read_contract(path) -> dict:
    """The contract of an exported encoder, typed as `write_contract` takes it (its inverse)."""
    import onnx

    meta = {}
    for p in onnx.load(str(path)).metadata_props:
        t = REQUIRED.get(p.key) or OPTIONAL.get(p.key)
        if p.key != "meg_decoder.contract":
            meta[p.key] = json.loads(p.value) if t is list else float(p.value) if t is float else int(p.value) if t is int else p.value
    return meta


def filter_sos(meta: dict, fs: float):
    """The second-order sections the service runs at stream rate `fs`."""
    from scipy import signal

    order = meta.get("filter_order", 4)
    lo, hi = meta.get("highpass_hz"), meta.get("lowpass_hz")
    if lo is not None and hi is not None:
        sos = signal.butter(order, [lo, hi], "bandpass", fs=fs, output="sos")
    elif lo is not None:
        sos = signal.butter(order, lo, "highpass", fs=fs, output="sos")
    elif hi is not None:
        sos = signal.butter(order, hi, "lowpass", fs=fs, output="sos")
    else:
        sos = np.zeros((0, 6))
    for f0 in meta.get("notch_hz", []):
        b, a = signal.iirnotch(f0, meta.get("notch_q", 30.0), fs=fs)
        sos = np.vstack([sos, np.concatenate([b, a])[None, :]])
    fout = meta["sample_rate_hz"]
    if meta.get("resampler", "sinc") == "causal" and fout < fs * 0.999:
        aa = signal.butter(CAUSAL_ANTIALIAS_ORDER, CAUSAL_ANTIALIAS_FRACTION * fout, "lowpass", fs=fs, output="sos")
        sos = np.vstack([sos, aa])
    return sos


def resample_kernel(tau, fin, fout, kind="sinc"):
    """h(tau) of the service's resampler, tau in input samples; and its half-width.
    `kind` is the contract's `resampler`: "sinc", or "causal" (linear interpolation)."""
    if kind == "causal":
        return np.clip(1.0 - np.abs(tau), 0.0, None), 1.0
    ratio = min(fout / fin, 1.0)
    cutoff = 0.5 * CUTOFF * ratio
    hw = HALF_WIDTH_OUT * max(fin / fout, 1.0)
    r = tau / hw
    w = np.where(np.abs(r) < 1, np.i0(KAISER_BETA * np.sqrt(np.clip(1 - r * r, 0, None))) / np.i0(KAISER_BETA), 0.0)
    return 2 * cutoff * np.sinc(2 * cutoff * tau) * w, hw


def resample(x, fin, fout, kind="sinc"):
    """[channels, n] at `fin` -> [channels, k] at `fout` as the service does it: output k at
    input position k * fin / fout, inputs before the first equal to the first (the service
    primes its history at steady state), only outputs whose kernel support has arrived."""
    n = x.shape[1]
    _, hw = resample_kernel(0.0, fin, fout, kind)
    out = []
    k = 0
    while True:
        p = k * fin / fout
        if np.floor(p + hw) > n - 1:
            break
        idx = np.arange(int(np.ceil(p - hw)), int(np.floor(p + hw)) + 1)
        h, _ = resample_kernel(p - idx, fin, fout, kind)
        vals = x[:, np.clip(idx, 0, None)]
        out.append(vals @ h)
        k += 1
    return np.array(out).T if out else np.zeros((x.shape[0], 0))


def preprocess(x, fs: float, meta: dict, zero_phase=None):
    """A continuous recording [channels, n] in SI units at `fs` Hz -> the model-rate signal
    the service windows. `zero_phase` defaults to the contract's `filter_phase`: for
    training data of a `zero-phase` model use forward-backward filtering; for a `causal`
    one, the steady-state-started causal filters the service runs."""
    from scipy import signal

    x = np.asarray(x, dtype=np.float64)
    sos = filter_sos(meta, fs)
    if zero_phase is None:
        zero_phase = meta.get("filter_phase", "causal") == "zero-phase"
    if len(sos):
        if zero_phase:
            x = signal.sosfiltfilt(sos, x, axis=1)
        else:
            zi = signal.sosfilt_zi(sos)[:, None, :] * x[None, :, :1]  # [sections, channels, 2]
            x, _ = signal.sosfilt(sos, x, axis=1, zi=zi)
    return resample(x, fs, meta["sample_rate_hz"], meta.get("resampler", "sinc"))

"""Reference vectors for tests/dsp.rs, computed with scipy (run once; output committed).

Usage: .venv-models/bin/python tools/make_dsp_reference.py
Writes tests/data/dsp/*.npy: inputs (random and MEG-shaped), scipy's sosfilt output for
butter band-pass / high-pass / notch designs, and resample_poly output for the same
Kaiser-windowed sinc kernel meg-decoder uses (src/dsp/resample.rs).
"""
import pathlib
import sys

import numpy as np
from scipy import signal

OUT = pathlib.Path(__file__).resolve().parent.parent / "tests" / "data" / "dsp"
OUT.mkdir(parents=True, exist_ok=True)
rng = np.random.default_rng(20231018)

# The service's resampling kernel, as models/build_demo.py defines it for training (one
# definition in Python, mirrored by src/dsp/resample.rs).
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "models"))
from build_demo import HALF_WIDTH_OUT, kernel  # noqa: E402


def save(name, a):
    np.save(OUT / f"{name}.npy", np.ascontiguousarray(a, dtype=np.float32))


def meg_like(n, fs, channels):
    white = rng.standard_normal((channels, n))
    pink = signal.lfilter([0.049922035, -0.095993537, 0.050612699, -0.004408786], [1, -2.494956002, 2.017265875, -0.522189400], white, axis=1)
    t = np.arange(n) / fs
    return 1e-12 * (pink + 0.3 * white + 0.5 * np.sin(2 * np.pi * 50 * t) + 0.8 * np.sin(2 * np.pi * 10 * t + rng.uniform(0, 6, (channels, 1))))


fs = 1000.0
n = 3000
inputs = {"random": rng.standard_normal((3, n)), "meg": meg_like(n, fs, 3)}
designs = {
    "bandpass": signal.butter(4, [0.1, 40.0], "bandpass", fs=fs, output="sos"),
    "highpass": signal.butter(3, 0.5, "highpass", fs=fs, output="sos"),
    "lowpass": signal.butter(5, 30.0, "lowpass", fs=fs, output="sos"),
    "notch": signal.tf2sos(*signal.iirnotch(50.0, 30.0, fs=fs)),
}
for iname, x in inputs.items():
    x = x.astype(np.float32).astype(np.float64)
    save(f"input_{iname}", x)
    for dname, sos in designs.items():
        save(f"sosfilt_{dname}_{iname}", signal.sosfilt(sos, x, axis=1))
        np.save(OUT / f"sos_{dname}.npy", sos.astype(np.float64))

# Resampling: rational ratios through scipy.signal.resample_poly with our kernel.
for fin, up, down in [(1000.0, 3, 25), (600.0, 1, 5), (1200.0, 1, 10)]:
    fout = fin * up / down
    _, hw = kernel(0.0, fin, fout)
    half = int(np.floor(hw * up))
    m = np.arange(2 * half + 1)
    h_up = kernel((m - half) / up, fin, fout)[0] / up
    for iname, x in inputs.items():
        x = x.astype(np.float32).astype(np.float64)
        y = signal.resample_poly(x, up, down, axis=1, window=h_up, padtype="constant")
        save(f"resample_{int(fin)}_{iname}", y)

# A non-rational ratio (600.614 Hz, a real MEGIN rate) evaluated directly.
fin, fout = 600.614, 120.0
x = inputs["meg"][:, :2400].astype(np.float32).astype(np.float64)
save("input_meg600", x)
k_out = int(np.floor((x.shape[1] - 1 - HALF_WIDTH_OUT * fin / fout) * fout / fin)) + 1
y = np.zeros((x.shape[0], k_out))
nidx = np.arange(x.shape[1])
for k in range(k_out):
    p = k * fin / fout
    w, _ = kernel(p - nidx, fin, fout)
    y[:, k] = x @ w
save("resample_600.614_meg600", y)
print("wrote", len(list(OUT.glob("*.npy"))), "files to", OUT)

"""Builds the progressive-decoding stages of models/demo: encoders on growing windows from
the onset, so the service can give a first guess 250 ms after an image appears and refine
it as more of the response arrives (SIMULATED data).

    .venv-models/bin/python models/build_stages.py [--model models/demo]

Each stage is a ridge model like models/demo's (the paper's linear baseline, lambda chosen
on the validation images), fitted on the very trials build_demo.py simulated (its cache,
models/.cache: run build_demo.py first), with the same preprocessing, scaler, baseline
(-0.5..0 s) and clamp as the full model, on a window that ends earlier:

    stages/s250/encoder.onnx   -0.5 .. +0.25 s  (91 samples at 120 Hz)
    stages/s500/encoder.onnx   -0.5 .. +0.50 s  (121 samples)
    encoder.onnx (the model)   -0.5 .. +1.00 s  (181 samples: the last stage)

The service (src/pipeline/stages.rs) loads `stages/*/encoder.onnx` next to the model and
emits one event-locked decoding per stage as each window completes. Writes the
"Progressive decoding" section of the model's REPORT.md (single-trial and 12-repetition-
averaged retrieval per stage among the 200 held-out images).
"""
import argparse
import pathlib

import numpy as np

import build_demo as bd
from contract import read_contract
from report_sections import write_section

HERE = pathlib.Path(__file__).resolve().parent
STAGES = (("s250", 0.25), ("s500", 0.5))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=str(HERE / "demo"))
    a = ap.parse_args()
    model = pathlib.Path(a.model)
    cached = bd.load_trials(model)
    if cached is None:
        raise SystemExit(f"no cached trials of {model}'s world in {bd.CACHE}: run build_demo.py first")
    meta = read_contract(model / "encoder.onnx")
    center, scale, names = np.array(meta["scaler_center"]), np.array(meta["scaler_scale"]), meta["channel_names"]
    world = bd.World.load(model)
    emb = np.load(model / "gallery" / "embeddings.npy")
    fin = lambda x: bd.finish(np.asarray(x), center, scale)  # noqa: E731
    (xt, lt), (xv, lv), (xs, ls) = (cached[k] for k in ("train", "val", "test"))
    xt, xv, xs = fin(xt), fin(xv), fin(xs)
    vpos = {int(i): k for k, i in enumerate(world.val)}
    val_idx = np.array([vpos[int(l)] for l in lv])
    rows = []
    for name, end_s in STAGES + (("full", bd.T1),):
        win = int(round((end_s - bd.T0) * bd.FS_MODEL)) + 1
        bins = int(round(win / 10))
        f = lambda ep: (ep[:, :, :win] @ bd.binning(win, bins)).reshape(len(ep), -1)  # noqa: E731
        lam, W, b, vacc = bd.fit_on_validation(f(xt), emb[lt], f(xv), val_idx, emb[world.val])
        r = bd.evaluate(lambda x: x @ W + b, f(xs), ls, world, emb)
        rows.append((name, end_s, win, lam, r))
        print(name, end_s, win, lam, r["single"], r["averaged"], flush=True)
        if name == "full":
            break
        dest = model / "stages" / name
        dest.mkdir(parents=True, exist_ok=True)
        m = dict(meta)
        m.update(name=f"{meta['name']}-{name}", window_samples=win,
                 description=f"Progressive stage of {meta['name']}: ridge on the window {bd.T0:+.2f}..{end_s:+.2f} s "
                             "around the onset (SIMULATED data of the demo world); same preprocessing and scaler.",
                 training=f"models/build_stages.py; ridge lambda {lam:g} (chosen on {len(world.val)} validation images); "
                          f"{len(lt)} trials, {bins} time bins")
        bd.export_encoder(dest / "encoder.onnx", W, b, names, emb.shape[1], m, win, bins)
    report(model, rows, len(world.test))


def report(model, rows, n):
    p = lambda x: f"{100 * x:.1f}%"  # noqa: E731
    lines = ["## Progressive decoding (stages)", "",
             "One ridge model per growing window from the onset, each on the same trials, preprocessing and scaler as "
             "the full model (`models/build_stages.py`, `stages/*/encoder.onnx`); the service emits each stage's "
             "decoding as its window completes (the window's end + the resampler's 50 ms look-ahead + compute after "
             f"the onset). Retrieval among the {n} held-out images, SIMULATED data:", "",
             "| stage | window | decoded after the onset (at least) | single top-1 / top-5 | 12-repetition average top-1 / top-5 |",
             "|---|---|---|---|---|"]
    for name, end_s, win, lam, r in rows:
        lines.append(f"| {name} | {bd.T0:+.2f}..{end_s:+.2f} s ({win} samples) | {1e3 * end_s + 50:.0f} ms | "
                     f"{p(r['single'][1])} / {p(r['single'][5])} | {p(r['averaged'][1])} / {p(r['averaged'][5])} |")
    lines += ["", f"Chance: {p(1 / n)} / {p(5 / n)}."]
    print(write_section(model / "REPORT.md", "stages", lines))


if __name__ == "__main__":
    main()

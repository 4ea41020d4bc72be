"""Builds models/demo: a simulated visual-MEG world and the demo decoder trained on it.

    .venv-models/bin/python models/build_demo.py [--seed 7] [--out models/demo]

SIMULATED DATA, honestly labelled: no trained weights of Benchetrit et al. (2023) are
public and THINGS-MEG cannot be downloaded here. The same steps take a lab's own data.

1. Stimuli: 240 procedural images (6 shape categories x colour, size, position,
   orientation), 64x64 PNG, ids img_0000..img_0239.
2. Embedding space "demo-shape-v1" (dim 32): a deterministic feature construction, not a
   network: 14 interpretable features (category one-hot x2, RGB colour, x, y, size,
   cos/sin of 2x orientation), standardised, mapped by a fixed orthonormal 32x14 matrix.
   Category dominates cosine similarity, as it does in DINOv2/CLIP space, so "category
   right, position wrong" can happen.
3. World (models/demo/world): each of the 14 features drives one cortical source with a
   time course set by neuroscience: low-level features (colour, position, size,
   orientation) peak ~100 ms (V1-V4), category ~250 ms (ventral stream), plus an offset
   response ~600 ms; each source projects to the Neuromag 306 sensors through a dipolar
   spatial pattern (positive and negative lobes, occipito-temporal), in tesla (mag) and
   T/m (grad). Noise: 1/f, posterior alpha, 50 Hz line noise, white sensor noise, at the
   same scales as `meg-decoder simulate`.
4. Encoder: the preprocessing of the paper (band-pass 0.1-40 Hz, resample to 120 Hz,
   robust scaling, baseline -0.5..0 s, clamp 20; window -0.5..1.0 s = 181 samples), then
   the paper's *linear baseline*: ridge regression from time-binned sensor data to the
   embedding, exported as ONNX (MatMul, Reshape, MatMul, Add). Not the deep brain module.
5. Generator: ridge regression from embedding to 32x32 RGB pixels, ONNX, clipped to [0, 1].
6. REPORT.md: held-out retrieval accuracy and a time-resolved curve.
"""
import argparse
import json
import pathlib
import time

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from PIL import Image, ImageDraw
from scipy import signal

from contract import CAUSAL_ANTIALIAS_FRACTION, CAUSAL_ANTIALIAS_ORDER, resample_kernel, write_contract

HERE = pathlib.Path(__file__).resolve().parent
FS_IN, FS_MODEL = 1000.0, 120.0
T0, T1 = -0.5, 1.0
WIN = int(round((T1 - T0) * FS_MODEL)) + 1  # 181
BINS = 18
ISI = 1.0
ISI_JITTER = 0.2
CATEGORIES = ["circle", "square", "triangle", "cross", "star", "ring"]
COLOURS = [(230, 60, 50), (60, 170, 80), (50, 100, 230), (240, 200, 40), (170, 70, 200), (240, 140, 40)]
KAISER_BETA, CUTOFF, HALF_WIDTH_OUT = 6.0, 0.9, 6.0  # keep in sync with src/dsp/resample.rs


def draw(cat, colour, size, x, y, theta, px=64):
    img = Image.new("RGB", (px, px), (128, 128, 128))
    d = ImageDraw.Draw(img)
    r = size * px / 2
    cx, cy = x * px, y * px

    def rot(pts):
        c, s = np.cos(theta), np.sin(theta)
        return [(cx + c * a - s * b, cy + s * a + c * b) for a, b in pts]

    if cat == "circle":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
    elif cat == "ring":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
        d.ellipse([cx - r / 2, cy - r / 2, cx + r / 2, cy + r / 2], fill=(128, 128, 128))
    elif cat == "square":
        d.polygon(rot([(-r, -r), (r, -r), (r, r), (-r, r)]), fill=colour)
    elif cat == "triangle":
        d.polygon(rot([(0, -r), (r * 0.87, r / 2), (-r * 0.87, r / 2)]), fill=colour)
    elif cat == "cross":
        w = r / 3
        d.polygon(rot([(-w, -r), (w, -r), (w, -w), (r, -w), (r, w), (w, w), (w, r), (-w, r), (-w, w), (-r, w), (-r, -w), (-w, -w)]), fill=colour)
    elif cat == "star":
        pts = [(np.cos(a) * (r if i % 2 == 0 else r / 2.3), np.sin(a) * (r if i % 2 == 0 else r / 2.3)) for i, a in enumerate(np.linspace(-np.pi / 2, 1.5 * np.pi, 10, endpoint=False))]
        d.polygon(rot(pts), fill=colour)
    return img


def stimuli(rng, n=240):
    rows = []
    for i in range(n):
        rows.append(dict(
            id=f"img_{i:04d}", cat=i % len(CATEGORIES), colour=int(rng.integers(len(COLOURS))),
            size=float(rng.uniform(0.35, 0.75)), x=float(rng.uniform(0.3, 0.7)), y=float(rng.uniform(0.3, 0.7)),
            theta=float(rng.uniform(0, np.pi)),
        ))
    return rows


def features(rows):
    f = []
    for s in rows:
        onehot = np.zeros(len(CATEGORIES))
        onehot[s["cat"]] = 1.0
        rgb = np.array(COLOURS[s["colour"]]) / 255.0
        f.append(np.concatenate([onehot, rgb, [s["x"], s["y"], s["size"], np.cos(2 * s["theta"]), np.sin(2 * s["theta"])]]))
    f = np.array(f)
    f = (f - f.mean(0)) / f.std(0)
    f[:, :6] *= 2.0  # category weighs most in the embedding's similarity
    return f


def load_layout():
    rows = [l.split("\t") for l in (HERE / "layouts" / "neuromag306.tsv").read_text().splitlines()[1:]]
    names = [r[0] for r in rows]
    kind = np.array([r[1] for r in rows])
    xy = np.array([[float(r[3]), float(r[4])] for r in rows])
    return names, kind, xy


def noise_scale(kind):
    return np.where(kind == "mag", 2.0e-13, 4.0e-12)


def world_patterns(rng, kind, xy, nfeat):
    """Dipolar spatial patterns centred over occipito-temporal sensors, SI units."""
    ymin, ymax = xy[:, 1].min(), xy[:, 1].max()
    spread = xy.std(0).mean()
    pats = []
    for j in range(nfeat):
        c = np.array([rng.uniform(-0.8, 0.8) * xy[:, 0].std(), ymin + rng.uniform(0.0, 0.45) * (ymax - ymin)])
        off = rng.normal(size=2)
        off = off / np.linalg.norm(off) * 0.35 * spread
        d1 = np.exp(-np.sum((xy - (c + off)) ** 2, 1) / (2 * (0.25 * spread) ** 2))
        d2 = np.exp(-np.sum((xy - (c - off)) ** 2, 1) / (2 * (0.25 * spread) ** 2))
        p = (d1 - d2) * noise_scale(kind) * 0.5
        pats.append(p)
    return np.array(pats, dtype=np.float64)


def world_kernels(nfeat, k_len=800, fs=1000.0):
    t = np.arange(k_len) / fs

    def bump(peak, width):
        return np.exp(-0.5 * ((t - peak) / width) ** 2)

    ks = []
    for j in range(nfeat):
        if j < 6:   # category: ventral stream, ~250 ms, broad, with an offset response
            k = bump(0.25 + 0.01 * j, 0.06) + 0.3 * bump(0.6, 0.05)
        else:       # low-level features: early visual cortex, ~100 ms
            k = bump(0.10 + 0.005 * (j - 6), 0.025) - 0.4 * bump(0.17, 0.03) + 0.3 * bump(0.6, 0.05)
        ks.append(k)
    return np.array(ks)


# The service's resampler kernel, from the contract's reference preprocessing.
kernel = resample_kernel


def resample_like_service(x):
    """1000 -> 120 Hz exactly as src/dsp/resample.rs (verified in tests/dsp.rs)."""
    up, down = 3, 25
    _, hw = kernel(0.0, FS_IN, FS_MODEL)
    half = int(np.floor(hw * up))
    h_up = kernel((np.arange(2 * half + 1) - half) / up, FS_IN, FS_MODEL)[0] / up
    return signal.resample_poly(x, up, down, axis=-1, window=h_up, padtype="constant")


def simulate_block(rng, order, feats, pats, kers, kind, xy, gain):
    """Continuous 1000 Hz recording, one stimulus every ISI +- ISI_JITTER seconds (as in
    THINGS-MEG), so onsets fall at every phase of the 120 Hz grid, as they do live."""
    n = int((len(order) + 3) * (ISI + ISI_JITTER) * FS_IN)
    c = len(kind)
    white = rng.standard_normal((c, n))
    pink = signal.lfilter([0.049922035, -0.095993537, 0.050612699, -0.004408786], [1, -2.494956002, 2.017265875, -0.522189400], rng.standard_normal((c, n)), axis=1)
    t = np.arange(n) / FS_IN
    back = 1 - (xy[:, 1] - xy[:, 1].min()) / (xy[:, 1].max() - xy[:, 1].min())
    env = np.clip(1 + 0.3 * np.cumsum(rng.standard_normal(n)) / np.sqrt(FS_IN * 10), 0.2, 2.0)
    alpha = env * np.sin(2 * np.pi * 10 * t)
    line = np.sin(2 * np.pi * 50 * t) + 0.3 * np.sin(2 * np.pi * 150 * t)
    scale = noise_scale(kind)[:, None]
    x = scale * (3.0 * pink + 0.3 * white) + (1.5 * back ** 2)[:, None] * scale * alpha + scale * rng.uniform(0.2, 1.0, (c, 1)) * line
    k_len = kers.shape[1]
    onsets = []
    o = int(ISI * FS_IN)  # first onset after >= 1.2 s, so shifted epochs stay inside
    for i, s in enumerate(order):
        o += int(round((ISI + rng.uniform(-ISI_JITTER, ISI_JITTER)) * FS_IN))
        drive = feats[s][:, None] * kers  # [F, K]
        x[:, o:o + k_len] += gain * pats.T @ drive
        onsets.append(o)
    return x, onsets


def interpolate_like_service(x):
    """1000 -> 120 Hz by linear interpolation at output positions k * fin / fout: the
    service's causal (low-latency) resampler, `contract.resample(..., "causal")` vectorised."""
    n = x.shape[-1]
    k = np.arange(int(np.floor((n - 2) * FS_MODEL / FS_IN)) + 1)
    p = k * FS_IN / FS_MODEL
    i0 = np.floor(p).astype(int)
    frac = p - i0
    return x[..., i0] * (1 - frac) + x[..., i0 + 1] * frac


def preprocess(x, sos, resampler="sinc"):
    x = signal.sosfilt(sos, x, axis=1)
    return interpolate_like_service(x) if resampler == "causal" else resample_like_service(x)


def epochs(y, onsets, shift_s=0.0):
    out = []
    for o in onsets:
        k = int(round((o / FS_IN + T0 + shift_s) * FS_MODEL))
        out.append(y[:, k:k + WIN])
    return np.array(out)


def finish(ep, center, scale, clamp=20.0):
    ep = (ep - center[None, :, None]) / scale[None, :, None]
    nb = int(round(-T0 * FS_MODEL))
    ep = ep - ep[:, :, :nb].mean(2, keepdims=True)
    return np.clip(ep, -clamp, clamp)


def binning():
    b = np.zeros((WIN, BINS), dtype=np.float32)
    edges = np.linspace(0, WIN, BINS + 1).astype(int)
    for j in range(BINS):
        b[edges[j]:edges[j + 1], j] = 1.0 / (edges[j + 1] - edges[j])
    return b


def topk_acc(pred, true_idx, bank, ks=(1, 5)):
    pn = pred / np.linalg.norm(pred, axis=1, keepdims=True)
    bn = bank / np.linalg.norm(bank, axis=1, keepdims=True)
    sim = pn @ bn.T
    rank = (sim > sim[np.arange(len(pred)), true_idx][:, None]).sum(1)
    return {k: float((rank < k).mean()) for k in ks}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", default=str(HERE / "demo"))
    ap.add_argument("--reps-train", type=int, default=8)
    ap.add_argument("--reps-test", type=int, default=4)
    ap.add_argument("--gain", type=float, default=0.4)
    ap.add_argument("--resampler", choices=["sinc", "causal"], default="sinc",
                    help="the contract's resampler: 'causal' is the low-latency profile (causal anti-alias low-pass + linear interpolation)")
    ap.add_argument("--share-with", help="a model dir built with the same seed: its identical gallery, world and generator are linked, not copied")
    args = ap.parse_args()
    started = time.time()
    rng = np.random.default_rng(args.seed)
    out = pathlib.Path(args.out)
    for name in ("gallery", "world", "generator.onnx"):
        if (out / name).is_symlink():  # a previous --share-with: never write through it
            (out / name).unlink()
    (out / "gallery" / "images").mkdir(parents=True, exist_ok=True)
    (out / "world").mkdir(parents=True, exist_ok=True)

    rows = stimuli(rng)
    f = features(rows)
    q, _ = np.linalg.qr(rng.standard_normal((32, f.shape[1])))
    emb = (f @ q.T).astype(np.float32)
    ids = [r["id"] for r in rows]
    small = []
    for r in rows:
        img = draw(CATEGORIES[r["cat"]], COLOURS[r["colour"]], r["size"], r["x"], r["y"], r["theta"])
        img.save(out / "gallery" / "images" / f"{r['id']}.png")
        small.append(np.asarray(img.resize((32, 32), Image.BILINEAR), dtype=np.float32).transpose(2, 0, 1) / 255.0)
    small = np.array(small)
    (out / "gallery" / "ids.txt").write_text("\n".join(ids) + "\n")
    np.save(out / "gallery" / "embeddings.npy", emb)
    (out / "gallery" / "README.md").write_text(
        "Demo gallery: 240 procedural images (simulated world, see models/build_demo.py).\n"
        "`embeddings.npy` row i is the demo-shape-v1 embedding of the image on line i of `ids.txt`.\n")

    names, kind, xy = load_layout()
    pats = world_patterns(rng, kind, xy, f.shape[1])
    kers = world_kernels(f.shape[1])
    np.save(out / "world" / "patterns.npy", (args.gain * pats).astype(np.float32))
    np.save(out / "world" / "kernels.npy", kers.astype(np.float32))
    np.save(out / "world" / "features.npy", f.astype(np.float32))
    (out / "world" / "world.json").write_text(json.dumps({
        "layout": "neuromag306", "kernel_rate_hz": 1000.0, "isi_s": ISI, "isi_jitter_s": ISI_JITTER, "gain": args.gain,
        "description": "Simulated visual responses: 14 image features (category, colour, position, size, orientation) "
                       "drive cortical sources with feature-specific latencies, projected to Neuromag 306 sensors. "
                       "Built by models/build_demo.py; SIMULATED, not recorded data.",
    }, indent=2))

    # Trials: held-out images never appear in training.
    perm = rng.permutation(len(rows))
    test_imgs, train_imgs = perm[:48], perm[48:]
    sos = signal.butter(4, [0.1, 40.0], "bandpass", fs=FS_IN, output="sos")
    if args.resampler == "causal":
        # The same anti-alias low-pass the service adds for this profile (contract.filter_sos).
        aa = signal.butter(CAUSAL_ANTIALIAS_ORDER, CAUSAL_ANTIALIAS_FRACTION * FS_MODEL, "lowpass", fs=FS_IN, output="sos")
        sos = np.vstack([sos, aa])

    def run(imgs, reps, shifts=(0.0,)):
        order = np.concatenate([rng.permutation(imgs) for _ in range(reps)])
        eps = {s: [] for s in shifts}
        labels = []
        for b in range(0, len(order), 120):
            block = order[b:b + 120]
            x, onsets = simulate_block(rng, block, f, pats, kers, kind, xy, args.gain)
            y = preprocess(x, sos, args.resampler)
            for s in shifts:
                eps[s].append(epochs(y, onsets, s))
            labels.append(block)
        return {s: np.concatenate(v) for s, v in eps.items()}, np.concatenate(labels)

    train_eps, train_lab = run(train_imgs, args.reps_train)
    shifts = tuple(np.round(np.arange(-0.5, 0.76, 0.125), 3))
    test_eps, test_lab = run(test_imgs, args.reps_test, shifts)
    raw = train_eps[0.0]
    center = np.median(raw, axis=(0, 2))
    q75, q25 = np.percentile(raw.transpose(1, 0, 2).reshape(raw.shape[1], -1), [75, 25], axis=1)
    scale = np.where(q75 - q25 > 0, q75 - q25, 1.0)
    B = binning()
    X = finish(raw, center, scale) @ B
    X = X.reshape(len(X), -1)
    Y = emb[train_lab]
    lam = 1e3
    W = np.linalg.solve(X.T @ X + lam * np.eye(X.shape[1]), X.T @ (Y - Y.mean(0)))
    bias = Y.mean(0) - X.mean(0) @ W

    def predict(ep):
        Z = (finish(ep, center, scale) @ B).reshape(len(ep), -1)
        return Z @ W + bias

    bank = emb[test_imgs]
    lab_idx = np.array([np.where(test_imgs == l)[0][0] for l in test_lab])
    curve = {float(s): topk_acc(predict(test_eps[s]), lab_idx, bank) for s in shifts}
    acc = curve[0.0]

    # Encoder ONNX: meg[B, C, 181] -> MatMul(binning) -> Reshape -> MatMul(W) -> Add(bias).
    C = len(names)
    nodes = [
        helper.make_node("MatMul", ["meg", "binning"], ["binned"]),
        helper.make_node("Reshape", ["binned", "flat_shape"], ["flat"]),
        helper.make_node("MatMul", ["flat", "weights"], ["proj"]),
        helper.make_node("Add", ["proj", "bias"], ["embedding"]),
    ]
    inits = [
        numpy_helper.from_array(B.astype(np.float32), "binning"),
        numpy_helper.from_array(np.array([-1, C * BINS], dtype=np.int64), "flat_shape"),
        numpy_helper.from_array(W.astype(np.float32), "weights"),
        numpy_helper.from_array(bias.astype(np.float32), "bias"),
    ]
    graph = helper.make_graph(nodes, "demo_linear_encoder",
                              [helper.make_tensor_value_info("meg", TensorProto.FLOAT, ["batch", C, WIN])],
                              [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", emb.shape[1]])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="meg-decoder models/build_demo.py")
    model.ir_version = 9
    lowlat = args.resampler == "causal"
    meta = {
        "name": "demo-linear-lowlat-v1" if lowlat else "demo-linear-v1",
        "description": "Ridge-regression (linear baseline) encoder trained on SIMULATED MEG of the demo world"
                       + (", low-latency preprocessing (causal anti-alias + linear interpolation)." if lowlat else "."),
        "sample_rate_hz": FS_MODEL, "window_samples": WIN, "window_start_s": T0,
        "channel_names": names, "highpass_hz": 0.1, "lowpass_hz": 40.0, "filter_order": 4,
        "notch_hz": [], "notch_q": 30.0, "baseline_s": [T0, 0.0],
        "scaler": "fixed", "scaler_center": [float(v) for v in center], "scaler_scale": [float(v) for v in scale],
        "clamp": 20.0, "embedding_space": "demo-shape-v1", "embedding_dim": int(emb.shape[1]), "subjects": 1,
        "training": f"models/build_demo.py --seed {args.seed} --resampler {args.resampler}; ridge lambda {lam}; {len(X)} trials",
    }
    if lowlat:
        meta["resampler"] = "causal"
    write_contract(model, meta, str(out / "encoder.onnx"))

    # Generator: ridge from embedding to 32x32 RGB.
    P = small.reshape(len(small), -1)
    E = emb.astype(np.float64)
    Wg = np.linalg.solve(E.T @ E + 1.0 * np.eye(E.shape[1]), E.T @ (P - P.mean(0)))
    bg = P.mean(0) - E.mean(0) @ Wg
    gnodes = [
        helper.make_node("MatMul", ["embedding", "gw"], ["g1"]),
        helper.make_node("Add", ["g1", "gb"], ["g2"]),
        helper.make_node("Reshape", ["g2", "img_shape"], ["g3"]),
        helper.make_node("Clip", ["g3", "lo", "hi"], ["image"]),
    ]
    ginits = [
        numpy_helper.from_array(Wg.astype(np.float32), "gw"), numpy_helper.from_array(bg.astype(np.float32), "gb"),
        numpy_helper.from_array(np.array([-1, 3, 32, 32], dtype=np.int64), "img_shape"),
        numpy_helper.from_array(np.array(0.0, dtype=np.float32), "lo"), numpy_helper.from_array(np.array(1.0, dtype=np.float32), "hi"),
    ]
    ggraph = helper.make_graph(gnodes, "demo_linear_generator",
                               [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", emb.shape[1]])],
                               [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, 32, 32])], ginits)
    gmodel = helper.make_model(ggraph, opset_imports=[helper.make_opsetid("", 17)], producer_name="meg-decoder models/build_demo.py")
    gmodel.ir_version = 9
    onnx.checker.check_model(gmodel)
    onnx.save(gmodel, str(out / "generator.onnx"))

    # Reference output for CI: a fixed input through the encoder (checked in Rust).
    ref_in = np.random.default_rng(0).standard_normal((1, C, WIN)).astype(np.float32)
    import onnxruntime as ort
    sess = ort.InferenceSession(str(out / "encoder.onnx"))
    ref_out = sess.run(None, {"meg": ref_in})[0]
    np.save(out / "reference_input.npy", ref_in)
    np.save(out / "reference_output.npy", ref_out.astype(np.float32))
    t_ort = []
    for _ in range(200):
        t = time.perf_counter()
        sess.run(None, {"meg": ref_in})
        t_ort.append(time.perf_counter() - t)

    elapsed = time.time() - started
    chance5 = 5 / len(test_imgs)
    lines = [
        "# Demo model report (SIMULATED data)", "",
        "Everything here is measured on simulated MEG from the demo world (models/build_demo.py), not on recordings.", "",
        f"- Build: `.venv-models/bin/python models/build_demo.py --seed {args.seed} --resampler {args.resampler}` ({elapsed:.0f} s on this machine, 2 cores)",
        "- Preprocessing: band-pass 0.1-40 Hz (causal Butterworth, order 4), then "
        + ("the low-latency profile: causal Butterworth anti-alias low-pass (order 8, 48 Hz) and linear interpolation to 120 Hz (1 ms look-ahead)"
           if lowlat else "Kaiser-sinc resampling to 120 Hz (zero phase, 50 ms look-ahead)"),
        f"- Encoder: ridge regression (the paper's linear baseline) on {len(X)} training trials of {len(train_imgs)} images;"
        f" {C} channels x {WIN} samples (120 Hz, -0.5..1.0 s) binned to {BINS} bins; lambda {lam}",
        f"- Held out: {len(test_imgs)} images never seen in training, {len(test_lab)} trials",
        f"- Top-1 accuracy among held-out images: **{acc[1]:.1%}** (chance {1/len(test_imgs):.1%})",
        f"- Top-5 accuracy among held-out images: **{acc[5]:.1%}** (chance {chance5:.1%})",
        f"- encoder.onnx: {(out / 'encoder.onnx').stat().st_size / 1e6:.2f} MB; generator.onnx: {(out / 'generator.onnx').stat().st_size / 1e6:.2f} MB",
        f"- ONNX Runtime (Python, 1 window): median {np.median(t_ort) * 1e3:.3f} ms", "",
        "## Time-resolved decoding", "",
        "Window shifted relative to the image onset (0 = the trained -0.5..1.0 s window).", "",
        "| shift (s) | top-1 | top-5 |", "|---|---|---|",
    ] + [f"| {s:+.3f} | {v[1]:.1%} | {v[5]:.1%} |" for s, v in curve.items()]
    if args.share_with:
        theirs = (pathlib.Path(args.share_with) / "REPORT.md").read_text().splitlines()
        lines += ["", f"## Next to {args.share_with} (same seed: the same simulated trials, its own preprocessing)", ""]
        lines += [l for l in theirs if l.startswith(("- Preprocessing", "- Top-"))]
    (out / "REPORT.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    if args.share_with:
        share(out, pathlib.Path(args.share_with))


def share(out, other):
    """Replaces out's gallery/, world/ and generator.onnx by relative links to `other`'s
    when they are byte-identical (same seed: same world), so the repository keeps one copy."""
    import filecmp
    import os
    import shutil

    for name in ("gallery", "world", "generator.onnx"):
        mine, theirs = out / name, other / name
        if mine.is_dir():
            cmp = filecmp.dircmp(mine, theirs)
            same = not (cmp.left_only or cmp.right_only or cmp.diff_files or cmp.funny_files) and all(
                filecmp.cmp(mine / d / f, theirs / d / f, shallow=False) for d in cmp.common_dirs
                for f in os.listdir(mine / d))
            same = same and all(filecmp.cmp(mine / f, theirs / f, shallow=False) for f in cmp.common_files)
        else:
            same = filecmp.cmp(mine, theirs, shallow=False)
        if not same:
            print(f"{name} differs from {theirs}: kept as a copy")
            continue
        shutil.rmtree(mine) if mine.is_dir() else mine.unlink()
        mine.symlink_to(os.path.relpath(theirs, out))
        print(f"{name}: linked to {theirs}")


if __name__ == "__main__":
    main()

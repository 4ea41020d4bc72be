"""Faster variants of a model directory's encoder at equal answers (int8; fp16 and static
QDQ int8 for comparison), checked against the fp32 original on real-shaped windows.

    python models/quantize.py SRC OUT                 # int8, the recipe below
    python models/quantize.py SRC OUT --method qdq|fp16|fp32|dynamic-conv [--exclude ...]
    python models/quantize.py SRC --sweep             # the trade-off table; writes nothing

OUT gets encoder.onnx (the source's whole contract, `name` + "-int8", the recipe in
`description` and `training`), links to the source's gallery/generator/world, quantize.json
(the accuracy below) and an accuracy fixture: check_input.npy (windows, float32
[n, channels, time]), check_output_fp32.npy (the source encoder's embeddings),
check_output.npy (this variant's, on the machine that built it), and check_subject.npy
(subject layer) or check_labels.npy (the shown image's gallery row, demo world).

Needs numpy, scipy, onnx, onnxruntime; pillow (models/build_demo.py's simulator); mne to
read the real CTF recording (../shared/data/real-meg; without it the `real` windows are
left out).

The int8 recipe (chosen by measurement: models/README.md, "Faster encoders"):
  1. ORT's quant_pre_process: shape inference and constant folding (the fp16 initializers
     and their Casts, the spatial attention's softmax, BatchNorm into Conv).
  2. Every 1-D convolution becomes a MatMul over an im2col of its input (Gather of the
     padded time axis), channels last; ORT's transpose optimiser removes the Transposes
     between layers at load.
  3. quantize_dynamic on those MatMuls: per-channel int8 weights, uint8 activations whose
     range is taken from the data at run time (no calibration set, one rounding per layer,
     nothing clipped). The spatial attention, the 1x1 conv and subject layer before the
     first temporal convolution, and the temporal aggregation and output head stay fp32
     (`--exclude attention,head`). ORT fuses each into DynamicQuantizeMatMul (int8 GEMM,
     VNNI/AMX where the CPU has them).
  4. The graph is wrapped in a Scan over the batch, so each window is quantised on its
     own: a window's embedding never depends on the windows batched with it.
  5. fp32 weights that fp16 holds exactly are stored as fp16 + Cast (as build_paper.py does).

Windows ("real-shaped"): what the service feeds the encoder, built with the contract's own
chain (`contract.preprocess` -> scaler -> baseline -> clamp) from
  * sim:  a continuous stream at 600 Hz: spatially correlated 1/f noise whose spatial
          covariance is the real CTF recording's (ctf272 models) or independent per
          channel, posterior alpha, line noise, white sensor noise (src/simulate/noise.rs's
          recipe) and evoked responses (dipolar patterns, models/build_demo.py's kernels)
          every 1 +- 0.2 s; windows at the onsets;
  * real: the real CTF 275 recording (0.5 s at 480 Hz, MNE's test file), mirror-looped to
          a continuous stream; windows at random instants (ctf272 models only);
  * world: for a model dir with a world/ (the demo world): held-out trials of the world's
          own simulator (models/build_demo.py) and split (models/train_brain_module.py),
          with the image each shows, for top-k retrieval.
The scaler is the contract's (`fixed`), or fitted on the first seconds after the filters'
settling as the service does (`fit:<s>`).
"""
import argparse
import json
import pathlib
import shutil
import sys
import tempfile
import time

import numpy as np
import onnx

from contract import preprocess

HERE = pathlib.Path(__file__).resolve().parent
REAL_CTF = HERE.parent.parent / "shared" / "data" / "real-meg" / "ctf275_comp_raw.fif"
FS_SIM = 600.0

# --------------------------------------------------------------------------- contract


def read_meta(path):
    m = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in m.metadata_props}


def typed(meta):
    out = {}
    for k, v in meta.items():
        try:
            out[k] = json.loads(v)
        except (json.JSONDecodeError, TypeError):
            out[k] = v
    for k in ("name", "description", "training", "scaler", "embedding_space", "filter_phase"):
        if k in meta:
            out[k] = meta[k]
    return out


def layout_for(names):
    for f in sorted((HERE / "layouts").glob("*.tsv")):
        rows = [l.split("\t") for l in f.read_text().splitlines()[1:]]
        by = {r[0]: r for r in rows}
        if all(n in by for n in names):
            rs = [by[n] for n in names]
            return f.stem, np.array([r[1] for r in rs]), np.array([[float(r[3]), float(r[4])] for r in rs])
    raise SystemExit("no layout in models/layouts has the model's channels")


def noise_scale(kind):
    # src/simulate/layout.rs
    return np.select([kind == "mag", kind == "grad"], [2.0e-13, 4.0e-12], 3.0e-13)


# --------------------------------------------------------------------------- windows


def real_ctf(names, xy):
    """The real CTF recording, channels in the model's order, [C, n] in T at 480 Hz; a
    channel the recording lacks is the mean of its 4 nearest neighbours."""
    import mne

    raw = mne.io.read_raw_fif(str(REAL_CTF), preload=True, verbose="error")
    picks = mne.pick_types(raw.info, meg=True, ref_meg=False)
    data = raw.get_data(picks=picks)
    have = {raw.ch_names[i].split("-")[0]: j for j, i in enumerate(picks)}
    x = np.zeros((len(names), data.shape[1]))
    missing = []
    for c, n in enumerate(names):
        if n in have:
            x[c] = data[have[n]]
        else:
            missing.append(c)
    for c in missing:
        d = np.linalg.norm(xy - xy[c], axis=1)
        d[missing] = np.inf
        x[c] = x[np.argsort(d)[:4]].mean(0)
    return x, raw.info["sfreq"]


def finish(y, starts, meta, center, scale):
    """Model-rate signal [C, k] -> windows at model-rate indices `starts`, as the service
    assembles them (scaler, baseline, clamp)."""
    t = int(meta["window_samples"])
    fsm, ws = float(meta["sample_rate_hz"]), float(meta["window_start_s"])
    b0, b1 = [min(max(int(round((b - ws) * fsm)), 0), t) for b in meta["baseline_s"]]
    w = np.stack([y[:, s:s + t] for s in starts])
    if center is not None:
        w = (w - center[None, :, None]) / scale[None, :, None]
    if b1 > b0:
        w = w - w[:, :, b0:b1].mean(2, keepdims=True)
    if meta.get("clamp") is not None:
        w = np.clip(w, -float(meta["clamp"]), float(meta["clamp"]))
    return w.astype(np.float32)


def scaler_for(y, meta, fs_model, skip_s):
    s = meta["scaler"]
    if s == "fixed":
        return np.array(meta["scaler_center"]), np.array(meta["scaler_scale"])
    if s == "none":
        return None, None
    a = int(skip_s * fs_model)
    seg = y[:, a:a + int(np.ceil(float(s[4:]) * fs_model))]
    q25, med, q75 = np.percentile(seg, [25, 50, 75], axis=1)
    iqr = q75 - q25
    return med, np.where(iqr > 0, iqr, 1.0)


def sim_windows(meta, n, seed, real=None):
    """`n` windows of a simulated stream (see the module doc)."""
    from scipy import signal

    import build_demo as bd

    rng = np.random.default_rng(seed)
    names = meta["channel_names"]
    _, kind, xy = layout_for(names)
    c, fs = len(names), FS_SIM
    settle, fit = 4.0, float(meta["scaler"][4:]) if meta["scaler"].startswith("fit:") else 0.0
    first = settle + fit + 1.0
    n_s = int((first + n * 1.2 + 2.0) * fs)
    scale = noise_scale(kind)[:, None]
    pink_b, pink_a = [0.049922035, -0.095993537, 0.050612699, -0.004408786], [1, -2.494956002, 2.017265875, -0.522189400]
    if real is not None:
        # Background with the real recording's spatial covariance, 1/f in time.
        r = real - real.mean(1, keepdims=True)
        u, s, _ = np.linalg.svd(r, full_matrices=False)
        mix = u * s / np.sqrt(r.shape[1])  # [C, k]: mix @ z has r's covariance for unit z
        z = signal.lfilter(pink_b, pink_a, rng.standard_normal((mix.shape[1], n_s)), axis=1)
        z /= z[:, int(fs):].std(1, keepdims=True)
        x = mix @ z
        x += 0.3 * real.std(1, keepdims=True) * rng.standard_normal((c, n_s))
        level = real.std(1, keepdims=True)
    else:
        x = scale * (3.0 * signal.lfilter(pink_b, pink_a, rng.standard_normal((c, n_s)), axis=1) + 0.3 * rng.standard_normal((c, n_s)))
        level = scale
    t = np.arange(n_s) / fs
    back = 1 - (xy[:, 1] - xy[:, 1].min()) / (xy[:, 1].max() - xy[:, 1].min())
    env = np.clip(1 + 0.3 * np.cumsum(rng.standard_normal(n_s)) / np.sqrt(fs * 10), 0.2, 2.0)
    x += (1.5 * back ** 2)[:, None] * level * env * np.sin(2 * np.pi * 10 * t)
    x += level * rng.uniform(0.2, 1.0, (c, 1)) * (np.sin(2 * np.pi * 60 * t) + 0.3 * np.sin(2 * np.pi * 180 * t))
    pats = bd.world_patterns(rng, kind, xy, 14) / noise_scale(kind)[None, :] * level[:, 0][None, :] * 0.4
    kers = bd.world_kernels(14, k_len=int(0.8 * fs), fs=fs)
    onsets, o = [], int(first * fs)
    for _ in range(n):
        o += int(round((1.0 + rng.uniform(-0.2, 0.2)) * fs))
        f = rng.standard_normal(14)
        x[:, o:o + kers.shape[1]] += pats.T @ (f[:, None] * kers)
        onsets.append(o)
    y = preprocess(x, fs, meta)
    fsm = float(meta["sample_rate_hz"])
    center, sc = scaler_for(y, meta, fsm, settle)
    starts = [int(round((o / fs + float(meta["window_start_s"])) * fsm)) for o in onsets]
    return finish(y, starts, meta, center, sc)


def real_windows(meta, n, seed, real, fs_real):
    """`n` windows of the real recording, mirror-looped (x, reversed x, x, ...) so the loop
    has no jumps; at random instants after the settling and the scaler fit."""
    rng = np.random.default_rng(seed)
    settle, fit = 4.0, float(meta["scaler"][4:]) if meta["scaler"].startswith("fit:") else 0.0
    seconds = settle + fit + 2.0 + 0.2 * n + 2.0
    period = np.concatenate([real, real[:, ::-1]], 1)
    x = np.tile(period, (1, int(np.ceil(seconds * fs_real / period.shape[1]))))
    y = preprocess(x, fs_real, meta)
    fsm = float(meta["sample_rate_hz"])
    center, sc = scaler_for(y, meta, fsm, settle)
    lo, hi = int((settle + fit + 1.0) * fsm), y.shape[1] - int(meta["window_samples"])
    starts = np.sort(rng.choice(np.arange(lo, hi), n, replace=False))
    return finish(y, starts, meta, center, sc)


def world_trials(model_dir, meta, reps, seed):
    """Held-out trials of the demo world (models/build_demo.py's World and its test split):
    windows, the shown image's gallery row, and the held-out images' gallery rows."""
    import build_demo as bd

    world = bd.World.load(model_dir)
    center, scale = np.array(meta["scaler_center"]), np.array(meta["scaler_scale"])
    rng = np.random.default_rng(seed)
    eps, order = bd.trials(rng, world, world.test, reps)
    return bd.finish(eps["sinc"][0.0], center, scale), order, world.test


# --------------------------------------------------------------------------- running


def session(path, threads=1, level="layout"):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL, "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED, "layout": ort.GraphOptimizationLevel.ORT_ENABLE_LAYOUT,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}[level]
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def feeds(sess, x, subject=None):
    d = {"meg": x}
    if "subject" in [i.name for i in sess.get_inputs()]:
        d["subject"] = (np.zeros(len(x), np.int64) if subject is None else subject[:len(x)].astype(np.int64))
    return d


def run(sess, x, subject=None, batch=16):
    out = []
    for i in range(0, len(x), batch):
        out.append(sess.run(["embedding"], feeds(sess, x[i:i + batch], None if subject is None else subject[i:i + batch]))[0])
    return np.concatenate(out)


def cosine(a, b):
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def topk(pred, bank, k=5):
    pn = pred / np.linalg.norm(pred, axis=1, keepdims=True)
    bn = bank / np.linalg.norm(bank, axis=1, keepdims=True)
    return np.argsort(-(pn @ bn.T), axis=1, kind="stable")[:, :k]


def rank_of(pred, bank, truth):
    """The true image's rank among the bank by cosine (0 = first), ties in its favour, as
    models/build_demo.py's topk_acc counts it."""
    pn = pred / np.linalg.norm(pred, axis=1, keepdims=True)
    bn = bank / np.linalg.norm(bank, axis=1, keepdims=True)
    sim = pn @ bn.T
    return (sim > sim[np.arange(len(pred)), truth][:, None]).sum(1)


def time_ms(sess, x, subject=None, runs=30, warm=3):
    f = feeds(sess, x[:1], subject)
    for _ in range(warm):
        sess.run(["embedding"], f)
    ts = []
    for _ in range(runs):
        t = time.perf_counter()
        sess.run(["embedding"], f)
        ts.append(time.perf_counter() - t)
    return 1e3 * float(np.median(ts))


# --------------------------------------------------------------------------- variants


class Reader:
    """Calibration windows for quantize_static."""

    def __init__(self, x, subject, inputs, batch=8):
        self.items = []
        for i in range(0, len(x), batch):
            d = {"meg": x[i:i + batch]}
            if "subject" in inputs:
                d["subject"] = subject[i:i + batch].astype(np.int64)
            self.items.append(d)
        self.it = iter(self.items)

    def get_next(self):
        return next(self.it, None)

    def rewind(self):
        self.it = iter(self.items)


def prepared(src, tmp):
    """ORT's quantisation pre-processing: shape inference and constant folding (basic
    graph optimisations only, which are hardware-independent)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    out = pathlib.Path(tmp) / "prep.onnx"
    quant_pre_process(str(src), str(out), skip_symbolic_shape=True)
    m = onnx.load(str(out))
    for i, n in enumerate(m.graph.node):  # nodes_to_exclude needs names
        n.name = n.name or f"{n.op_type}_{i}"
    onnx.save(m, str(out))
    return out


def convs_to_matmuls(model):
    """Rewrites every 1-D Conv (group 1, stride 1, 'same' padding) as Transpose -> Pad ->
    Gather (im2col: k shifted copies of the time axis) -> Reshape -> MatMul(weights
    [k*Cin, Cout]) -> Add(bias) -> Transpose:
    the same function, as a MatMul whose weights are its second input, so dynamic
    quantisation gives it MatMulIntegerToFloat (one quantisation point per layer, at the
    range of each window, and no calibration). ORT's transpose optimiser cancels the
    Transposes between consecutive layers."""
    from onnx import helper, numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    t_len = next(i for i in model.graph.input if i.name == "meg").type.tensor_type.shape.dim[2].dim_value
    new_nodes, new_inits = [], []
    for n in model.graph.node:
        at = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        w = inits.get(n.input[1]) if n.op_type == "Conv" and len(n.input) > 1 else None
        if w is None or len(w.dims) != 3 or at.get("group", 1) != 1 or any(v != 1 for v in at.get("strides", [1])):
            new_nodes.append(n)
            continue
        W = numpy_helper.to_array(w).astype(np.float32)  # [Cout, Cin, k]
        cout, cin, k = W.shape
        d = at.get("dilations", [1])[0]
        pads = at.get("pads", [0, 0])
        if pads[0] != pads[1] or pads[0] != d * (k - 1) // 2:
            new_nodes.append(n)
            continue
        p, base = pads[0], n.name or n.output[0]
        xt = base + "/xt"
        new_nodes.append(helper.make_node("Transpose", [n.input[0]], [xt], perm=[0, 2, 1], name=base + "/in_t"))
        if k > 1:
            # im2col in one copy: cat[b, t, j*Cin + c] = pad(x)[b, t + j*d, c], a Gather of the
            # padded time axis with indices [T, k], reshaped to [B, T, k*Cin]
            pad_c = base + "/pads"
            new_inits.append(numpy_helper.from_array(np.array([0, p, 0, 0, p, 0], np.int64), pad_c))
            xp, idx, shp, g = base + "/xp", base + "/idx", base + "/shape", base + "/gathered"
            new_nodes.append(helper.make_node("Pad", [xt, pad_c], [xp], name=base + "/pad"))
            new_inits.append(numpy_helper.from_array((np.arange(t_len)[:, None] + d * np.arange(k)[None, :]).astype(np.int64), idx))
            new_nodes.append(helper.make_node("Gather", [xp, idx], [g], axis=1, name=base + "/im2col"))
            new_inits.append(numpy_helper.from_array(np.array([0, 0, k * cin], np.int64), shp))
            cat = base + "/cat"
            new_nodes.append(helper.make_node("Reshape", [g, shp], [cat], name=base + "/reshape"))
        else:
            cat = xt
        wm = base + "/W"
        new_inits.append(numpy_helper.from_array(np.ascontiguousarray(W.transpose(2, 1, 0).reshape(k * cin, cout)), wm))
        y = base + "/mm"
        new_nodes.append(helper.make_node("MatMul", [cat, wm], [y], name=base + "/matmul"))
        if len(n.input) > 2 and n.input[2]:
            yb = base + "/bias"
            new_nodes.append(helper.make_node("Add", [y, n.input[2]], [yb], name=base + "/add"))
            y = yb
        new_nodes.append(helper.make_node("Transpose", [y], [n.output[0]], perm=[0, 2, 1], name=base + "/out_t"))
    del model.graph.node[:]
    model.graph.node.extend(new_nodes)
    model.graph.initializer.extend(new_inits)
    used = {i for n in model.graph.node for i in n.input}
    keep = [i for i in model.graph.initializer if i.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
    del model.graph.value_info[:]
    return model


def excluded_nodes(model, which):
    """Names of the Conv/MatMul/Gemm nodes of the parts `which` lists, to keep in fp32:
    `input`      everything up to and including the first temporal (kernel > 1) convolution:
                 the spatial attention over sensors, the 1x1 conv, the subject layer and the
                 first dilated conv (the ones that see the raw channels);
    `output`     everything after the last temporal convolution: the 1x1 convs, the
                 temporal aggregation and the output head;
    `attention`  only the nodes before the first temporal conv;
    `head`       only the nodes after the last Conv;
    or node names."""
    nodes = list(model.graph.node)
    lin = ("MatMul", "Conv", "Gemm")
    convs = [i for i, n in enumerate(nodes) if n.op_type == "Conv"]
    temporal = [i for i in convs if any(a.name == "kernel_shape" and a.ints[0] > 1 for a in nodes[i].attribute)]
    out = []
    for part in which:
        if part in ("input", "output", "attention", "head") and not temporal:
            continue
        if part == "input":
            out += [n.name for n in nodes[:temporal[0] + 1] if n.op_type in lin]
        elif part == "attention":
            out += [n.name for n in nodes[:temporal[0]] if n.op_type in lin]
        elif part == "output":
            out += [n.name for n in nodes[temporal[-1] + 1:] if n.op_type in lin]
        elif part == "head":
            out += [n.name for n in nodes[convs[-1] + 1:] if n.op_type in lin]
        elif part:
            out.append(part)
    return out


def make_variant(src, out_path, method, calib=None, calib_subject=None, exclude=(), calibrate="minmax", ops=("Conv", "MatMul"),
                 tmp=None, percentile=99.999):
    """Writes the variant `method` of `src` to `out_path`:
    fp32        ORT's pre-processing only (constant folding, BatchNorm fusion)
    fp16        fp16 weights and activations, fp32 inputs and outputs
    dynamic     convs as MatMuls (convs_to_matmuls), quantize_dynamic: int8 per-channel
                weights, uint8 activations quantised per window at run time
    dynamic-conv  quantize_dynamic on the Convs as they are (ConvInteger, uint8 weights)
    qdq / qdq-s8  quantize_static, QDQ, per-channel int8 weights, uint8 / int8 activations
    `exclude`: the parts kept in fp32 (see excluded_nodes)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static

    tmp = tmp or tempfile.mkdtemp()
    prep = prepared(src, tmp)
    if method == "fp32":
        shutil.copy(prep, out_path)
        return
    if method == "fp16":
        from onnxruntime.transformers.float16 import convert_float_to_float16

        onnx.save(convert_float_to_float16(onnx.load(str(prep)), keep_io_types=True), str(out_path))
        return
    m = onnx.load(str(prep))
    names = excluded_nodes(m, exclude)
    # the quantiser splits a Gemm into <name>_MatMul + <name>_Add before it looks at exclusions
    names += [n.name + "_MatMul" for n in m.graph.node if n.op_type == "Gemm" and n.name in names]
    if method == "dynamic":
        convs = {n.name for n in m.graph.node if n.op_type == "Conv"}
        names = [n + "/matmul" if n in convs else n for n in names]
        mm = pathlib.Path(tmp) / "matmuls.onnx"
        onnx.save(convs_to_matmuls(m), str(mm))
        # reduce_range: 7-bit weights, so ORT's u8 x s8 kernels cannot saturate on CPUs
        # without VNNI (AVX2's VPMADDUBSW); measured: same speed here, worst cosine 0.9935
        # instead of 0.9950 on simulated windows.
        quantize_dynamic(str(mm), str(out_path), op_types_to_quantize=["MatMul", "Gemm"], per_channel=True,
                         weight_type=QuantType.QInt8, nodes_to_exclude=names, reduce_range=True,
                         extra_options={"MatMulConstBOnly": True})
        onnx.save(per_window(store_fp16(onnx.load(str(out_path)))), str(out_path))
        return
    if method == "dynamic-conv":
        quantize_dynamic(str(prep), str(out_path), op_types_to_quantize=list(ops), per_channel=True, weight_type=QuantType.QUInt8,
                         nodes_to_exclude=names)
        return
    meth = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile, "entropy": CalibrationMethod.Entropy}[calibrate]
    inputs = [i.name for i in m.graph.input]
    act = QuantType.QInt8 if method == "qdq-s8" else QuantType.QUInt8
    quantize_static(str(prep), str(out_path), Reader(calib, calib_subject, inputs), quant_format=QuantFormat.QDQ,
                    op_types_to_quantize=list(ops), per_channel=True, activation_type=act, weight_type=QuantType.QInt8,
                    nodes_to_exclude=names, calibrate_method=meth,
                    extra_options={"ActivationSymmetric": act == QuantType.QInt8, "WeightSymmetric": True,
                                   "CalibPercentile": percentile})


def per_window(model):
    """Wraps the graph in a Scan over the batch, so each window is encoded on its own:
    dynamic quantisation takes its range over a whole tensor, so in a batch a window's
    embedding would depend on the windows beside it (the service batches up to 8 windows
    that are ready together, and decodings must not depend on how the stream was chunked).
    The inputs, outputs and their shapes stay those of the contract."""
    from onnx import TensorProto, helper

    g = model.graph
    ins = {i.name for i in g.input}
    outs = [o.name for o in g.output]  # embedding, and embedding_mse where the model has an MSE head
    ren = {n: "window/" + n for n in list(ins) + outs}
    nodes = []
    for n in g.node:
        m = onnx.NodeProto()
        m.CopyFrom(n)
        for i, v in enumerate(m.input):
            m.input[i] = ren.get(v, v)
        for i, v in enumerate(m.output):
            m.output[i] = ren.get(v, v)
        nodes.append(m)
    axes = helper.make_tensor("window/axes", TensorProto.INT64, [1], [0])
    body_in, pre = [], []
    order = [i.name for i in g.input]
    for name in order:
        src = next(i for i in g.input if i.name == name)
        elem = src.type.tensor_type.elem_type
        dims = [d.dim_value if d.dim_value else d.dim_param for d in src.type.tensor_type.shape.dim][1:]
        body_in.append(helper.make_tensor_value_info("slice/" + name, elem, dims))
        pre.append(helper.make_node("Unsqueeze", ["slice/" + name, "window/axes"], [ren[name]], name="window/unsqueeze_" + name))
    post, body_out = [], []
    for o in g.output:
        dim = [d.dim_value if d.dim_value else d.dim_param for d in o.type.tensor_type.shape.dim][1:]
        post.append(helper.make_node("Squeeze", [ren[o.name], "window/axes"], ["slice/" + o.name], name="window/squeeze_" + o.name))
        body_out.append(helper.make_tensor_value_info("slice/" + o.name, TensorProto.FLOAT, dim))
    body = helper.make_graph(pre + nodes + post, "window", body_in, body_out, list(g.initializer) + [axes])
    scan = helper.make_node("Scan", order, outs, num_scan_inputs=len(order), body=body, name="per_window")
    main = helper.make_graph([scan], g.name, list(g.input), list(g.output))
    new = helper.make_model(main, opset_imports=model.opset_import, producer_name=model.producer_name)
    new.ir_version = model.ir_version
    return new


def store_fp16(model, min_elems=4096):
    """Stores the large fp32 initializers that fp16 holds exactly (the fp16 weights of a
    model saved like models/paper, kept in fp32 by the quantiser) as fp16 + Cast, as
    models/build_paper.py does: ONNX Runtime folds the Cast at load, the values are equal."""
    from onnx import TensorProto, helper, numpy_helper

    casts, keep = [], []
    for init in model.graph.initializer:
        if init.data_type == TensorProto.FLOAT and int(np.prod(init.dims)) >= min_elems:
            w = numpy_helper.to_array(init)
            h = w.astype(np.float16)
            if np.isfinite(h).all() and np.array_equal(h.astype(np.float32), w):
                keep.append(numpy_helper.from_array(h, init.name + "_f16"))
                casts.append(helper.make_node("Cast", [init.name + "_f16"], [init.name], to=TensorProto.FLOAT, name=init.name + "/cast"))
                continue
        keep.append(init)
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
    nodes = casts + list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return model


def topo_sorted(model):
    """Orders the nodes so each comes after its inputs' producers (onnx's checker wants it;
    the fp16 converter appends its input Casts at the end)."""
    g = model.graph
    ready = {i.name for i in g.input} | {i.name for i in g.initializer} | {""}
    todo, done = list(g.node), []
    while todo:
        rest = []
        for n in todo:
            if all(i in ready for i in n.input):
                done.append(n)
                ready.update(n.output)
            else:
                rest.append(n)
        if len(rest) == len(todo):
            raise ValueError("graph has a cycle or a missing input")
        todo = rest
    del g.node[:]
    g.node.extend(done)
    return model


def with_contract(path, meta, suffix, note):
    """Puts the source's whole contract on the variant, renamed and annotated."""
    m = onnx.load(str(path))
    if m.graph.initializer:
        m = topo_sorted(store_fp16(m))
    del m.metadata_props[:]
    meta = dict(meta)
    meta["name"] = f"{meta['name']}-{suffix}"
    meta["description"] = f"{meta.get('description', '').rstrip('.')}. {note}".strip(". ") + "."
    meta["training"] = f"{meta.get('training', '')}; then {note}".lstrip("; ")
    for k, v in meta.items():
        p = m.metadata_props.add()
        p.key, p.value = k, v
    m.producer_name = "meg-decoder models/quantize.py"
    onnx.checker.check_model(m)
    onnx.save(m, str(path))


# --------------------------------------------------------------------------- main


def datasets(src_dir, meta, n_eval, n_calib, seed=1):
    """n_calib = 0: no calibration windows (dynamic quantisation needs none)."""
    """{'calib': (x, subj), 'sim': ..., 'real': ..., 'world': (x, labels, test_imgs)}"""
    tm = typed(meta)
    subjects = int(tm.get("subjects", 1))
    names = tm["channel_names"]
    lay, _, xy = layout_for(names)
    real = fs_real = None
    if lay == "ctf272" and REAL_CTF.exists():
        try:
            real, fs_real = real_ctf(names, xy)
        except ImportError:
            print("mne is not installed: no windows from the real CTF recording", file=sys.stderr)
    out = {}
    rng = np.random.default_rng(seed)
    if n_calib:
        x = sim_windows(tm, n_calib, seed + 100, real)
        out["calib"] = (x, rng.integers(0, subjects, len(x)))
    else:
        out["calib"] = (None, None)
    x = sim_windows(tm, n_eval, seed + 200, real)
    out["sim"] = (x, rng.integers(0, subjects, len(x)))
    if real is not None:
        x = real_windows(tm, max(n_eval // 4, 16), seed + 300, real, fs_real)
        out["real"] = (x, rng.integers(0, subjects, len(x)))
    if (pathlib.Path(src_dir) / "world").exists() and lay == "neuromag306" and tm["scaler"] == "fixed":
        out["world"] = world_trials(src_dir, tm, 4, seed + 400)
        if n_calib:  # calibrate on the world's own trials too (fresh ones, not the evaluation's)
            xc, _, _ = world_trials(src_dir, tm, 1, seed + 500)
            out["calib"] = (np.concatenate([out["calib"][0], xc]), np.zeros(len(out["calib"][0]) + len(xc), np.int64))
    return out


def evaluate(ref, var, data, gallery):
    res = {}
    for k in ("sim", "real"):
        if k in data:
            x, s = data[k]
            c = cosine(run(ref, x, s), run(var, x, s))
            res[k] = (len(x), float(c.min()), float(np.median(c)))
    if "world" in data:
        x, lab, test_imgs = data["world"]
        a, b = run(ref, x), run(var, x)
        c = cosine(a, b)
        res["world_cos"] = (len(x), float(c.min()), float(np.median(c)))
        for name, bank_idx in (("held_out", test_imgs), ("gallery", np.arange(len(gallery)))):
            bank = gallery[bank_idx]
            truth = np.array([np.where(bank_idx == l)[0][0] for l in lab])
            ta, tb = topk(a, bank), topk(b, bank)
            ra, rb = rank_of(a, bank, truth), rank_of(b, bank, truth)
            res[f"top_{name}"] = {
                "fp32_top1": float((ra < 1).mean()), "var_top1": float((rb < 1).mean()),
                "fp32_top5": float((ra < 5).mean()), "var_top5": float((rb < 5).mean()),
                "same_top1": float((ta[:, 0] == tb[:, 0]).mean()),
                "same_hit5": float(((ra < 5) == (rb < 5)).mean()),
                "same_rank": float((ra == rb).mean()),
                "same_top5_set": float(np.mean([set(p) == set(q) for p, q in zip(ta, tb)])),
                "same_top5_order": float((ta == tb).all(1).mean()),
            }
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src")
    ap.add_argument("out", nargs="?")
    ap.add_argument("--method", default="dynamic", choices=["dynamic", "dynamic-conv", "qdq", "qdq-s8", "fp16", "fp32"])
    ap.add_argument("--exclude", default="attention,head", help="parts kept in fp32 (see excluded_nodes): input, output, attention, head, node names")
    ap.add_argument("--calibrate", default="minmax", choices=["minmax", "percentile", "entropy"])
    ap.add_argument("--calib", type=int, default=128, help="calibration windows")
    ap.add_argument("--eval", type=int, default=256, help="evaluation windows")
    ap.add_argument("--check", type=int, default=16, help="windows saved as the accuracy fixture")
    ap.add_argument("--sweep", action="store_true")
    args = ap.parse_args()
    src_dir = pathlib.Path(args.src)
    src = src_dir / "encoder.onnx"
    meta = read_meta(src)
    t0 = time.time()
    static = args.sweep or args.method.startswith("qdq")
    data = datasets(src_dir, meta, args.eval, args.calib if static else 0)
    print(f"windows: {', '.join(f'{k} {len(v[0])}' for k, v in data.items() if v[0] is not None)} ({time.time() - t0:.0f} s)", flush=True)
    gallery = np.load(src_dir / "gallery" / "embeddings.npy") if (src_dir / "gallery" / "embeddings.npy").exists() else None
    ref = session(src)
    tmp = tempfile.mkdtemp()
    x1, s1 = data["sim"][0][:1], data["sim"][1][:1]
    if args.sweep:
        cm = ("Conv", "MatMul", "Gemm")
        configs = [("fp32", "-", "", cm), ("fp16", "-", "", cm), ("dynamic-conv", "-", "", cm),
                   ("dynamic", "-", "", cm), ("dynamic", "-", "attention,head", cm), ("dynamic", "-", "input,head", cm),
                   ("dynamic", "-", "input,output", cm),
                   ("qdq", "minmax", "", cm), ("qdq", "minmax", "attention,head", cm),
                   ("qdq", "percentile", "", cm), ("qdq", "percentile", "attention,head", cm), ("qdq", "percentile", "input,output", cm),
                   ("qdq-s8", "minmax", "attention,head", cm)]
        print("| method | calibration | kept fp32 | ops | MB | ms 1 thread (fp32 ref) | " + " | ".join(
            f"cos {k} min / median" for k in ("sim", "real", "world_cos") if k in data or (k == "world_cos" and "world" in data)) + " | top-5 |")
        for method, cal, excl, ops in configs:
            p = pathlib.Path(tmp) / f"v_{method}_{cal}_{excl.replace(',', '-')}_{len(ops)}.onnx"
            try:
                make_variant(src, p, method, *data["calib"], exclude=[e for e in excl.split(",") if e], calibrate=cal if cal != "-" else "minmax", ops=ops, tmp=tmp)
                var = session(p)
                r = evaluate(ref, var, data, gallery)
                t_ref, t_var = time_ms(ref, x1, s1), time_ms(var, x1, s1)
                t_ref2, t_var2 = time_ms(ref, x1, s1), time_ms(var, x1, s1)
            except Exception as e:  # noqa: BLE001 - a sweep reports what fails
                print(f"| {method} | {cal} | {excl} | {'+'.join(ops)} | failed: {str(e)[:200]} |", flush=True)
                continue
            cos = " | ".join(f"{r[k][1]:.4f} / {r[k][2]:.4f}" for k in ("sim", "real", "world_cos") if k in r)
            top = ""
            if "top_held_out" in r:
                t = r["top_held_out"]
                top = f"held-out: {t['fp32_top5']:.3f}->{t['var_top5']:.3f}, same set {t['same_top5_set']:.3f}"
            print(f"| {method} | {cal} | {excl} | {'+'.join(ops)} | {p.stat().st_size / 1e6:.1f} | "
                  f"{min(t_var, t_var2):.2f} ({min(t_ref, t_ref2):.2f}) | {cos} | {top} |", flush=True)
        return
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    excl = [e for e in args.exclude.split(",") if e]
    enc = out / "encoder.onnx"
    make_variant(src, enc, args.method, *data["calib"], exclude=excl, calibrate=args.calibrate, tmp=tmp)
    import onnxruntime

    suffix = {"qdq": "int8-qdq", "qdq-s8": "int8-qdq", "dynamic": "int8", "dynamic-conv": "int8-convinteger", "fp16": "fp16", "fp32": "fp32-folded"}[args.method]
    if args.method.startswith("qdq"):
        note = (f"int8 QDQ by models/quantize.py (onnxruntime {onnxruntime.__version__} quantize_static: per-channel int8 weights, "
                f"{'int8' if args.method == 'qdq-s8' else 'uint8'} activations, {args.calibrate} calibration on {args.calib} simulated windows, "
                f"Conv+MatMul, kept fp32: {','.join(excl) or 'nothing'})")
    elif args.method == "dynamic":
        note = (f"int8 by models/quantize.py: convolutions rewritten as MatMuls, onnxruntime {onnxruntime.__version__} quantize_dynamic "
                f"(per-channel int8 weights, uint8 activations quantised per window), kept fp32: {','.join(excl) or 'nothing'}")
    elif args.method == "dynamic-conv":
        note = f"int8 dynamic quantisation by models/quantize.py (onnxruntime {onnxruntime.__version__} quantize_dynamic, ConvInteger)"
    else:
        note = f"{args.method} by models/quantize.py (onnxruntime {onnxruntime.__version__})"
    with_contract(enc, meta, suffix, note)
    # The rest of the directory: symlinks to the source's files (gallery, generator, world).
    for item in sorted(src_dir.iterdir()):
        if item.name in ("encoder.onnx", "reference_input.npy", "reference_output.npy", "REPORT.md", "train.log", "training.json", "QUANTIZED.md") or item.name.startswith("check_"):
            continue
        dst = out / item.name
        if dst.is_symlink() or dst.exists():
            continue
        target = item.resolve()
        dst.symlink_to(pathlib.Path("..", *target.relative_to(HERE).parts) if target.is_relative_to(HERE) else target)
    var = session(enc)
    r = evaluate(ref, var, data, gallery)
    # The accuracy fixture: windows, their fp32 and variant outputs.
    n = args.check
    if "world" in data:
        x, lab, test_imgs = data["world"]
        keep = np.arange(n)
        np.save(out / "check_input.npy", x[keep])
        np.save(out / "check_labels.npy", np.array([float(l) for l in lab[keep]], np.float32))
        np.save(out / "check_output_fp32.npy", run(ref, x[keep]).astype(np.float32))
        np.save(out / "check_output.npy", run(var, x[keep]).astype(np.float32))
    else:
        parts = [(k, data[k]) for k in ("sim", "real") if k in data]
        per = n // len(parts)
        x = np.concatenate([v[0][:per] for _, v in parts])
        s = np.concatenate([v[1][:per] for _, v in parts])
        np.save(out / "check_input.npy", x)
        if "subject" in [i.name for i in var.get_inputs()]:
            np.save(out / "check_subject.npy", s.astype(np.float32))
        np.save(out / "check_output_fp32.npy", run(ref, x, s).astype(np.float32))
        np.save(out / "check_output.npy", run(var, x, s).astype(np.float32))
    print(json.dumps(r, indent=1))
    info = {"source": str(src_dir), "method": args.method, "exclude": excl, "kept_fp32_nodes": excluded_nodes(onnx.load(str(prepared(src, tmp))), excl)}
    if static:
        info.update(calibrate=args.calibrate, calib_windows=len(data["calib"][0]))
    info.update(accuracy=r, accuracy_note="[windows, min cosine, median cosine] to the fp32 source; top_N: retrieval among N gallery images",
                onnxruntime=onnxruntime.__version__)
    (out / "quantize.json").write_text(json.dumps(info, indent=1) + "\n")


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    main()

"""Builds models/paper/encoder.onnx: the brain module of Benchetrit, Banville & King (2023)
(after Defossez et al. 2023) at the paper's size, for benchmarks. UNTRAINED: the weights
are random (seeded); no trained weights are public.

    .venv-models/bin/python models/build_paper.py [--out DIR] [--subjects N]

Architecture (meg f32[B, 272, 181] at 120 Hz, subject i64[B] -> embedding f32[B, 768] and
embedding_mse f32[B, 768]). Sizes from brainmagick's configuration of the MEG model,
bm/conf/model/clip_conv.yaml (hidden 320, depth 10, kernel_size 3, dilation_period 5,
skip, batch_norm, gelu, glu 2, glu_context 1, merger with merger_pos_dim 2048,
initial_linear 270, subject_layers, complex_out), with merger_channels 270 and
dilation_growth 2 from bm/conf/model_defaults/defaults.yaml, built as
bm/models/simpleconv.py (SimpleConv) and bm/models/common.py (ChannelMerger,
SubjectLayers, ConvSequence) build them:
  1. Spatial attention (ChannelMerger): Fourier features (K=32: 2 K^2 = 2048) of each
     sensor's 2-D position -> logits for 270 virtual channels -> softmax over sensors.
     Its training-time sensor dropout is not part of an inference graph.
  2. 1x1 convolution 270 -> 270 (initial_linear).
  3. Subject layer: one 270x270 matrix per subject, no bias (SubjectLayers), chosen by
     `subject`; --subjects of them (4: the THINGS-MEG participants).
  4. Ten dilated convolutions of 320 channels (ConvSequence): kernel 3, dilation
     2^(k mod 5) for layer k, BatchNorm, GELU, residual when the shapes match (from the
     second layer on); after every second layer a GLU convolution 320 -> 640 -> GLU -> 320,
     kernel 1 + 2 * glu_context = 3, dilation 1 (ConvSequence builds it without a
     dilation; this script used dilation 2 before). Five blocks of three convolutions.
  5. complex_out: 1x1 convolutions 320 -> 640 (GELU) -> 640.
  6. Benchetrit et al.: temporal aggregation, a learned affine map over the 181 time
     samples -> 640, then two MLP heads, here LayerNorm + GELU + Linear 640 -> 768:
     CLIP (`embedding`, the first output, what the service uses) and MSE (`embedding_mse`).

Parameters (trainable, as PyTorch counts them: weights, biases, BatchNorm and LayerNorm
affine terms; not the BatchNorm statistics nor the Fourier features), printed by part:
    spatial attention 552,960 + 1x1 conv 73,170 + subject layers 72,900 per subject
    + convolutions 6,108,800 + final 1x1 convs 615,680 + temporal aggregation 182
    + two heads 2 x 493,568 = 8,337,928 + 72,900 x subjects: 8,629,528 for 4 subjects.
The part clip_conv.yaml specifies (steps 1-4) alone has 6,734,930 + 72,900 x subjects
parameters (7,026,530 for 4 subjects), so no number of subjects brings this configuration
to ~6.4 M, and no parameter count stated in either paper could be checked: the count is
derived from brainmagick's configuration. This script reported 8.1 M before because it
counted weights only (no biases, no norm parameters) and one head.
Not from brainmagick: the backbone's output size (640 here; brainmagick's last layer outputs
the target's dimension, as neuraltrain's SimpleConvTimeAgg does by default) and the heads'
form, this project's choices.
Weights are stored as float16 initializers followed by Cast nodes, which ONNX Runtime
folds at load, halving the file.
"""
import argparse
import pathlib

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from contract import write_contract

HERE = pathlib.Path(__file__).resolve().parent
C, T, V, H, D, K, F = 272, 181, 270, 320, 768, 32, 640
DEPTH, GLU_EVERY, DILATION_PERIOD = 10, 2, 5

ap = argparse.ArgumentParser()
ap.add_argument("--out", default=str(HERE / "paper"))
ap.add_argument("--subjects", type=int, default=4, help="subject layers (THINGS-MEG: 4 participants)")
args = ap.parse_args()
S = args.subjects

rng = np.random.default_rng(2023)
nodes, inits = [], []
counter = [0]
params = {}


def name(p):
    counter[0] += 1
    return f"{p}_{counter[0]}"


def count(part, n):
    params[part] = params.get(part, 0) + int(n)


def weight(shape, part, scale=None):
    """A trainable weight (random), stored as float16 + Cast."""
    fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else shape[0]
    w = rng.standard_normal(shape) * (scale if scale is not None else 1 / np.sqrt(fan_in))
    n = name("w")
    inits.append(numpy_helper.from_array(w.astype(np.float16), n + "_f16"))
    nodes.append(helper.make_node("Cast", [n + "_f16"], [n], to=TensorProto.FLOAT))
    count(part, w.size)
    return n


def const(a, dtype=np.float32, part=None):
    """A constant; counted as parameters of `part` if it is trainable (biases, norm affine terms)."""
    n = name("c")
    a = np.asarray(a, dtype=dtype)
    inits.append(numpy_helper.from_array(a, n))
    if part is not None:
        count(part, a.size)
    return n


def op(kind, inputs, **attrs):
    out = name(kind.lower())
    nodes.append(helper.make_node(kind, inputs, [out], **attrs))
    return out


def gelu(x):
    # 0.5 x (1 + erf(x / sqrt 2)); ONNX Runtime fuses it.
    e = op("Erf", [op("Div", [x, const(np.sqrt(2.0))])])
    return op("Mul", [op("Mul", [x, const(0.5)]), op("Add", [e, const(1.0)])])


def conv(x, cin, cout, part, k=1, dilation=1):
    pad = dilation * (k - 1) // 2
    return op("Conv", [x, weight((cout, cin, k), part), const(np.zeros(cout), part=part)],
              dilations=[dilation], pads=[pad, pad], kernel_shape=[k])


def batchnorm(x, ch, part):
    # scale and bias are parameters; the running mean and variance are statistics.
    return op("BatchNormalization", [x, const(np.ones(ch), part=part), const(np.zeros(ch), part=part),
                                     const(np.zeros(ch)), const(np.ones(ch))], epsilon=1e-5)


def head(x, part):
    ln = op("LayerNormalization", [x, const(np.ones(F), part=part), const(np.zeros(F), part=part)], axis=-1)
    return op("Add", [op("MatMul", [gelu(ln), weight((F, D), part)]), const(np.zeros(D), part=part)])


# 1. spatial attention from sensor positions
rows = [l.split("\t") for l in (HERE / "layouts" / "ctf272.tsv").read_text().splitlines()[1:]]
names = [r[0] for r in rows]
xy = np.array([[float(r[3]), float(r[4])] for r in rows])
xy = (xy - xy.min(0)) / (xy.max(0) - xy.min(0)) * 0.8 + 0.1
k = np.arange(K)
phase = 2 * np.pi * (xy[:, 0, None, None] * k[None, :, None] + xy[:, 1, None, None] * k[None, None, :])
fourier = np.concatenate([np.cos(phase).reshape(C, -1), np.sin(phase).reshape(C, -1)], 1)  # [C, 2K^2]
logits = op("MatMul", [const(fourier), weight((2 * K * K, V), "spatial attention", scale=0.02)])  # [C, V]
attn = op("Softmax", [op("Transpose", [logits], perm=[1, 0])], axis=1)  # [V, C]: weights over sensors
x = op("MatMul", [attn, "meg"])  # [B, V, T]
# 2. 1x1 conv
x = conv(x, V, V, "1x1 conv")
# 3. subject layer
subj_w = weight((S, V, V), "subject layers")
x = op("MatMul", [op("Gather", [subj_w, "subject"], axis=0), x])  # [B, V, T]
# 4. dilated convolutions, a GLU convolution after every second one
cin = V
for layer in range(DEPTH):
    h = gelu(batchnorm(conv(x, cin, H, "convolutions", 3, 2 ** (layer % DILATION_PERIOD)), H, "convolutions"))
    x = op("Add", [x, h]) if cin == H else h
    cin = H
    if (layer + 1) % GLU_EVERY == 0:
        g = conv(x, H, 2 * H, "convolutions", 3, 1)
        a, bgate = name("glu_a"), name("glu_b")
        nodes.append(helper.make_node("Split", [g, const([H, H], np.int64)], [a, bgate], axis=1))
        x = op("Mul", [a, op("Sigmoid", [bgate])])
# 5. final convs
x = gelu(conv(x, H, 2 * H, "final 1x1 convs"))
x = conv(x, 2 * H, F, "final 1x1 convs")  # [B, F, T]
# 6. temporal aggregation (affine over time) and the two heads
x = op("Squeeze", [op("Add", [op("MatMul", [x, weight((T, 1), "temporal aggregation")]),
                              const(np.zeros(1), part="temporal aggregation")]), const([2], np.int64)])  # [B, F]
nodes.append(helper.make_node("Identity", [head(x, "CLIP head")], ["embedding"]))
nodes.append(helper.make_node("Identity", [head(x, "MSE head")], ["embedding_mse"]))

graph = helper.make_graph(
    nodes, "brain_module_paper_size",
    [helper.make_tensor_value_info("meg", TensorProto.FLOAT, ["batch", C, T]), helper.make_tensor_value_info("subject", TensorProto.INT64, ["batch"])],
    [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", D]),
     helper.make_tensor_value_info("embedding_mse", TensorProto.FLOAT, ["batch", D])], inits)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="meg-decoder models/build_paper.py")
model.ir_version = 9
total = sum(params.values())
meta = {
    "name": "paper-brain-module-untrained",
    "description": f"Brain module at the paper's size ({total / 1e6:.2f} M parameters with {S} subjects), RANDOM weights: for benchmarks only. Outputs embedding (CLIP head) and embedding_mse (MSE head).",
    "sample_rate_hz": 120.0, "window_samples": T, "window_start_s": -0.5, "channel_names": names,
    "highpass_hz": 0.1, "lowpass_hz": 40.0, "filter_order": 4, "notch_hz": [], "notch_q": 30.0,
    "baseline_s": [-0.5, 0.0], "scaler": "fit:10", "clamp": 20.0,
    "embedding_space": "clip-vit-l14 (untrained)", "embedding_dim": D, "subjects": S,
    "training": f"untrained (models/build_paper.py --subjects {S}, seed 2023)",
}
out = pathlib.Path(args.out)
out.mkdir(parents=True, exist_ok=True)
write_contract(model, meta, str(out / "encoder.onnx"))
for part, n in params.items():
    print(f"  {part:22s} {n:>10,d}")
per_subject = V * V
print(f"{total:,d} parameters ({total / 1e6:.2f} M) with {S} subjects: {total - S * per_subject:,d} + {per_subject:,d} per subject; "
      f"{(out / 'encoder.onnx').stat().st_size / 1e6:.1f} MB")

"""Builds models/paper/encoder.onnx: the brain module of Benchetrit, Banville & King (2023)
(after Defossez et al. 2023) at the paper's size, for benchmarks. UNTRAINED: the weights
are random (seeded); no trained weights are public.

    .venv-models/bin/python models/build_paper.py

Architecture (meg f32[B, 272, 181] at 120 Hz, subject i64[B] -> embedding f32[B, 768]):
  1. Spatial attention over sensor positions: Fourier features (K=32) of each sensor's 2-D
     position -> logits for 270 virtual channels -> softmax over sensors -> mixing matrix.
  2. 1x1 convolution 270 -> 270.
  3. Subject layer: one 270x270 matrix per subject (4 subjects), chosen by `subject`.
  4. Five residual blocks, 320 channels: two dilated convs (kernel 3, dilation growing
     1,2,4,8,16 cycling), each BatchNorm + GELU with a skip connection, then a conv to 640
     channels and a GLU back to 320.
  5. 1x1 convolutions 320 -> 640 (GELU) -> 640, temporal aggregation: an affine
     projection over the 181 time samples (learned weights) -> 640.
  6. CLIP head: LayerNorm, GELU, Linear 640 -> 768 (the embedding); an MSE head shares it in the paper.
Weights are stored as float16 initializers followed by Cast nodes, which ONNX Runtime
folds at load, halving the file.
"""
import json
import pathlib

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from contract import write_contract

HERE = pathlib.Path(__file__).resolve().parent
rng = np.random.default_rng(2023)
C, T, V, H, D, S, K, F = 272, 181, 270, 320, 768, 4, 32, 640

nodes, inits = [], []
counter = [0]


def name(p):
    counter[0] += 1
    return f"{p}_{counter[0]}"


def weight(shape, scale=None, fp16=True):
    fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else shape[0]
    w = rng.standard_normal(shape) * (scale if scale is not None else 1 / np.sqrt(fan_in))
    n = name("w")
    if fp16:
        inits.append(numpy_helper.from_array(w.astype(np.float16), n + "_f16"))
        nodes.append(helper.make_node("Cast", [n + "_f16"], [n], to=TensorProto.FLOAT))
    else:
        inits.append(numpy_helper.from_array(w.astype(np.float32), n))
    return n


def const(a, dtype=np.float32):
    n = name("c")
    inits.append(numpy_helper.from_array(np.asarray(a, dtype=dtype), n))
    return n


def op(kind, inputs, **attrs):
    out = name(kind.lower())
    nodes.append(helper.make_node(kind, inputs, [out], **attrs))
    return out


def gelu(x):
    # 0.5 x (1 + erf(x / sqrt 2)); ONNX Runtime fuses it.
    e = op("Erf", [op("Div", [x, const(np.sqrt(2.0))])])
    return op("Mul", [op("Mul", [x, const(0.5)]), op("Add", [e, const(1.0)])])


def conv(x, cin, cout, k=1, dilation=1):
    pad = dilation * (k - 1) // 2
    return op("Conv", [x, weight((cout, cin, k)), const(np.zeros(cout))], dilations=[dilation], pads=[pad, pad], kernel_shape=[k])


def batchnorm(x, ch):
    return op("BatchNormalization", [x, const(np.ones(ch)), const(np.zeros(ch)), const(np.zeros(ch)), const(np.ones(ch))], epsilon=1e-5)


# 1. spatial attention from sensor positions
rows = [l.split("\t") for l in (HERE / "layouts" / "ctf272.tsv").read_text().splitlines()[1:]]
names = [r[0] for r in rows]
xy = np.array([[float(r[3]), float(r[4])] for r in rows])
xy = (xy - xy.min(0)) / (xy.max(0) - xy.min(0)) * 0.8 + 0.1
k = np.arange(K)
phase = 2 * np.pi * (xy[:, 0, None, None] * k[None, :, None] + xy[:, 1, None, None] * k[None, None, :])
fourier = np.concatenate([np.cos(phase).reshape(C, -1), np.sin(phase).reshape(C, -1)], 1)  # [C, 2K^2]
logits = op("MatMul", [const(fourier), weight((2 * K * K, V), scale=0.02)])  # [C, V]
attn = op("Softmax", [op("Transpose", [logits], perm=[1, 0])], axis=1)  # [V, C]: weights over sensors
x = op("MatMul", [attn, "meg"])  # [B, V, T]
# 2. 1x1 conv
x = conv(x, V, V)
# 3. subject layer
subj_w = weight((S, V, V))
x = op("MatMul", [op("Gather", [subj_w, "subject"], axis=0), x])  # [B, V, T]
# 4. residual dilated conv blocks
cin = V
for b in range(5):
    d1, d2 = 2 ** ((2 * b) % 5), 2 ** ((2 * b + 1) % 5)
    h = gelu(batchnorm(conv(x, cin, H, 3, d1), H))
    x = h if cin != H else op("Add", [x, h])
    h = gelu(batchnorm(conv(x, H, H, 3, d2), H))
    x = op("Add", [x, h])
    g = conv(x, H, 2 * H, 3, 2)
    a, bgate = name("glu_a"), name("glu_b")
    nodes.append(helper.make_node("Split", [g, const([H, H], np.int64)], [a, bgate], axis=1))
    x = op("Mul", [a, op("Sigmoid", [bgate])])
    cin = H
# 5. final convs and temporal aggregation
x = gelu(conv(x, H, 2 * H))
x = conv(x, 2 * H, F)  # [B, F, T]
x = op("Squeeze", [op("MatMul", [x, weight((T, 1))]), const([2], np.int64)])  # [B, F]
# 6. CLIP head
emb = op("Add", [op("MatMul", [gelu(op("LayerNormalization", [x, const(np.ones(F)), const(np.zeros(F))], axis=-1)), weight((F, D))]), const(np.zeros(D))])
nodes.append(helper.make_node("Identity", [emb], ["embedding"]))

graph = helper.make_graph(
    nodes, "brain_module_paper_size",
    [helper.make_tensor_value_info("meg", TensorProto.FLOAT, ["batch", C, T]), helper.make_tensor_value_info("subject", TensorProto.INT64, ["batch"])],
    [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", D])], inits)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="meg-decoder models/build_paper.py")
model.ir_version = 9
params = sum(int(np.prod(i.dims)) for i in inits if i.name.endswith("_f16"))
meta = {
    "name": "paper-brain-module-untrained",
    "description": f"Brain module at the paper's size ({params / 1e6:.1f} M parameters), RANDOM weights: for benchmarks only.",
    "sample_rate_hz": 120.0, "window_samples": T, "window_start_s": -0.5, "channel_names": names,
    "highpass_hz": 0.1, "lowpass_hz": 40.0, "filter_order": 4, "notch_hz": [], "notch_q": 30.0,
    "baseline_s": [-0.5, 0.0], "scaler": "fit:10", "clamp": 20.0,
    "embedding_space": "clip-vit-l14 (untrained)", "embedding_dim": D, "subjects": S,
    "training": "untrained (models/build_paper.py, seed 2023)",
}
out = HERE / "paper"
out.mkdir(exist_ok=True)
write_contract(model, meta, str(out / "encoder.onnx"))
print(f"{params / 1e6:.2f} M parameters, {(out / 'encoder.onnx').stat().st_size / 1e6:.1f} MB")

"""Probe encoders for testing a stream end to end, exported through contract.py as a lab
would export its own model.

  raw: the embedding is the preprocessed window itself, flattened ([channels * time]):
       what the service feeds the model, visible to a test.
  rms: the embedding is each channel's RMS over the window ([channels]), in SI units when
       the scaler is `none`: a check that units were understood.

Usage: python models/probe_model.py OUT_DIR --kind raw --channels MEG0113 --rate 120
       --window-samples 181 --window-start -0.5 [--highpass 0.1 --lowpass 40]
       [--filter-phase zero-phase] [--settle 0.5] [--scaler fit:5] [--target on_screen]
"""
import argparse
import json
import os
import sys

import onnx
from onnx import TensorProto, helper

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from contract import write_contract  # noqa: E402


def build(kind, c, t):
    meg = helper.make_tensor_value_info("meg", TensorProto.FLOAT, ["batch", c, t])
    if kind == "raw":
        dim = c * t
        shape = helper.make_tensor("shape", TensorProto.INT64, [2], [-1, dim])
        nodes = [helper.make_node("Reshape", ["meg", "shape"], ["embedding"])]
        inits = [shape]
    elif kind == "rms":
        dim = c
        nodes = [
            helper.make_node("Mul", ["meg", "meg"], ["sq"]),
            helper.make_node("ReduceMean", ["sq"], ["ms"], axes=[2], keepdims=0),
            helper.make_node("Sqrt", ["ms"], ["embedding"]),
        ]
        inits = []
    else:
        raise SystemExit(f"unknown kind {kind!r}: use raw or rms")
    out = helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", dim])
    graph = helper.make_graph(nodes, f"probe_{kind}", [meg], [out], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="meg-decoder probe_model.py")
    model.ir_version = 8  # what ONNX Runtime 1.31 reads (onnx 1.23 writes IR 14)
    return model, dim


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--kind", default="raw")
    ap.add_argument("--channels", nargs="+", required=True)
    ap.add_argument("--channels-file", help="one channel name per line (instead of --channels)")
    ap.add_argument("--rate", type=float, default=120.0)
    ap.add_argument("--window-samples", type=int, default=181)
    ap.add_argument("--window-start", type=float, default=-0.5)
    ap.add_argument("--baseline", type=float, nargs=2, default=None)
    ap.add_argument("--highpass", type=float)
    ap.add_argument("--lowpass", type=float)
    ap.add_argument("--order", type=int, default=4)
    ap.add_argument("--filter-phase", default="causal")
    ap.add_argument("--settle", type=float)
    ap.add_argument("--scaler", default="none")
    ap.add_argument("--target", default="onset", help="onset, or on_screen for a model directory's continuous/encoder.onnx")
    args = ap.parse_args()
    names = args.channels
    if args.channels_file:
        names = [l.strip() for l in open(args.channels_file) if l.strip()]
    model, dim = build(args.kind, len(names), args.window_samples)
    meta = {
        "name": f"probe-{args.kind}",
        "description": "probe encoder for tests (models/probe_model.py)",
        "sample_rate_hz": args.rate,
        "window_samples": args.window_samples,
        "window_start_s": args.window_start,
        "channel_names": names,
        "baseline_s": args.baseline or [args.window_start, args.window_start],
        "scaler": args.scaler,
        "clamp": 1e30,
        "embedding_space": f"probe-{args.kind}",
        "embedding_dim": dim,
        "filter_order": args.order,
        "filter_phase": args.filter_phase,
    }
    if args.highpass is not None:
        meta["highpass_hz"] = args.highpass
    if args.lowpass is not None:
        meta["lowpass_hz"] = args.lowpass
    if args.settle is not None:
        meta["settle_s"] = args.settle
    if args.target != "onset":
        meta["target"] = args.target
    os.makedirs(args.out, exist_ok=True)
    write_contract(model, meta, os.path.join(args.out, "encoder.onnx"))
    print(json.dumps({"out": args.out, "embedding_dim": dim, "channels": len(names)}))


if __name__ == "__main__":
    main()

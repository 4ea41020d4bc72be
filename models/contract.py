"""The meg-decoder model contract: the ONNX metadata a brain encoder must carry.

Every key is documented in models/README.md. `write_contract` refuses to save a model
whose metadata is incomplete or inconsistent, so a lab exporting its own model finds out
at export time, not on the day of the experiment.
"""
import json

import onnx

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
}


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


def write_contract(model: onnx.ModelProto, meta: dict, path: str) -> None:
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

"""Decodings as a pandas DataFrame (one row per decoding), the same columns for live
subscriptions (`to_dataframe`) and recorded sessions (`read_session(...).decodings`)."""
import numpy as np

COLUMNS = ["sequence", "mode", "marker", "marker_time", "window_start", "window_end", "decoded_at",
           "latency_ms", "encoder_ms", "top1", "top_k", "scores", "embedding", "repaired", "missed", "age_ms", "model",
           "stage", "stages", "onset", "on_screen_at"]


_OBJECT = ("marker", "top1", "top_k", "scores", "embedding", "mode", "model")
_TYPES = {"sequence": "int64", "marker_time": "float64", "window_start": "float64", "window_end": "float64", "decoded_at": "float64",
          "latency_ms": "float64", "encoder_ms": "float64", "repaired": "bool", "missed": "int64", "age_ms": "float64",
          "stage": "int64", "stages": "int64", "onset": "float64", "on_screen_at": "float64"}


def _pandas():
    try:
        import pandas
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError("DataFrames need pandas: pip install 'meg-decoder-client[pandas]'") from e
    return pandas


def frame(rows):
    """A DataFrame of row dicts, in COLUMNS order, indexed by sequence."""
    pd = _pandas()
    # Text and array columns stay Python objects (None stays None, not NaN).
    df = pd.DataFrame({c: pd.Series([r[c] for r in rows], dtype=object if c in _OBJECT else None)
                       for c in COLUMNS}, columns=COLUMNS)
    df = df.astype(dict(_TYPES))
    return df.set_index("sequence", drop=False)


def to_dataframe(decodings):
    """Collects `Decoding`s (any iterable: a list, or `itertools.islice(subscription, n)`)
    into a DataFrame."""
    rows = [{
        "sequence": d.sequence, "mode": d.mode, "marker": d.marker, "marker_time": d.marker_time,
        "window_start": d.window_start, "window_end": d.window_end, "decoded_at": d.decoded_at,
        "latency_ms": d.latency_ms, "encoder_ms": d.encoder_ms, "top1": d.top1,
        "top_k": [h.image_id for h in d.top_k], "scores": np.array([h.score for h in d.top_k], np.float32),
        "embedding": d.embedding, "repaired": d.repaired, "missed": d.missed, "age_ms": d.age_ms,
        "model": d.model, "stage": d.stage, "stages": d.stages,
        "onset": d.onset, "on_screen_at": np.nan if d.on_screen_at is None else d.on_screen_at,
    } for d in decodings]
    return frame(rows)

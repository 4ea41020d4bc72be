"""Loads an XDF file with pyxdf (the reference reader) and prints a JSON summary."""
import json
import sys

import numpy as np
import pyxdf

streams, header = pyxdf.load_xdf(sys.argv[1], synchronize_clocks=True, dejitter_timestamps=False)
out = []
for s in streams:
    info = s["info"]
    ts = np.asarray(s["time_stamps"])
    series = s["time_series"]
    entry = {
        "name": info["name"][0],
        "type": info["type"][0],
        "channel_count": int(info["channel_count"][0]),
        "format": info["channel_format"][0],
        "n": int(len(ts)),
        "first_ts": float(ts[0]) if len(ts) else None,
        "last_ts": float(ts[-1]) if len(ts) else None,
        "footer_count": int(s["footer"]["info"]["sample_count"][0]) if s.get("footer") else None,
        "labels": [c["label"][0] for c in info["desc"][0]["channels"][0]["channel"]] if info.get("desc") and info["desc"][0] and "channels" in info["desc"][0] else [],
    }
    if info["channel_format"][0] == "string":
        entry["strings"] = [row[0] for row in series]
    else:
        arr = np.asarray(series)
        entry["col0"] = arr[:, 0].tolist() if arr.size else []
        entry["ts"] = ts.tolist()
    out.append(entry)
print(json.dumps({"subject": header["info"].get("subject", [""])[0], "streams": out}))

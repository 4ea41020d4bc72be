"""Scores a live run of tools/live_report.sh and writes the "Live" section of each model's
REPORT.md (between `<!-- live:begin -->` and `<!-- live:end -->`, replaced on every run).

    .venv/bin/python tools/live_report.py --out out/live demo demo-brain

Per model, from `client --json --embedding` lines: the event-locked decodings of the
simulated held-out stimuli; top-1/top-5 among the whole gallery (the service's own top-k)
and among the held-out images (cosine of the decoding's embedding, as REPORT.md's offline
single-trial figure); chance levels; and onset -> decoding at the client (received_at -
onset, one LSL clock on one machine); and the continuous decodings (every 25 ms hop): is the
image on screen at the instant each one decodes (`on_screen_at` for a model with an encoder
for continuous use, else the implied `onset`) among the best held-out images. SIMULATED data.
"""
import argparse
import json
import pathlib
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "models"))
from report_sections import write_section  # noqa: E402


def score_set(shown, bank, hpos):
    """Hits of a list of event-locked decodings: among the gallery (the service's top-k)
    and among the held-out images (from the embedding); onset -> arrival at the client."""
    g1 = np.mean([d["top_k"][0]["image_id"] == d["marker"] for d in shown])
    g5 = np.mean([any(h["image_id"] == d["marker"] for h in d["top_k"][:5]) for d in shown])
    e = np.array([d["embedding"] for d in shown], dtype=np.float64)
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    sim = e @ bank.T
    truth = np.array([hpos[d["marker"]] for d in shown])
    rank = (sim > sim[np.arange(len(shown)), truth][:, None]).sum(1)
    lat = np.array([d["received_at"] - d["onset"] for d in shown]) * 1e3
    return {"gallery": {"top1": float(g1), "top5": float(g5)},
            "held_out": {"top1": float((rank < 1).mean()), "top5": float((rank < 5).mean())},
            "window_end_after_onset_ms": float(np.median([d["window_end"] - d["onset"] for d in shown]) * 1e3),
            "onset_to_decoding_ms": {"p50": float(np.percentile(lat, 50)), "p99": float(np.percentile(lat, 99))}}


def score_continuous(lines, bank, hpos, shown):
    """Continuous decodings whose instant (on_screen_at, or the implied onset of a model
    locked to onsets) falls while a scored held-out stimulus is on screen (the last onset
    at or before it, at most 1.7 s before): top-1/top-5 among the held-out images, and the
    delay from that instant to arrival at the client."""
    times = np.array([t for t, _ in shown])
    rows = []
    for d in lines:
        if d["mode"] != "continuous" or not d.get("embedding"):
            continue
        t = d.get("on_screen_at") or d["onset"]
        k = int(np.searchsorted(times, t, side="right")) - 1
        if k < 0 or t - times[k] > 1.7:
            continue
        rows.append((d, hpos[shown[k][1]], t))
    if not rows:
        return None
    e = np.array([d["embedding"] for d, _, _ in rows], dtype=np.float64)
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    sim = e @ bank.T
    truth = np.array([i for _, i, _ in rows])
    rank = (sim > sim[np.arange(len(rows)), truth][:, None]).sum(1)
    delay = np.array([d["received_at"] - t for d, _, t in rows]) * 1e3
    on_screen = any(d.get("on_screen_at") for d, _, _ in rows)
    return {"windows": len(rows), "refers_to": "on_screen_at" if on_screen else "onset",
            "top1": float((rank < 1).mean()), "top5": float((rank < 5).mean()),
            "instant_to_decoding_ms": {"p50": float(np.percentile(delay, 50)), "p99": float(np.percentile(delay, 99))}}


def score(lines, gallery_ids, emb, held_out, n):
    """The first `n` stimuli whose every stage arrived: the final stage's figures, and
    each stage's when the model decodes progressively."""
    pos = {s: i for i, s in enumerate(gallery_ids)}
    bank_rows = np.array([pos[s] for s in held_out])
    bank = emb[bank_rows] / np.linalg.norm(emb[bank_rows], axis=1, keepdims=True)
    hpos = {s: i for i, s in enumerate(held_out)}
    locked = [d for d in lines if d["mode"] == "event_locked" and d["marker"]]
    by_onset = {}
    for d in locked:
        by_onset.setdefault((d["marker"], round(d["onset"], 6)), []).append(d)
    stages = max((d.get("stages", 1) or 1) for d in locked)
    trials = [v for v in by_onset.values() if len(v) == stages and v[0]["marker"] in hpos][:n]
    not_held_out = sum(1 for k in by_onset if k[0] not in hpos)
    final = [v[-1] for v in trials]
    out = {"stimuli": len(trials), "not_held_out": not_held_out, "stages": stages, "n_gallery": len(gallery_ids),
           "n_held_out": len(held_out), "missed": int(sum(d["missed"] for d in lines)), **score_set(final, bank, hpos)}
    if stages > 1:
        out["per_stage"] = [score_set([v[i] for v in trials], bank, hpos) for i in range(stages)]
    shown = sorted((v[0]["onset"], v[0]["marker"]) for v in trials)
    out["continuous"] = score_continuous(lines, bank, hpos, shown)
    return out


def section(model, r):
    p = lambda x: f"{100 * x:.1f}%"  # noqa: E731
    ng, nh = r["n_gallery"], r["n_held_out"]
    lines = [
        "## Live (simulate -> serve -> client)", "",
        f"`tools/live_report.sh` (`make models` runs it): `meg-decoder simulate --model models/demo --stimuli held-out` "
        f"played held-out stimuli (SOA 1.5 +- 0.2 s) over LSL; `serve --model models/{model}` decoded each one "
        f"event-locked; `client --json --embedding` received them ({r['missed']} missed); the first {r['stimuli']} "
        "stimuli are scored. Single trials, SIMULATED data.", "",
        "| among | top-1 | top-5 | chance top-1 / top-5 |", "|---|---|---|---|",
        f"| all {ng} gallery images (the service's top-k) | {p(r['gallery']['top1'])} | {p(r['gallery']['top5'])} | {p(1 / ng)} / {p(5 / ng)} |",
        f"| the {nh} held-out images (from the embedding) | {p(r['held_out']['top1'])} | {p(r['held_out']['top5'])} | {p(1 / nh)} / {p(5 / nh)} |",
        "",
        f"Onset to decoding at the client: p50 {r['onset_to_decoding_ms']['p50']:.0f} ms, p99 {r['onset_to_decoding_ms']['p99']:.0f} ms "
        f"(the window ends {r['window_end_after_onset_ms']:.0f} ms after the onset).",
    ]
    if "per_stage" in r:
        lines += ["", "Per progressive stage (the same stimuli):", "",
                  "| stage | window ends after the onset | onset to decoding p50 / p99 | top-1 / top-5 among the held-out | among all |",
                  "|---|---|---|---|---|"]
        for i, st in enumerate(r["per_stage"]):
            lines.append(f"| {i + 1} of {r['stages']} | {st['window_end_after_onset_ms']:.0f} ms | "
                         f"{st['onset_to_decoding_ms']['p50']:.0f} / {st['onset_to_decoding_ms']['p99']:.0f} ms | "
                         f"{p(st['held_out']['top1'])} / {p(st['held_out']['top5'])} | {p(st['gallery']['top1'])} / {p(st['gallery']['top5'])} |")
    c = r.get("continuous")
    if c:
        what = ("the encoder for continuous use (`continuous/encoder.onnx`), scored against the image on screen at "
                "each decoding's `on_screen_at`" if c["refers_to"] == "on_screen_at" else
                "the onset-locked model applied every hop (no encoder for continuous use), scored against the image on "
                "screen at each decoding's implied `onset`")
        lines += ["", f"Continuous decodings (every 25 ms, the same stimuli on screen; {c['windows']} decodings) by {what}: "
                  f"top-1 {p(c['top1'])} / top-5 {p(c['top5'])} among the {nh} held-out images (chance {p(1 / nh)} / "
                  f"{p(5 / nh)}); from that instant to the decoding at the client p50 "
                  f"{c['instant_to_decoding_ms']['p50']:.0f} ms, p99 {c['instant_to_decoding_ms']['p99']:.0f} ms."]
    return lines


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="out/live")
    ap.add_argument("-n", type=int, default=200, help="stimuli to score")
    ap.add_argument("models", nargs="+")
    a = ap.parse_args()
    gal = ROOT / "models" / "demo" / "gallery"
    ids = gal.joinpath("ids.txt").read_text().split()
    emb = np.load(gal / "embeddings.npy")
    held_out = (ROOT / "models" / "demo" / "world" / "held_out.txt").read_text().split()
    results = {}
    for m in a.models:
        lines = [json.loads(l) for l in open(pathlib.Path(a.out) / f"decodings_{m}.jsonl") if l.strip()]
        r = results[m] = score(lines, ids, emb, held_out, a.n)
        write_section(ROOT / "models" / m / "REPORT.md", "live", section(m, r))
        print(m, json.dumps(r))
    (pathlib.Path(a.out) / "live.json").write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()

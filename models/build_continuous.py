"""Builds the continuous-decoding encoder of models/demo: a model trained for continuous use,
whose every window is labelled with the image on screen, so a continuous decoding says
"this is (a guess at) the image on screen at `on_screen_at`" (SIMULATED data).

    .venv-models/bin/python models/build_continuous.py [--model models/demo] [--jobs 2]

The model's own encoder is trained on windows locked to an onset (-0.5..1.0 s): applied
every hop it answers "had an image appeared 1.0 s before the window's end". A continuous
decoder has no onset to lock to. This one is trained as the paper's sliding-window
analysis is, on every position of a short window along the recording:

1. Recordings: the demo world (models/demo/world) shows each training image 3 times, each
   validation image 2 times and each held-out image 2 times in random order (SOA 1.5 +-
   0.2 s), as continuous blocks of 120 stimuli, preprocessed as the service does (band-pass
   0.1-40 Hz, Kaiser-sinc resampling to 120 Hz) and scaled by the model's fixed robust
   scaler. Blocks are simulated on `--jobs` processes and cached in models/.cache.
2. Windows: every 50 ms (training) or 25 ms (evaluation, the service's hop) a reference
   instant r; the window [r + end - length, r + end] (baseline: its own mean; clamp 20);
   the target is the embedding of the image on screen at r (the last one whose onset is
   at or before r). `end` (how long after r the window ends) and `length` are chosen on
   the validation images, from the grid below; the ridge lambda too.
3. Export: `continuous/encoder.onnx`, the model's contract with this window, `target =
   on_screen` and the same preprocessing, scaler, clamp and embedding space; the service
   (src/pipeline/continuous.rs) uses it for every continuous decoding.
4. REPORT.md ("Continuous decoding"): retrieval of the image on screen among the 200
   held-out images at every 25 ms hop of the held-out recordings, for this model and for
   the onset-locked model applied every hop (scored against the image on screen at its
   implied onset); the accuracy as a function of the time since the onset (continuous.png).
"""
import argparse
import json
import pathlib
import time

import numpy as np

import build_demo as bd
from contract import read_contract
from report_sections import write_section

HERE = pathlib.Path(__file__).resolve().parent
# (window end after the reference instant, window length), seconds: the validation grid.
GRID = ((0.25, 0.25), (0.25, 0.5), (0.4, 0.5), (0.5, 0.5), (0.5, 0.75))
REPS = {"train": 3, "val": 2, "test": 2}
TRAIN_HOP_S, EVAL_HOP_S = 0.05, 0.025
# THINGS-MEG shows each image for 0.5 s, then a fixation cross until the next one; the demo
# world's responses include the offset response that implies. "On screen" here is the last
# image shown (a display that holds it until the next); REPORT.md also scores the first
# 0.5 s after each onset alone.
SHOWN_S = 0.5


def _block(job):
    """One continuous block in a worker process (its own generator, seeded by (seed, i))."""
    world, seed, i, block = job
    rng = np.random.default_rng([seed, i])
    x, onsets = world.simulate_block(rng, block)
    y = bd.preprocess(x, bd.filters("sinc"), "sinc").astype(np.float32)
    return y, np.asarray(onsets, dtype=np.float64) / bd.FS_IN, np.asarray(block)


def recordings(world, imgs, reps, seed, jobs):
    """Continuous preprocessed blocks showing each image of `imgs` `reps` times:
    [(y [C, n] at 120 Hz, onset times s, image rows)]."""
    import multiprocessing as mp
    import os

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    order = np.concatenate([np.random.default_rng([seed, 10 ** 6]).permutation(imgs) for _ in range(reps)])
    work = [(world, seed, i, order[b:b + 120]) for i, b in enumerate(range(0, len(order), 120))]
    with mp.get_context("fork").Pool(jobs) as pool:
        return pool.map(_block, work, chunksize=1)


def cached_recordings(model, world, split, imgs, seed, jobs):
    path = bd.CACHE / f"continuous_{split}.npz"
    stamp = bd.world_stamp(model)
    if path.exists():
        z = np.load(path, allow_pickle=False)
        if str(z["stamp"]) == stamp and int(z["seed"]) == seed:
            n = int(z["blocks"])
            return [(z[f"y{i}"], z[f"o{i}"], z[f"s{i}"]) for i in range(n)]
    t = time.time()
    recs = recordings(world, imgs, REPS[split], seed, jobs)
    print(f"simulated {split}: {sum(len(s) for _, _, s in recs)} stimuli in {time.time() - t:.0f} s", flush=True)
    bd.CACHE.mkdir(exist_ok=True)
    arrays = {"stamp": np.array(stamp), "seed": np.array(seed), "blocks": np.array(len(recs))}
    for i, (y, o, s) in enumerate(recs):
        arrays.update({f"y{i}": y, f"o{i}": o, f"s{i}": s})
    np.savez(path, **arrays)
    return recs


def on_screen(onsets, shown, r):
    """The image on screen at each instant of `r` (the last onset at or before it); -1 before
    the first onset."""
    k = np.searchsorted(onsets, r, side="right") - 1
    return np.where(k >= 0, shown[np.maximum(k, 0)], -1), np.where(k >= 0, r - onsets[np.maximum(k, 0)], np.nan)


def windows(recs, center, scale, end_s, length_s, hop_s, bins, baseline=None, clamp=20.0):
    """Every `hop_s` a reference instant r from the first onset to 1.3 s after the last: the
    binned, scaled, baselined, clamped window [r + end - length, r + end] (the service's
    WindowAssembler), the image on screen at r and the time since its onset. `baseline`:
    the samples of the window whose mean is subtracted (default: the whole window, as the
    service's baseline_samples() gives for baseline_s = the window: all but its last)."""
    win = int(round(length_s * bd.FS_MODEL)) + 1
    b0, b1 = baseline or (0, win - 1)
    start = int(round((end_s - length_s) * bd.FS_MODEL))
    B = bd.binning(win, bins)
    X, label, since = [], [], []
    step = int(round(hop_s * bd.FS_MODEL))
    for y, onsets, shown in recs:
        y = (y - center[:, None]) / scale[:, None]
        k0 = int(np.ceil(onsets[0] * bd.FS_MODEL))
        k1 = min(int((onsets[-1] + 1.3) * bd.FS_MODEL), y.shape[1] - start - win)
        ks = np.arange(k0, k1, step)
        img, dt = on_screen(onsets, shown, ks / bd.FS_MODEL)
        ep = np.stack([y[:, k + start:k + start + win] for k in ks])
        ep = ep - ep[:, :, b0:b1].mean(2, keepdims=True)
        ep = np.clip(ep, -clamp, clamp)
        X.append((ep @ B).reshape(len(ep), -1).astype(np.float32))
        label.append(img)
        since.append(dt)
    return np.concatenate(X), np.concatenate(label), np.concatenate(since)


def position_specific(train, val, test, world, emb, edges, upto_s=0.8):
    """What knowing the onset would be worth: on the shipped window (the `windows` of each
    split), one ridge model per 100 ms bin of time since the onset (the paper's
    sliding-window analysis), trained and tested on the windows of that bin only (lambda on
    the validation images): top-5 among the held-out images per bin (NaN past `upto_s`)."""
    (Xt, lt, st), (Xv, lv, sv), (Xs, ls, ss) = train, val, test
    out = []
    for a, b in zip(edges[:-1], edges[1:]):
        mt, mv, ms = ((x >= a) & (x < b) for x in (st, sv, ss))
        if a >= upto_s or not (mt.any() and mv.any() and ms.any()):
            out.append(float("nan"))
            continue
        _, W, bias, _ = bd.fit_on_validation(Xt[mt], emb[lt[mt]], Xv[mv], val_rows(world, lv[mv]), emb[world.val])
        out.append(float(hits(Xs[ms] @ W + bias, ls[ms], world.test, emb)[1].mean()))
    return out


def onset_locked_windows(recs, center, scale, hop_s):
    """The model's own (onset-locked) encoder input every `hop_s`: the -0.5..1.0 s window
    around an implied onset r (1.0 s before the window's end), baseline -0.5..0 s."""
    return windows(recs, center, scale, bd.T1, bd.T1 - bd.T0, hop_s, bd.BINS,
                   baseline=(0, int(round(-bd.T0 * bd.FS_MODEL))))


def val_rows(world, labels):
    """Each validation window's image as a row of the validation bank (emb[world.val])."""
    pos = {int(r): i for i, r in enumerate(world.val)}
    return np.array([pos[int(l)] for l in labels])


def hits(pred, label, rows, emb):
    """Top-1/top-5 hit per window: is the image on screen among the best of the images `rows`?"""
    pos = {int(r): i for i, r in enumerate(rows)}
    bank = emb[rows] / np.linalg.norm(emb[rows], axis=1, keepdims=True)
    p = pred / np.linalg.norm(pred, axis=1, keepdims=True)
    sim = p @ bank.T
    truth = np.array([pos[int(l)] for l in label])
    rank = (sim > sim[np.arange(len(p)), truth][:, None]).sum(1)
    return rank < 1, rank < 5


def by_time_since_onset(h5, since, edges):
    return [float(h5[(since >= a) & (since < b)].mean()) if ((since >= a) & (since < b)).any() else float("nan")
            for a, b in zip(edges[:-1], edges[1:])]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=str(HERE / "demo"))
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--jobs", type=int, default=2)
    a = ap.parse_args()
    model = pathlib.Path(a.model)
    started = time.time()
    meta = read_contract(model / "encoder.onnx")
    center, scale = (np.array(meta[k], dtype=np.float32) for k in ("scaler_center", "scaler_scale"))
    names = meta["channel_names"]
    world = bd.World.load(model)
    emb = np.load(model / "gallery" / "embeddings.npy").astype(np.float64)
    recs = {split: cached_recordings(model, world, split, imgs, a.seed + i, a.jobs)
            for i, (split, imgs) in enumerate((("train", world.train), ("val", world.val), ("test", world.test)))}
    t_sim = time.time() - started

    # The window and lambda, chosen on the validation images.
    grid = []
    best = None
    for end_s, length_s in GRID:
        bins = max(3, int(round(length_s * bd.FS_MODEL / 10)))
        tr = windows(recs["train"], center, scale, end_s, length_s, TRAIN_HOP_S, bins)
        va = windows(recs["val"], center, scale, end_s, length_s, EVAL_HOP_S, bins)
        lam, W, b, vacc = bd.fit_on_validation(tr[0], emb[tr[1]], va[0], val_rows(world, va[1]), emb[world.val])
        grid.append((end_s, length_s, bins, lam, vacc))
        print(f"end {end_s} length {length_s} bins {bins}: lambda {lam:g}, validation top-1/5 {vacc[1]:.3f}/{vacc[5]:.3f} "
              f"({len(tr[1])} training windows)", flush=True)
        if best is None or (vacc[5], vacc[1]) > (best[4][5], best[4][1]):
            best = (end_s, length_s, bins, lam, vacc, W, b, tr, va)
    end_s, length_s, bins, lam, vacc, W, b, tr, va = best
    n_train = len(tr[1])

    # Held-out recordings: this model, and the onset-locked model applied every hop.
    te = windows(recs["test"], center, scale, end_s, length_s, EVAL_HOP_S, bins)
    Xs, ls, since = te
    h1, h5 = hits(Xs @ W + b, ls, world.test, emb)
    W_o, b_o = onset_locked_ridge(model)
    Xo, lo, since_o = onset_locked_windows(recs["test"], center, scale, EVAL_HOP_S)
    o1, o5 = hits(Xo @ W_o + b_o, lo, world.test, emb)
    edges = np.round(np.arange(0.0, 1.8001, 0.1), 3)
    curve = {"edges": edges.tolist(), "continuous": by_time_since_onset(h5, since, edges),
             "onset_locked": by_time_since_onset(o5, since_o, edges),
             "position_specific": position_specific(tr, va, te, world, emb, edges)}
    result = {"end_s": end_s, "length_s": length_s, "bins": bins, "lambda": lam, "n_train_windows": n_train,
              "validation": vacc,
              "continuous": {"top1": float(h1.mean()), "top5": float(h5.mean()), "windows": len(ls),
                             "shown_top5": float(h5[since < SHOWN_S].mean())},
              "onset_locked": {"top1": float(o1.mean()), "top5": float(o5.mean()), "windows": len(lo),
                               "shown_top5": float(o5[since_o < SHOWN_S].mean())},
              "curve": curve, "grid": [(e, l, bn, la, v) for e, l, bn, la, v in grid],
              "stimuli": {k: int(sum(len(s) for _, _, s in v)) for k, v in recs.items()}}
    print(json.dumps({k: v for k, v in result.items() if k != "curve"}, default=str), flush=True)

    win = int(round(length_s * bd.FS_MODEL)) + 1
    dest = model / "continuous"
    dest.mkdir(parents=True, exist_ok=True)
    m = dict(meta)
    ws = end_s - length_s
    m.update(name=f"{meta['name']}-continuous", window_samples=win, window_start_s=ws, baseline_s=[ws, end_s],
             target="on_screen",
             description=f"Continuous decoding for {meta['name']}: ridge on the window {ws:+.2f}..{end_s:+.2f} s around "
                         "the decoded instant, trained on every position along the recording with the image on screen "
                         "at that instant as the target (SIMULATED data of the demo world); same preprocessing and scaler.",
             training=f"models/build_continuous.py --seed {a.seed}; ridge lambda {lam:g} (window and lambda chosen on "
                      f"{len(world.val)} validation images); {n_train} windows of {result['stimuli']['train']} "
                      f"presentations, {bins} time bins")
    bd.export_encoder(dest / "encoder.onnx", W, b, names, emb.shape[1], m, win, bins)
    (dest / "report.json").write_text(json.dumps(result, indent=1, default=float) + "\n")
    plot(curve, dest.parent / "continuous.png", end_s)
    report(model, result, len(world.test), t_sim, time.time() - started)


def onset_locked_ridge(model):
    """The shipped onset-locked encoder's weights (its binning, weights and bias)."""
    import onnx
    from onnx import numpy_helper

    init = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(model / "encoder.onnx")).graph.initializer}
    return init["weights"].astype(np.float64), init["bias"].astype(np.float64)


def plot(curve, path, end_s):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    e = np.array(curve["edges"])
    c = (e[:-1] + e[1:]) / 2
    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=110)
    ax.plot(c, 100 * np.array(curve["continuous"]), "o-", label="continuous model (image on screen at on_screen_at)")
    ax.plot(c, 100 * np.array(curve["onset_locked"]), "s--", label="onset-locked model every hop (image on screen at its implied onset)")
    ax.plot(c, 100 * np.array(curve["position_specific"]), "^:", label="one model per 100 ms since onset (onset known)")
    ax.axhline(2.5, color="grey", lw=0.8, ls=":", label="chance (5 of 200)")
    ax.set_xlabel("time since the onset of the image on screen (s)")
    ax.set_ylabel("top-5 among 200 held-out (%)")
    ax.set_title(f"SIMULATED data: continuous decoding, every 25 ms (window ends {end_s:.2f} s after the instant)", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def curve_words(curve, n):
    """What continuous.png shows, in words, from the figures themselves."""
    e, c, o = np.array(curve["edges"]), np.array(curve["continuous"]), np.array(curve["onset_locked"])
    twice = 2 * 5 / n
    above = [i for i in range(len(c)) if c[i] >= twice]
    last = e[above[-1] + 1] if above else None
    p = lambda x: f"{100 * x:.1f}%"  # noqa: E731
    rest_o = np.nanmean(o[1:])
    return (f"By time since the onset of the image on screen (continuous.png, top-5 among the {n} held-out): the "
            f"continuous model is best in the first 100 ms after an onset ({p(c[0])}, when its window holds the "
            f"response), " + (f"at least twice chance ({p(twice)}) in {len(above)} of the {len(c)} 100 ms bins, the last "
                              f"ending {last:.1f} s after the onset; " if above else "never twice chance; ")
            + f"later in each presentation it is near chance ({p(np.nanmean(c[-8:]))} over the last 800 ms): the "
            "simulated response to an image is transient (about 0.6 s, as a real evoked response), so late windows "
            "hold little about the image still on screen and, near the next onset, the next image's response. The "
            f"onset-locked model applied every hop is right only when its implied onset falls near a true onset "
            f"({p(o[0])} within 100 ms of one, {p(rest_o)} elsewhere). What not knowing the onset costs: on the same "
            "window, one model per 100 ms bin of time since the onset (trained and tested on that bin only, as the "
            "paper's sliding-window analysis is) reaches "
            + ", ".join(f"{p(v)}" for v in np.array(curve["position_specific"])[:8] if np.isfinite(v))
            + " in the bins from 0 to 0.8 s: a decoder that must also find the onset in the signal gives up most of "
            "that, and a lab with stimulus markers gets the onset-locked stages instead.")


def report(model, r, n, t_sim, t_all):
    p = lambda x: f"{100 * x:.1f}%"  # noqa: E731
    ws, we = r["end_s"] - r["length_s"], r["end_s"]
    c, o = r["continuous"], r["onset_locked"]
    lines = ["## Continuous decoding", "",
             "A model for continuous use (`models/build_continuous.py`, `continuous/encoder.onnx`): a ridge model on a "
             f"short window, trained on every position of that window along simulated recordings ({r['stimuli']['train']} "
             f"presentations of the training images, {r['n_train_windows']} windows every 50 ms), each labelled with the "
             "image on screen at the decoded instant. The service uses it for every continuous decoding, whose "
             "`on_screen_at` says which instant it decodes (window_start - window_start_s); the onset-locked model "
             "keeps the event-locked decodings. Window and lambda chosen on the validation images:", "",
             "| window around the instant | bins | lambda | validation top-1 / top-5 |", "|---|---|---|---|"]
    for e, l, bn, la, v in r["grid"]:
        mark = " (shipped)" if (e, l) == (r["end_s"], r["length_s"]) else ""
        lines.append(f"| {e - l:+.2f}..{e:+.2f} s{mark} | {bn} | {la:g} | {p(v[1])} / {p(v[5])} |")
    lines += ["", f"On held-out recordings ({r['stimuli']['test']} presentations of the {n} held-out images), every 25 ms "
              "(the service's hop), single windows, is the image on screen (the last one shown) among the best of the "
              "held-out images? The last column scores only instants in the first 500 ms after an onset, while "
              "THINGS-MEG would still display the image:", "",
              "| model | refers to | windows | top-1 | top-5 | top-5 in the first 500 ms after an onset |",
              "|---|---|---|---|---|---|",
              f"| continuous ({ws:+.2f}..{we:+.2f} s) | the image on screen {1e3 * we:.0f} ms before the window's end | "
              f"{c['windows']} | {p(c['top1'])} | {p(c['top5'])} | {p(c['shown_top5'])} |",
              f"| onset-locked (-0.50..+1.00 s) every hop | the image on screen 1000 ms before the window's end (its implied onset) | "
              f"{o['windows']} | {p(o['top1'])} | {p(o['top5'])} | {p(o['shown_top5'])} |",
              "", f"Chance: {p(1 / n)} / {p(5 / n)}. A continuous decoding is available {1e3 * we + 50:.0f} ms after the "
              "instant it decodes (the window's end + the resampler's 50 ms look-ahead + compute).", "",
              "![continuous decoding by time since onset](continuous.png)", "",
              curve_words(r["curve"], n), "",
              f"Build: simulation and fits {t_all:.0f} s on 2 cores (simulation {t_sim:.0f} s, cached in models/.cache)."]
    print(write_section(model / "REPORT.md", "continuous", lines))


if __name__ == "__main__":
    main()

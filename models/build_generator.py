"""Trains the demo's image generator: a convolutional decoder from the demo-shape-v1
embedding to a 64x64 RGB image, replacing build_demo.py's linear (ridge) generator in
models/demo/generator.onnx (SIMULATED stimuli).

    .venv-models/bin/python models/build_generator.py [--epochs 400]

The decoder (0.4 M parameters): Linear 32 -> 128x4x4, four (nearest upsample x2, 3x3
conv, GroupNorm, GELU) stages to 64x64, a 3x3 conv to RGB and a sigmoid. Trained on the
700 training images' embeddings (never the validation or test images), with Gaussian noise
added to the input embedding (a decoded embedding is noisy), MSE + L1 on pixels; the epoch
kept is the one with the lowest validation loss. Measured on the 200 held-out test images
with the paper's low-level metrics (pixel correlation, SSIM against the shown image), from
the true embedding (the ceiling), from models/demo-brain's decoded embedding (12-repetition
average and single trials, the cached test trials of build_demo.py), next to the linear
generator and to the best gallery image (the top-1 retrieved). Writes demo/generator.onnx,
demo/generator_grid.png (shown / retrieved / generated / linear for held-out stimuli) and
the "Generator" section of demo/REPORT.md.
"""
import argparse
import json
import pathlib
import time

import numpy as np
import onnx
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from scipy import ndimage

import build_demo as bd
from contract import read_contract
from report_sections import write_section

HERE = pathlib.Path(__file__).resolve().parent


class Decoder(nn.Module):
    def __init__(self, dim, width=128):
        super().__init__()
        self.width = width
        self.inp = nn.Linear(dim, width * 16)
        chans = [width, 96, 64, 48, 32]
        layers = []
        for a, b in zip(chans[:-1], chans[1:]):
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(a, b, 3, padding=1), nn.GroupNorm(8, b), nn.GELU()]
        self.body = nn.Sequential(*layers)
        self.out = nn.Conv2d(chans[-1], 3, 3, padding=1)

    def forward(self, embedding):
        x = self.inp(embedding).view(-1, self.width, 4, 4)
        return torch.sigmoid(self.out(self.body(x)))


def load_images(model):
    ids = (model / "gallery" / "ids.txt").read_text().split()
    return np.stack([np.asarray(Image.open(model / "gallery" / "images" / f"{i}.png").convert("RGB"), np.float32)
                     .transpose(2, 0, 1) / 255.0 for i in ids])


def pixcorr(a, b):
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    a, b = a - a.mean(1, keepdims=True), b - b.mean(1, keepdims=True)
    return (a * b).sum(1) / np.sqrt((a * a).sum(1) * (b * b).sum(1) + 1e-12)


def ssim(a, b):
    """Mean SSIM of grey-level images (Wang et al. 2004: Gaussian window sd 1.5, K1 0.01,
    K2 0.03, data range 1), per image."""
    g = lambda x: (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).astype(np.float64)  # noqa: E731
    x, y = g(a), g(b)
    f = lambda z: ndimage.gaussian_filter(z, sigma=(0, 1.5, 1.5), truncate=3.5)  # noqa: E731
    mx, my = f(x), f(y)
    vx, vy, cxy = f(x * x) - mx * mx, f(y * y) - my * my, f(x * y) - mx * my
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return s.reshape(len(s), -1).mean(1)


def run_onnx(path, x, name_in, threads=1):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return np.concatenate([sess.run(None, {name_in: x[i:i + 64]})[0] for i in range(0, len(x), 64)]), sess


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=str(HERE / "demo"))
    ap.add_argument("--brain", default=str(HERE / "demo-brain"))
    ap.add_argument("--epochs", type=int, default=400)
    ap.add_argument("--noise", type=float, default=0.5, help="sd of the Gaussian noise on training embeddings (x the embedding's per-dim sd)")
    ap.add_argument("--seed", type=int, default=7)
    a = ap.parse_args()
    t0 = time.time()
    torch.manual_seed(a.seed)
    torch.set_num_threads(2)
    model, brain = pathlib.Path(a.model), pathlib.Path(a.brain)
    world = bd.World.load(model)
    emb = np.load(model / "gallery" / "embeddings.npy").astype(np.float32)
    imgs = load_images(model)
    sd = emb.std(0).mean()
    X, Y = torch.tensor(emb[world.train]), torch.tensor(imgs[world.train])
    Xv, Yv = torch.tensor(emb[world.val]), torch.tensor(imgs[world.val])
    net = Decoder(emb.shape[1])
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, a.epochs)
    loss_fn = lambda p, y: F.mse_loss(p, y) + 0.5 * F.l1_loss(p, y)  # noqa: E731
    best = (float("inf"), -1, None)
    for ep in range(a.epochs):
        net.train()
        perm = torch.randperm(len(X))
        for i in range(0, len(X), 64):
            idx = perm[i:i + 64]
            e = X[idx] + a.noise * sd * torch.rand(len(idx), 1) * torch.randn_like(X[idx])
            loss = loss_fn(net(e), Y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
        net.eval()
        with torch.no_grad():
            v = loss_fn(net(Xv), Yv).item()
        if v < best[0]:
            best = (v, ep, {k: t.clone() for k, t in net.state_dict().items()})
        if ep % 50 == 0 or ep == a.epochs - 1:
            print(f"epoch {ep}: train {loss.item():.4f} val {v:.4f}", flush=True)
    net.load_state_dict(best[2])
    net.eval()
    t_train = time.time() - t0
    params = sum(p.numel() for p in net.parameters())

    # Export, keeping the linear generator for the comparison.
    linear = pathlib.Path("/tmp") / "meg-decoder-linear-generator.onnx"
    gen = model / "generator.onnx"
    old = onnx.load(str(gen))
    if old.graph.name == "demo_linear_generator":
        onnx.save(old, str(linear))
    path = str(gen)
    kw = dict(input_names=["embedding"], output_names=["image"], dynamic_axes={"embedding": {0: "batch"}, "image": {0: "batch"}}, opset_version=17)
    try:
        torch.onnx.export(net, (torch.tensor(emb[:1]),), path, dynamo=False, **kw)
    except TypeError:
        torch.onnx.export(net, (torch.tensor(emb[:1]),), path, **kw)
    m = onnx.load(path)
    m.graph.name = "demo_conv_generator"
    m.producer_name = "meg-decoder models/build_generator.py"
    onnx.save(m, path)

    # Decoded embeddings of the held-out test images (models/demo-brain on the cached trials).
    meta = read_contract(brain / "encoder.onnx")
    center, scale = np.array(meta["scaler_center"]), np.array(meta["scaler_scale"])
    cached = bd.load_trials(model)
    if cached is None:
        raise SystemExit("no cached trials: run build_demo.py first")
    xs, ls = cached["test"]
    pred, _ = run_onnx(brain / "encoder.onnx", bd.finish(np.asarray(xs), center, scale), "meg")
    avg, order = bd.average_by_image(pred, ls)  # order: sorted test images
    first = np.array([np.where(ls == i)[0][0] for i in order])
    single = pred[first]
    shown = imgs[order]

    def up(x):  # the linear generator draws 32x32: nearest-upsampled to compare at 64x64
        return x.repeat(2, axis=2).repeat(2, axis=3) if x.shape[-1] == 32 else x

    def retrieve(e):
        en = e / np.linalg.norm(e, axis=1, keepdims=True)
        gn = emb / np.linalg.norm(emb, axis=1, keepdims=True)
        return imgs[np.argmax(en @ gn.T, axis=1)]

    conv = lambda e: run_onnx(gen, e.astype(np.float32), "embedding")[0]  # noqa: E731
    lin = (lambda e: up(run_onnx(linear, e.astype(np.float32), "embedding")[0])) if linear.exists() else None
    rows = []
    for label, e in (("true embedding (ceiling)", emb[order]), ("decoded, 12-repetition average", avg), ("decoded, single trial", single)):
        r = {"input": label, "conv": conv(e), "retrieved": retrieve(e)}
        if lin:
            r["linear"] = lin(e)
        rows.append({"input": label, **{k: (float(np.mean(pixcorr(v, shown))), float(np.mean(ssim(v, shown))))
                                        for k, v in r.items() if k != "input"}})
        if label.startswith("decoded, 12"):
            grid_sets = r
    # Speed: one embedding at a time, one thread.
    _, sess = run_onnx(gen, emb[:1], "embedding")
    ts = []
    for i in range(200):
        t = time.perf_counter()
        sess.run(None, {"embedding": emb[i:i + 1]})
        ts.append(time.perf_counter() - t)
    ms = 1e3 * float(np.median(ts))
    grid(model / "generator_grid.png", shown, grid_sets, n=10)
    report(model, rows, params, t_train, best[1], ms, a)
    (model / "generator.json").write_text(json.dumps({"rows": rows, "params": params, "train_s": t_train, "best_epoch": best[1],
                                                       "median_ms_1_thread": ms}, indent=1) + "\n")


def grid(path, shown, sets, n):
    cols = [("shown", shown[:n]), ("retrieved (top-1)", sets["retrieved"][:n]), ("generated", sets["conv"][:n])]
    if "linear" in sets:
        cols.append(("linear generator", sets["linear"][:n]))
    tile, pad = 64, 4
    from PIL import ImageDraw

    W = len(cols) * (tile + pad) + pad + 120
    H = n * (tile + pad) + pad + 18
    im = Image.new("RGB", (W, H), (255, 255, 255))
    d = ImageDraw.Draw(im)
    for j, (name, arr) in enumerate(cols):
        d.text((120 + pad + j * (tile + pad), 3), name, fill=(0, 0, 0))
        for i in range(n):
            a = (np.clip(arr[i], 0, 1).transpose(1, 2, 0) * 255).astype(np.uint8)
            im.paste(Image.fromarray(a), (120 + pad + j * (tile + pad), 18 + pad + i * (tile + pad)))
    for i in range(n):
        d.text((4, 18 + pad + i * (tile + pad) + 26), f"held-out #{i + 1}", fill=(0, 0, 0))
    d.text((4, 3), "SIMULATED", fill=(200, 0, 0))
    im.save(path)


def report(model, rows, params, t_train, best_ep, ms, a):
    f = lambda v: f"{v[0]:.3f} / {v[1]:.3f}"  # noqa: E731
    has_lin = "linear" in rows[0]
    lines = ["## Generator", "",
             f"`models/build_generator.py` (`make models`): a convolutional decoder (embedding -> 64x64 RGB, {params / 1e3:.0f} k "
             f"parameters) trained on the 700 training images' embeddings with input noise ({a.epochs} epochs, kept epoch "
             f"{best_ep} on the validation images; {t_train:.0f} s on 2 CPU cores); {ms:.2f} ms per image on one CPU core "
             "(ONNX Runtime, median of 200). Measured on the 200 held-out test images with the paper's low-level metrics "
             "against the shown image: pixel correlation / SSIM (grey level), means over images; the decoded embeddings are "
             "models/demo-brain's on the cached test trials. SIMULATED stimuli.", "",
             "| generator input | generated (conv) | " + ("linear generator | " if has_lin else "") + "best gallery image (top-1 retrieved) |",
             "|---|---|" + ("---|" if has_lin else "") + "---|"]
    for r in rows:
        lines.append(f"| {r['input']} | {f(r['conv'])} | " + (f"{f(r['linear'])} | " if has_lin else "") + f"{f(r['retrieved'])} |")
    lines += ["", "![shown, retrieved, generated (12-repetition average), linear](generator_grid.png)"]
    print(write_section(model / "REPORT.md", "generator", lines))


if __name__ == "__main__":
    main()

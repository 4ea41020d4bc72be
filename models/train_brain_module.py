"""Trains the paper's brain module (scaled down) on the simulated demo world and exports it
to models/demo-brain/encoder.onnx with the full contract. SIMULATED data.

    .venv-models/bin/python models/train_brain_module.py [--device cuda|cpu] [--out DIR]

Architecture (Benchetrit, Banville & King 2023, after Defossez et al. 2023), scaled down:
spatial attention over the 306 Neuromag sensor positions (Fourier features, K=16 -> 128
virtual channels, softmax over sensors), a 1x1 convolution, a subject layer (one
subject), three residual blocks of dilated convolutions (128 channels, kernel 3, BatchNorm,
GELU, GLU), 1x1 convolutions to 256 features, temporal aggregation (a learned affine map
over the 181 time samples), and two MLP heads: CLIP (exported as `embedding`) and MSE.
Loss: 0.75 * CLIP (InfoNCE of the CLIP head against all training images' embeddings,
temperature 0.1) + 0.25 * MSE (MSE head vs the image embedding), as in the paper.
Data: the committed world of models/demo (patterns, kernels, features), trials simulated
with models/build_demo.py's generator and preprocessed exactly as the service does;
the 48 held-out images of build_demo (same seed) are never trained on.
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
from scipy import signal

import build_demo as bd
from contract import write_contract

HERE = pathlib.Path(__file__).resolve().parent


def held_out_split(seed=7):
    """Replays build_demo.main's random draws up to its permutation of the images."""
    rng = np.random.default_rng(seed)
    rows = bd.stimuli(rng)
    f = bd.features(rows)
    rng.standard_normal((32, f.shape[1]))
    _, kind, xy = bd.load_layout()
    bd.world_patterns(rng, kind, xy, f.shape[1])
    perm = rng.permutation(len(rows))
    return perm[:48], perm[48:]


class Block(nn.Module):
    def __init__(self, cin, h, d1, d2):
        super().__init__()
        self.c1, self.b1 = nn.Conv1d(cin, h, 3, padding=d1, dilation=d1), nn.BatchNorm1d(h)
        self.c2, self.b2 = nn.Conv1d(h, h, 3, padding=d2, dilation=d2), nn.BatchNorm1d(h)
        self.c3 = nn.Conv1d(h, 2 * h, 3, padding=2, dilation=2)
        self.skip = cin == h

    def forward(self, x):
        h = F.gelu(self.b1(self.c1(x)))
        x = x + h if self.skip else h
        x = x + F.gelu(self.b2(self.c2(x)))
        return F.glu(self.c3(x), dim=1)


class BrainModule(nn.Module):
    def __init__(self, xy, out_dim, virt=128, hidden=128, feat=256, k=16, t=181, blocks=3):
        super().__init__()
        pos = (xy - xy.min(0)) / (xy.max(0) - xy.min(0)) * 0.8 + 0.1
        kk = np.arange(k)
        ph = 2 * np.pi * (pos[:, 0, None, None] * kk[None, :, None] + pos[:, 1, None, None] * kk[None, None, :])
        four = np.concatenate([np.cos(ph).reshape(len(xy), -1), np.sin(ph).reshape(len(xy), -1)], 1)
        self.register_buffer("fourier", torch.tensor(four, dtype=torch.float32))
        self.attn = nn.Linear(four.shape[1], virt, bias=False)
        self.conv_in = nn.Conv1d(virt, virt, 1)
        self.subject = nn.Parameter(torch.eye(virt))
        self.blocks = nn.Sequential(*[Block(virt if i == 0 else hidden, hidden, 2 ** ((2 * i) % 5), 2 ** ((2 * i + 1) % 5)) for i in range(blocks)])
        self.final = nn.Sequential(nn.Conv1d(hidden, 2 * hidden, 1), nn.GELU(), nn.Conv1d(2 * hidden, feat, 1))
        self.temporal = nn.Linear(t, 1)
        self.clip_head = nn.Sequential(nn.LayerNorm(feat), nn.GELU(), nn.Linear(feat, out_dim))
        self.mse_head = nn.Sequential(nn.LayerNorm(feat), nn.GELU(), nn.Linear(feat, out_dim))

    def forward(self, meg):
        w = torch.softmax(self.attn(self.fourier).t(), dim=1)  # [V, C]
        x = torch.matmul(w, meg)  # [B, V, T]
        x = torch.matmul(self.subject, self.conv_in(x))
        x = self.final(self.blocks(x))
        x = self.temporal(x).squeeze(-1)
        return self.clip_head(x), self.mse_head(x)


class Export(nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, meg):
        return self.m(meg)[0]


def make_trials(rng, imgs, reps, world, shifts=(0.0,)):
    feats, pats, kers, kind, xy, center, scale = world
    sos = signal.butter(4, [0.1, 40.0], "bandpass", fs=bd.FS_IN, output="sos")
    order = np.concatenate([rng.permutation(imgs) for _ in range(reps)])
    eps = {s: [] for s in shifts}
    for b in range(0, len(order), 120):
        block = order[b:b + 120]
        x, onsets = bd.simulate_block(rng, block, feats, pats, kers, kind, xy, 1.0)
        y = bd.preprocess(x, sos)
        for s in shifts:
            eps[s].append(bd.finish(bd.epochs(y, onsets, s), center, scale).astype(np.float32))
    return {s: np.concatenate(v) for s, v in eps.items()}, order


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", default=str(HERE / "demo-brain"))
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--small", action="store_true",
                    help="the CPU recipe: 64 virtual/hidden channels, 2 blocks, at most 40 epochs (2 CPU cores, < 20 min)")
    args = ap.parse_args()
    size = dict(virt=128, hidden=128, feat=256, blocks=3)
    if args.small:
        size = dict(virt=64, hidden=64, feat=128, blocks=2)
        args.epochs = min(args.epochs, 40)
        torch.set_num_threads(2)
    t_start = time.time()
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed + 1)
    demo = HERE / "demo"
    meta = {p.key: p.value for p in onnx.load(str(demo / "encoder.onnx")).metadata_props}
    center, scale = np.array(json.loads(meta["scaler_center"])), np.array(json.loads(meta["scaler_scale"]))
    _, kind, xy = bd.load_layout()
    world = (np.load(demo / "world" / "features.npy"), np.load(demo / "world" / "patterns.npy").astype(np.float64),
             np.load(demo / "world" / "kernels.npy").astype(np.float64), kind, xy, center, scale)
    emb = np.load(demo / "gallery" / "embeddings.npy")
    test_imgs, train_imgs = held_out_split()
    train, train_lab = make_trials(rng, train_imgs, args.reps, world)
    shifts = tuple(np.round(np.arange(-0.5, 0.76, 0.125), 3))
    test, test_lab = make_trials(rng, test_imgs, 4, world, shifts)
    t_data = time.time() - t_start
    dev = torch.device(args.device)
    X = torch.tensor(train[0.0], device=dev)
    Y = torch.tensor(emb[train_lab], device=dev)
    bank = F.normalize(torch.tensor(emb[train_imgs], device=dev), dim=1)
    lab_in_bank = torch.tensor([int(np.where(train_imgs == l)[0][0]) for l in train_lab], device=dev)
    model = BrainModule(xy, emb.shape[1], **size).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-2)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-3, total_steps=args.epochs * ((len(X) + 127) // 128))
    for ep in range(args.epochs):
        model.train()
        perm = torch.randperm(len(X), device=dev)
        tot = 0.0
        for i in range(0, len(X), 128):
            idx = perm[i:i + 128]
            clip, mse = model(X[idx])
            logits = F.normalize(clip, dim=1) @ bank.t() / 0.1
            loss = 0.75 * F.cross_entropy(logits, lab_in_bank[idx]) + 0.25 * F.mse_loss(mse, Y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            tot += loss.item() * len(idx)
        print(f"epoch {ep}: loss {tot / len(X):.4f}", flush=True)
    model.eval()
    test_bank = emb[test_imgs]
    lab_idx = np.array([np.where(test_imgs == l)[0][0] for l in test_lab])
    curve = {}
    with torch.no_grad():
        for s in shifts:
            pred = model(torch.tensor(test[s], device=dev))[0].cpu().numpy()
            curve[float(s)] = bd.topk_acc(pred, lab_idx, test_bank)
    t_train = time.time() - t_start - t_data
    print(json.dumps(curve))
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = model.cpu()
    ref_in = np.load(demo / "reference_input.npy")
    exp = Export(model).eval()
    path = str(out / "encoder.onnx")
    kw = dict(input_names=["meg"], output_names=["embedding"], dynamic_axes={"meg": {0: "batch"}, "embedding": {0: "batch"}}, opset_version=17)
    try:
        torch.onnx.export(exp, (torch.tensor(ref_in),), path, dynamo=False, **kw)
    except TypeError:
        torch.onnx.export(exp, (torch.tensor(ref_in),), path, **kw)
    m = onnx.load(path)
    new_meta = {k: (json.loads(v) if v.startswith("[") else v) for k, v in meta.items() if k != "meg_decoder.contract"}
    for k in ("sample_rate_hz", "window_start_s", "highpass_hz", "lowpass_hz", "notch_q", "clamp"):
        new_meta[k] = float(new_meta[k])
    for k in ("window_samples", "filter_order", "embedding_dim", "subjects"):
        new_meta[k] = int(new_meta[k])
    params = sum(p.numel() for p in model.parameters())
    new_meta.update(name="demo-brain-module-v1",
                    description=f"Brain module ({params / 1e6:.2f} M parameters) trained with CLIP + MSE on SIMULATED MEG of the demo world.",
                    training=f"models/train_brain_module.py --seed {args.seed} --reps {args.reps} --epochs {args.epochs}{' --small' if args.small else ''} on {args.device}")
    write_contract(m, new_meta, path)
    with torch.no_grad():
        ref_out = exp(torch.tensor(ref_in)).numpy()
    np.save(out / "reference_input.npy", ref_in)
    np.save(out / "reference_output.npy", ref_out.astype(np.float32))
    report = {"params": params, "train_trials": int(len(X)), "test_trials": int(len(test_lab)), "held_out_images": 48,
              "curve": curve, "data_s": t_data, "train_s": t_train, "device": args.device, "torch": torch.__version__,
              "epochs": args.epochs, "reps": args.reps, "seed": args.seed, "small": args.small}
    (out / "training.json").write_text(json.dumps(report, indent=2))
    print(json.dumps({k: v for k, v in report.items() if k != "curve"}))


if __name__ == "__main__":
    main()

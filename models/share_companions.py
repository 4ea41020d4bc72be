"""Gives a model directory the progressive stages and the encoder for continuous use of
another model with the same contract (the same preprocessing, scaler and embedding space,
trained on the same world), as relative links (one copy in git), and says so in its
REPORT.md.

    .venv-models/bin/python models/share_companions.py --source demo --to demo-brain

`make models` runs it after training the brain module: models/demo-brain (the default
model) then decodes every onset first with demo's linear stages (-0.5..+0.25 s and
-0.5..+0.5 s, about 300 and 550 ms after the onset) and last with the brain module's own
-0.5..+1.0 s window, and every continuous window with demo's encoder for continuous use.
Training the brain module on the shorter windows and for continuous use needs a GPU run
(`make -C models brain-gpu` takes one window); until then the early guesses are the
linear model's. The service checks each linked encoder against the model as it loads
it (src/pipeline/stages.rs, src/pipeline/continuous.rs).
"""
import argparse
import os
import pathlib

from contract import read_contract
from report_sections import write_section

HERE = pathlib.Path(__file__).resolve().parent
# Contract keys that may differ: they describe the model, not what it expects.
OWN = ("name", "description", "training")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--source", default="demo")
    ap.add_argument("--to", default="demo-brain")
    a = ap.parse_args()
    src, dst = HERE / a.source, HERE / a.to
    mine, theirs = read_contract(dst / "encoder.onnx"), read_contract(src / "encoder.onnx")
    differ = sorted(k for k in set(mine) | set(theirs) if k not in OWN and mine.get(k) != theirs.get(k))
    if differ:
        raise SystemExit(f"{a.to} and {a.source} differ in {differ}: their stages and continuous encoder cannot be shared")
    shared = []
    for name in ("stages", "continuous"):
        if not (src / name).is_dir():
            continue
        link = dst / name
        if link.is_symlink() or link.exists():
            if not link.is_symlink():
                raise SystemExit(f"{link} exists and is not a link: remove it first")
            link.unlink()
        link.symlink_to(os.path.relpath(src / name, dst))
        shared.append(name)
    stages = sorted(p.name for p in (src / "stages").iterdir()) if "stages" in shared else []
    cont = read_contract(src / "continuous" / "encoder.onnx") if "continuous" in shared else None
    lines = ["## Progressive stages and continuous decoding (shared with models/" + a.source + ")", "",
             f"`stages/` and `continuous/` are links to models/{a.source}'s (`models/share_companions.py`): the same "
             "contract but for the window, so the service decodes every onset first with "
             f"{a.source}'s linear stages ({', '.join(stages) or 'none'}) and last with this model's own window, and "
             "every continuous window with its encoder for continuous use"
             + (f" ({cont['window_start_s']:+.2f}..{cont['window_start_s'] + (cont['window_samples'] - 1) / cont['sample_rate_hz']:+.2f} s "
                "around the instant whose on-screen image it guesses)" if cont else "")
             + ". Their offline figures are in models/" + a.source + "/REPORT.md (\"Progressive decoding\", "
             "\"Continuous decoding\"); the Live section scores each stage and the continuous decodings as this "
             "model serves them. The brain module itself on the shorter windows and for continuous use needs a GPU "
             "run; until then the early guesses are the linear model's."]
    print(write_section(dst / "REPORT.md", "companions", lines))


if __name__ == "__main__":
    main()

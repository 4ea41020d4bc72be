"""Writes models/layouts/*.tsv from MNE-Python's sensor layouts (run once; output committed).

Usage: python3 tools/make_layouts.py /path/to/mne/channels/data/layouts
The layouts are 2-D projections of the real sensor positions (MNE's Vectorview-all.lout
and CTF-275.lout). meg-decoder uses them to name channels and to give simulated sources
a smooth spatial pattern.
"""
import sys, pathlib

src = pathlib.Path(sys.argv[1])
out = pathlib.Path(__file__).resolve().parent.parent / "models" / "layouts"
out.mkdir(parents=True, exist_ok=True)

def rows(path):
    for line in path.read_text().splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 6:
            yield float(parts[1]), float(parts[2]), " ".join(parts[5:])

with open(out / "neuromag306.tsv", "w") as f:
    f.write("name\ttype\tunit\tx\ty\n")
    for x, y, name in rows(src / "Vectorview-all.lout"):
        name = name.replace(" ", "")
        kind, unit = ("mag", "T") if name.endswith("1") else ("grad", "T/m")
        f.write(f"{name}\t{kind}\t{unit}\t{x:.4f}\t{y:.4f}\n")

# CTF 275 minus 3 sensors (many CTF sites run with a few dead channels; THINGS-MEG uses
# 272). We drop the last three of MNE's list; a lab's own list replaces this file.
ctf = [(x, y, name.split("-")[0]) for x, y, name in rows(src / "CTF-275.lout")][:272]
with open(out / "ctf272.tsv", "w") as f:
    f.write("name\ttype\tunit\tx\ty\n")
    for x, y, name in ctf:
        f.write(f"{name}\taxial_grad\tT\t{x:.4f}\t{y:.4f}\n")

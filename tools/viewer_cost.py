"""What one open viewer costs the service: `serve`'s CPU time without a viewer, with one
headless chromium showing the page, and without again (to bracket drift), in one run on
the same simulated session.

    make build venv
    .venv/bin/python tools/viewer_cost.py [--seconds 60]

Writes out/viewer_cost.json and prints a summary. CPU is user + system time of the serve
process from /proc/<pid>/stat, as a percentage of one core.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "common"))
from browser import Browser, free_port  # noqa: E402

BIN = os.path.join(ROOT, "target", "release", "meg-decoder")
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def measure(pid, seconds):
    c0, t0 = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    return 100.0 * (cpu_seconds(pid) - c0) / (time.monotonic() - t0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="length of each phase")
    args = ap.parse_args()
    cfg = open(os.path.join(ROOT, "deploy", "lsl_api.loopback.cfg")).read()
    session = f"viewer-cost-{os.getpid()}"
    cfg_path = os.path.join(tempfile.gettempdir(), f"{session}.cfg")
    with open(cfg_path, "w") as f:
        f.write(cfg.replace("SessionID = meg-decoder-test", f"SessionID = {session}"))
    env = dict(os.environ, LSLAPICFG=cfg_path, MEG_DECODER_LOG="warn")
    name = session
    grpc, http = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    procs = [subprocess.Popen([BIN, "simulate", "--model", "models/demo", "--name", name, "--source-id", name,
                               "--markers", f"{name}-m"], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        serve = subprocess.Popen([BIN, "serve", "--model", "models/demo-brain", "--stream-name", name,
                                  "--markers-name", f"{name}-m", "--listen", grpc, "--http-listen", http],
                                 cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(serve)
        print(f"serve pid {serve.pid}; warming up 15 s", flush=True)
        time.sleep(15)
        result = {"seconds_per_phase": args.seconds, "stream": "Neuromag 306 ch x 1000 Hz (simulate, demo world)",
                  "model": "models/demo-brain"}
        result["without_viewer_pct"] = measure(serve.pid, args.seconds)
        print(f"without a viewer: {result['without_viewer_pct']:.2f}% of a core", flush=True)
        b = Browser()
        try:
            b.open(f"http://{http}/")
            time.sleep(5)
            result["with_viewer_pct"] = measure(serve.pid, args.seconds)
            result["page"] = json.loads(b.eval("JSON.stringify(window.viewer)"))
        finally:
            b.quit()
        print(f"with one viewer: {result['with_viewer_pct']:.2f}% of a core", flush=True)
        time.sleep(2)
        result["without_viewer_after_pct"] = measure(serve.pid, args.seconds)
        print(f"without again: {result['without_viewer_after_pct']:.2f}% of a core", flush=True)
        base = (result["without_viewer_pct"] + result["without_viewer_after_pct"]) / 2
        result["added_by_viewer_pct"] = result["with_viewer_pct"] - base
        print(f"added by one viewer: {result['added_by_viewer_pct']:.2f}% of a core "
              f"(goal: under 2%)", flush=True)
        os.makedirs(os.path.join(ROOT, "out"), exist_ok=True)
        with open(os.path.join(ROOT, "out", "viewer_cost.json"), "w") as f:
            json.dump(result, f, indent=2)
    finally:
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
        os.unlink(cfg_path)


if __name__ == "__main__":
    main()

"""`meg-decoder-client` (or `python -m meg_decoder_client`): the console subscriber's
basics in Python. One line per decoding (or JSON), a running top-1/top-5 hit rate when
markers name the true image, `--status`, and recording start/stop."""
import argparse
import json
import logging
import os
import sys

import grpc

from .client import Client


def _args(argv):
    ap = argparse.ArgumentParser(prog="meg-decoder-client", description=__doc__.splitlines()[0])
    ap.add_argument("--addr", default=os.environ.get("MEG_DECODER_ADDR", "127.0.0.1:50051"),
                    help="host:port, http://host:port or https://host:port")
    ap.add_argument("--token", default=os.environ.get("MEG_DECODER_TOKEN") or None, help="bearer token")
    ap.add_argument("--tls-ca", help="CA certificate (PEM) to trust for TLS")
    ap.add_argument("--count", type=int, default=0, help="stop after this many decodings (0 = never)")
    ap.add_argument("--json", action="store_true", help="one JSON object per line")
    ap.add_argument("--embedding", action="store_true", help="include the embedding (JSON output)")
    ap.add_argument("--max-rate", type=float, default=4.0, help="continuous decodings per second (0 = all)")
    ap.add_argument("--event-locked-only", action="store_true")
    ap.add_argument("--max-age", type=float, default=2.0, help="never show a decoding older than this (s)")
    ap.add_argument("--latest-only", action="store_true", help="when behind, skip to the newest")
    ap.add_argument("--reconnect", action="store_true", help="resubscribe when the server goes away")
    ap.add_argument("--status", action="store_true", help="print the status as JSON and exit")
    ap.add_argument("--start-recording", metavar="SUBJECT", help="start recording for this subject and exit")
    ap.add_argument("--stop-recording", action="store_true", help="stop the recording and exit")
    a = ap.parse_args(argv)
    if a.count < 0:
        ap.error(f"--count {a.count}: must be 0 (no limit) or more")
    return a


def main(argv=None):
    a = _args(argv)
    logging.basicConfig(format="meg-decoder-client: %(message)s", level=logging.WARNING)
    try:
        with Client(a.addr, a.token, a.tls_ca) as c:
            if a.status:
                print(json.dumps(c.status(), indent=1))
                return 0
            if a.start_recording:
                print(json.dumps(c.start_recording(a.start_recording).__dict__))
                return 0
            if a.stop_recording:
                print(json.dumps(c.stop_recording().__dict__))
                return 0
            return _subscribe(c, a)
    except grpc.RpcError as e:
        print(f"meg-decoder-client: {e.code().name}: {e.details()}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # e.g. piped into `head`
        sys.stderr.close()
        return 0
    except (ValueError, OSError) as e:
        print(f"meg-decoder-client: {e}", file=sys.stderr)
        return 2


def _subscribe(c, a):
    trials = top1 = top5 = n = 0
    sub = c.subscribe(include_embedding=a.embedding, max_rate_hz=a.max_rate, continuous=not a.event_locked_only,
                      max_age_s=a.max_age, latest_only=a.latest_only, reconnect=a.reconnect)
    try:
        for d in sub:
            ids = [h.image_id for h in d.top_k]
            # Progressive decoding: the model's own window (the last stage) is scored.
            if d.mode == "event_locked" and d.marker and ids and d.final:
                trials += 1
                top1 += ids[0] == d.marker
                top5 += d.marker in ids[:5]
            if a.json:
                out = {"sequence": d.sequence, "mode": d.mode, "marker": d.marker, "window_start": d.window_start,
                       "window_end": d.window_end, "onset": d.onset,
                       "latency_ms": d.latency_ms, "age_ms": d.age_ms, "missed": d.missed, "top_k": ids,
                       "stage": d.stage, "stages": d.stages, "on_screen_at": d.on_screen_at,
                       "embedding_dim": int(d.embedding.size)}
                if a.embedding:
                    out["embedding"] = d.embedding.tolist()
                print(json.dumps(out), flush=True)
            else:
                print(f"#{d.sequence} {d.marker or 'continuous'} top5={ids[:5]} latency={d.latency_ms:.1f} ms "
                      f"age={d.age_ms:.0f} ms" + (f" missed={d.missed}" if d.missed else ""), flush=True)
            n += 1
            if a.count and n >= a.count:
                break
    except KeyboardInterrupt:
        pass
    finally:
        sub.close()
    if trials:
        print(f"hit rate over {trials} stimuli: top-1 {top1 / trials:.1%}, top-5 {top5 / trials:.1%}", file=sys.stderr)
    return 0

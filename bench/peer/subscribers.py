"""Subscriber load for the comparison harness (tools/bench_compare.py): N `Subscribe`
streams, in this one process, to a `megdecoder.v1.Decoder` server (the Rust service or the
Python peer), each on its own channel (its own TCP connection), timing every decoding on
arrival with the LSL clock (pylsl.local_clock: the clock window_end and decoded_at use).

    .venv/bin/python bench/peer/subscribers.py --addr 127.0.0.1:50051 --subscribers 100 --seconds 20

Protocol on stdout, for the harness: `ready <t>` once every subscriber has received a
decoding and --warmup seconds have passed (the measuring interval starts), `done <t>` when
it ends, then one JSON line with what was received in between:
  e2e_ms       client receive time - window_end (end-to-end latency; p50/p90/p99/max)
  transit_ms   client receive time - decoded_at (hub + gRPC + client)
  latency_ms   the server's own Decoding.latency_ms (decoded_at - window_end)
  encoder_ms   Decoding.encoder_ms
  rate_hz      distinct decodings per second per subscriber (mean over subscribers)
  missed       sum of Decoding.missed; gaps: sequence numbers never received
Exits 1 with the reason if a subscriber's stream fails.
"""
import argparse
import asyncio
import json
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


def percentiles(values):
    if not values:
        return {"n": 0}
    a = np.asarray(values)
    return {"n": int(a.size), "p50": float(np.percentile(a, 50)), "p90": float(np.percentile(a, 90)),
            "p99": float(np.percentile(a, 99)), "max": float(a.max()), "mean": float(a.mean())}


async def run(args):
    import grpc
    from pylsl import local_clock

    from stubs import load

    pb, pb_grpc = load()
    n = args.subscribers
    first = asyncio.Event()
    got_first = [False] * n
    window = {"start": None, "end": None}
    rec = {"e2e": [], "transit": [], "latency": [], "encoder": []}
    seqs = [[] for _ in range(n)]
    missed = [0] * n
    errors = []
    request = pb.SubscribeRequest(include_embedding=args.embedding, top_k=args.top_k, continuous=True)

    async def one(i):
        options = [("grpc.use_local_subchannel_pool", 1)]  # its own connection
        async with grpc.aio.insecure_channel(args.addr, options=options) as channel:
            call = pb_grpc.DecoderStub(channel).Subscribe(request, wait_for_ready=True)
            try:
                async for d in call:
                    t = local_clock()
                    if not got_first[i]:
                        got_first[i] = True
                        if all(got_first):
                            first.set()
                    start, end = window["start"], window["end"]
                    if start is None or t < start:
                        continue
                    if end is not None and t >= end:
                        break
                    rec["e2e"].append((t - d.window_end) * 1e3)
                    rec["transit"].append((t - d.decoded_at) * 1e3)
                    rec["latency"].append(d.latency_ms)
                    rec["encoder"].append(d.encoder_ms)
                    seqs[i].append(d.sequence)
                    missed[i] += d.missed
            except grpc.aio.AioRpcError as e:
                if window["end"] is None or local_clock() < window["end"]:
                    errors.append(f"subscriber {i}: {e.code().name}: {e.details()}")
            finally:
                call.cancel()

    tasks = [asyncio.create_task(one(i)) for i in range(n)]
    try:
        await asyncio.wait_for(first.wait(), args.connect_timeout)
    except asyncio.TimeoutError:
        print(f"only {sum(got_first)} of {n} subscribers received a decoding within {args.connect_timeout} s "
              f"from {args.addr}; errors: {errors[:3]}", file=sys.stderr)
        for t in tasks:
            t.cancel()
        return 1
    await asyncio.sleep(args.warmup)
    window["start"] = local_clock()
    window["end"] = window["start"] + args.seconds
    print(f"ready {window['start']:.6f}", flush=True)
    cpu0 = time.process_time()
    await asyncio.sleep(args.seconds)
    print(f"done {local_clock():.6f}", flush=True)
    cpu = time.process_time() - cpu0
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    if errors:
        print("; ".join(errors[:5]), file=sys.stderr)
        return 1
    distinct = [len(set(s)) for s in seqs]
    gaps = sum(max(s) - min(s) + 1 - len(set(s)) for s in seqs if s)
    out = {
        "addr": args.addr, "subscribers": n, "seconds": args.seconds,
        "received": int(sum(len(s) for s in seqs)),
        "rate_hz": float(np.mean(distinct)) / args.seconds,
        "e2e_ms": percentiles(rec["e2e"]), "transit_ms": percentiles(rec["transit"]),
        "latency_ms": percentiles(rec["latency"]), "encoder_ms": percentiles(rec["encoder"]),
        "missed": int(sum(missed)), "gaps": int(gaps),
        "client_cpu_pct": 100.0 * cpu / args.seconds,
    }
    print(json.dumps(out), flush=True)
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--addr", required=True, help="server address host:port")
    ap.add_argument("--subscribers", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=20.0, help="measuring interval")
    ap.add_argument("--warmup", type=float, default=2.0, help="seconds after every subscriber's first decoding")
    ap.add_argument("--connect-timeout", type=float, default=60.0,
                    help="seconds for every subscriber to get a first decoding")
    ap.add_argument("--top-k", type=int, default=5)
    ap.add_argument("--no-embedding", dest="embedding", action="store_false",
                    help="do not ask for the embedding in each decoding")
    args = ap.parse_args()
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())

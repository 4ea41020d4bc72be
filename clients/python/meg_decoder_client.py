"""Python subscriber for meg-decoder (megdecoder.v1 gRPC API).

    python clients/python/meg_decoder_client.py --addr 127.0.0.1:50051 --count 20

Stubs are generated from proto/ at install time (`make venv`, or
`python clients/python/generate_stubs.py`). Use `subscribe()` from your own scripts:

    for d in subscribe("127.0.0.1:50051", event_locked_only=True):
        print(d.marker, [h.image_id for h in d.top_k])
"""
import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "generated"))

import grpc  # noqa: E402

from megdecoder.v1 import decoder_pb2, decoder_pb2_grpc  # noqa: E402


def _metadata(token):
    return [("authorization", f"Bearer {token}")] if token else []


def subscribe(addr, token=None, embedding=False, images=False, max_rate_hz=0.0, event_locked_only=False):
    """Yields Decoding messages until the caller stops iterating."""
    channel = grpc.insecure_channel(addr)
    stub = decoder_pb2_grpc.DecoderStub(channel)
    req = decoder_pb2.SubscribeRequest(
        include_embedding=embedding, include_images=images, max_rate_hz=max_rate_hz,
        continuous=not event_locked_only, event_locked=True, top_k=5,
    )
    yield from stub.Subscribe(req, metadata=_metadata(token))


def status(addr, token=None):
    stub = decoder_pb2_grpc.DecoderStub(grpc.insecure_channel(addr))
    return stub.GetStatus(decoder_pb2.GetStatusRequest(), metadata=_metadata(token))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--addr", default="127.0.0.1:50051")
    ap.add_argument("--token", default=os.environ.get("MEG_DECODER_TOKEN"))
    ap.add_argument("--count", type=int, default=10)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--status", action="store_true")
    args = ap.parse_args()
    if args.status:
        print(status(args.addr, args.token))
        return
    trials = top1 = top5 = 0
    for i, d in enumerate(subscribe(args.addr, args.token, embedding=args.json)):
        ids = [h.image_id for h in d.top_k]
        if d.mode == decoder_pb2.MODE_EVENT_LOCKED and d.marker:
            trials += 1
            top1 += ids[:1] == [d.marker]
            top5 += d.marker in ids[:5]
        if args.json:
            print(json.dumps({"sequence": d.sequence, "mode": decoder_pb2.Mode.Name(d.mode), "marker": d.marker,
                              "latency_ms": d.latency_ms, "top_k": ids, "embedding_dim": len(d.embedding)}))
        else:
            print(f"#{d.sequence} {d.marker or 'continuous'} top5={ids} latency={d.latency_ms:.1f} ms")
        if i + 1 >= args.count:
            break
    if trials:
        print(f"hit rate over {trials} stimuli: top-1 {top1 / trials:.1%}, top-5 {top5 / trials:.1%}", file=sys.stderr)


if __name__ == "__main__":
    main()

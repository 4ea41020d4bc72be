"""gRPC stubs for `megdecoder.v1`, generated from the repository's proto/ at import time.

The Python peer (peer.py), the subscriber load process (subscribers.py) and the
comparison harness (tools/bench_compare.py) all speak the service's own proto. Rather than
depending on the client package's committed stubs, they generate fresh ones from
proto/megdecoder/v1/decoder.proto with grpc_tools.protoc into a temporary directory (removed
at exit), so the peer always serves exactly the proto the Rust service serves.

    from stubs import load
    pb, pb_grpc = load()     # decoder_pb2, decoder_pb2_grpc
"""
import atexit
import importlib
import os
import shutil
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROTO_DIR = os.path.join(ROOT, "proto")
PROTO = "megdecoder/v1/decoder.proto"

_loaded = None


def load():
    """Returns (decoder_pb2, decoder_pb2_grpc), generating them on first use."""
    global _loaded
    if _loaded is not None:
        return _loaded
    try:
        from grpc_tools import protoc
    except ImportError:
        sys.exit("grpc_tools is missing: install grpcio-tools into this venv (make venv does it)")
    out = tempfile.mkdtemp(prefix="megdecoder-stubs-")
    atexit.register(shutil.rmtree, out, True)
    rc = protoc.main(["protoc", f"-I{PROTO_DIR}", f"--python_out={out}", f"--grpc_python_out={out}",
                      os.path.join(PROTO_DIR, PROTO)])
    if rc != 0:
        sys.exit(f"protoc failed ({rc}) on {os.path.join(PROTO_DIR, PROTO)}: is the proto valid?")
    sys.path.insert(0, out)
    pb = importlib.import_module("megdecoder.v1.decoder_pb2")
    pb_grpc = importlib.import_module("megdecoder.v1.decoder_pb2_grpc")
    _loaded = (pb, pb_grpc)
    return _loaded

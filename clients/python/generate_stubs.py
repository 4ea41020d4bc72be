"""Regenerates the committed gRPC stubs (src/meg_decoder_client/_pb) from proto/.

    python clients/python/generate_stubs.py          # rewrite them
    python clients/python/generate_stubs.py --check  # exit 1 if they are out of date

Needs grpcio-tools (the `test` extra). The stubs are committed so that installing the
package needs no code generation; CI checks they match the proto.
"""
import os
import sys
import tempfile

from grpc_tools import protoc

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
PB = os.path.join(HERE, "src", "meg_decoder_client", "_pb")
PROTO = os.path.join(ROOT, "proto", "megdecoder", "v1", "decoder.proto")


def generate(out_dir):
    """Generates decoder_pb2.py and decoder_pb2_grpc.py into out_dir, with the gRPC
    module importing its messages relatively (so the package is self-contained)."""
    with tempfile.TemporaryDirectory() as tmp:
        rc = protoc.main(["protoc", f"-I{os.path.join(ROOT, 'proto')}", f"--python_out={tmp}",
                          f"--grpc_python_out={tmp}", PROTO])
        if rc != 0:
            sys.exit(f"protoc failed ({rc}) on {PROTO}")
        files = {}
        for name in ("decoder_pb2.py", "decoder_pb2_grpc.py"):
            with open(os.path.join(tmp, "megdecoder", "v1", name)) as f:
                files[name] = f.read().replace("from megdecoder.v1 import decoder_pb2", "from . import decoder_pb2")
    os.makedirs(out_dir, exist_ok=True)
    for name, text in files.items():
        with open(os.path.join(out_dir, name), "w") as f:
            f.write(text)
    return files


def main():
    if "--check" in sys.argv:
        with tempfile.TemporaryDirectory() as tmp:
            fresh = generate(tmp)
        stale = [n for n, t in fresh.items() if open(os.path.join(PB, n)).read() != t]
        if stale:
            sys.exit(f"stubs out of date with {PROTO}: {stale}; run python clients/python/generate_stubs.py")
        print("stubs match the proto")
        return
    generate(PB)
    print("stubs in", PB)


if __name__ == "__main__":
    main()

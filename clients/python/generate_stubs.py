"""Generates the Python gRPC stubs from proto/ into clients/python/generated (idempotent)."""
import os
import sys

from grpc_tools import protoc

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
OUT = os.path.join(HERE, "generated")
os.makedirs(OUT, exist_ok=True)
proto = os.path.join(ROOT, "proto", "megdecoder", "v1", "decoder.proto")
rc = protoc.main(["protoc", f"-I{os.path.join(ROOT, 'proto')}", f"--python_out={OUT}", f"--grpc_python_out={OUT}", proto])
if rc != 0:
    sys.exit(f"protoc failed ({rc})")
for d in ("megdecoder", os.path.join("megdecoder", "v1")):
    open(os.path.join(OUT, d, "__init__.py"), "a").close()
print("stubs in", OUT)

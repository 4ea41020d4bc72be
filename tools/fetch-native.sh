#!/usr/bin/env bash
# Fetch liblsl and ONNX Runtime from their PyPI wheels into native/lib (idempotent).
# Versions and checksums live in native/versions.env, nowhere else.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck disable=SC1091
source native/versions.env
mkdir -p native/wheels native/lib

fetch() { # name version wheel sha256 platform
  local name=$1 version=$2 wheel=$3 sha=$4 platform=$5 pyver=$6
  if [ ! -f "native/wheels/$wheel" ] || ! echo "$sha  native/wheels/$wheel" | sha256sum -c --quiet - 2>/dev/null; then
    rm -f "native/wheels/$wheel"
    python3 -m pip download --quiet --no-deps --only-binary=:all: \
      --platform "$platform" --python-version "$pyver" --implementation cp \
      -d native/wheels "$name==$version"
  fi
  if ! echo "$sha  native/wheels/$wheel" | sha256sum -c --quiet -; then
    echo "error: native/wheels/$wheel does not match the sha256 pinned in native/versions.env" >&2
    exit 1
  fi
}

unpack() { # wheel member-glob
  python3 - "$1" "$2" <<'PY'
import sys, zipfile, os, fnmatch
wheel, pattern = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    for m in z.namelist():
        if fnmatch.fnmatch(m, pattern):
            dst = os.path.join("native/lib", os.path.basename(m))
            with z.open(m) as src, open(dst + ".tmp", "wb") as out:
                out.write(src.read())
            os.replace(dst + ".tmp", dst)
PY
}

if [ ! -f "native/lib/$ORT_LIB" ]; then
  fetch onnxruntime "$ORT_WHEEL_VERSION" "$ORT_WHEEL" "$ORT_WHEEL_SHA256" manylinux_2_28_x86_64 3.11
  unpack "native/wheels/$ORT_WHEEL" "onnxruntime/capi/libonnxruntime*.so*"
fi
if [ ! -f "native/lib/$LSL_LIB" ]; then
  fetch pylsl "$PYLSL_WHEEL_VERSION" "$PYLSL_WHEEL" "$PYLSL_WHEEL_SHA256" manylinux_2_35_x86_64 3.11
  unpack "native/wheels/$PYLSL_WHEEL" "pylsl/lib/liblsl.so.1.18.0"
fi
echo "native libraries ready in native/lib: $(cd native/lib && ls | tr '\n' ' ')"

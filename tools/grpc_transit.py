"""Send-to-receive time of decodings over gRPC: for N decodings, the receiver's LSL clock
minus window_end minus the server's age_ms at send (same machine, same clock).

    meg-decoder simulate --name T --markers T-m &
    meg-decoder serve --stream-name T --markers-name T-m --listen 127.0.0.1:50093 &
    .venv/bin/python tools/grpc_transit.py 127.0.0.1:50093 [N]
"""
import sys

import numpy as np
import pylsl

import meg_decoder_client as mdc

addr = sys.argv[1]
n = int(sys.argv[2]) if len(sys.argv) > 2 else 200
with mdc.Client(addr) as c, c.subscribe() as sub:
    transit = []
    for _ in range(n):
        d = sub.get(timeout_s=10)
        now = pylsl.local_clock()
        transit.append((now - d.window_end) * 1000 - d.age_ms)
print(f"send-to-receive over {n} decodings: median {np.median(transit):.2f} ms, "
      f"p99 {np.percentile(transit, 99):.2f} ms, max {max(transit):.2f} ms")

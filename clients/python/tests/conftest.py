"""Fixtures that start the real service: `meg-decoder simulate` (or a pylsl outlet) as the
MEG source and `meg-decoder serve` on a free port, on loopback-only LSL with a SessionID
unique to this test run. The binary is $MEG_DECODER_BIN, else the repository's release
build (`make build`)."""
import os
import pathlib
import re
import socket
import subprocess
import time
import uuid

import pytest

REPO = pathlib.Path(__file__).resolve().parents[3]
BIN = pathlib.Path(os.environ.get("MEG_DECODER_BIN", REPO / "target" / "release" / "meg-decoder"))
MODEL = REPO / "models" / "demo-brain"


@pytest.fixture(scope="session")
def lsl_env(tmp_path_factory):
    """LSLAPICFG with a unique SessionID, set for this process (pylsl) and the children."""
    base = (REPO / "deploy" / "lsl_api.loopback.cfg").read_text()
    session = f"meg-decoder-pytest-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    text = base.replace("SessionID = meg-decoder-test", f"SessionID = {session}")
    assert session in text, "loopback cfg has no SessionID line to replace"
    path = tmp_path_factory.mktemp("lsl") / "lsl_api.cfg"
    path.write_text(text)
    os.environ["LSLAPICFG"] = str(path)
    env = dict(os.environ, LSLAPICFG=str(path), MEG_DECODER_LOG="warn")
    return env


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, timeout_s=30):
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if proc.poll() is not None:
            raise RuntimeError(f"meg-decoder exited with {proc.returncode} before listening")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {port} after {timeout_s} s")


class Proc:
    """A child process killed (TERM, then KILL) at teardown."""

    def __init__(self, args, env):
        assert BIN.exists(), f"{BIN} not built (make build, or set MEG_DECODER_BIN)"
        verbose = os.environ.get("MEG_TEST_VERBOSE")
        out = None if verbose else subprocess.DEVNULL
        self.p = subprocess.Popen([str(BIN), *args], env=env, stdout=out, stderr=out)

    def stop(self):
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        return self.p.returncode


def unique(prefix):
    return f"{prefix}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def serve(env, stream, extra=(), port=None):
    """`serve` on the demo-brain model reading `stream` (markers: `stream`-m); returns
    (Proc, port). Decodes 1 s after the stream starts (settle_s=1)."""
    port = port or free_port()
    p = Proc(["serve", "--model", str(MODEL), "--stream-name", stream, "--markers-name", f"{stream}-m",
              "--listen", f"127.0.0.1:{port}", "--metrics-listen", f"127.0.0.1:{free_port()}",
              "--set", "preprocessing.settle_s=1", *extra], env)
    wait_port(port, p.p)
    return p, port


@pytest.fixture(scope="module")
def simulated(lsl_env):
    """The simulator (MEG + markers every ~1.5 s) and `serve` on it, plain text."""
    name = unique("pysim")
    sim = Proc(["simulate", "--name", name, "--source-id", name, "--markers", f"{name}-m"], lsl_env)
    srv, port = serve(lsl_env, name)
    yield {"addr": f"127.0.0.1:{port}", "name": name, "serve": srv}
    srv.stop()
    sim.stop()


def model_channels():
    """The demo model's channel names, as `inspect-model --channels` lists them."""
    out = subprocess.run([str(BIN), "inspect-model", str(MODEL), "--channels"], capture_output=True, text=True,
                         check=True).stdout
    return [m.group(1) for m in re.finditer(r"^\s+\d+\s+(\S+)\s*$", out, re.M)]

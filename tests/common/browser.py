"""A real browser for the tests: Debian's chromium, headless, driven through chromedriver's
WebDriver protocol (W3C, plain HTTP: standard library only).

As a program it is a line-based remote control, so a Rust test can drive it over pipes:
each line on stdin is a command, each answer one JSON line on stdout
({"ok": true, "value": ...} or {"ok": false, "error": "..."}):

    open URL            load a page
    eval EXPRESSION     the JavaScript expression's value
    click CSS           click the first element matching CSS
    type CSS TEXT       type TEXT into it (after clearing it)
    screenshot PATH     save a PNG of the window
    quit

`python tests/common/browser.py` prints {"ok": true, "value": "ready"} once chromium runs.
"""

import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

ELEMENT = "element-6066-11e4-a52e-4f735466cecf"
# As the machine's notes advise: no background networking (the lab network may be
# closed), no GPU, a fresh profile.
CHROMIUM_ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
    "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--window-size=1400,1400",
    # The tests serve TLS with self-signed certificates made on the spot.
    "--ignore-certificate-errors",
]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Browser:
    def __init__(self):
        chromium = shutil.which("chromium") or shutil.which("chromium-browser")
        driver = shutil.which("chromedriver")
        if not chromium or not driver:
            raise RuntimeError(
                "the viewer tests need Debian's chromium and chromium-driver: "
                "`make test` installs them (apt-get install chromium chromium-driver)")
        self.profile = tempfile.mkdtemp(prefix="meg-decoder-chromium-")
        port = free_port()
        self.driver = subprocess.Popen([driver, f"--port={port}"], stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL)
        self.base = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                self._call("GET", "/status")
                break
            except OSError:
                time.sleep(0.05)
        caps = {"browserName": "chrome", "goog:chromeOptions": {
            "binary": chromium, "args": CHROMIUM_ARGS + [f"--user-data-dir={self.profile}"]}}
        value = self._call("POST", "/session", {"capabilities": {"alwaysMatch": caps}})
        self.session = f"/session/{value['sessionId']}"

    def _call(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                return json.load(r)["value"]
        except urllib.error.HTTPError as e:
            detail = json.load(e).get("value", {})
            raise RuntimeError(f"{detail.get('error', e.code)}: {detail.get('message', '')[:300]}") from None

    def s(self, method, path, body=None):
        return self._call(method, self.session + path, body)

    def open(self, url):
        return self.s("POST", "/url", {"url": url})

    def eval(self, expression):
        return self.s("POST", "/execute/sync", {"script": f"return ({expression});", "args": []})

    def element(self, css):
        return self.s("POST", "/element", {"using": "css selector", "value": css})[ELEMENT]

    def click(self, css):
        return self.s("POST", f"/element/{self.element(css)}/click", {})

    def type(self, css, text):
        e = self.element(css)
        self.s("POST", f"/element/{e}/clear", {})
        return self.s("POST", f"/element/{e}/value", {"text": text})

    def screenshot(self, path):
        png = base64.b64decode(self.s("GET", "/screenshot"))
        with open(path, "wb") as f:
            f.write(png)
        return len(png)

    def quit(self):
        try:
            self.s("DELETE", "")
        except Exception:
            pass
        self.driver.terminate()
        self.driver.wait(10)
        shutil.rmtree(self.profile, ignore_errors=True)


def main():
    def answer(ok, value):
        print(json.dumps({"ok": ok, "value" if ok else "error": value}), flush=True)

    try:
        b = Browser()
    except Exception as e:
        answer(False, str(e))
        return 1
    answer(True, "ready")
    try:
        for line in sys.stdin:
            cmd, _, rest = line.rstrip("\n").partition(" ")
            try:
                if cmd == "quit":
                    answer(True, None)
                    break
                if cmd == "type":
                    css, _, text = rest.partition(" ")
                    answer(True, b.type(css, text))
                elif cmd in ("open", "eval", "click", "screenshot"):
                    answer(True, getattr(b, cmd)(rest))
                else:
                    answer(False, f"unknown command {cmd!r}")
            except Exception as e:
                answer(False, f"{cmd}: {e}")
    finally:
        b.quit()
    return 0


if __name__ == "__main__":
    sys.exit(main())

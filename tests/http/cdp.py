"""A minimal Chrome DevTools Protocol client over WebSocket, standard library only: start a
headless chromium, open a page, evaluate JavaScript, take a screenshot."""

import base64
import json
import os
import shutil
import socket
import struct
import subprocess
import time
import urllib.parse

import ihc_env as E


class WebSocket:
    """RFC 6455 client: text frames out (masked), text/continuation frames in; enough for
    DevTools (no extensions, no TLS)."""

    def __init__(self, url, timeout=30):
        u = urllib.parse.urlparse(url)
        self.s = socket.create_connection((u.hostname, u.port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.s.sendall(("GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
                        "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                        "Sec-WebSocket-Version: 13\r\n\r\n" % (u.path, u.hostname, u.port, key))
                       .encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.s.recv(4096)
            if not chunk:
                raise OSError("websocket handshake: connection closed")
            head += chunk
        head, _, self.buf = head.partition(b"\r\n\r\n")
        if b" 101 " not in head.split(b"\r\n")[0]:
            raise OSError("websocket handshake refused: %r" % head[:200])

    def _read(self, n):
        while len(self.buf) < n:
            chunk = self.s.recv(max(65536, n - len(self.buf)))
            if not chunk:
                raise OSError("websocket closed")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def send(self, text):
        data = text.encode()
        head = bytes([0x81])
        n = len(data)
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 65536:
            head += bytes([0x80 | 126]) + struct.pack(">H", n)
        else:
            head += bytes([0x80 | 127]) + struct.pack(">Q", n)
        mask = os.urandom(4)
        self.s.sendall(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))

    def recv(self):
        msg = b""
        while True:
            b0, b1 = self._read(2)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._read(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._read(8))[0]
            mask = self._read(4) if b1 & 0x80 else None
            payload = self._read(n)
            if mask:
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            op = b0 & 0x0F
            if op == 0x8:
                raise OSError("websocket closed by the browser")
            if op == 0x9:  # ping: pong (masked, empty)
                self.s.sendall(bytes([0x8A, 0x80]) + os.urandom(4))
                continue
            if op in (0x1, 0x2, 0x0):
                msg += payload
                if b0 & 0x80:
                    return msg.decode()

    def close(self):
        try:
            self.s.close()
        except OSError:
            pass


def find_chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        p = shutil.which(name)
        if p:
            return p
    return None


class Browser:
    """Headless chromium with a fresh profile; one page attached with a flat session."""

    def __init__(self, exe, profile, width=1400, height=1000):
        self.profile = profile
        argv = [exe, "--headless", "--no-sandbox", "--disable-gpu",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                "--user-data-dir=" + profile, "--remote-debugging-port=0",
                "--window-size=%d,%d" % (width, height), "about:blank"]
        self.log = open(os.path.join(profile + ".log"), "ab")
        self.p = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT,
                                  preexec_fn=E._die_with_parent)
        port_file = os.path.join(profile, "DevToolsActivePort")
        ok = E.wait_until(lambda: os.path.exists(port_file) and
                          len(open(port_file).read().split("\n")) >= 2, 30, 0.1)
        if not ok:
            self.close()
            raise OSError("chromium did not open its DevTools port")
        port, path = open(port_file).read().split("\n")[:2]
        self.ws = WebSocket("ws://127.0.0.1:%s%s" % (port, path))
        self.next_id = 0
        self.session = None
        tid = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.call("Target.attachToTarget",
                                 {"targetId": tid, "flatten": True})["sessionId"]
        self.call("Page.enable")
        self.call("Runtime.enable")

    def call(self, method, params=None, timeout=30):
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if self.session and not method.startswith(("Target.", "Browser.")):
            msg["sessionId"] = self.session
        self.ws.send(json.dumps(msg))
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            r = json.loads(self.ws.recv())
            if r.get("id") != self.next_id:
                if r.get("method") == "Runtime.exceptionThrown":
                    E.log("page exception:", r["params"]["exceptionDetails"].get("text"),
                          json.dumps(r["params"]["exceptionDetails"].get("exception", {}))[:300])
                continue
            if "error" in r:
                raise OSError("%s: %s" % (method, r["error"]))
            return r.get("result", {})
        raise OSError("%s: no answer in %d s" % (method, timeout))

    def navigate(self, url):
        self.call("Page.navigate", {"url": url})

    def eval(self, expr):
        r = self.call("Runtime.evaluate", {"expression": expr, "returnByValue": True,
                                           "awaitPromise": True})
        if "exceptionDetails" in r:
            raise OSError("evaluate %r: %s" % (expr[:80], r["exceptionDetails"].get("text")))
        return r["result"].get("value")

    def wait(self, expr, timeout):
        return E.wait_until(lambda: self.eval(expr), timeout, 0.1)

    def screenshot(self, path):
        data = self.call("Page.captureScreenshot", {"format": "png"})["data"]
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))

    def close(self):
        try:
            if getattr(self, "ws", None):
                try:
                    self.session = None
                    self.ws.send(json.dumps({"id": 0, "method": "Browser.close"}))
                except OSError:
                    pass
                self.ws.close()
            self.p.wait(10)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
        self.log.close()

"""A real headless Chromium, driven over the DevTools protocol, for the report tests.

Debian's `chromium` (installed by .ci/run). No browser download, no network:
the flags keep Chromium from phoning home, as this machine's closed network
would refuse it anyway.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import re
import shutil
import subprocess
import tempfile
import time

import pytest

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-quic", "--hide-scrollbars", "--remote-debugging-port=0",
         "--window-size=1400,1000"]


def chromium_path() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    message = "no chromium on PATH (Debian: apt-get install chromium)"
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(message + " (CI=true: required)")
    pytest.skip(message)


class Browser:
    """One Chromium process and one page, spoken to in CDP commands."""

    def __init__(self):
        import websocket

        self.profile = tempfile.mkdtemp(prefix="integrity-chromium-")
        self.process = subprocess.Popen(
            [chromium_path(), *FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        endpoint = None
        deadline = time.monotonic() + 30
        while endpoint is None and time.monotonic() < deadline:
            line = self.process.stderr.readline()
            if not line and self.process.poll() is not None:
                break
            match = re.search(r"DevTools listening on (ws://\S+)", line)
            if match:
                endpoint = match.group(1)
        if endpoint is None:
            self.close()
            raise RuntimeError("chromium did not start its DevTools endpoint")
        self.socket = websocket.create_connection(endpoint, timeout=60, suppress_origin=True)
        self.ids = itertools.count(1)
        self.events: list[dict] = []  # events that arrived while waiting for a reply
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.send("Target.attachToTarget", targetId=target,
                                 flatten=True)["sessionId"]
        self.send("Page.enable", session=True)
        self.send("Runtime.enable", session=True)

    def send(self, method: str, session: bool = False, **params):
        message_id = next(self.ids)
        message = {"id": message_id, "method": method, "params": params}
        if session:
            message["sessionId"] = self.session
        self.socket.send(json.dumps(message))
        while True:
            reply = json.loads(self.socket.recv())
            if reply.get("id") == message_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            if "method" in reply:
                self.events.append(reply)

    def wait_for(self, event: str, timeout: float = 60) -> dict:
        for index, reply in enumerate(self.events):
            if reply.get("method") == event:
                del self.events[:index + 1]
                return reply.get("params", {})
        self.events.clear()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            reply = json.loads(self.socket.recv())
            if reply.get("method") == event:
                return reply.get("params", {})
        raise TimeoutError(event)

    def open(self, url: str, scripts: bool = True) -> None:
        self.send("Emulation.setScriptExecutionDisabled", session=True, value=not scripts)
        self.events.clear()
        self.send("Page.navigate", session=True, url=url)
        self.wait_for("Page.loadEventFired")

    def viewport(self, width: int, height: int, mobile: bool = False) -> None:
        """Emulate a screen of width × height CSS pixels (a phone's when mobile).

        Applies to the next `open` as well as the page already open.
        """
        self.send("Emulation.setDeviceMetricsOverride", session=True, width=width,
                  height=height, deviceScaleFactor=1, mobile=mobile)

    def reset_viewport(self) -> None:
        """Back to the window's own size (FLAGS)."""
        self.send("Emulation.clearDeviceMetricsOverride", session=True)

    def evaluate(self, expression: str):
        result = self.send("Runtime.evaluate", session=True, expression=expression,
                           returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(result["exceptionDetails"])
        return result["result"].get("value")

    def screenshot(self, path: str, full_page: bool = True) -> bytes:
        metrics = self.send("Page.getLayoutMetrics", session=True)
        size = metrics["cssContentSize"]
        params = {"format": "png"}
        if full_page:
            params.update(captureBeyondViewport=True, clip={
                "x": 0, "y": 0, "width": size["width"], "height": min(size["height"], 4000),
                "scale": 1})
        data = base64.b64decode(self.send("Page.captureScreenshot", session=True,
                                          **params)["data"])
        with open(path, "wb") as handle:
            handle.write(data)
        return data

    def close(self) -> None:
        try:
            if getattr(self, "socket", None):
                self.socket.close()
        finally:
            self.process.kill()
            self.process.wait(timeout=10)
            shutil.rmtree(self.profile, ignore_errors=True)

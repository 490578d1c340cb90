"""pi0_serve as a subprocess (the real CLI) for tests; in-process servers are pi0_ros.serve.server.ServerThread."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Sequence

START_TIMEOUT = 240.0  # s: importing torch and building the tiny model on a loaded 2-core machine
STOP_TIMEOUT = 60.0


class ServeProcess:
    """`python -m pi0_ros.serve` as a subprocess; its log is collected, its URL read from it."""

    def __init__(self, args: Sequence[str]) -> None:
        command = [sys.executable, "-m", "pi0_ros.serve", "--host", "127.0.0.1", "--port", "0", *args]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self._url: str | None = None
        self._listening = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + START_TIMEOUT
        while not self._listening.wait(0.5):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError("pi0_serve did not start:\n" + self.log)

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)
            found = re.search(r"listening on (ws://\S+)", line)
            if found:
                self._url = found.group(1)
                self._listening.set()

    @property
    def url(self) -> str:
        assert self._url is not None
        return self._url

    @property
    def health_url(self) -> str:
        return self.url.replace("ws://", "http://") + "/healthz"

    @property
    def log(self) -> str:
        return "".join(self.lines)

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> int:
        """SIGTERM, as a service manager would; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self._reader.join(10)
        return code


def health_status(url: str) -> int:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.status

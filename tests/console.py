"""A subprocess whose output the test reads line by line as it arrives (the chat, scripts/run)."""

from __future__ import annotations

import queue
import subprocess
import threading
import time
from typing import Any


class Console:
    def __init__(self, argv: list[str], **popen: Any) -> None:
        self.process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))

    def expect(self, fragment: str, timeout: float = 15.0) -> str:
        """The next line holding `fragment`; AssertionError with every line seen if none comes in time."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            self.seen.append(line)
            if fragment in line:
                return line
        raise AssertionError(f"no line with {fragment!r}; saw:\n" + "\n".join(self.seen))

    def wait(self, timeout: float) -> int:
        """Wait for the exit; every line printed is in `seen` afterwards."""
        code = self.process.wait(timeout)
        self._reader.join(timeout)  # it ends at the end of the output: every line is queued then
        while not self.lines.empty():
            self.seen.append(self.lines.get())
        return code

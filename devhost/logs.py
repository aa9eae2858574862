"""The host's log output, written in bursts.

Every log line written on its own costs a write system call, and the host logs two
lines per invocation ("Executing", "Executed"): about a tenth of a millisecond per
HTTP request on a small VM, more than a turn's own logic. Lines are buffered and
written at most DELAY seconds later, together; a warning or worse is written at
once, with everything before it. A clean exit flushes the rest (logging.shutdown);
a killed host loses at most the last DELAY seconds of informational lines.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from typing import TextIO

DELAY = 0.02
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class BurstHandler(logging.StreamHandler):
    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self._pending = threading.Event()
        self._closed = False
        threading.Thread(target=self._writer, name="log-writer", daemon=True).start()

    def emit(self, record: logging.LogRecord) -> None:  # called with the handler's lock held
        try:
            self.stream.write(self.format(record) + self.terminator)
        except Exception:
            self.handleError(record)
            return
        if record.levelno >= logging.WARNING:
            self.stream.flush()
        elif not self._pending.is_set():
            self._pending.set()

    def _writer(self) -> None:
        while True:
            self._pending.wait()
            time.sleep(DELAY)  # let a burst of lines gather
            with self.lock:  # type: ignore[union-attr]
                self._pending.clear()
                if self._closed:
                    return
                self.stream.flush()

    def close(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._closed = True
            self.stream.flush()
        self._pending.set()  # the writer wakes up and ends
        super().close()


def configure(level: int = logging.INFO) -> None:
    """Log to stderr in bursts (stderr itself would write every line on its own).

    The format names no thread, process or source line, so records skip gathering them
    (the logging HOWTO's "Optimization" switches): a few microseconds per line.
    """
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    logging._srcfile = None  # type: ignore[attr-defined]  # no findCaller() stack walk per record
    stream = open(
        sys.stderr.fileno(), "w", buffering=1 << 16, encoding="utf-8", errors="backslashreplace", closefd=False
    )
    handler = BurstHandler(stream)
    handler.setFormatter(logging.Formatter(FORMAT))
    logging.basicConfig(level=level, handlers=[handler])

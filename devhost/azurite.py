"""Start and stop Azurite (the npm package pinned in package.json) for tests and the local run."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ACCOUNT = "devstoreaccount1"
# Azurite's published development key: not a secret, it only opens the local emulator.
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
_LISTENING = re.compile(r"Azurite (Blob|Queue|Table) service is successfully listening at (\S+)")


def azurite_executable() -> str:
    local = REPO / "node_modules" / ".bin" / "azurite"
    if local.exists():
        return str(local)
    found = shutil.which("azurite")
    if not found:
        raise RuntimeError("Azurite is not installed: run `npm ci` in the repository root")
    return found


def connection_string(queue_url: str, table_url: str, blob_url: str | None = None) -> str:
    parts = [
        "DefaultEndpointsProtocol=http",
        f"AccountName={ACCOUNT}",
        f"AccountKey={ACCOUNT_KEY}",
        f"QueueEndpoint={queue_url}/{ACCOUNT}",
        f"TableEndpoint={table_url}/{ACCOUNT}",
    ]
    if blob_url:
        parts.append(f"BlobEndpoint={blob_url}/{ACCOUNT}")
    return ";".join(parts) + ";"


@dataclass
class Azurite:
    """A running Azurite process. Ports 0 means "any free port".

    `in_memory` keeps all data in memory (--inMemoryPersistence): no database file, so no save of the whole
    database as one JSON document every 5 s while writes come in (its LokiJS autosave), which a table of a
    million rows makes large. `heap_mib` raises Node's heap limit (about 4 GiB here by default) for such data.
    """

    location: Path
    blob_port: int = 0
    queue_port: int = 0
    table_port: int = 0
    in_memory: bool = False
    heap_mib: int | None = None
    urls: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen | None = None

    def start(self, timeout: float = 60.0) -> Azurite:
        self.location.mkdir(parents=True, exist_ok=True)
        cmd = [
            azurite_executable(),
            "--silent",
            "--disableTelemetry",
            "--skipApiVersionCheck",
            "--loose",
            *(["--inMemoryPersistence"] if self.in_memory else ["--location", str(self.location)]),
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            str(self.blob_port),
            "--queueHost",
            "127.0.0.1",
            "--queuePort",
            str(self.queue_port),
            "--tableHost",
            "127.0.0.1",
            "--tablePort",
            str(self.table_port),
        ]
        self.process = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
            cwd=str(self.location),
            env={**os.environ, "NODE_OPTIONS": f"--max-old-space-size={self.heap_mib}"} if self.heap_mib else None,
        )
        ready = threading.Event()
        lines: list[str] = []

        def read() -> None:
            assert self.process and self.process.stdout
            for line in self.process.stdout:
                lines.append(line)
                match = _LISTENING.search(line)
                if match:
                    self.urls[match.group(1).lower()] = match.group(2).rstrip("/")
                    if len(self.urls) == 3:
                        ready.set()
            ready.set()

        threading.Thread(target=read, daemon=True, name="azurite-output").start()
        if not ready.wait(timeout) or len(self.urls) < 3:
            self.stop()
            raise RuntimeError("Azurite did not start:\n" + "".join(lines[-20:]))
        return self

    def restart(self, timeout: float = 60.0) -> Azurite:
        """Stop, then start on the same ports with the same data: clients keep their connection string."""
        ports = {name: int(url.rsplit(":", 1)[1]) for name, url in self.urls.items()}
        self.stop()
        self.blob_port, self.queue_port, self.table_port = ports["blob"], ports["queue"], ports["table"]
        self.urls = {}
        return self.start(timeout)

    def freeze(self) -> None:
        """Stop answering without closing a connection: storage that hangs, as it can in a network partition."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGCONT)

    @property
    def connection_string(self) -> str:
        return connection_string(self.urls["queue"], self.urls["table"], self.urls["blob"])

    def stop(self) -> None:
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()

    def __enter__(self) -> Azurite:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

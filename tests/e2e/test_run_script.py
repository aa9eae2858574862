"""`scripts/run` as a newcomer runs it: ports chosen by flag or environment, the banner that follows the
choice, and a port in use ending in one line that names it and the flag to change it."""

from __future__ import annotations

import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
from pathlib import Path

import pytest

from devhost.azurite import Azurite
from tests.console import Console
from tests.hostproc import REPO, free_port

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        shutil.which("func") is not None, reason="with Core Tools installed, scripts/run runs `func start`"
    ),
]


def free_ports(count: int) -> int:
    """The first of `count` consecutive free ports."""
    while True:
        first = free_port()
        try:
            for port in range(first, first + count):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", port))
            return first
        except OSError:
            continue


def listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


class Run(Console):
    """scripts/run as a subprocess, its output (stdout and stderr) read line by line."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        clean = {
            k: v
            for k, v in os.environ.items()
            if k not in ("BotStorage", "AzureWebJobsStorage", "BotPublicBaseUrl", "BOT_PORT", "AZURITE_PORT")
        }
        super().__init__([str(REPO / "scripts" / "run"), *args], env={**clean, **(env or {})})

    def expect(self, fragment: str, timeout: float = 60.0) -> str:
        return super().expect(fragment, timeout)

    def finish(self, timeout: float = 60.0) -> list[str]:
        """Wait for the exit; every line it printed."""
        self.wait(timeout)
        return [line for line in self.seen if not line.startswith("run: created local.settings.json")]

    def interrupt(self) -> int:
        self.process.send_signal(signal.SIGINT)
        return self.process.wait(60)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def test_run_starts_azurite_and_the_bot_on_the_ports_its_environment_names() -> None:
    port, azurite = free_port(), free_ports(3)
    run = Run(env={"BOT_PORT": str(port), "AZURITE_PORT": str(azurite), "LocalFunctionKey": "run-key"})
    try:
        run.expect(f"run: Azurite started on 127.0.0.1:{azurite}-{azurite + 2} (data in .azurite/port-{azurite}/)")
        cli = run.expect("run: tables and queues are ready; for the operator CLI")
        assert "export BotStorage='DefaultEndpointsProtocol=http;" in cli
        assert f"QueueEndpoint=http://127.0.0.1:{azurite + 1}/devstoreaccount1" in cli
        run.expect(f"INFO devhost: Host started on http://localhost:{port}")
        run.expect("Function key: run-key (LocalFunctionKey)")
        run.expect("Send a notification to every conversation:")
        request = run.expect("curl -X POST").strip()
        assert request.startswith(f"curl -X POST http://localhost:{port}/api/notify -H 'x-functions-key: run-key'")
        if shutil.which("curl"):
            pasted = subprocess.run(request, shell=True, capture_output=True, text=True, timeout=30)
            assert json.loads(pasted.stdout)["status"].startswith("/api/notify/"), pasted
        run.expect("Talk to the bot from another terminal:")
        assert run.expect("-m devhost chat").endswith(f" -m devhost chat --bot http://localhost:{port}/api/messages")
        assert run.interrupt() == 0
        assert not any(listening(p) for p in (port, azurite, azurite + 1, azurite + 2)), "everything it started stops"
    finally:
        run.kill()
        shutil.rmtree(REPO / ".azurite" / f"port-{azurite}", ignore_errors=True)
        try:
            (REPO / ".azurite").rmdir()  # when this test made it
        except OSError:
            pass


def test_run_uses_an_azurite_already_on_the_ports_its_flags_name(tmp_path: Path) -> None:
    port, first = free_port(), free_ports(3)
    with Azurite(tmp_path / "azurite", first, first + 1, first + 2):
        run = Run("--port", str(port), "--azurite-port", str(first))
        try:
            run.expect(f"run: using the Azurite already running on 127.0.0.1:{first}-{first + 2}")
            run.expect(f"INFO devhost: Host started on http://localhost:{port}")
            assert run.interrupt() == 0
            assert listening(first + 1), "an Azurite it did not start is left running"
        finally:
            run.kill()
    assert not (REPO / ".azurite" / f"port-{first}").exists()


def test_the_bots_port_in_use_is_one_line_naming_it_and_the_flag() -> None:
    azurite = free_ports(3)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = Run("--port", str(port), "--azurite-port", str(azurite))
        try:
            assert run.finish() == [
                f"run: port {port} (the bot's) is in use: choose another with --port N or BOT_PORT=N"
            ]
            assert run.process.returncode == 1
        finally:
            run.kill()


def test_another_program_on_azurites_ports_is_detected_not_taken_for_azurite() -> None:
    first = free_ports(3)
    other = http.server.ThreadingHTTPServer(("127.0.0.1", first + 1), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    try:
        run = Run("--port", str(free_port()), "--azurite-port", str(first))
        try:
            [line] = run.finish()
            assert line.startswith(
                f"run: port {first + 1} (Azurite's queue port) is in use by another program (SimpleHTTP/"
            )
            assert line.endswith(
                ": choose other Azurite ports with --azurite-port N or AZURITE_PORT=N (it takes N, N+1 and N+2)"
            )
            assert run.process.returncode == 1
        finally:
            run.kill()
    finally:
        other.shutdown()
        other.server_close()
    assert not listening(first) and not listening(first + 2), "no Azurite was started"

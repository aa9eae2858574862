"""The terminal channel against the real function app in Development mode (no app id):
the conversation a person has with `python -m devhost chat`, survey included."""

from __future__ import annotations

import queue
import subprocess
import sys
import threading
import time

import pytest

from tests.botstack import BotStack
from tests.hostproc import REPO, HostProcess


@pytest.fixture(scope="module")
def dev_host(azurite, tmp_path_factory):
    env = {"BotStorage": azurite.connection_string, "AzureWebJobsStorage": azurite.connection_string,
           "AZURE_FUNCTIONS_ENVIRONMENT": "Development", "MicrosoftAppId": "", "MicrosoftAppPassword": ""}
    BotStack._init_storage(env)
    host = HostProcess(REPO, env, tmp_path_factory.mktemp("dev") / "host.log")
    yield host
    host.stop()


class Terminal:
    """The chat as a subprocess, its output read line by line as it arrives."""

    def __init__(self, bot_url: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "devhost", "chat", "--bot", bot_url, "--user", "Ann", "--port", "0"],
            cwd=str(REPO), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))

    def type(self, text: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(text + "\n")
        self.process.stdin.flush()

    def expect(self, fragment: str, timeout: float = 15.0) -> str:
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

    def close(self) -> int:
        self.type("/quit")
        return self.process.wait(15)


def test_a_person_holds_the_survey_conversation_in_the_terminal(dev_host: HostProcess) -> None:
    terminal = Terminal(f"{dev_host.base_url}/api/messages")
    try:
        terminal.expect("-- chatting with")
        terminal.type("profile")
        terminal.expect("bot> Hello Ann! I now know your address")
        terminal.expect("bot> Let's build your profile. What's your name?")
        terminal.type("Ann")
        terminal.expect("What's your favourite colour?")
        terminal.type("survey")
        terminal.expect("bot> In 5 seconds I'll interrupt")
        # Nothing typed: the proactive survey still shows up.
        terminal.expect("bot> Sorry to interrupt", timeout=20)
        terminal.type("done")
        terminal.expect("Back to the original conversation")
        terminal.expect("bot> Back to your profile. What's your favourite colour?")
        terminal.type("teal")
        terminal.expect("bot> Thanks! Your profile: name Ann, favourite colour teal.")
        assert terminal.close() == 0
    finally:
        terminal.process.kill()

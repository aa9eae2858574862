"""The terminal channel against the real function app in Development mode (no app id):
the conversation a person has with `python -m devhost chat`, survey included."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import uuid

import httpx
import pytest
from azure.data.tables import TableClient

from tests.botstack import BotStack, wait_until
from tests.console import Console
from tests.hostproc import REPO, HostProcess, free_port

pytestmark = pytest.mark.slow

KEY = "chat-test-key"


@pytest.fixture(scope="module")
def dev_host(tmp_path_factory):
    """In a storage account of its own: another host on the same queues (the session's, in Production) would
    take this one's jobs."""
    from devhost.azurite import Azurite

    tmp = tmp_path_factory.mktemp("dev")
    with Azurite(tmp / "azurite") as azurite:
        yield from _dev_host(azurite, tmp)


def _dev_host(azurite, tmp):
    env = {
        "BotStorage": azurite.connection_string,
        "AzureWebJobsStorage": azurite.connection_string,
        "AZURE_FUNCTIONS_ENVIRONMENT": "Development",
        "MicrosoftAppId": "",
        "MicrosoftAppPassword": "",
        "LocalFunctionKey": KEY,
    }
    BotStack._init_storage(env)
    host = HostProcess(REPO, env, tmp / "host.log")
    host.storage_connection = azurite.connection_string  # type: ignore[attr-defined]
    try:
        yield host
    finally:
        host.stop()


class Terminal(Console):
    """The chat as a subprocess."""

    def __init__(self, bot_url: str, user: str = "Ann", port: int = 0, *options: str, **popen) -> None:
        super().__init__(
            [sys.executable, "-m", "devhost", "chat", "--bot", bot_url, "--user", user, "--port", str(port), *options],
            cwd=str(REPO),
            stdin=subprocess.PIPE,
            **popen,
        )

    def type(self, text: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(text + "\n")
        self.process.stdin.flush()

    def close(self) -> int:
        """Quit; every line the chat printed is in `seen` afterwards."""
        self.type("/quit")
        return self.wait(15)


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


def api(dev_host: HostProcess, method: str, path: str, body: dict | None = None) -> httpx.Response:
    return httpx.request(method, f"{dev_host.base_url}/api/{path}", json=body, headers={"x-functions-key": KEY})


def test_the_banner_names_whom_to_target_and_edits_and_deletions_show(dev_host: HostProcess) -> None:
    """The banner's conversation key reaches this chat through the API; the bot's edit and deletion of that
    message show in the conversation, and no HTTP client log line does."""
    user = f"Bea{uuid.uuid4().hex[:6]}"
    terminal = Terminal(f"{dev_host.base_url}/api/messages", user=user)
    try:
        terminal.expect("-- chatting with")
        who = terminal.expect("-- you are")
        assert re.fullmatch(rf"-- you are user-{user} in conversation chat-\w+; to send you a message:", who)
        conversation = who.split("in conversation ")[1].split(";")[0]
        api_line = terminal.expect("--   POST /api/notify")
        assert api_line == (
            f'--   POST /api/notify with "target": {{"conversation": "emulator|{conversation}"}}'
            f'  (or {{"userId": "user-{user}"}})'
        )
        cli_line = terminal.expect("-m botcore notify")
        assert f"--conversation 'emulator|{conversation}' --text hello  (or --user user-{user})" in cli_line
        terminal.type("hi")
        terminal.expect("bot> Type help for the list of commands.")

        target = json.loads(api_line.split('"target": ')[1].split("  (or")[0])
        sent = api(dev_host, "POST", "notify", {"text": "Hello from the API", "target": target})
        assert sent.status_code == 202, sent.text
        job = sent.json()["id"]
        terminal.expect("bot> Hello from the API")
        assert wait_until(lambda: api(dev_host, "GET", f"notify/{job}").json()["state"] == "done", timeout=15)
        assert api(dev_host, "PATCH", f"notify/{job}", {"text": "Hello, edited"}).status_code == 202
        terminal.expect('bot (edited "Hello from the API")> Hello, edited')
        assert api(dev_host, "DELETE", f"notify/{job}").status_code == 202
        terminal.expect('-- the bot deleted "Hello, edited"')
        assert terminal.close() == 0
        assert not [line for line in terminal.seen if "HTTP Request" in line or " INFO " in line], terminal.seen
    finally:
        terminal.process.kill()


def test_a_second_chat_at_the_same_time_just_works(dev_host: HostProcess) -> None:
    port = free_port()
    first = Terminal(f"{dev_host.base_url}/api/messages", user="Cy", port=port)
    second = None
    try:
        first.expect("-- chatting with")
        second = Terminal(f"{dev_host.base_url}/api/messages", user="Di", port=port)
        moved = second.expect("-- port")
        assert moved.startswith(f"-- port {port} is taken (another chat?), so this chat's channel is on port ")
        second.expect("-- chatting with")
        for terminal, name in ((first, "Cy"), (second, "Di")):
            terminal.type("hello")
            terminal.expect(f"bot> Hello {name}! I now know your address")
        first.type("help")
        first.expect("bot> Here's what I understand:")
        assert first.close() == 0 and second.close() == 0
        assert not [line for line in second.seen if "bot> Here's what I understand" in line], "each its own"
    finally:
        first.process.kill()
        if second is not None:
            second.process.kill()


def test_a_team_in_the_chat_gets_each_member_their_message_in_their_one_to_one_chat(dev_host: HostProcess) -> None:
    """The chat installs the bot in a team of three; a notification to the team, sent as the banner says, arrives
    in each member's one-to-one chat, which the bot created, with the member named. Everything on the team's
    unauthenticated service URL is trusted as the chat's own conversation is: for Development only."""
    name = f"Ops{uuid.uuid4().hex[:6]}"
    env = {**os.environ, "BotStorage": dev_host.storage_connection}
    terminal = Terminal(f"{dev_host.base_url}/api/messages", "Fay", 0, "--team", name, "--members", "3", env=env)
    try:
        installed = terminal.expect("-- the bot is installed in team")
        team_id = re.fullmatch(
            rf"-- the bot is installed in team {name} \((19:\w+@thread\.tacv2), tenant "
            r"local-tenant\), whose 3 members are User 0, User 1, User 2; to send each a message "
            r"in their one-to-one chat:",
            installed,
        ).group(1)
        api_line = terminal.expect("--   POST /api/notify")
        assert api_line == f'--   POST /api/notify with "target": {{"team": "{team_id}"}}'
        cli_line = terminal.expect("-m botcore notify --team")
        assert cli_line.endswith(f" -m botcore notify --team {shlex.quote(team_id)} --text hello")

        sent = api(dev_host, "POST", "notify", {"text": "Stand-up at 10", "target": {"team": team_id}})
        assert sent.status_code == 202, sent.text
        arrived = sorted(terminal.expect("> Stand-up at 10") for _ in range(3))
        assert arrived == [f"bot (to User {i} of team {name}, one-to-one)> Stand-up at 10" for i in range(3)]
        assert wait_until(
            lambda: (
                api(dev_host, "GET", f"notify/{sent.json()['id']}").json() | {"created": None}
                == {
                    "id": sent.json()["id"],
                    "kind": "notify",
                    "created": None,
                    "state": "done",
                    "targets": 3,
                    "sent": 3,
                    "skipped": 0,
                    "failed": 0,
                    "pending": 0,
                }
            ),
            timeout=15,
        )

        # The command the banner printed: the same members, in the one-to-one chats the bot stored.
        command = cli_line.removeprefix("--   ").replace(" --text hello", "")
        subprocess.run(
            [*shlex.split(command), "--text", "Retro at 4"],
            cwd=str(REPO),
            env=env,
            check=True,
            timeout=60,
            capture_output=True,
        )
        again = sorted(terminal.expect("> Retro at 4") for _ in range(3))
        assert again == [f"bot (to User {i} of team {name}, one-to-one)> Retro at 4" for i in range(3)]
        assert terminal.close() == 0
    finally:
        terminal.process.kill()
    stored = TableClient.from_connection_string(dev_host.storage_connection, "botconversations").query_entities(
        "tenantId eq 'local-tenant'"
    )  # this module's storage: the team's conversations only
    trust = {e["conversationId"]: e["serviceUrlTrust"] for e in stored}
    assert len(trust) == 4 and team_id in trust and set(trust.values()) == {"development"}, trust

"""`python -m devhost chat`: talk to the bot from a terminal, as a channel would.

The terminal plays the channel with the same fake Bot Connector the tests use: it
serves the Connector API on localhost (the conversation's serviceUrl), posts each
typed line to the bot's messaging endpoint as a message activity (after a
conversationUpdate that adds the user and the bot), and prints every message the
bot sends the moment it arrives, proactive ones included, and the bot's edits and
deletions of them.

The channel keeps one port (3979 unless `--port` says otherwise) across chats, so
that messages to an earlier chat's conversation reach the chat running now. A second
chat at the same time takes any free port instead, and says so: its messages reach it
while it runs. (Sharing the port would need the first chat to route for the second.)

With `--team NAME --members N` the channel also plays Microsoft Teams for a team of N
members: it posts the conversationUpdate that installs the bot in the team (on the
msteams channel, where the bot reads tenant and team ids), serves the team's roster and
the members' one-to-one conversations the bot creates, and shows what the bot sends each
member, named. Like the chat's own conversation, the team's is unauthenticated: the bot
accepts it only in Development, and calls its serviceUrl with no token.
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import json
import shlex
import sys
import threading
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, TextIO

import httpx

from botcore.keys import conversation_key
from botcore.protocol.activity import TEAMS_CHANNEL  # the channel whose tenant and team ids the bot reads

from . import python_command
from .channel import FakeConnector, Received

CHANNEL_ID = "emulator"
BOT_ID = "bot"
QUIT = {"/quit", "/exit"}
TEAM_TENANT = "local-tenant"


class Team:
    """A Teams team the chat's channel plays: its id (the same for the same name, so that a later chat finds the
    conversations the bot stored for it), its tenant, and its members as the roster lists them."""

    def __init__(self, name: str, size: int) -> None:
        self.name, self.size = name, size
        self.id = f"19:{hashlib.sha256(name.encode()).hexdigest()[:32]}@thread.tacv2"
        self.tenant_id = TEAM_TENANT
        self.names: dict[str, str] = {}  # member id -> name, once the roster is served

    def member(self, account: Any) -> str | None:
        """The name of the member an activity is addressed to, if it is one of the team's."""
        return self.names.get(account.get("id")) if isinstance(account, dict) else None


class TerminalChat:
    def __init__(
        self,
        bot_url: str,
        user_name: str,
        *,
        conversation_id: str | None = None,
        port: int = 0,
        team: Team | None = None,
        out: TextIO = sys.stdout,
    ) -> None:
        self.bot_url, self.port, self.team, self.out = bot_url, port, team, out
        self.user = {"id": f"user-{user_name}", "name": user_name}
        self.conversation_id = conversation_id or f"chat-{uuid.uuid4().hex[:12]}"
        self.channel: FakeConnector | None = None
        self._shown: dict[str, str] = {}  # id of each message the bot sent -> its first line, to name it later
        self._print_lock = threading.Lock()
        self._http = httpx.Client(timeout=30)

    def _open_channel(self) -> FakeConnector:
        try:
            channel = FakeConnector(port=self.port).start()
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE or self.port == 0:
                raise
            channel = FakeConnector(port=0).start()
            self.say(
                f"-- port {self.port} is taken (another chat?), so this chat's channel is on port "
                f"{channel.port}: messages to this conversation reach it while it runs"
            )
        channel.on_activity(self._show)
        return channel

    def _show(self, received: Received) -> None:
        # Messages for an earlier chat's conversation (a notification to everyone) come here too.
        elsewhere = (
            None if received.conversation_id == self.conversation_id else f"conversation {received.conversation_id}"
        )
        if self.team is not None and isinstance(received.body, dict):
            if received.conversation_id == self.team.id:
                elsewhere = f"team {self.team.name}'s channel"
            elif (member := self.team.member(received.body.get("recipient"))) is not None:
                elsewhere = f"to {member} of team {self.team.name}, one-to-one"
        if received.operation == "delete":
            old = self._shown.pop(received.activity_id or "", None)
            self.say(
                f"-- the bot deleted {_quoted(old) if old else 'a message'}" + (f" in {elsewhere}" if elsewhere else "")
            )
            return
        if not isinstance(received.body, dict):
            return
        body = received.body
        lines = (body.get("text") or "").splitlines() or [""]
        for attachment in body.get("attachments") or []:
            lines.append(f"[attachment {attachment.get('contentType', '?')}]")
        notes = [elsewhere] if elsewhere else []
        if received.operation == "update":
            old = self._shown.get(received.activity_id or "")
            notes.append(f"edited {_quoted(old)}" if old else "edited")
        self._shown[received.new_id or received.activity_id or ""] = lines[0]
        prompt = "bot" + (f" ({', '.join(notes)})" if notes else "") + "> "
        self.say(prompt + ("\n" + " " * len(prompt)).join(lines))

    def say(self, line: str) -> None:
        with self._print_lock:
            self.out.write(line + "\n")
            self.out.flush()

    def activity(self, type: str, **fields: Any) -> dict[str, Any]:
        assert self.channel is not None
        return {
            "type": type,
            "id": uuid.uuid4().hex[:12],
            "channelId": CHANNEL_ID,
            "serviceUrl": self.channel.base_url + "/",
            "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "from": self.user,
            "recipient": {"id": BOT_ID, "name": "bot"},
            "conversation": {"id": self.conversation_id},
            "locale": "en-US",
            **fields,
        }

    def post(self, activity: dict[str, Any]) -> bool:
        """Send one activity; False (after saying why) when the bot refuses it."""
        try:
            response = self._http.post(self.bot_url, json=activity)
        except httpx.HTTPError as exc:
            self.say(f"!! cannot reach the bot at {self.bot_url} ({exc}): is it running? scripts/run starts it")
            return False
        if response.status_code == 401:
            self.say(
                "!! the bot wants a token: run it locally with no MicrosoftAppId "
                "(AZURE_FUNCTIONS_ENVIRONMENT=Development) to chat from the terminal"
            )
            return False
        if response.status_code >= 300:
            self.say(f"!! the bot answered HTTP {response.status_code}: {response.text[:300]}")
            return False
        return True

    def _banner(self) -> None:
        key = conversation_key(CHANNEL_ID, self.conversation_id)
        user_id = self.user["id"]
        self.say(f"-- chatting with {self.bot_url} as {self.user['name']}; type /quit to leave")
        self.say(f"-- you are {user_id} in conversation {self.conversation_id}; to send you a message:")
        self.say(
            f'--   POST /api/notify with "target": {json.dumps({"conversation": key})}'
            f"  (or {json.dumps({'userId': user_id})})"
        )
        self.say(
            f"--   {python_command()} -m botcore notify --conversation {shlex.quote(key)} --text hello"
            f"  (or --user {shlex.quote(user_id)})"
        )

    def _install_in_team(self, team: Team) -> None:
        """Teams' conversationUpdate for the bot added to a team, in the team's channel, by its first member; the
        channel then serves the team's roster."""
        assert self.channel is not None
        roster = self.channel.set_roster(team.id, team.size, team.tenant_id)
        team.names = {m["id"]: m["name"] for m in roster}
        installer = {k: roster[0][k] for k in ("id", "name", "aadObjectId")}
        installed = self.post(
            self.activity(
                "conversationUpdate",
                channelId=TEAMS_CHANNEL,
                membersAdded=[{"id": BOT_ID}],
                conversation={
                    "id": team.id,
                    "tenantId": team.tenant_id,
                    "conversationType": "channel",
                    "isGroup": True,
                },
                channelData={
                    "team": {"id": team.id, "name": team.name},
                    "tenant": {"id": team.tenant_id},
                    "eventType": "teamMemberAdded",
                },
                **{"from": installer},
            )
        )
        if not installed:
            return
        listed = list(team.names.values())
        names = ", ".join(listed) if len(listed) <= 5 else f"{listed[0]} to {listed[-1]}"
        self.say(
            f"-- the bot is installed in team {team.name} ({team.id}, tenant {team.tenant_id}), whose "
            f"{team.size} members are {names}; to send each a message in their one-to-one chat:"
        )
        self.say(f'--   POST /api/notify with "target": {json.dumps({"team": team.id})}')
        self.say(f"--   {python_command()} -m botcore notify --team {shlex.quote(team.id)} --text hello")

    def run(self, lines: Iterable[str]) -> None:
        self.channel = self._open_channel()
        try:
            self._banner()
            members = [self.user, {"id": BOT_ID, "name": "bot"}]
            self.post(self.activity("conversationUpdate", membersAdded=members))
            if self.team is not None:
                self._install_in_team(self.team)
            for line in lines:
                text = line.rstrip("\n")
                if text.strip() in QUIT:
                    break
                if text.strip():
                    self.post(self.activity("message", text=text))
        finally:
            self._http.close()
            self.channel.stop()


def _quoted(text: str) -> str:
    return '"' + (text if len(text) <= 40 else text[:39] + "…") + '"'


def main(args: argparse.Namespace) -> int:
    team = Team(args.team, args.members) if args.team else None
    chat = TerminalChat(args.bot, args.user, conversation_id=args.conversation, port=args.port, team=team)
    try:
        chat.run(sys.stdin)
    except KeyboardInterrupt:
        pass
    return 0

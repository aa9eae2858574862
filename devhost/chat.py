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
"""

from __future__ import annotations

import argparse
import errno
import json
import shlex
import sys
import threading
import uuid
from datetime import datetime, timezone
from typing import Any, Iterable, TextIO

import httpx

from botcore.keys import conversation_key

from . import python_command
from .channel import FakeConnector, Received

CHANNEL_ID = "emulator"
BOT_ID = "bot"
QUIT = {"/quit", "/exit"}


class TerminalChat:
    def __init__(self, bot_url: str, user_name: str, *, conversation_id: str | None = None,
                 port: int = 0, out: TextIO = sys.stdout) -> None:
        self.bot_url, self.port, self.out = bot_url, port, out
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
            self.say(f"-- port {self.port} is taken (another chat?), so this chat's channel is on port "
                     f"{channel.port}: messages to this conversation reach it while it runs")
        channel.on_activity(self._show)
        return channel

    def _show(self, received: Received) -> None:
        # Messages for an earlier chat's conversation (a notification to everyone) come here too.
        elsewhere = None if received.conversation_id == self.conversation_id else \
            f"conversation {received.conversation_id}"
        if received.operation == "delete":
            old = self._shown.pop(received.activity_id or "", None)
            self.say(f"-- the bot deleted {_quoted(old) if old else 'a message'}"
                     + (f" in {elsewhere}" if elsewhere else ""))
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
            "type": type, "id": uuid.uuid4().hex[:12], "channelId": CHANNEL_ID,
            "serviceUrl": self.channel.base_url + "/",
            "timestamp": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
            "from": self.user, "recipient": {"id": BOT_ID, "name": "bot"},
            "conversation": {"id": self.conversation_id}, "locale": "en-US", **fields,
        }

    def post(self, activity: dict[str, Any]) -> bool:
        """Send one activity; False (after saying why) when the bot refuses it."""
        try:
            response = self._http.post(self.bot_url, json=activity)
        except httpx.HTTPError as exc:
            self.say(f"!! cannot reach the bot at {self.bot_url} ({exc}): is it running? scripts/run starts it")
            return False
        if response.status_code == 401:
            self.say("!! the bot wants a token: run it locally with no MicrosoftAppId "
                     "(AZURE_FUNCTIONS_ENVIRONMENT=Development) to chat from the terminal")
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
        self.say(f"--   POST /api/notify with \"target\": {json.dumps({'conversation': key})}"
                 f"  (or {json.dumps({'userId': user_id})})")
        self.say(f"--   {python_command()} -m botcore notify --conversation {shlex.quote(key)} --text hello"
                 f"  (or --user {shlex.quote(user_id)})")

    def run(self, lines: Iterable[str]) -> None:
        self.channel = self._open_channel()
        try:
            self._banner()
            members = [self.user, {"id": BOT_ID, "name": "bot"}]
            self.post(self.activity("conversationUpdate", membersAdded=members))
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
    chat = TerminalChat(args.bot, args.user, conversation_id=args.conversation, port=args.port)
    try:
        chat.run(sys.stdin)
    except KeyboardInterrupt:
        pass
    return 0

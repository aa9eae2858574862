"""`python -m devhost chat`: talk to the bot from a terminal, as a channel would.

The terminal plays the channel with the same fake Bot Connector the tests use: it
serves the Connector API on localhost (the conversation's serviceUrl), posts each
typed line to the bot's messaging endpoint as a message activity (after a
conversationUpdate that adds the user and the bot), and prints every message the
bot sends the moment it arrives, proactive ones included.
"""

from __future__ import annotations

import argparse
import sys
import threading
import uuid
from datetime import datetime, timezone
from typing import Any, Iterable, TextIO

import httpx

from .channel import FakeConnector, Received

CHANNEL_ID = "emulator"
BOT_ID = "bot"
QUIT = {"/quit", "/exit"}


class TerminalChat:
    def __init__(self, bot_url: str, user_name: str, *, conversation_id: str | None = None,
                 port: int = 0, out: TextIO = sys.stdout) -> None:
        self.bot_url, self.out = bot_url, out
        self.user = {"id": f"user-{user_name}", "name": user_name}
        self.conversation_id = conversation_id or f"chat-{uuid.uuid4().hex[:12]}"
        self.channel = FakeConnector(port=port)
        self.channel.on_activity(self._show)
        self._print_lock = threading.Lock()
        self._http = httpx.Client(timeout=30)

    def _show(self, received: Received) -> None:
        if not isinstance(received.body, dict):
            return
        body = received.body
        lines = (body.get("text") or "").splitlines() or [""]
        for attachment in body.get("attachments") or []:
            lines.append(f"[attachment {attachment.get('contentType', '?')}]")
        # Messages for an earlier chat's conversation (a notification to everyone) come here too.
        prompt = "bot> " if received.conversation_id == self.conversation_id else \
            f"bot (conversation {received.conversation_id})> "
        with self._print_lock:
            self.out.write(prompt + ("\n" + " " * len(prompt)).join(lines) + "\n")
            self.out.flush()

    def say(self, line: str) -> None:
        with self._print_lock:
            self.out.write(line + "\n")
            self.out.flush()

    def activity(self, type: str, **fields: Any) -> dict[str, Any]:
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
            self.say(f"!! cannot reach the bot at {self.bot_url}: {exc}")
            return False
        if response.status_code == 401:
            self.say("!! the bot wants a token: run it locally with no MicrosoftAppId "
                     "(AZURE_FUNCTIONS_ENVIRONMENT=Development) to chat from the terminal")
            return False
        if response.status_code >= 300:
            self.say(f"!! the bot answered HTTP {response.status_code}: {response.text[:300]}")
            return False
        return True

    def run(self, lines: Iterable[str]) -> None:
        self.channel.start()
        try:
            self.say(f"-- chatting with {self.bot_url} as {self.user['name']} "
                     f"(conversation {self.conversation_id}); type /quit to leave")
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


def main(args: argparse.Namespace) -> int:
    chat = TerminalChat(args.bot, args.user, conversation_id=args.conversation, port=args.port)
    try:
        chat.run(sys.stdin)
    except KeyboardInterrupt:
        pass
    return 0

"""`python -m bench.channel_server`: the local IdP and a fake Connector in a process of their own.

Prints one JSON line (Connector URL, the bot's settings for this IdP), then answers
commands on stdin, one per line: `stats` (requests received, IdP hit counters),
`clear` (forget received requests), `quit`.
"""

from __future__ import annotations

import json
import sys

from devhost.channel import FakeConnector
from devhost.identity import IdentityProvider

APP_ID = "3f1c3a6e-0000-4000-8000-00000000b07a"
PASSWORD = "bench-secret"


def main() -> int:
    idp = IdentityProvider().start()
    channel = FakeConnector().start()
    try:
        channel.require_token(idp.is_valid_access_token)
        print(json.dumps({"connector": channel.base_url, "app_id": APP_ID,
                          "env": idp.bot_env(APP_ID, password=PASSWORD)}), flush=True)
        for line in sys.stdin:
            command = line.strip()
            if command == "stats":
                print(json.dumps({"received": len(channel.requests), "hits": dict(idp.hits),
                                  "max_in_flight": channel.max_in_flight}), flush=True)
            elif command == "clear":
                channel.clear()
                print("{}", flush=True)
            elif command == "quit":
                break
    finally:
        channel.stop()
        idp.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

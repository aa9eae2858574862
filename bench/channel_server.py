"""`python -m bench.channel_server [--teams [--latency-median S]]`: the local IdP and a fake Connector
in a process of their own.

Prints one JSON line (Connector URL, the bot's settings for this IdP), then answers
commands on stdin, one per line: `stats` (requests received, IdP hit counters; in Teams
mode also `teams`, the fake's teams_stats()), `clear` (forget received requests),
`roster TEAM COUNT TENANT` (give conversation TEAM a roster of COUNT members in TENANT;
answers the members), `quit`. With --teams the fake behaves as Teams (devhost.channel.TeamsLimits).
"""

from __future__ import annotations

import argparse
import json
import sys

from devhost.channel import FakeConnector, TeamsLimits
from devhost.identity import IdentityProvider

APP_ID = "3f1c3a6e-0000-4000-8000-00000000b07a"
PASSWORD = "bench-secret"


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.channel_server")
    parser.add_argument("--teams", action="store_true", help="Teams' rate limits, latency, paging and create")
    parser.add_argument("--latency-median", type=float, help="Teams mode's median service time, seconds")
    args = parser.parse_args()
    teams = None
    if args.teams:
        teams = TeamsLimits() if args.latency_median is None else TeamsLimits(latency_median=args.latency_median)
    idp = IdentityProvider().start()
    channel = FakeConnector(teams=teams).start()
    try:
        channel.require_token(idp.is_valid_access_token)
        print(
            json.dumps(
                {"connector": channel.base_url, "app_id": APP_ID, "env": idp.bot_env(APP_ID, password=PASSWORD)}
            ),
            flush=True,
        )
        for line in sys.stdin:
            command, *arguments = line.split() or [""]
            if command == "stats":
                stats = {
                    "received": len(channel.requests),
                    "hits": dict(idp.hits),
                    "max_in_flight": channel.max_in_flight,
                }
                if teams is not None:
                    stats["teams"] = channel.teams_stats()
                print(json.dumps(stats), flush=True)
            elif command == "clear":
                channel.clear()
                print("{}", flush=True)
            elif command == "roster":
                team, count, tenant = arguments
                print(json.dumps({"members": channel.set_roster(team, int(count), tenant)}), flush=True)
            elif command == "quit":
                break
    finally:
        channel.stop()
        idp.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

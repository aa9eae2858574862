"""`python -m devhost [start|chat|init-storage]`: the local host, the terminal channel, storage set-up.
Trouble a user can fix ends in one line saying what to do, with a non-zero exit."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from devhost import logs

log = logging.getLogger("devhost")


def _start(args: argparse.Namespace) -> int:
    from .app_loader import HostConfigError
    from .host import Host

    try:
        host = Host(Path(args.app_dir), args.host, args.port)
        asyncio.run(host.run())
    except HostConfigError as exc:
        log.error("cannot start: %s", exc)
        return 2
    return 0


def _init_storage(args: argparse.Namespace) -> int:
    from .run import RunError, init_storage

    try:
        init_storage(Path(args.app_dir).resolve())
    except RunError as exc:
        log.error("%s", exc)
        return 1
    log.info("tables and queues are ready")
    return 0


def _chat(args: argparse.Namespace) -> int:
    from .chat import main

    return main(args)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devhost", description=__doc__)
    parser.add_argument("--app-dir", default=".", help="folder holding function_app.py and host.json")
    sub = parser.add_subparsers(dest="command")
    start = sub.add_parser("start", help="run the function app (the default)")
    for p in (parser, start):
        p.add_argument("--host", default="127.0.0.1")
        p.add_argument("--port", type=int, default=None, help="HTTP port (default 7071)")
    sub.add_parser("init-storage", help="create the app's tables and queues")
    chat = sub.add_parser("chat", help="talk to the bot from this terminal")
    chat.add_argument("--bot", default="http://localhost:7071/api/messages", help="the bot's messaging endpoint")
    chat.add_argument("--user", default="you", help="your display name")
    chat.add_argument("--conversation", default=None, help="conversation id to continue (default: a new one)")
    chat.add_argument("--port", type=int, default=3979,
                      help="port of the channel's Connector endpoint, the conversations' serviceUrl; keep it "
                           "the same so that earlier chats' addresses stay reachable (0: any free port)")
    args = parser.parse_args(argv)
    logs.configure(logging.INFO)
    logging.getLogger("azure").setLevel(logging.WARNING)
    command = {"chat": _chat, "init-storage": _init_storage}.get(args.command or "start", _start)
    return command(args)


if __name__ == "__main__":
    sys.exit(main())

"""`python -m devhost [start|run|chat|init-storage]`: the local host, Azurite with it, the terminal channel,
storage set-up. Trouble a user can fix ends in one line saying what to do, with a non-zero exit."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from functools import partial
from pathlib import Path

from devhost import DEFAULT_AZURITE_PORT, DEFAULT_PORT, logs

log = logging.getLogger("devhost")
CHAT_PORT = 3979
TEAM_MEMBERS = 3


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


def _run(args: argparse.Namespace) -> int:
    from .run import main

    return main(args)


def _chat(args: argparse.Namespace) -> int:
    from .chat import main

    return main(args)


def port_number(text: str, *, more: int = 0) -> int:
    """A TCP port, followed by `more` ports."""
    if not text.isdigit() or not 0 < int(text) < 65536 - more:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (1-{65535 - more})")
    return int(text)


def team_size(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) <= 25_000:
        raise argparse.ArgumentTypeError(f"{text!r} is not a team size (1-25000)")
    return int(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devhost", description=__doc__)
    parser.add_argument("--app-dir", default=".", help="folder holding function_app.py and host.json")
    sub = parser.add_subparsers(dest="command")
    start = sub.add_parser("start", help="run the function app (the default)")
    for p in (parser, start):
        p.add_argument("--host", default="127.0.0.1")
        p.add_argument("--port", type=port_number, default=None, help=f"HTTP port (default {DEFAULT_PORT})")
    run = sub.add_parser(
        "run",
        prog="scripts/run",
        help="Azurite and the function app (what scripts/run runs)",
        description="Run the bot locally: Azurite (started unless it already runs on its ports), "
        "the tables and queues, then the function app.",
    )
    run.add_argument(
        "--port",
        type=port_number,
        default=os.environ.get("BOT_PORT", str(DEFAULT_PORT)),
        help=f"the bot's HTTP port (env BOT_PORT; default {DEFAULT_PORT})",
    )
    run.add_argument(
        "--azurite-port",
        type=partial(port_number, more=2),
        default=os.environ.get("AZURITE_PORT", str(DEFAULT_AZURITE_PORT)),
        help="Azurite's blob port; queue and table are the next two "
        f"(env AZURITE_PORT; default {DEFAULT_AZURITE_PORT})",
    )
    sub.add_parser("init-storage", help="create the app's tables and queues")
    chat = sub.add_parser("chat", help="talk to the bot from this terminal")
    chat.add_argument(
        "--bot",
        default=f"http://localhost:{os.environ.get('BOT_PORT') or DEFAULT_PORT}/api/messages",
        help=f"the bot's messaging endpoint (default: on port BOT_PORT, else {DEFAULT_PORT})",
    )
    chat.add_argument("--user", default="you", help="your display name")
    chat.add_argument("--conversation", default=None, help="conversation id to continue (default: a new one)")
    chat.add_argument(
        "--port",
        type=int,
        default=CHAT_PORT,
        help=f"port of the channel, the conversations' serviceUrl (default {CHAT_PORT}): kept across "
        "chats so that messages to earlier ones arrive here; when another chat has it, any free "
        "port (0: any free port)",
    )
    chat.add_argument(
        "--team",
        metavar="NAME",
        help="also play Teams for a team of that name: install the bot in it, and show what the bot sends its members",
    )
    chat.add_argument(
        "--members",
        metavar="N",
        type=team_size,
        help=f"how many members the team has (default {TEAM_MEMBERS}; Teams' largest team has 25,000)",
    )
    args = parser.parse_args(argv)
    if args.command == "chat":
        if args.members is not None and not args.team:
            chat.error("--members goes with --team")
        args.members = args.members or TEAM_MEMBERS
    # The chat's terminal is the conversation: only warnings there, no HTTP client's request lines.
    logs.configure(logging.WARNING if args.command == "chat" else logging.INFO)
    logging.getLogger("azure").setLevel(logging.WARNING)
    command = {"chat": _chat, "init-storage": _init_storage, "run": _run}.get(args.command or "start", _start)
    return command(args)


if __name__ == "__main__":
    sys.exit(main())

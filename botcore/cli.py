"""`python -m botcore`: the operator's command line, over the same queues and tables as the functions.

    python -m botcore refs [--channel C] [--tenant T] [--user U] [--all]
    python -m botcore notify --text "..." (--conversation KEY | --user ID | --channel C | --tenant T | --team ID
                                           | --everyone)
    python -m botcore survey (--conversation KEY | --user ID)
    python -m botcore status JOB_ID

The storage connection comes from the environment (BotStorage, else AzureWebJobsStorage),
as in the function app.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import TextIO

from .delivery.ledger import DeliveryLedger
from .errors import UnavailableError
from .jobs import Job, JobError, Target, check_job_id, new_job, parse_job
from .settings import JOBS_QUEUE, ConfigurationError, get_settings
from .state.conversations import ConversationStore
from .storage import close_storage_clients, get_queue


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m botcore", description="Operate the proactive bot.")
    sub = parser.add_subparsers(dest="command", required=True)

    refs = sub.add_parser("refs", help="list stored conversation references")
    _selection(refs)
    refs.add_argument("--all", action="store_true", help="include retired references")
    refs.add_argument("--limit", type=int, default=100)

    notify = sub.add_parser("notify", help="send a notification now")
    notify.add_argument("--text", required=True)
    notify.add_argument("--id", help="job id (default: a new one); reuse it to make a retry idempotent")
    target = _selection(notify)
    target.add_argument("--conversation", help="a conversation's address key (see refs)")
    target.add_argument("--team", help="a Teams team id: each member, in a one-to-one conversation")
    target.add_argument("--everyone", action="store_true")

    survey = sub.add_parser("survey", help="start the survey in a conversation, or in each of a user's")
    one = survey.add_mutually_exclusive_group(required=True)
    one.add_argument("--conversation")
    one.add_argument("--user")

    status = sub.add_parser("status", help="a notification job's delivery counts")
    status.add_argument("job")
    return parser


def _selection(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--channel", help="channel id, e.g. msteams")
    parser.add_argument("--tenant", help="tenant id")
    parser.add_argument("--user", help="user id")
    return parser


def _target(args: argparse.Namespace) -> Target:
    return Target(conversation=args.conversation, user_id=args.user, channel_id=args.channel,
                  tenant_id=args.tenant, team=args.team, everyone=args.everyone)


async def _refs(args: argparse.Namespace, out: TextIO) -> int:
    store = ConversationStore()
    query = store.selection_filter(channel_id=args.channel, tenant_id=args.tenant, user_id=args.user,
                                   include_retired=args.all)
    shown = 0
    async for page in store.iter_pages(query, page_size=min(args.limit, 500)):
        for record in page[: args.limit - shown]:
            ref = record.reference
            out.write(json.dumps({
                "conversation": record.key, "channelId": ref.channel_id, "userId": ref.user.id if ref.user else None,
                "tenantId": ref.tenant_id, "lastSeen": record.last_seen.isoformat() if record.last_seen else None,
                "active": record.active, **({"retired": record.retired_reason} if not record.active else {}),
            }) + "\n")
            shown += 1
        if shown >= args.limit:
            break
    return 0


async def _enqueue(jobs: list[Job], out: TextIO) -> int:
    queue = get_queue(JOBS_QUEUE)
    for job in jobs:
        await queue.send(job.to_json())
        out.write(json.dumps({"queued": job.kind, "id": job.id, "target": job.target.to_dict()}) + "\n")
    return 0


async def _notify(args: argparse.Namespace, out: TextIO) -> int:
    job = new_job("notify", _target(args), text=args.text)
    draft = {**json.loads(job.to_json()), **({"id": args.id} if args.id else {})}
    return await _enqueue([parse_job(json.dumps(draft))], out)  # validated as the queue function will


async def _survey(args: argparse.Namespace, out: TextIO) -> int:
    keys = [args.conversation] if args.conversation else []
    if args.user:
        store = ConversationStore()
        async for page in store.iter_pages(store.selection_filter(user_id=args.user)):
            keys.extend(record.key for record in page)
        if not keys:
            out.write(f"no active conversation of user {args.user}\n")
            return 1
    return await _enqueue([new_job("beginDialog", Target(conversation=k), dialog="survey") for k in keys], out)


async def _status(args: argparse.Namespace, out: TextIO) -> int:
    status = await DeliveryLedger().status(check_job_id(args.job))
    if status is None:
        out.write(f"no notification job {args.job!r} (it may still be queued)\n")
        return 1
    out.write(json.dumps(status.to_dict()) + "\n")
    return 0


COMMANDS = {"refs": _refs, "notify": _notify, "survey": _survey, "status": _status}


def main(argv: list[str] | None = None, out: TextIO = sys.stdout) -> int:
    args = _parser().parse_args(argv)

    async def run() -> int:
        try:
            return await COMMANDS[args.command](args, out)
        finally:
            await close_storage_clients()

    try:
        return asyncio.run(run())
    except (ConfigurationError, JobError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    except UnavailableError as exc:
        sys.stderr.write(f"error: storage is unavailable ({exc}); {_storage_hint()}\n")
        return 1
    except KeyboardInterrupt:
        return 130


def _storage_hint() -> str:
    """Where the storage setting points, and what usually fixes it locally."""
    connection = get_settings().storage
    if connection.local:
        return (f"{connection.setting}=UseDevelopmentStorage=true means {connection.where}: is scripts/run "
                "running? (on other ports, export the BotStorage it prints)")
    if connection.connection_string is not None:
        return (f"{connection.setting} points at {connection.where}: is it running? "
                "(scripts/run starts Azurite and prints the BotStorage to export)")
    return f"{connection.setting} points at {connection.where}: check the URIs and the identity's access"

"""`python -m botcore`: the operator's command line, over the same queues and tables as the functions.

    python -m botcore refs [--channel C] [--tenant T] [--user U] [--all]
    python -m botcore notify --text "..." (--conversation KEY | --user ID | --channel C | --tenant T | --team ID
                                           | --everyone)
    python -m botcore survey (--conversation KEY | --user ID)
    python -m botcore status JOB_ID [--follow]

`notify` and `survey` open each job's record in the delivery ledger before they queue it, as POST
/api/notify does, so `status` knows a job from the moment its id is printed. `status --follow` reads the
status every second until the job ends: on a terminal as a progress bar (tqdm, from requirements-dev.txt),
on a pipe as one JSON line per change; it exits 1 if the job failed.

The storage connection comes from the environment (BotStorage, else AzureWebJobsStorage),
as in the function app.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any, TextIO

from .delivery.ledger import DeliveryLedger, ExpiredJob, JobStatus, RevisionJobStatus
from .errors import ConfigurationError, ConflictError, UnavailableError
from .jobs import Job, JobError, Target, check_job_id, new_job, parse_job
from .settings import JOBS_QUEUE, get_settings
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

    status = sub.add_parser("status", help="a job's state and delivery counts")
    status.add_argument("job")
    status.add_argument(
        "--follow",
        action="store_true",
        help="until the job ends: a progress bar on a terminal, a JSON line per change on a pipe",
    )
    return parser


def _selection(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--channel", help="channel id, e.g. msteams")
    parser.add_argument("--tenant", help="tenant id")
    parser.add_argument("--user", help="user id")
    return parser


def _target(args: argparse.Namespace) -> Target:
    return Target(
        conversation=args.conversation,
        user_id=args.user,
        channel_id=args.channel,
        tenant_id=args.tenant,
        team=args.team,
        everyone=args.everyone,
    )


async def _refs(args: argparse.Namespace, out: TextIO) -> int:
    store = ConversationStore()
    query = store.selection_filter(
        channel_id=args.channel, tenant_id=args.tenant, user_id=args.user, include_retired=args.all
    )
    shown = 0
    async for page in store.iter_pages(query, page_size=min(args.limit, 500)):
        for record in page[: args.limit - shown]:
            ref = record.reference
            out.write(
                json.dumps(
                    {
                        "conversation": record.key,
                        "channelId": ref.channel_id,
                        "userId": ref.user.id if ref.user else None,
                        "tenantId": ref.tenant_id,
                        "lastSeen": record.last_seen.isoformat() if record.last_seen else None,
                        "active": record.active,
                        **({"retired": record.retired_reason} if not record.active else {}),
                    }
                )
                + "\n"
            )
            shown += 1
        if shown >= args.limit:
            break
    return 0


async def _enqueue(jobs: list[Job], out: TextIO) -> int:
    ledger, queue = DeliveryLedger(), get_queue(JOBS_QUEUE)
    for job in jobs:
        # The header first, as POST /api/notify does: `status` then knows the id the moment it is printed.
        header = await ledger.open_job(job)
        if not header.fanned_out:  # the same job again (--id) whose fan-out ended has nothing left to queue
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


FOLLOW_INTERVAL = 1.0  # seconds between two reads of a followed status: each reads the job's ledger partition
END_STATES = frozenset({"done", "deleted", "failed", "superseded"})  # a revision job ends superseded, or done


async def _status(args: argparse.Namespace, out: TextIO) -> int:
    job_id = check_job_id(args.job)
    progress_bar: Any = None
    if args.follow and out.isatty():
        try:
            import tqdm  # operator tooling, not the app's: requirements-dev.txt has it

            progress_bar = tqdm.tqdm
        except ImportError:
            sys.stderr.write(
                "error: --follow draws its progress bar with tqdm, which is not installed: "
                "pip install -r requirements-dev.txt (or pipe the output for JSON lines)\n"
            )
            return 2
    ledger = DeliveryLedger()
    status = await ledger.status(job_id)
    if status is None:
        out.write(f"no notification job {args.job!r} (it may still be queued)\n")
        return 1
    if isinstance(status, ExpiredJob):
        out.write(status.describe() + "\n")
        return 1
    if not args.follow:
        out.write(json.dumps(status.to_dict()) + "\n")
        return 0
    return await _follow(ledger, job_id, status.to_dict(), out, progress_bar)


async def _follow(ledger: DeliveryLedger, job_id: str, status: dict[str, Any], out: TextIO, progress_bar: Any) -> int:
    """Read the status until the job ends: redraw the bar after each read when there is one, else write each
    change as a JSON line. The end state's full status is the last line either way."""
    shown: dict[str, Any] | None = None
    progress = None
    if progress_bar is not None:  # what was settled before is its start: the rate counts what settles meanwhile
        (settled, total), (desc, counts) = _progress(status), _labels(status)
        progress = progress_bar(
            total=total, initial=settled, desc=desc, postfix=counts, unit="msg", file=out, dynamic_ncols=True
        )
    try:
        while True:
            if progress is not None:
                _draw(progress, status)  # every read: the rate and the time left move even when the counts do not
            elif status != shown:
                out.write(json.dumps(status) + "\n")
                out.flush()
                shown = status
            if status["state"] in END_STATES:
                break
            await asyncio.sleep(FOLLOW_INTERVAL)
            latest = await ledger.status(job_id)
            assert isinstance(latest, (JobStatus, RevisionJobStatus))  # only an ended job expires: followed no more
            status = latest.to_dict()
    finally:
        if progress is not None:
            progress.close()
    if progress is not None:
        out.write(json.dumps(status) + "\n")
    return 1 if status["state"] == "failed" else 0


def _progress(status: dict[str, Any]) -> tuple[int, int]:
    """(messages settled, messages in all): a notification counts its targets; a revision job, the messages it
    revises."""
    pending = status.get("pending", 0)
    total = status.get("targets", sum(status.get(k, 0) for k in ("updated", "deleted", "failed")) + pending)
    return total - pending, total


def _labels(status: dict[str, Any]) -> tuple[str, str]:
    """What the bar says beside it: the job and its state, and its counts."""
    counts = ", ".join(f"{k}={status[k]}" for k in ("sent", "updated", "deleted", "failed", "pending") if k in status)
    return f"{status['id']} {status['state']}", counts


def _draw(progress: Any, status: dict[str, Any]) -> None:
    """The bar (with tqdm's rate and time left), the state, and the counts."""
    settled, progress.total = _progress(status)
    desc, counts = _labels(status)
    progress.set_description(desc, refresh=False)
    progress.set_postfix_str(counts, refresh=False)
    progress.update(settled - progress.n)  # what tqdm reckons the rate and the time left from
    progress.refresh()


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
    except (ConfigurationError, JobError, ConflictError) as exc:
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
        return (
            f"{connection.setting}=UseDevelopmentStorage=true means {connection.where}: is scripts/run "
            "running? (on other ports, export the BotStorage it prints)"
        )
    if connection.connection_string is not None:
        return (
            f"{connection.setting} points at {connection.where}: is it running? "
            "(scripts/run starts Azurite and prints the BotStorage to export)"
        )
    return f"{connection.setting} points at {connection.where}: check the URIs and the identity's access"

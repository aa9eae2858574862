"""A dialog started by the bot, not the user: pushed on the conversation's stack by a job.

The dialog's first messages are written to the delivery ledger before the state commits, so a send that
fails after the commit is made by the redelivered job instead of being lost; the job's id, kept in the
state, keeps the dialog from starting twice.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ..jobs import Job, JobError
from ..state.turns import run_dialog_turn, turn_info
from .replies import deliver_prepared

if TYPE_CHECKING:
    from ..state.dialogs import TurnResult
    from .context import DeliveryContext

log = logging.getLogger(__name__)


async def begin_dialog(ctx: DeliveryContext, job: Job) -> str:
    """Push the job's dialog on top of whatever runs, commit, then send its first messages."""
    await ctx.ledger.open_job(job, seen=True)  # its id can be followed, whoever put it on the queue
    if job.dialog not in ctx.turns.engine.dialogs:
        raise JobError(
            f"job.dialog {job.dialog!r} names no dialog; known: {', '.join(sorted(ctx.turns.engine.dialogs))}"
        )
    key, dialog = job.target.conversation, job.dialog
    assert key is not None and dialog is not None  # parse_job: a beginDialog job names both
    record = await ctx.conversations.get(key)
    if record is None or not record.active:
        await ctx.ledger.skip_unreachable(job.id, key, record)
        return "skipped"
    info = turn_info(ctx.settings, record.reference.user.name if record.reference.user else None)

    async def keep_replies(result: TurnResult) -> None:
        if result.replies:
            await ctx.ledger.prepare(job.id, key, result.replies)

    result, committed = await run_dialog_turn(
        ctx.turns,
        key,
        lambda state: ctx.turns.engine.begin_proactive(state, dialog, job_id=job.id, ctx_info=info),
        None,
        before_commit=keep_replies,
    )
    outcome = await deliver_prepared(ctx, job.id, key, (committed or record).reference)
    if outcome != "sent":
        return outcome
    return "started" if result.replies else "resent"

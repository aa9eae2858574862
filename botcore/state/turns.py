"""What the bot does with each authenticated activity.

A turn reads the conversation's entity once, lets the dialog engine compute the
new state and the replies in memory, commits the state with the ETag it read
(re-running the turn on a conflict), and only then sends. So two turns of one
conversation never lose each other's update, and no reply leaves for a turn that
did not commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from ..backoff import backoff
from ..errors import UnavailableError
from ..keys import conversation_key
from ..protocol.activity import Activity, ConversationReference
from ..protocol.connector import ConnectorClient, ConversationGoneError, RequestRejectedError, RetryableConnectorError
from ..protocol.trust import UntrustedServiceUrlError
from ..settings import Settings
from .conversations import ConcurrencyError, ConversationRecord, ConversationStore
from .dialogs import Effect, Engine, ScheduleDialog, ScheduleReminder, TurnInfo, TurnResult

if TYPE_CHECKING:
    from ..protocol.auth import AuthResult
    from .service_urls import ServiceUrlRegistry

log = logging.getLogger(__name__)

MAX_TURN_ATTEMPTS = 8
REPLY_RETRY_DELAY = 5.0  # seconds before a reply that failed without a Retry-After is tried again


class Outbox(Protocol):
    """What a committed turn hands on, for the delivery layer to do (botcore.delivery.outbox)."""

    async def retry_replies(self, key: str, replies: list[dict[str, Any]], delay: float) -> str:
        """Keep replies the Connector did not take, to be sent again after `delay`; the id of the job doing it."""

    async def schedule_dialog(self, key: str, dialog: str, delay: float) -> str: ...

    async def remind(self, key: str, text: str, due: datetime) -> str: ...


@dataclass
class TurnContext:
    """What turns work with, built at the edge (botcore.app) and handed down."""

    settings: Settings
    conversations: ConversationStore
    service_urls: ServiceUrlRegistry
    connector: ConnectorClient
    engine: Engine
    locks: KeyLocks
    outbox: Outbox


class TurnConflictError(UnavailableError):
    """A turn lost the ETag race more often than MAX_TURN_ATTEMPTS allows: the conversation is busy."""

    code, public_message, retry_after = "ConversationBusy", "the conversation is busy; retry later", 1.0


class KeyLocks:
    """One asyncio.Lock per conversation, dropped when no turn holds or awaits it.

    Turns of one conversation in one process queue up instead of racing on the
    ETag; the ETag still guards against other instances.
    """

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, list[int]]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.setdefault(key, (asyncio.Lock(), [0]))
        users[0] += 1
        try:
            async with lock:
                yield
        finally:
            users[0] -= 1
            if users[0] == 0:
                del self._locks[key]


def turn_info(settings: Settings, user_name: str | None) -> TurnInfo:
    notify_url = f"{settings.public_base_url}/api/notify" if settings.public_base_url else None
    return TurnInfo(notify_url=notify_url, user_name=user_name, now=datetime.now(UTC))


async def run_dialog_turn(
    ctx: TurnContext,
    key: str,
    compute: Callable[[dict[str, Any] | None], TurnResult],
    reference: ConversationReference | None,
    before_commit: Callable[[TurnResult], Awaitable[None]] | None = None,
) -> tuple[TurnResult, ConversationRecord | None]:
    """Read, compute, commit with the ETag; re-run on a lost race. Returns (result, record): the record as
    committed, or as read when nothing changed (None: no such conversation)."""
    store = ctx.conversations
    async with ctx.locks.hold(key):
        for attempt in range(1, MAX_TURN_ATTEMPTS + 1):
            record = await store.get(key)
            result = compute(record.state if record else None)
            write_reference = reference is not None and store.needs_reference_write(record, reference)
            if not (result.changed or write_reference):
                return result, record
            if before_commit is not None:
                await before_commit(result)
            try:
                record = await store.commit(
                    record, key=key, reference=reference if write_reference else None, state=result.state
                )
            except ConcurrencyError:
                log.info("conversation %s: state changed during the turn (attempt %d); running it again", key, attempt)
                # Another instance wrote: back off a little, with jitter, so the two stop colliding.
                await asyncio.sleep(backoff(attempt, base=0.01, cap=0.2))
                continue
            return result, record
    raise TurnConflictError(f"conversation {key}: state changed under {MAX_TURN_ATTEMPTS} attempts")


async def on_activity(ctx: TurnContext, activity: Activity, auth: AuthResult) -> int:
    """Run the activity's turn; the status to answer the channel with."""
    reference = ConversationReference.from_activity(activity, auth.trust)
    if auth.kind == "channel":  # its token vouched for the serviceUrl: the bot's token may go there
        await ctx.service_urls.record(activity.service_url)
    key = conversation_key(activity.channel_id, activity.conversation.id)

    if activity.type == "message":
        return await _message_turn(ctx, activity, reference, key)
    if (activity.type == "conversationUpdate" and activity.bot_was_removed()) or (
        activity.type == "installationUpdate" and (activity.action or "").startswith("remove")
    ):
        await ctx.conversations.retire(key, "bot removed")
        log.info("conversation %s: bot removed, reference retired", key)
        return 200
    await ctx.conversations.record_activity(reference, team_id=activity.team_id)
    if activity.type == "invoke":
        # No invoke is implemented; the SDKs answer unhandled invokes the same way.
        return 501
    return 200


async def _message_turn(ctx: TurnContext, activity: Activity, reference: ConversationReference, key: str) -> int:
    """Once the state is committed the turn has happened: it answers 200 whatever the Connector does (a
    channel that saw an error would deliver the activity again), and replies it could not send go to
    the retry path."""
    info = turn_info(ctx.settings, activity.from_.name if activity.from_ else None)
    text = activity.text or ""
    result, _ = await run_dialog_turn(
        ctx,
        key,
        lambda state: ctx.engine.run_turn(state, text, ctx_info=info, activity_id=activity.id),
        reference,
    )
    replies = [{**reply, "replyToId": activity.id} if activity.id else reply for reply in result.replies]
    sent = 0
    try:
        for reply in replies:
            await ctx.connector.reply(reference, reply)
            sent += 1
    except Exception as exc:
        await _after_failed_replies(ctx, key, replies[sent:], exc)
    try:
        await apply_effects(ctx, key, result.effects)
    except Exception:
        log.exception("conversation %s: the turn is committed but its follow-up work failed: %s", key, result.effects)
    return 200


async def _after_failed_replies(ctx: TurnContext, key: str, unsent: list[dict[str, Any]], exc: Exception) -> None:
    """Retire a conversation that is gone; hand replies that may still go through to the outbox, which sends
    them again after Retry-After, or a few seconds."""
    if isinstance(exc, ConversationGoneError):
        await ctx.conversations.retire(key, exc.service_code or f"HTTP {exc.status}")
        log.warning(
            "conversation %s is gone (%s); reference retired, %d replies dropped", key, exc.service_code, len(unsent)
        )
        return
    if isinstance(exc, (RequestRejectedError, UntrustedServiceUrlError)):
        log.error("conversation %s: a reply was refused (%s); %d replies dropped", key, exc, len(unsent))
        return
    delay = exc.retry_after if isinstance(exc, RetryableConnectorError) and exc.retry_after else REPLY_RETRY_DELAY
    try:
        job_id = await ctx.outbox.retry_replies(key, unsent, max(1.0, delay))
    except Exception:
        log.exception(
            "conversation %s: %d replies could not be sent (%r) nor kept for a retry; they are lost",
            key,
            len(unsent),
            exc,
        )
        return
    log.warning(
        "conversation %s: %d replies not sent (%r); retried by job %s in %.0fs", key, len(unsent), exc, job_id, delay
    )


async def apply_effects(ctx: TurnContext, key: str, effects: list[Effect]) -> None:
    """Work a committed turn asked for: schedule a proactive dialog, store a reminder."""
    if not effects:  # most turns
        return
    for effect in effects:
        if isinstance(effect, ScheduleDialog):
            job_id = await ctx.outbox.schedule_dialog(key, effect.dialog, effect.delay_seconds)
            log.info("conversation %s: %s scheduled in %ss (job %s)", key, effect.dialog, effect.delay_seconds, job_id)
        elif isinstance(effect, ScheduleReminder):
            await ctx.outbox.remind(key, effect.text, effect.due)
        else:
            raise TypeError(f"unknown effect {effect!r}")

"""The bot's parts, built together: the one place that knows which store, client and limiter goes where.

The edges (the HTTP and queue functions, the timer, the command line) take a `Bot` from `bot_for` and
hand it down; nothing below them looks a dependency up. A Bot is built once per event loop and then
reused by every invocation: the Functions worker runs one loop for the process's life, so its clients,
token and caches live that long (cold start matters).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from . import telemetry
from .loops import PerLoop
from .settings import JOBS_QUEUE, SENDS_QUEUE, Settings, get_settings
from .storage import close_storage_clients

if TYPE_CHECKING:
    from .delivery.context import DeliveryContext
    from .state.turns import TurnContext


@dataclass(frozen=True)
class Bot:
    """The app's parts for one event loop: what turns work with, and what delivery works with."""

    settings: Settings
    turns: TurnContext
    delivery: DeliveryContext


def build(settings: Settings) -> Bot:
    # Built on the first invocation, not at import: a cold start imports only what its function needs.
    from .delivery.context import DeliveryContext
    from .delivery.ledger import DeliveryLedger
    from .delivery.outbox import DeliveryOutbox
    from .delivery.pacing import ConversationWindows, KeyGuard, PaceCalendar
    from .delivery.reminders import ReminderStore
    from .delivery.revisions import RevisionFeeds
    from .protocol.connector import ConnectorClient
    from .protocol.tokens import token_provider_for
    from .protocol.trust import ServiceTrust
    from .state.conversations import ConversationStore
    from .state.dialogs import default_engine
    from .state.service_urls import ServiceUrlRegistry
    from .state.turns import KeyLocks, TurnContext
    from .storage import get_queue

    telemetry.prepare(settings)
    conversations, service_urls = ConversationStore(), ServiceUrlRegistry()
    connector = ConnectorClient(
        ServiceTrust(service_urls, settings.emulator_service_hosts, emulator_on_loopback=settings.is_development),
        tokens=token_provider_for(settings),
        max_retry_after=settings.max_retry_after_seconds,
    )
    ledger = DeliveryLedger(claim_ttl=timedelta(seconds=settings.delivery_claim_seconds))
    reminders, jobs = ReminderStore(), get_queue(JOBS_QUEUE)
    turns = TurnContext(
        settings,
        conversations,
        service_urls,
        connector,
        default_engine(),
        KeyLocks(),
        DeliveryOutbox(ledger, jobs, reminders),
    )
    delivery = DeliveryContext(
        settings=settings,
        ledger=ledger,
        conversations=conversations,
        connector=connector,
        reminders=reminders,
        pacing=PaceCalendar(settings.tenant_rate_per_second, max_pause=settings.max_retry_after_seconds),
        guard=KeyGuard(settings.tenant_rate_per_second),
        windows=ConversationWindows(),
        sending=asyncio.Semaphore(settings.send_concurrency),
        jobs=jobs,
        sends=get_queue(SENDS_QUEUE),
        turns=turns,
        revisions=RevisionFeeds(ledger),
    )
    return Bot(settings, turns, delivery)


_bots: PerLoop[Bot] = PerLoop()


def bot_for(settings: Settings | None = None) -> Bot:
    """This event loop's Bot (built on first use). Only the edges call it."""
    return _bots.get(lambda: build(settings or get_settings()))


async def close() -> None:
    """Release this loop's Bot and clients (asyncio.run() closes what is left when it ends its loop)."""
    from .protocol.http import close_http_client  # the HTTP client's module costs a cold start that makes no call

    _bots.pop()
    await close_storage_clients()
    await close_http_client()

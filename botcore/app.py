"""The bot's parts, built together: the one place that knows which store, client and limiter goes where.

The edges (the HTTP and queue functions, the timer, the command line) take a `Bot` from `bot_for` and
hand it down; nothing below them looks a dependency up. A Bot is built once per event loop and then
reused by every invocation: the Functions worker runs one loop for the process's life, so its clients,
token and caches live that long (cold start matters).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING

from .loops import PerLoop
from .settings import JOBS_QUEUE, SENDS_QUEUE, Settings, get_settings

if TYPE_CHECKING:
    from .delivery.jobs import Job
    from .delivery.ledger import DeliveryLedger
    from .delivery.pacing import ConversationWindows, KeyGuard, PaceCalendar
    from .delivery.reminders import ReminderStore
    from .protocol.connector import ConnectorClient
    from .protocol.trust import ServiceUrlRegistry
    from .state.conversations import ConversationStore
    from .state.dialogs import Engine
    from .state.turns import KeyLocks
    from .storage import Queue

JOB_CACHE = 64  # jobs whose headers a sends worker keeps: every batch of a broadcast needs the same one


@dataclass
class Bot:
    settings: Settings
    conversations: "ConversationStore"
    service_urls: "ServiceUrlRegistry"
    connector: "ConnectorClient"
    engine: "Engine"
    ledger: "DeliveryLedger"
    reminders: "ReminderStore"
    pacing: "PaceCalendar"
    guard: "KeyGuard"
    windows: "ConversationWindows"
    sending: asyncio.Semaphore  # sends in flight on this instance (BotSendConcurrency)
    jobs: "Queue"
    sends: "Queue"
    locks: "KeyLocks"
    _jobs: dict[str, "Job"] = field(default_factory=dict)

    async def job_of(self, job_id: str) -> "Job | None":
        """The job a send batch belongs to, from its ledger header (cached)."""
        job = self._jobs.get(job_id)
        if job is None:
            header = await self.ledger.header(job_id)
            if header is None:
                return None
            job = header.job
            if len(self._jobs) >= JOB_CACHE:
                self._jobs.pop(next(iter(self._jobs)))
            self._jobs[job_id] = job
        return job


def build(settings: Settings) -> Bot:
    from .delivery.ledger import DeliveryLedger
    from .delivery.pacing import ConversationWindows, KeyGuard, PaceCalendar
    from .delivery.reminders import ReminderStore
    from .protocol.connector import ConnectorClient
    from .protocol.tokens import token_provider_for
    from .protocol.trust import ServiceTrust, ServiceUrlRegistry
    from .state.conversations import ConversationStore
    from .state.dialogs import default_engine
    from .state.turns import KeyLocks
    from .storage import get_queue

    service_urls = ServiceUrlRegistry()
    return Bot(
        settings=settings,
        conversations=ConversationStore(),
        service_urls=service_urls,
        connector=ConnectorClient(ServiceTrust(service_urls, settings.emulator_service_hosts,
                                               emulator_on_loopback=settings.is_development),
                                  tokens=token_provider_for(settings),
                                  max_retry_after=settings.max_retry_after_seconds),
        engine=default_engine(),
        ledger=DeliveryLedger(claim_ttl=timedelta(seconds=settings.delivery_claim_seconds)),
        reminders=ReminderStore(),
        pacing=PaceCalendar(settings.tenant_rate_per_second, max_pause=settings.max_retry_after_seconds),
        guard=KeyGuard(settings.tenant_rate_per_second),
        windows=ConversationWindows(),
        sending=asyncio.Semaphore(settings.send_concurrency),
        jobs=get_queue(JOBS_QUEUE),
        sends=get_queue(SENDS_QUEUE),
        locks=KeyLocks(),
    )


_bots: PerLoop[Bot] = PerLoop()


def bot_for(settings: Settings | None = None) -> Bot:
    """This event loop's Bot (built on first use). Only the edges call it."""
    return _bots.get(lambda: build(settings or get_settings()))


async def close() -> None:
    """Release this loop's Bot and clients (asyncio.run() closes what is left when it ends its loop)."""
    from .protocol.http import close_http_client
    from .storage import close_storage_clients

    _bots.pop()
    await close_storage_clients()
    await close_http_client()

"""What the delivery layer works with, built at the edge (botcore.app) and handed down.

Delivery functions take this context, never the app's whole `Bot`: it names every collaborator they use,
and nothing below the edge looks one up.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..jobs import Job
    from ..protocol.connector import ConnectorClient
    from ..settings import Settings
    from ..state.conversations import ConversationStore
    from ..state.turns import TurnContext
    from ..storage import Queue
    from .ledger import DeliveryLedger
    from .pacing import ConversationWindows, KeyGuard, PaceCalendar
    from .reminders import ReminderStore
    from .revisions import RevisionFeeds

JOB_CACHE = 64  # jobs whose headers a sends worker keeps: every batch of a broadcast needs the same one


@dataclass
class DeliveryContext:
    settings: Settings
    ledger: DeliveryLedger
    conversations: ConversationStore
    connector: ConnectorClient
    reminders: ReminderStore
    pacing: PaceCalendar
    guard: KeyGuard  # per instance
    windows: ConversationWindows  # per instance
    sending: asyncio.Semaphore  # sends in flight on this instance (BotSendConcurrency)
    jobs: Queue
    sends: Queue
    turns: TurnContext  # a proactive dialog is a turn
    revisions: RevisionFeeds  # per instance: each job's latest revision, read for all its batches running here
    _jobs: dict[str, Job] = field(default_factory=dict)

    async def job_of(self, job_id: str) -> Job | None:
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

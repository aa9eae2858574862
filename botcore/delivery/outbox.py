"""What a committed turn hands on to delivery (botcore.state.turns.Outbox): replies the Connector did not
take, dialogs to start later, reminders."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..jobs import Target, new_job

if TYPE_CHECKING:
    from ..storage import Queue
    from .ledger import DeliveryLedger
    from .reminders import ReminderStore

log = logging.getLogger(__name__)


class DeliveryOutbox:
    def __init__(self, ledger: DeliveryLedger, jobs: Queue, reminders: ReminderStore) -> None:
        self.ledger, self.jobs, self.reminders = ledger, jobs, reminders

    async def retry_replies(self, key: str, replies: list[dict[str, Any]], delay: float) -> str:
        """Keep the replies in the ledger, and have a `replies` job send them once `delay` has passed."""
        job = new_job("replies", Target(conversation=key))
        await self.ledger.open_job(job)
        await self.ledger.prepare(job.id, key, replies)
        await self.jobs.send(job.to_json(), delay=delay)
        return job.id

    async def schedule_dialog(self, key: str, dialog: str, delay: float) -> str:
        job = new_job("beginDialog", Target(conversation=key), dialog=dialog)
        await self.ledger.open_job(job)  # its status says queued until it starts
        await self.jobs.send(job.to_json(), delay=delay)
        return job.id

    async def remind(self, key: str, text: str, due: datetime) -> str:
        job = new_job("reminder", Target(conversation=key), text=text, due=due.isoformat(timespec="milliseconds"))
        await self.reminders.add(self.ledger, self.jobs, job)
        return job.id

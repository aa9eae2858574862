"""The local host's queue trigger: a message's lease, renewed while its function runs, and its delete."""

from __future__ import annotations

import asyncio
import datetime
from types import SimpleNamespace
from typing import Any

import pytest

from devhost.app_loader import FunctionInfo
from devhost.queue_trigger import QueueListener, QueueOptions


class SlowQueue:
    """A queue whose lease renewals take a while and change the pop receipt, as the service's do."""

    def __init__(self) -> None:
        self.receipts = 0
        self.deleted_with: list[str] = []
        self.renewing = asyncio.Event()

    async def update_message(self, message: Any, visibility_timeout: int) -> Any:
        self.receipts += 1  # the service has renewed it; its answer is on its way
        self.renewing.set()
        await asyncio.sleep(0.3)
        return SimpleNamespace(pop_receipt=f"receipt-{self.receipts}")

    async def delete_message(self, message: Any) -> None:
        self.deleted_with.append(message.pop_receipt)


async def test_a_function_that_ends_during_a_renewal_deletes_its_message_with_the_renewed_receipt(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AzureWebJobsStorage", "UseDevelopmentStorage=true")
    monkeypatch.setenv("LocalQueueLeaseSeconds", "3")  # renewed every second
    queue = SlowQueue()

    async def invoke(function: FunctionInfo, trigger: Any, reason: str) -> None:
        await queue.renewing.wait()  # the function ends while the lease is being renewed

    function = FunctionInfo("sends", "id", {"type": "queueTrigger", "queueName": "work", "connection": ""})
    listener = QueueListener(function, QueueOptions(message_encoding="none"), invoke)
    now = datetime.datetime.now(datetime.UTC)
    message = SimpleNamespace(
        id="m",
        content="{}",
        dequeue_count=1,
        pop_receipt="receipt-0",
        inserted_on=now,
        expires_on=now,
        next_visible_on=now,
    )
    await asyncio.wait_for(listener._process(queue, None, message), 5)
    assert queue.deleted_with == [f"receipt-{queue.receipts}"] and queue.receipts == 1

"""A job's status (DeliveryLedger.status) on Azurite: counted from every delivery row of the job, which a large job
has thousands of, each holding up to a hundred outcomes. Reading them must not hold more of them at once as the
job grows: an instance answering the status of a 100,000 job held about 9 MiB more while it counted."""

from __future__ import annotations

import asyncio
import tracemalloc
import uuid

import pytest

from botcore import storage
from botcore.delivery.batches import BATCH_KEYS
from botcore.delivery.ledger import BATCH_PREFIX, Delivered, DeliveryLedger, Status
from botcore.jobs import Target, new_job
from botcore.keys import conversation_key, encode_key
from botcore.tablejson import split_json


@pytest.fixture
async def ledger(storage_connection_string, monkeypatch):
    monkeypatch.setenv("BotStorage", storage_connection_string)
    table = storage.get_table(f"d{uuid.uuid4().hex[:20]}")
    await table.create()
    yield DeliveryLedger(table)
    await storage.close_storage_clients()


async def sent_job(ledger: DeliveryLedger, rows: int) -> str:
    """A fanned-out job whose `rows` batches are done, every conversation sent, as record_batch writes them."""
    job = new_job("notify", Target(tenant_id="t1"), text="hi")
    header = await ledger.open_job(job)
    header.fanned_out, header.targets = True, rows * BATCH_KEYS
    await ledger.save_progress(header)
    sent = Delivered(Status.SENT, activity_id="1:" + "a" * 40, attempts=1).to_json()
    gate = asyncio.Semaphore(32)

    async def write(row: int) -> None:
        outcomes = {conversation_key("msteams", f"a:{row}-{i}-{'x' * 40}"): sent for i in range(BATCH_KEYS)}
        async with gate:
            await ledger.table.insert(
                {
                    "PartitionKey": encode_key(job.id),
                    "RowKey": f"{BATCH_PREFIX}{row}.0.0",
                    "status": Status.DONE,
                    **split_json("outcomes", outcomes),
                }
            )

    await asyncio.gather(*(write(row) for row in range(rows)))
    return job.id


async def counted_peak(ledger: DeliveryLedger, job_id: str, rows: int) -> int:
    """The most memory Python held at once, above what it held before, while the status was counted."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        status = await ledger.status(job_id)
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    assert status is not None and status.counts == {Status.SENT: rows * BATCH_KEYS}
    return peak


async def test_counting_a_jobs_status_holds_no_more_at_once_for_a_larger_job(ledger) -> None:
    small, large = await sent_job(ledger, 100), await sent_job(ledger, 400)
    await counted_peak(ledger, small, 100)  # the first call also builds the client and its connections
    small_peak = await counted_peak(ledger, small, 100)
    large_peak = await counted_peak(ledger, large, 400)
    assert large_peak < 1.5 * small_peak, f"{small_peak / 2**20:.1f} MiB for 100 rows, {large_peak / 2**20:.1f} for 400"

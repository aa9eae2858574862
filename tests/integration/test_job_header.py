"""Opening a job's header (DeliveryLedger.open_job) on Azurite, every storage call counted by the cost benchmark's
proxy: a job taken from the jobs queue was opened by its POST (or by the invocation before, for a fan-out that goes
on), and reading its header is all its invocation needs; a job another service put on the queue is opened there."""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import replace

import pytest

from bench import transactions as tx
from botcore import storage
from botcore.delivery.ledger import ACTIVE_INDEX, DeliveryLedger, IdConflictError
from botcore.jobs import Target, new_job
from botcore.keys import encode_key


@pytest.fixture
async def counted(azurite, monkeypatch):
    with tx.CountingProxy.serving(azurite) as proxy:
        monkeypatch.setenv("BotStorage", proxy.connection_string)
        table = storage.get_table(f"d{uuid.uuid4().hex[:20]}")
        await table.create()
        yield DeliveryLedger(table), proxy
        await storage.close_storage_clients()


async def filed(ledger: DeliveryLedger, job_id: str) -> list[str]:
    query = f"RowKey eq '{encode_key(job_id)}' and PartitionKey ge '{ACTIVE_INDEX}' and PartitionKey lt '!~'"
    return [row["PartitionKey"] async for row in ledger.table.query(query)]


async def test_a_job_taken_from_the_queue_reads_the_header_its_post_created(counted) -> None:
    ledger, proxy = counted
    job = new_job("notify", Target(tenant_id="t1"), text="hi")
    mark = proxy.mark()
    posted = await ledger.open_job(job, request_digest="request-1")  # the POST: filed, then created
    assert tx.tally(proxy.since(mark)) == Counter({tx.ENTITY_UPSERT: 1, tx.ENTITY_INSERT: 1})

    mark = proxy.mark()
    taken = await ledger.open_job(job, seen=True)  # its invocation
    assert tx.tally(proxy.since(mark)) == Counter({tx.ENTITY_READ: 1})
    assert (taken.etag, taken.request_digest, taken.kind) == (posted.etag, "request-1", "notify")

    with pytest.raises(IdConflictError, match="already used by another job"):
        await ledger.open_job(replace(job, text="other work"), seen=True)


async def test_a_job_no_post_opened_is_filed_and_created_by_its_invocation(counted) -> None:
    ledger, proxy = counted
    job = new_job("notify", Target(tenant_id="t1"), text="from another service")
    mark = proxy.mark()
    header = await ledger.open_job(job, seen=True)
    assert tx.tally(proxy.since(mark)) == Counter({tx.ENTITY_READ: 1, tx.ENTITY_UPSERT: 1, tx.ENTITY_INSERT: 1})
    assert header.etag and len(await filed(ledger, job.id)) == 1
    stored = await ledger.header(job.id)
    assert stored is not None and (stored.etag, stored.digest) == (header.etag, job.digest())

"""A job's latest revision as the batches on one instance read it (botcore.delivery.revisions), on Azurite: one
reader per job, however many of its batches run side by side, as fresh as each batch's own reads were."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections import Counter

import pytest

from botcore import storage
from botcore.delivery.ledger import DeliveryLedger
from botcore.delivery.revisions import REVISION_REFRESH, LatestRevision, RevisionFeeds
from botcore.jobs import Target, new_job
from botcore.storage import CountedTable, StorageError

BATCHES = 10


@pytest.fixture
async def counted(storage_connection_string, monkeypatch):
    """A ledger on a fresh table whose calls are counted by kind; the table itself, to break it."""
    monkeypatch.setenv("BotStorage", storage_connection_string)
    table = storage.get_table(f"v{uuid.uuid4().hex[:20]}")
    await table.create()
    counts: Counter[str] = Counter()
    yield DeliveryLedger(CountedTable(table, counts)), counts, table
    await storage.close_storage_clients()


async def notification(ledger: DeliveryLedger) -> str:
    job = new_job("notify", Target(everyone=True), text="hi")
    await ledger.open_job(job)
    return job.id


async def look_every(view: LatestRevision, until: float, seen: list[tuple[float, int]]) -> None:
    """A batch under way: a look before each request, every 20 ms; (when, revision number) each time it changes."""
    while time.monotonic() < until:
        latest = await view.get()
        number = latest.number if latest is not None else 0
        if not seen or seen[-1][1] != number:
            seen.append((time.monotonic(), number))
        await asyncio.sleep(0.02)


async def test_the_batches_of_a_job_on_one_instance_share_its_revision_reads_and_each_sees_a_revision_as_soon(
    counted,
) -> None:
    ledger, counts, _ = counted
    job_id = await notification(ledger)
    feeds = RevisionFeeds(ledger)
    before = counts["reads"]
    start = time.monotonic()
    seen: list[list[tuple[float, int]]] = [[] for _ in range(BATCHES)]
    looking = asyncio.gather(
        *(look_every(LatestRevision(feeds.of(job_id)), start + 2.0, s) for s in seen)  # ten tenants' batches
    )
    await asyncio.sleep(0.8)
    await ledger.register_revision(new_job("update", Target(everyone=True), notification=job_id, text="edited"))
    registered = time.monotonic()
    await looking
    reads = counts["reads"] - before

    # Per batch, every REVISION_REFRESH from its start: 10 × (1 + 2 / 0.5) = 50 reads. Shared: one a refresh.
    assert reads <= 2.0 / REVISION_REFRESH + 2, f"{reads} revision reads in 2 s for {BATCHES} batches of one job"
    for s in seen:
        assert [n for _, n in s] == [0, 1], s
        assert s[1][0] - registered < REVISION_REFRESH + 0.3, "a batch saw the revision later than its own reads would"


async def test_a_failed_read_stops_each_batch_that_looks_next_and_a_batch_starting_reads_again(counted) -> None:
    ledger, counts, table = counted
    job_id = await notification(ledger)
    feeds = RevisionFeeds(ledger)
    running = [LatestRevision(feeds.of(job_id)) for _ in range(3)]
    for view in running:
        assert await view.get() is None

    await table.client.delete_table()  # storage refuses every read now
    await asyncio.sleep(REVISION_REFRESH)
    running[0].feed.current()  # stale: a refresh starts in the background, and fails
    await asyncio.sleep(0.3)
    for view in running:  # every batch under way stops, not only the one that started the read
        with pytest.raises(StorageError):
            await view.get()

    await table.create()
    reads = counts["reads"]
    assert await LatestRevision(feeds.of(job_id)).get() is None  # a batch starting (a retry) reads afresh
    assert counts["reads"] == reads + 1
    assert running[1].feed.current() is None  # and the batches still running go on


async def test_a_revision_read_elsewhere_is_the_feeds_and_the_feed_never_goes_back(counted) -> None:
    """A revision batch reads the revision it exists for before it sends: the batches of the job on the instance
    see at least that one at once, and a read that started earlier and ends later does not take it back."""
    ledger, counts, _ = counted
    job_id = await notification(ledger)
    feed = RevisionFeeds(ledger).of(job_id)
    assert await LatestRevision(feed).get() is None  # read by a send batch
    for text in ("first", "second"):
        await ledger.register_revision(new_job("update", Target(everyone=True), notification=job_id, text=text))
    second = await ledger.revision(job_id)
    assert second is not None and second.number == 2
    feed.saw(second)  # as run_revision_batch does
    reads = counts["reads"]
    assert (await LatestRevision(feed).get()) == second and counts["reads"] == reads  # fresh: no read
    first = dataclasses.replace(second, number=1)
    feed.saw(first)  # an older read ending late
    assert feed.current() == second

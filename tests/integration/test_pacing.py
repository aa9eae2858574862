"""The pace calendar (botcore.delivery.pacing.PaceCalendar) in a table of Azurite's."""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter

import pytest

from botcore import storage
from botcore.delivery.pacing import DEFAULT_RETRY_AFTER, ROW_KEY, PaceCalendar
from botcore.keys import encode_key

KEY = "tenant:t1"


@pytest.fixture
async def table(storage_connection_string, monkeypatch, unique_name):
    monkeypatch.setenv("BotStorage", storage_connection_string)
    table = storage.get_table(unique_name)
    await table.create()
    yield table
    await storage.close_storage_clients()


@pytest.mark.parametrize("retry_after", [math.inf, math.nan, -3.0])
async def test_a_pause_that_could_not_end_is_never_stored(table, retry_after: float) -> None:
    calendar = PaceCalendar(50.0, table)
    await calendar.throttled(KEY, retry_after)
    paused = (await table.get(encode_key(KEY), ROW_KEY))["pausedUntil"]
    assert math.isfinite(paused) and paused <= time.time() + DEFAULT_RETRY_AFTER
    assert (await calendar.reserve(KEY, 10)).start <= time.time() + DEFAULT_RETRY_AFTER + 1


async def test_a_row_that_holds_infinite_times_does_not_stop_its_key(table) -> None:
    """Rows written before pauses were bounded may hold +Infinity: read as no time at all."""
    await table.upsert(
        {
            "PartitionKey": encode_key(KEY),
            "RowKey": ROW_KEY,
            "key": KEY,
            "rate": 50.0,
            "pausedUntil": math.inf,
            "next": math.inf,
            "throttledAt": time.time(),
        }
    )
    calendar = PaceCalendar(50.0, table)
    assert await calendar.paused_until(KEY) == 0
    slot = await calendar.reserve(KEY, 10)
    assert math.isfinite(slot.start) and slot.start <= time.time() + 1
    await calendar.throttled(KEY, 2.0)
    row = await table.get(encode_key(KEY), ROW_KEY)
    assert time.time() < row["pausedUntil"] <= time.time() + 2 and math.isfinite(row["next"])


async def test_a_pause_stored_past_the_cap_lasts_the_cap_and_slots_after_it_move_up(table) -> None:
    """A row written before Retry-After was capped (or under a larger cap) paused its key for 30 days, and slots
    reserved since sit after that pause: the key waits at most the cap, and those slots follow it."""
    now = time.time()
    month = now + 30 * 86400
    await table.upsert(
        {
            "PartitionKey": encode_key(KEY),
            "RowKey": ROW_KEY,
            "key": KEY,
            "rate": 50.0,
            "pausedUntil": month,
            "next": month + 10,
            "throttledAt": now,
        }
    )
    calendar = PaceCalendar(50.0, table, max_pause=60.0)
    assert await calendar.paused_until(KEY) <= time.time() + 60
    slot = await calendar.reserve(KEY, 10)
    assert now + 69 <= slot.start <= time.time() + 71  # after the capped pause and the 10 s reserved behind it
    await calendar.throttled(KEY, 7 * 86400.0)  # a Retry-After past the cap pauses the cap, no more
    assert (await table.get(encode_key(KEY), ROW_KEY))["pausedUntil"] <= time.time() + 60


async def test_reservations_write_with_the_etag_of_their_own_last_write_and_never_overlap_another_instances(
    table,
) -> None:
    """A fan-out reserves for the same keys page after page: after its first, a reservation is one write, no
    read. When another instance wrote in between, the remembered ETag is stale: that write fails, the row is read
    afresh, and the slots still follow the other instance's."""
    counts: Counter[str] = Counter()
    one, other = PaceCalendar(50.0, storage.CountedTable(table, counts)), PaceCalendar(50.0, table)
    first = await one.reserve(KEY, 10)
    reads = counts["reads"]
    second = await one.reserve(KEY, 10)
    assert counts["reads"] == reads and counts["writes"] == 2
    assert second.start >= first.at(10) - 1e-6
    between = await other.reserve(KEY, 10)
    assert between.start >= second.at(10) - 1e-6
    third = await one.reserve(KEY, 10)
    assert third.start >= between.at(10) - 1e-6
    assert counts["reads"] == reads + 1 and counts["writes"] == 4  # the stale write, then the write after the read
    await table.delete(encode_key(KEY), ROW_KEY)  # swept meanwhile: the remembered row is gone
    assert (await one.reserve(KEY, 10)).start <= time.time() + 1
    assert (await table.get(encode_key(KEY), ROW_KEY))["next"] > time.time()


async def test_a_batch_starting_right_after_its_keys_reservation_reads_no_pause_from_storage(table) -> None:
    """The fan-out that reserved a key's slots sends its first batch itself: the row it just wrote is as fresh as
    the second-old read a pause check may use, so that batch starts without reading it again; after a second, or
    after a 429 recorded elsewhere, the pause is read again."""
    counts: Counter[str] = Counter()
    calendar = PaceCalendar(50.0, storage.CountedTable(table, counts))
    await calendar.reserve(KEY, 100)
    reads = counts["reads"]
    assert await calendar.paused_until(KEY) == 0
    assert counts["reads"] == reads

    await PaceCalendar(50.0, table).throttled(KEY, 30.0)  # another instance met a 429
    await asyncio.sleep(1.0)  # a second later
    assert await calendar.paused_until(KEY) > time.time() + 25
    assert counts["reads"] == reads + 1

    await calendar.throttled(KEY, 5.0)  # this instance's own 429 needs no read to be known here
    assert await calendar.paused_until(KEY) > time.time() + 25  # the longer pause stands
    assert counts["reads"] == reads + 1

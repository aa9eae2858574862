"""Which slot each item of a send batch takes (botcore.delivery.send.BlockSlots): slot arithmetic, with a
calendar that hands out fresh blocks from a given time."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from botcore.delivery.pacing import Slot
from botcore.delivery.send import BlockSlots
from botcore.storage import StorageUnavailableError

INTERVAL = 0.02


class Calendar:
    def __init__(self, next_free: float, down: bool = False) -> None:
        self.next_free, self.down, self.reserved = next_free, down, []

    async def reserve(self, key: str, requests: int, *, lead: float) -> Slot:
        if self.down:
            raise StorageUnavailableError(503, None, "storage is down")
        self.reserved.append(requests)
        start, self.next_free = self.next_free, self.next_free + requests * INTERVAL
        return Slot(start, INTERVAL)


def _slots(calendar: Calendar, start: float, size: int) -> BlockSlots:
    bot = SimpleNamespace(pacing=calendar)
    return BlockSlots(bot, "job", "tenant:t", Slot(start, INTERVAL), size)  # type: ignore[arg-type]


def test_a_batch_on_time_keeps_its_own_slots() -> None:
    calendar = Calendar(next_free=1000.0)
    slots = _slots(calendar, 100.0, 10)
    times = [asyncio.run(slots.at(i, "k", 100.0 + i * INTERVAL, 10 - i)) for i in range(10)]
    assert times == [100.0 + i * INTERVAL for i in range(10)] and calendar.reserved == []


def test_a_late_batch_loses_only_the_slots_it_missed_and_the_rest_go_to_the_calendars_end() -> None:
    calendar = Calendar(next_free=1000.0)
    slots = _slots(calendar, 100.0, 10)
    now = 100.0 + 3.5 * INTERVAL  # picked up after 3.5 of its slots went by
    first = asyncio.run(slots.at(0, "k", now, 10))
    assert first == 100.0 + 4 * INTERVAL  # the next slot of its own block still ahead
    later = [asyncio.run(slots.at(i, "k", 100.0 + (i + 4) * INTERVAL, 10 - i)) for i in range(1, 10)]
    assert later[:5] == [100.0 + (i + 4) * INTERVAL for i in range(1, 6)]  # the rest of its block
    assert calendar.reserved == [4]  # the four the block no longer holds, in one fresh block at the end
    assert later[5:] == [1000.0 + i * INTERVAL for i in range(4)]


def test_without_a_calendar_the_items_past_the_block_are_late() -> None:
    slots = _slots(Calendar(next_free=1000.0, down=True), 100.0, 4)
    now = 100.0 + 2.5 * INTERVAL
    assert asyncio.run(slots.at(0, "k", now, 4)) == 100.0 + 3 * INTERVAL  # its block's last slot, still ahead
    assert asyncio.run(slots.at(1, "k", now, 3)) < now - 1  # nothing left for it: the send loop hands it on

"""Which slot each item of a send batch takes (botcore.delivery.pacing.BlockSlots): slot arithmetic, pure."""

from __future__ import annotations

from botcore.delivery.pacing import UNPACED_INTERVAL, BlockSlots, Slot

INTERVAL = 0.02


def test_a_batch_on_time_keeps_its_own_slots() -> None:
    slots = BlockSlots(Slot(100.0, INTERVAL), 10)
    assert [slots.at(i, 100.0 + i * INTERVAL) for i in range(10)] == [100.0 + i * INTERVAL for i in range(10)]


def test_a_late_batch_loses_only_the_slots_it_missed_and_the_rest_take_one_fresh_block() -> None:
    slots = BlockSlots(Slot(100.0, INTERVAL), 10)
    now = 100.0 + 3.5 * INTERVAL  # picked up after 3.5 of its slots went by
    assert slots.at(0, now) == 100.0 + 4 * INTERVAL  # the next slot of its own block still ahead
    later = [slots.at(i, 100.0 + (i + 4) * INTERVAL) for i in range(1, 6)]
    assert later == [100.0 + (i + 4) * INTERVAL for i in range(1, 6)]  # the rest of its block
    assert slots.at(6, 100.0 + 10 * INTERVAL) is None  # the block holds no more: a fresh one is needed
    slots.take_fresh(Slot(1000.0, INTERVAL), 6)
    assert [slots.at(i, 100.0 + 10 * INTERVAL) for i in range(6, 10)] == [1000.0 + i * INTERVAL for i in range(4)]


def test_without_a_fresh_block_the_items_past_the_block_are_handed_on() -> None:
    slots = BlockSlots(Slot(100.0, INTERVAL), 4)
    now = 100.0 + 2.5 * INTERVAL
    assert slots.at(0, now) == 100.0 + 3 * INTERVAL  # its block's last slot, still ahead
    assert slots.at(1, now) is None
    slots.take_fresh(None, 1)  # the calendar could not be written
    assert slots.at(1, now) == 0.0  # nothing left for it: the send loop hands it on


def test_an_unpaced_batch_goes_as_fast_as_it_can_once_its_first_slot_came() -> None:
    slots = BlockSlots(Slot(100.0, UNPACED_INTERVAL / 2), 1000)
    assert slots.at(0, 99.0) == 100.0
    assert slots.at(999, 101.0) == 101.0  # never late, never waiting


def test_a_late_send_goes_within_its_block_and_takes_a_fresh_slot_past_it_where_it_goes_however_late() -> None:
    slots = BlockSlots(Slot(100.0, INTERVAL), 10)
    last = 100.0 + 9 * INTERVAL
    assert not slots.overrun(100.0, 100.1)  # woke 0.1 s late: still inside its block's time
    assert not slots.overrun(last, last + 0.03)
    assert slots.overrun(last, last + 0.031)  # past the block: the next batch's slots
    slots.take_fresh(Slot(200.0, INTERVAL), 6)  # items 6-9 hold fresh slots 200.00-200.06
    assert not slots.overrun(200.0, 205.0)  # the last resort: late there too, it goes
    assert not BlockSlots(Slot(100.0, UNPACED_INTERVAL / 2), 10).overrun(100.0, 150.0)  # unpaced: never


def test_a_batch_put_back_for_its_slot_comes_back_early_enough_to_wait_for_it_in_the_invocation() -> None:
    from botcore.delivery.pacing import LEAD, RETRY_LEAD
    from botcore.delivery.send import MAX_INLINE_WAIT

    slot = Slot(100.0, INTERVAL)
    assert slot.visibility(90.0) == 10.0 - LEAD  # a fan-out's batch: just before its slot
    visible = 90.0 + slot.visibility(90.0, RETRY_LEAD)
    # Taken as late as LEAD after it became visible, it is still before its slot, and waits for it inline.
    assert LEAD < slot.start - visible == RETRY_LEAD < MAX_INLINE_WAIT

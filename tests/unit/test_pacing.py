"""Pacing decisions, pure (botcore.delivery.pacing): what a reservation or a 429 writes to a key's calendar row,
the per-instance guard, and Teams' per-conversation windows. The calendar's I/O is tested on Azurite
(tests/integration/test_pacing.py)."""

from __future__ import annotations

import bisect
import math

import pytest

from botcore.delivery.pacing import (
    DEFAULT_RETRY_AFTER,
    LATE_GRACE,
    MIN_RATE_SHARE,
    RECOVERY_SECONDS,
    SLOT_SHARE,
    THROTTLED_RATE,
    WINDOW_MARGIN,
    ConversationWindows,
    KeyGuard,
    Slot,
    plan_reservation,
    plan_throttle,
)

RATE, CAP, NOW = 50.0, 3600.0, 1_000_000.0
INTERVAL = 1 / (RATE * SLOT_SHARE)


def test_a_free_calendar_gives_slots_from_the_lead_and_books_them() -> None:
    fields, slot = plan_reservation({}, NOW, RATE, CAP, 100, lead=0.6)
    assert slot == Slot(NOW + 0.6, INTERVAL)
    assert fields == {"rate": RATE, "next": pytest.approx(NOW + 0.6 + 100 * INTERVAL)}


def test_a_busy_calendar_gives_slots_after_those_given_out_and_after_a_pause() -> None:
    _, slot = plan_reservation({"next": NOW + 30}, NOW, RATE, CAP, 10, lead=0.6)
    assert slot.start == NOW + 30
    _, slot = plan_reservation({"next": NOW + 30, "pausedUntil": NOW + 45}, NOW, RATE, CAP, 10, lead=0.6)
    assert slot.start == NOW + 45


def test_a_429_pauses_the_key_for_its_retry_after_and_lowers_its_rate() -> None:
    fields, (paused, rate) = plan_throttle({"next": NOW + 2}, NOW, RATE, CAP, 5.0)
    assert paused == NOW + 5 and rate == RATE * THROTTLED_RATE
    assert fields == {"rate": rate, "pausedUntil": NOW + 5, "throttledAt": NOW, "next": NOW + 5}
    many = {"rate": RATE * MIN_RATE_SHARE, "throttledAt": NOW}
    assert plan_throttle(many, NOW, RATE, CAP, 1.0)[1][1] == RATE * MIN_RATE_SHARE  # never below the floor


@pytest.mark.parametrize("retry_after", [math.inf, math.nan, -3.0])
def test_a_pause_that_could_not_end_is_a_default_one(retry_after: float) -> None:
    _, (paused, _) = plan_throttle({}, NOW, RATE, CAP, retry_after)
    assert paused == NOW + DEFAULT_RETRY_AFTER


def test_no_pause_lasts_longer_than_the_cap_and_slots_behind_one_move_up_with_it() -> None:
    assert plan_throttle({}, NOW, RATE, 60.0, 7 * 86400)[1][0] == NOW + 60
    month = NOW + 30 * 86400
    _, slot = plan_reservation({"pausedUntil": month, "next": month + 10}, NOW, RATE, 60.0, 1, lead=0.6)
    assert slot.start == pytest.approx(NOW + 70)


def test_the_rate_climbs_back_once_no_429_came_for_a_while() -> None:
    slowed = {"rate": RATE / 2, "throttledAt": NOW}
    assert plan_reservation(slowed, NOW + 1, RATE, CAP, 1, lead=0)[0]["rate"] == RATE / 2
    climbed = plan_reservation(slowed, NOW + RECOVERY_SECONDS + 1, RATE, CAP, 1, lead=0)[0]["rate"]
    assert RATE / 2 < climbed <= RATE


def test_infinite_times_in_a_row_written_before_bounds_count_as_none() -> None:
    _, slot = plan_reservation({"next": math.inf, "pausedUntil": math.inf}, NOW, RATE, CAP, 1, lead=0.1)
    assert slot.start == NOW + 0.1


def test_the_guard_spaces_one_keys_requests_and_leaves_others_alone() -> None:
    guard = KeyGuard(RATE)
    starts = [guard.book("a", NOW) for _ in range(4)]
    assert starts == pytest.approx([NOW, *(NOW + i * INTERVAL - LATE_GRACE for i in (1, 2, 3))])
    assert guard.book("b", NOW) == NOW
    assert guard.book("a", NOW + 10) == NOW + 10  # an idle key starts at once


def test_a_request_a_little_late_does_not_push_the_next_ones_back() -> None:
    guard = KeyGuard(RATE)
    slots = [NOW + i * INTERVAL for i in range(6)]
    late = LATE_GRACE * 0.9
    assert guard.book("a", slots[0]) == slots[0]
    assert guard.book("a", slots[1] + late) == slots[1] + late  # the instance was busy
    assert [guard.book("a", at) for at in slots[2:]] == slots[2:]  # the others at their slots, not `late` after


@pytest.mark.parametrize("seed", range(5))
def test_whatever_the_requests_ask_the_guard_keeps_every_span_within_its_bound(seed: int) -> None:
    import random

    rng, guard, asked = random.Random(seed), KeyGuard(RATE), NOW
    starts = []
    for _ in range(2000):  # bursts, lateness and idle gaps, each request asking for `asked` or later
        gaps = [0.0, INTERVAL * rng.random(), INTERVAL * 3 * rng.random(), 0.5 * rng.random()]
        asked += rng.choices(gaps, weights=[20, 20, 5, 1])[0]
        start = guard.book("a", asked)
        assert start >= asked
        starts.append(start)
    span = 1.0
    most = max(bisect.bisect_right(starts, t + span) - i for i, t in enumerate(starts))
    assert most <= (span + LATE_GRACE) / INTERVAL + 1
    assert most >= int(span / INTERVAL)  # the bursts did fill a second: the bound was put to the test


def test_a_conversation_gets_seven_a_second_and_eight_in_two() -> None:
    windows = ConversationWindows()
    assert [windows.take("c", NOW + i * 0.01) for i in range(7)] == [0.0] * 7
    wait = windows.take("c", NOW + 0.07)
    assert wait == pytest.approx(1 + WINDOW_MARGIN - 0.07)  # the eighth waits for the first to leave the second
    assert windows.take("c", NOW + 0.07 + wait) == 0.0
    assert windows.take("other", NOW + 0.07) == 0.0
    wait = windows.take("c", NOW + 1.3)  # eight in two seconds already
    assert wait == pytest.approx(2 + WINDOW_MARGIN - 1.3)


def test_a_conversation_at_its_hourly_limit_waits_for_the_hour() -> None:
    windows = ConversationWindows(((2, 1.0), (3, 3600.0)))
    for second in range(3):
        assert windows.take("c", NOW + second * 10) == 0.0
    assert windows.take("c", NOW + 40) == pytest.approx(3600 - 40)

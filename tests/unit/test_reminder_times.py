"""Reminder due-time arithmetic (botcore.delivery.reminders), pure: where a reminder waits, and how long."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from botcore.delivery.reminders import LOOKAHEAD, MAX_EARLY, minute_key, queue_delay, time_to_wait, within_reach

NOW = datetime(2026, 12, 7, 12, 0, 30, tzinfo=UTC)


def test_a_reminder_within_the_timers_reach_goes_now_and_a_later_one_waits_in_its_minute() -> None:
    assert within_reach(NOW + LOOKAHEAD, NOW) and not within_reach(NOW + LOOKAHEAD + timedelta(seconds=1), NOW)
    assert minute_key(NOW + timedelta(minutes=5)) == "202612071205"
    east = timezone(timedelta(hours=2))
    assert minute_key(datetime(2026, 12, 7, 14, 5, 59, tzinfo=east)) == "202612071205"  # the minute in UTC


def test_a_delay_is_reckoned_from_when_its_job_is_enqueued() -> None:
    due = NOW + timedelta(seconds=10)
    assert queue_delay(due, NOW) == 10
    assert queue_delay(due, NOW, elapsed=3.5) == 6.5  # three and a half seconds went on enqueueing others
    assert queue_delay(due, NOW, elapsed=12) == 0  # already due: at once, never "in the past"


def test_a_job_that_arrives_early_waits_for_its_second_and_no_longer_than_that() -> None:
    assert time_to_wait(NOW + timedelta(seconds=0.4), NOW) == 0.4
    assert time_to_wait(NOW - timedelta(seconds=2), NOW) == 0
    assert time_to_wait(NOW + timedelta(hours=1), NOW) == MAX_EARLY

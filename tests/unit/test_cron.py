"""NCRONTAB schedules (six fields, seconds first, UTC) and TimeSpan intervals."""

from datetime import UTC, datetime, timedelta

import pytest

from devhost.cron import ScheduleError, parse_schedule

T0 = datetime(2026, 11, 24, 14, 59, 58, 500000, tzinfo=UTC)  # a Tuesday


@pytest.mark.parametrize(
    "expr, expected",
    [
        ("* * * * * *", datetime(2026, 11, 24, 14, 59, 59, tzinfo=UTC)),
        ("0 * * * * *", datetime(2026, 11, 24, 15, 0, 0, tzinfo=UTC)),
        ("*/15 * * * * *", datetime(2026, 11, 24, 15, 0, 0, tzinfo=UTC)),
        ("0 30 9 * * *", datetime(2026, 11, 25, 9, 30, 0, tzinfo=UTC)),
        ("0 0 9 * * Mon-Fri", datetime(2026, 11, 25, 9, 0, 0, tzinfo=UTC)),
        ("0 0 9 * * sun", datetime(2026, 11, 29, 9, 0, 0, tzinfo=UTC)),
        ("0 0 0 1 jan *", datetime(2027, 1, 1, tzinfo=UTC)),
        ("0 0 0 29 2 *", datetime(2028, 2, 29, tzinfo=UTC)),
        ("5,10 0 15 * * *", datetime(2026, 11, 24, 15, 0, 5, tzinfo=UTC)),
    ],
)
def test_next_firing_time(expr, expected) -> None:
    assert parse_schedule(expr).next_after(T0) == expected


def test_timespan_is_an_interval() -> None:
    assert parse_schedule("00:05:00").next_after(T0) == T0 + timedelta(minutes=5)
    assert parse_schedule("1.00:00:00").interval == timedelta(days=1)


@pytest.mark.parametrize(
    "expr", ["* * * * *", "61 * * * * *", "a * * * * *", "*/0 * * * * *", "5-1 * * * * *", "00:00:00", "0 0 0 31 2 *"]
)
def test_invalid_schedules_are_refused(expr) -> None:
    with pytest.raises(ScheduleError):
        parse_schedule(expr).next_after(T0)

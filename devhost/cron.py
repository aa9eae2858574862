"""NCRONTAB schedules of timer triggers: six fields, seconds first, evaluated in UTC.

Also accepts the TimeSpan form `hh:mm:ss` (a fixed interval), as the Functions host does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

_MONTHS = {m: i for i, m in enumerate("jan feb mar apr may jun jul aug sep oct nov dec".split(), start=1)}
_DAYS = {d: i for i, d in enumerate("sun mon tue wed thu fri sat".split())}
_FIELDS = (  # name, low, high, names
    ("second", 0, 59, None),
    ("minute", 0, 59, None),
    ("hour", 0, 23, None),
    ("day", 1, 31, None),
    ("month", 1, 12, _MONTHS),
    ("weekday", 0, 6, _DAYS),
)
_TIMESPAN = re.compile(r"^(?:(\d+)\.)?(\d{1,2}):(\d{2}):(\d{2})$")


class ScheduleError(ValueError):
    pass


def _value(text: str, low: int, high: int, names: dict[str, int] | None) -> int:
    lowered = text.lower()
    if names and lowered in names:
        return names[lowered]
    if not text.isdigit():
        raise ScheduleError(f"{text!r} is not a number")
    value = int(text)
    if names is _DAYS and value == 7:
        value = 0
    if not low <= value <= high:
        raise ScheduleError(f"{value} is outside {low}-{high}")
    return value


def _field(text: str, low: int, high: int, names: dict[str, int] | None) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        step = 1
        if "/" in part:
            part, step_text = part.split("/", 1)
            if not step_text.isdigit() or int(step_text) == 0:
                raise ScheduleError(f"bad step {step_text!r}")
            step = int(step_text)
        if part == "*":
            start, end = low, high
        elif "-" in part:
            a, b = part.split("-", 1)
            start, end = _value(a, low, high, names), _value(b, low, high, names)
            if start > end:
                raise ScheduleError(f"range {part!r} runs backwards")
        else:
            start = _value(part, low, high, names)
            end = high if step > 1 else start
        values.update(range(start, end + 1, step))
    return frozenset(values)


@dataclass(frozen=True)
class Schedule:
    fields: tuple[frozenset[int], ...] | None = None
    interval: timedelta | None = None

    def next_after(self, moment: datetime) -> datetime:
        """The first firing time strictly after `moment` (an aware UTC datetime)."""
        if self.interval is not None:
            return moment + self.interval
        assert self.fields is not None
        seconds, minutes, hours, days, months, weekdays = self.fields
        t = moment.replace(microsecond=0) + timedelta(seconds=1)
        limit = moment + timedelta(days=366 * 5)
        while t < limit:
            if t.month not in months:
                t = (t.replace(day=1, hour=0, minute=0, second=0) + timedelta(days=32)).replace(day=1)
                continue
            if t.day not in days or (t.isoweekday() % 7) not in weekdays:
                t = t.replace(hour=0, minute=0, second=0) + timedelta(days=1)
                continue
            if t.hour not in hours:
                t = t.replace(minute=0, second=0) + timedelta(hours=1)
                continue
            if t.minute not in minutes:
                t = t.replace(second=0) + timedelta(minutes=1)
                continue
            if t.second not in seconds:
                t += timedelta(seconds=1)
                continue
            return t
        raise ScheduleError("schedule never fires")


def parse_schedule(text: str) -> Schedule:
    text = text.strip()
    span = _TIMESPAN.match(text)
    if span:
        days, h, m, s = (int(g) if g else 0 for g in span.groups())
        interval = timedelta(days=days, hours=h, minutes=m, seconds=s)
        if interval <= timedelta(0):
            raise ScheduleError("interval must be positive")
        return Schedule(interval=interval)
    parts = text.split()
    if len(parts) != 6:
        raise ScheduleError(f"NCRONTAB needs six fields (seconds first), got {len(parts)}: {text!r}")
    return Schedule(
        fields=tuple(_field(p, lo, hi, names) for p, (_, lo, hi, names) in zip(parts, _FIELDS, strict=True))
    )

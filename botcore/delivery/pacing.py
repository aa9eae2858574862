"""Pacing to the channel's limits, across every instance of the app (docs/delivery.md, "Pacing").

Teams allows a bot about 50 requests per second per tenant (every call: sends, roster reads, creating
conversations) and, per conversation, 7 per second, 8 per 2 s, 60 per 30 s and 1,800 per hour. Azure
Functions runs the sends function on as many instances as it likes, so a limit kept by each instance
alone would be multiplied by their number. Here the limit is kept by time, not by coordination:

- **The pace calendar** (`botpacing`, one row per pace key: a Teams tenant, or a channel without
  tenants) says when the key's next request may start. A fan-out reserves a block of request slots
  for each send batch it makes, one write per key and page, and the batch carries its slot: it is
  made visible on the queue just before the slot, and sends its item *j* at `slot + j × interval`,
  wall-clock time, whichever instance took it. Two batches of one tenant thus never overlap, however
  many instances run. An item whose slot has passed (the batch started late) is not sent late in a
  burst: it gets a new slot at the end of the calendar.
- **Per instance**, a guard keeps every key's requests at least an interval apart, and conversation
  windows keep each conversation within Teams' per-conversation limits; a message that would break one
  waits for its window (briefly) or goes back on the queue.
- **A 429** pauses the key in the calendar for its Retry-After and lowers the key's rate; batches that
  start during a pause take new slots after it; the rate recovers after RECOVERY_SECONDS without one.

A key idle for BotLedgerRetentionDays loses its row (`sweep`, run by botcore.delivery.retention): a row holds
nothing a later reservation needs once its next slot and its pause are that long past.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from ..backoff import backoff
from ..keys import encode_key
from ..protocol.activity import TENANT_CHANNELS
from ..settings import PACING_TABLE
from ..storage import EntityChangedError, EntityExistsError, EntityNotFoundError, TableStore, etag_of

log = logging.getLogger(__name__)
T = TypeVar("T")

ROW_KEY = "c"
SWEEP_KEY = "!sweep"  # the sweep's own row (with ROW_KEY): where the last sweep stopped, the day the last one ended
SWEEP_PAGE = 1000
KNOWN_ROWS = 4096  # calendar rows an instance remembers (PaceCalendar._known)
SLOT_SHARE = 0.95  # the calendar hands out this share of the limit: the rest absorbs timing jitter
LATE_GRACE = 0.03  # seconds an item may start after its slot before it takes a new one (and so, at a hand-over
# between instances, how long two batches of one key can overlap)
LEAD = 0.6  # a batch is made visible this long before its slot (the host's polling interval is 0.5 s)
# A batch put back on the queue for its slot, or handed on, is made visible this long before it: one taken late
# for its slot takes fresh ones at the calendar's end and is put back again, and a host always slower than LEAD
# to take such a batch (a busy instance, storage slow to answer) would do so forever. It waits for its slot in
# the invocation instead (at most MAX_INLINE_WAIT).
RETRY_LEAD = 1.5
UNPACED_INTERVAL = 0.001  # a pace of more than 1,000 requests/s is kept per batch, not per request: no channel
# limits a bot that high, and no instance could keep such a pace to the millisecond (each request would be late)
START_LEAD = 0.1  # a batch sent by the invocation that reserves its slots: the time to claim it first
DEFAULT_RETRY_AFTER = 1.0  # seconds a key pauses after a 429 that named no Retry-After
THROTTLED_RATE = 0.85  # a 429 multiplies the key's rate by this
RECOVERY_SECONDS = 30.0  # after this long without a 429, the rate climbs back
RECOVERY_RATE = 1.1
MIN_RATE_SHARE = 0.1
ATTEMPTS = 16  # concurrent reservations of one key: each loser reads again after a short random pause
UNRECORDED_SECONDS = 1.0  # a paced batch keeps at most this much of its key's pace unrecorded (OutcomeRecorder)
MIN_UNRECORDED = 8
# Teams' per-conversation limits: (requests, seconds) over sliding windows.
CONVERSATION_WINDOWS = ((7, 1.0), (8, 2.0), (60, 30.0), (1800, 3600.0))
WINDOW_MARGIN = 0.15  # seconds added to each conversation window: a request is counted before it arrives


def pace_key(channel_id: str, tenant_id: str | None) -> str:
    """The key whose pace a conversation's requests count against: its tenant, else its channel. A tenant counts
    only on a channel whose tenants the channel service vouches for: a row stored before that rule may carry a
    tenant its user made up, and must not spend that tenant's pace."""
    return f"tenant:{tenant_id}" if tenant_id and channel_id in TENANT_CHANNELS else f"channel:{channel_id}"


@dataclass(frozen=True)
class Slot:
    """A block of request slots: the first at `start` (epoch seconds), one every `interval` seconds."""

    start: float
    interval: float

    def at(self, index: int) -> float:
        return self.start + index * self.interval

    def visibility(self, now: float, lead: float = LEAD) -> float:
        """Seconds to keep a batch hidden on the queue so that it is picked up `lead` before its slot."""
        return max(0.0, self.start - now - lead)


def plan_reservation(
    row: dict[str, Any], now: float, rate: float, max_pause: float, requests: int, lead: float
) -> tuple[dict[str, Any], Slot]:
    """The fields a reservation of `requests` consecutive slots writes to a key's calendar row, and its slots:
    from `lead` after now, and after what the row already gave out and any pause."""
    rate = current_rate(row, now, rate)
    next_free, paused = calendar_times(row, now, max_pause)
    start = max(now + lead, next_free, paused)
    interval = 1.0 / (rate * SLOT_SHARE)
    return {"rate": rate, "next": start + requests * interval}, Slot(start, interval)


def plan_throttle(
    row: dict[str, Any], now: float, rate: float, max_pause: float, retry_after: float
) -> tuple[dict[str, Any], tuple[float, float]]:
    """The fields a 429 writes to a key's calendar row (a pause of Retry-After, at most max_pause; a lower rate),
    and (paused until, the new rate)."""
    if not math.isfinite(retry_after) or retry_after < 0:  # a pause that never ends would stop the key for good
        retry_after = DEFAULT_RETRY_AFTER
    retry_after = min(retry_after, max_pause)
    lowered = max(rate * MIN_RATE_SHARE, current_rate(row, now, rate) * THROTTLED_RATE)
    next_free, paused = calendar_times(row, now, max_pause)
    paused = max(paused, now + retry_after)
    return (
        {"rate": lowered, "pausedUntil": paused, "throttledAt": now, "next": max(next_free, paused)},
        (paused, lowered),
    )


def calendar_times(row: dict[str, Any], now: float, max_pause: float) -> tuple[float, float]:
    """When the key's next request may start, and until when it is paused, with no pause longer than
    max_pause from now: a row written before the cap, or under a larger one, would otherwise hold its key
    that long. Slots reserved after such a pause move up with it."""
    next_free, paused = _time(row, "next"), _time(row, "pausedUntil")
    cut = paused - (now + max_pause)
    if cut <= 0:
        return next_free, paused
    return (next_free - cut if next_free >= paused else next_free), paused - cut


def current_rate(row: dict[str, Any], now: float, rate: float) -> float:
    """The key's rate now: lowered by 429s, climbing back once RECOVERY_SECONDS passed without one, never above
    the configured `rate`."""
    current = min(rate, float(row.get("rate") or rate))
    if current < rate and now - float(row.get("throttledAt") or 0) > RECOVERY_SECONDS:
        current = min(rate, current * RECOVERY_RATE)
    return current


class PaceCalendar(TableStore):
    """When each pace key's next request may start, shared by every instance (ETag-guarded rows): the plans
    above, written with the row's ETag."""

    table_name = PACING_TABLE

    def __init__(self, rate: float, table: Any = None, max_pause: float = 3600.0) -> None:
        super().__init__(table)
        self.rate = rate  # the configured limit, requests per second per key
        self.max_pause = max_pause  # BotMaxRetryAfterSeconds: no pause lasts longer, whatever a row says
        self._paused: dict[str, tuple[float, float]] = {}  # key → (paused until, read or written at), per instance
        # key → (its row as this instance last wrote or read it, that version's ETag): a fan-out reserves for the
        # same keys page after page, and writing with the ETag of its own last write spares it a read each time.
        # Another instance's write in between makes the ETag stale: the write fails, and the row is read afresh.
        self._known: dict[str, tuple[dict[str, Any], str]] = {}

    async def reserve(self, key: str, requests: int, *, lead: float = LEAD) -> Slot:
        """Reserve `requests` consecutive slots for `key`, starting no earlier than `lead` from now: the time
        before the first request can leave (for a batch that goes on the queue, the time to be picked up)."""
        slot, _ = await self._update(
            key, lambda row, now: plan_reservation(row, now, self.rate, self.max_pause, requests, lead)
        )
        return slot

    async def throttled(self, key: str, retry_after: float) -> None:
        """The channel answered 429: pause the key for Retry-After and slow it down."""
        try:
            (paused, rate), now = await self._update(
                key, lambda row, now: plan_throttle(row, now, self.rate, self.max_pause, retry_after)
            )
        except EntityChangedError:  # others are recording the same throttling right now
            log.warning("%s: the channel is throttling; the pause could not be recorded (calendar busy)", key)
            return
        log.warning("%s: the channel is throttling; paused %.1fs, now %.1f requests/s", key, paused - now, rate)

    async def _update(
        self, key: str, change: Callable[[dict[str, Any], float], tuple[dict[str, Any], T]]
    ) -> tuple[T, float]:
        """Write the fields `change(row, now)` gives to the key's row, guarded by its ETag, reading again
        when another instance wrote in between; what `change` said with them, and when."""
        for attempt in range(1, ATTEMPTS + 1):
            now = time.time()
            known = self._known.get(key)
            row, etag = known if known is not None else await self._read(key)
            fields, result = change(row, now)
            entity = {"PartitionKey": encode_key(key), "RowKey": ROW_KEY, "key": key, **fields}
            try:
                if etag is None:
                    written = await self.table.insert(entity)
                else:
                    written = await self.table.merge(entity, etag)
            except (EntityExistsError, EntityChangedError, EntityNotFoundError):  # written, or swept, meanwhile
                self._known.pop(key, None)
                if known is None:  # a race with another writer; a stale remembered row only costs the read
                    await asyncio.sleep(backoff(attempt, base=0.01, cap=0.2))
                continue
            row = {**row, **fields}
            self._remember(key, row, written)
            self._paused[key] = (calendar_times(row, now, self.max_pause)[1], now)  # as fresh as a read now
            return result, now
        raise EntityChangedError(409, "Busy", f"pace calendar {key}: too many concurrent writes")

    async def paused_until(self, key: str) -> float:
        """Until when the key is paused (epoch seconds; 0 if not), read at most once a second per instance."""
        now = time.time()
        cached = self._paused.get(key)
        if cached is not None and now - cached[1] < 1.0:
            return cached[0]
        row, _ = await self._read(key)
        _, paused = calendar_times(row, now, self.max_pause)
        self._paused[key] = (paused, now)
        return paused

    async def sweep(self, before: datetime, now: datetime, more: Callable[[], bool]) -> tuple[int, list[str], bool]:
        """Delete the rows of keys whose next slot and pause are both before `before` (each only if unchanged since
        read: a reservation meanwhile keeps it), a page at a time while `more()`, from where the last sweep
        stopped; a sweep that ended starts again the day after `now` (UTC). Returns how many rows it deleted, what
        was wrong with rows it could not read (kept), and whether the sweep has ended."""
        day = now.astimezone(UTC).strftime("%Y%m%d")
        try:
            state: Mapping[str, Any] = await self.table.get(SWEEP_KEY, ROW_KEY)
        except EntityNotFoundError:
            state = {}
        cursor = state.get("cursor") or None
        if cursor is None and state.get("sweptOn") == day:
            return 0, [], True
        deleted, problems, threshold = 0, [], before.timestamp()
        if not more():
            return 0, [], False
        while True:
            rows, cursor = await self.table.page(
                None, select=["PartitionKey", "RowKey", "next", "pausedUntil"], page_size=SWEEP_PAGE, cursor=cursor
            )
            for row in rows:
                if row["PartitionKey"] == SWEEP_KEY:
                    continue
                try:
                    idle = max(_time(row, "next"), _time(row, "pausedUntil")) < threshold
                except (TypeError, ValueError) as exc:
                    problems.append(f"calendar row {row['PartitionKey']}/{row['RowKey']}: {exc}")
                    continue
                if idle:
                    try:
                        await self.table.delete(row["PartitionKey"], row["RowKey"], etag_of(row))
                        deleted += 1
                    except EntityChangedError:
                        pass  # reserved meanwhile: in use again
            if cursor is None or not more():
                break
        ended = cursor is None
        await self.table.upsert(
            {"PartitionKey": SWEEP_KEY, "RowKey": ROW_KEY, "cursor": cursor or "", "sweptOn": day if ended else ""}
        )
        return deleted, problems, ended

    async def _read(self, key: str) -> tuple[dict[str, Any], str | None]:
        try:
            row = await self.table.get(encode_key(key), ROW_KEY)
        except EntityNotFoundError:
            self._known.pop(key, None)
            return {}, None
        etag = etag_of(row)
        self._remember(key, dict(row), etag)
        return row, etag

    def _remember(self, key: str, row: dict[str, Any], etag: str) -> None:
        if len(self._known) >= KNOWN_ROWS and key not in self._known:
            self._known.clear()  # an instance pacing this many keys at once rereads them once
        self._known[key] = row, etag


def _time(row: dict[str, Any], name: str) -> float:
    """A time in a calendar row (epoch seconds; 0 if none). One that is not finite, which nothing may write, is
    taken as none: a row written so would otherwise stop its key for good."""
    value = float(row.get(name) or 0)
    return value if math.isfinite(value) else 0.0


class KeyGuard:
    """Per instance: a pace key's requests keep the calendar's interval, whatever the calendar said.

    The interval is the calendar's (a batch passes its slots'), so a batch behind its slots catches up at
    the pace the calendar hands out, never at the channel's limit itself. The spacing is kept on average,
    with LATE_GRACE of tolerance (a virtual schedule, GCRA): a request that came a little late, because the
    instance was busy, does not push every later one back by as much, which would make its batch lose
    slot after slot. Over any span of T seconds the key's requests from this instance number at most
    (T + LATE_GRACE) / interval + 1: within the room the calendar leaves under the channel's limit.
    """

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / (rate * SLOT_SHARE)
        self._next: dict[str, float] = {}  # each key's virtual schedule: when its next request is due

    def book(self, key: str, now: float, interval: float | None = None) -> float:
        """Book the key's next start: now, unless that is more than LATE_GRACE ahead of the key's schedule."""
        due = self._next.get(key, 0.0)
        start = max(now, due - LATE_GRACE)
        self._next[key] = max(due, start) + (interval or self.interval)
        return start

    async def wait(self, key: str, interval: float | None = None) -> None:
        now = time.time()
        start = self.book(key, now, interval)
        if start > now:
            await asyncio.sleep(start - now)


def unrecorded_limit(interval: float, cap: int) -> int:
    """How many of a paced batch's sends may be unrecorded at once: a second of its key's pace (at least
    MIN_UNRECORDED, at most `cap`, BotSendConcurrency). Enough to keep the pace while each send waits for
    the Connector and then for its outcome's write, whatever the Connector's latency up to about half a
    second; and what a crash may send twice stays a second's worth of the key's requests."""
    return min(cap, max(MIN_UNRECORDED, math.ceil(UNRECORDED_SECONDS / interval)))


class BlockSlots:
    """The slot each item of a batch takes. The batch's own block first, skipping the slots that went by
    while the batch was picked up or its instance was busy: its items are interchangeable, so a late batch
    loses only the slots it missed, not its place. Items the block can then no longer hold take one block of
    fresh slots at the calendar's end (the caller reserves it: `at` says when); an item late even there is
    handed on. A pace above 1,000 requests/s (UNPACED_INTERVAL) is not kept per request: no instance keeps it to
    the millisecond."""

    def __init__(self, block: Slot, size: int) -> None:
        self.block, self.size = block, size
        self.skip = 0
        self.fresh: tuple[Slot, int] | None = None  # the block of fresh slots and the first index it holds
        self.no_fresh = False  # none could be reserved: what the block cannot hold is handed on

    def at(self, index: int, now: float) -> float | None:
        """The item's start; 0.0 when it must be handed on; None when a block of fresh slots is needed first."""
        if self.block.interval < UNPACED_INTERVAL:  # not before the batch's first slot, then as fast as it goes
            return max(now, self.block.start)
        held = index + self.skip
        if held < self.size and self.block.at(held) < now - LATE_GRACE:
            self.skip += math.ceil((now - self.block.at(held)) / self.block.interval)
            held = index + self.skip
        if held < self.size:
            return self.block.at(held)
        if self.fresh is None:
            return 0.0 if self.no_fresh else None
        fresh, first = self.fresh
        return fresh.at(index - first)

    def overrun(self, at: float, now: float) -> bool:
        """Whether a send for the slot at `at` of the batch's own block, made at `now` (a sleep that ended late),
        would come more than LATE_GRACE past the block's last slot: into the slots of the key's next batch,
        perhaps on another instance; it takes a fresh slot instead. Late within its block, it only takes room
        from its own batch's later items, which then look at their slots afresh. A fresh slot is the last
        resort: late there too, the send still goes (an instance that is always late must still send)."""
        if self.block.interval < UNPACED_INTERVAL:
            return False
        end = self.block.at(self.size - 1)
        return at <= end and now > end + LATE_GRACE

    def take_fresh(self, block: Slot | None, index: int) -> None:
        """The fresh block reserved for the items from `index` on (None: the calendar could not give one)."""
        if block is None:
            self.no_fresh = True
        else:
            self.fresh = block, index


class ConversationWindows:
    """Per instance: each conversation's recent requests, against Teams' per-conversation windows.

    A request is counted when it is let through (`take`), a little before it reaches the channel, so each
    window is kept with WINDOW_MARGIN to spare. Only conversations with a request in the longest short
    window (30 s) are kept, plus an hourly count: a broadcast's conversations, one message each, are
    forgotten half a minute later.
    """

    def __init__(self, windows: tuple[tuple[int, float], ...] = CONVERSATION_WINDOWS) -> None:
        self.windows = windows
        self.short = max(seconds for _, seconds in windows if seconds < 3600)
        self._recent: dict[str, deque[float]] = {}
        self._hour: dict[str, tuple[float, int]] = {}
        self._pruned = 0.0

    def take(self, key: str, now: float) -> float:
        """Count a request to `key` now and return 0, or return the seconds until one keeps every window."""
        wait = self._wait(key, now)
        if wait == 0:
            self._sent(key, now)
        return wait

    def _wait(self, key: str, now: float) -> float:
        recent = self._recent.get(key)
        wait = 0.0
        if recent:
            times = list(recent)
            for count, seconds in self.windows:
                if seconds > self.short:
                    continue
                span = seconds + WINDOW_MARGIN
                if len(times) - bisect.bisect_right(times, now - span) >= count:
                    wait = max(wait, times[len(times) - count] + span - now)
        started, count = self._hour.get(key, (now, 0))
        hourly = next((c for c, s in self.windows if s >= 3600), None)
        if hourly is not None and count >= hourly and now - started < 3600:
            wait = max(wait, started + 3600 - now)
        return wait

    def _sent(self, key: str, now: float) -> None:
        recent = self._recent.setdefault(key, deque())
        recent.append(now)
        while recent and recent[0] < now - self.short - WINDOW_MARGIN:
            recent.popleft()
        started, count = self._hour.get(key, (now, 0))
        self._hour[key] = (started, count + 1) if now - started < 3600 else (now, 1)
        if now - self._pruned > self.short:
            self._prune(now)

    def _prune(self, now: float) -> None:
        self._pruned = now
        for key in [k for k, r in self._recent.items() if not r or r[-1] < now - self.short - WINDOW_MARGIN]:
            del self._recent[key]
            started, count = self._hour.get(key, (now, 0))
            if count < 60 or now - started >= 3600:  # far from the hourly limit: nothing to remember
                self._hour.pop(key, None)

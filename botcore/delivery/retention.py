"""Retention: what delivery keeps of finished work is deleted once it has been finished for BotLedgerRetentionDays
(docs/delivery.md, "Retention").

A pass, run by the hourly timer, works in bounded pages and stops starting new work after PASS_SECONDS (or
PASS_PAGES pages of an index), leaving the rest to the next run:

1. tombstones written BotLedgerRetentionDays ago are deleted, and with them the last of their jobs' ids;
2. the pace calendar's rows of keys idle that long are deleted (a sweep that goes on where the last stopped, once
   a day);
3. the ledger's index is read for the jobs and packs last known active before the retention: a job whose status
   ended (done, deleted, failed; an update or delete: done, superseded, failed) and whose partition changed
   no later has its header replaced by its tombstone, then its other rows deleted; a settled pack is deleted.
   A job still running, or active since, is filed under a later day: it is looked at again once that day is
   past the retention, so that each run reads only what may be due.

A row a pass cannot read is skipped and logged (a job's, filed again to be looked at after another retention
period). The tombstone is written before anything else of the job is deleted, so a pass that stops anywhere
leaves a status that says expired, and the job still in the index for the next pass to finish.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from ..loops import together
from ..storage import CountedTable, EntityChangedError
from .ledger import ACTIVE_INDEX, TOMBSTONE_INDEX, DeliveryLedger, ExpiredJob, Filed, Status
from .pacing import PaceCalendar

if TYPE_CHECKING:
    from .context import DeliveryContext

log = logging.getLogger(__name__)

PASS_SECONDS = 30.0  # a pass starts no new work after this: the timer's invocation ends well within a minute
PASS_PAGES = 100  # pages of each index a pass reads at most
INDEX_PAGE = 100  # index rows per page
AT_ONCE = 16  # partitions a pass works on at once
UNREADABLE = (LookupError, TypeError, ValueError)  # what reading a row written wrong raises (parse_job's too)


@dataclass
class RetentionReport:
    """What one pass did: jobs it expired, rows and partitions it deleted (every table), partitions it found
    still active, rows it skipped, and the storage calls it made, by kind."""

    expired: int = 0  # jobs whose header became a tombstone
    rows: int = 0  # rows deleted: a job's and a pack's, tombstones, calendar rows (the index's own not counted)
    partitions: int = 0  # partitions left with no row: packs, jobs whose tombstone went, calendar keys
    tombstones: int = 0
    calendar: int = 0
    refiled: int = 0  # jobs and packs still active (or active since), filed under a later day
    skipped: int = 0
    calls: Counter[str] = field(default_factory=Counter)
    more: bool = False  # stopped at its bound: the next pass goes on
    seconds: float = 0.0

    def summary(self) -> str:
        calls = ", ".join(f"{kind} {n}" for kind, n in sorted(self.calls.items()))
        return (
            f"{self.expired} jobs expired; {self.rows} rows in {self.partitions} partitions deleted "
            f"({self.tombstones} tombstones, {self.calendar} calendar rows among them); {self.refiled} still "
            f"active, filed again; {self.skipped} skipped; {self.calls.total()} storage calls ({calls or 'none'}) "
            f"in {self.seconds:.1f}s" + ("; the next pass goes on" if self.more else "")
        )


@dataclass(frozen=True)
class Bound:
    """How much one pass does at most."""

    seconds: float = PASS_SECONDS
    pages: int = PASS_PAGES
    page_size: int = INDEX_PAGE


async def run_retention(ctx: DeliveryContext, now: datetime | None = None, bound: Bound = Bound()) -> RetentionReport:
    """One pass over the app's own ledger and calendar, with the retention its settings give."""
    keep = timedelta(days=ctx.settings.ledger_retention_days)
    return await expire(ctx.ledger, ctx.pacing, keep, now=now, bound=bound)


async def expire(
    ledger: DeliveryLedger,
    pacing: PaceCalendar,
    keep: timedelta,
    *,
    now: datetime | None = None,
    bound: Bound = Bound(),
) -> RetentionReport:
    """One pass: delete what `ledger` and `pacing` keep of work finished `keep` before `now`, within `bound`; its
    report, which is also logged."""
    report = RetentionReport()
    run = _Pass(
        DeliveryLedger(CountedTable(ledger.table, report.calls), claim_ttl=ledger.claim_ttl),
        PaceCalendar(pacing.rate, CountedTable(pacing.table, report.calls), max_pause=pacing.max_pause),
        now or datetime.now(UTC),
        keep,
        bound,
        report,
    )
    await run.run()
    log.info("retention: %s", report.summary())
    return report


class _Pass:
    def __init__(
        self,
        ledger: DeliveryLedger,
        pacing: PaceCalendar,
        now: datetime,
        keep: timedelta,
        bound: Bound,
        report: RetentionReport,
    ) -> None:
        self.ledger, self.pacing, self.report, self.bound = ledger, pacing, report, bound
        self.now, self.before = now, now - keep  # what last changed before `before` is past the retention
        self.started = time.monotonic()
        self.gate = asyncio.Semaphore(AT_ONCE)

    def in_time(self) -> bool:
        return time.monotonic() - self.started < self.bound.seconds

    async def run(self) -> None:
        try:
            await self._index(TOMBSTONE_INDEX, self._forget)
            deleted, problems, ended = await self.pacing.sweep(self.before, self.now, self.in_time)
            self.report.more |= not ended
            self.report.rows += deleted
            self.report.partitions += deleted
            self.report.calendar += deleted
            self._skip(problems)
            await self._index(ACTIVE_INDEX, self._partition)
        finally:
            self.report.seconds = time.monotonic() - self.started

    def _skip(self, problems: list[str]) -> None:
        for problem in problems:
            log.warning("retention: skipped %s", problem)
        self.report.skipped += len(problems)

    async def _index(self, index: str, handle: Callable[[Filed], Awaitable[None]]) -> None:
        """Handle everything `index` files under days past the retention, a page at a time, within the bound."""
        cursor, pages = None, 0
        while True:
            if pages >= self.bound.pages or not self.in_time():
                self.report.more = True
                return
            entries, problems, cursor = await self.ledger.filed(index, self.before, cursor, self.bound.page_size)
            pages += 1
            self._skip(problems)

            async def one(entry: Filed) -> None:
                async with self.gate:
                    await handle(entry)

            # A failure is storage's: the next pass finds what this one left, as it left it.
            await together(one(entry) for entry in entries)
            if cursor is None:
                return

    async def _forget(self, entry: Filed) -> None:
        if await self.ledger.forget(entry):
            self.report.tombstones += 1
            self.report.rows += 1
            self.report.partitions += 1

    async def _partition(self, entry: Filed) -> None:
        """A job's or a pack's partition filed under a day past the retention."""
        status = None
        if not entry.pack:
            try:
                status = await self.ledger.status(entry.id)
            except UNREADABLE as exc:
                log.warning(
                    "retention: skipped job %s: its rows cannot be read (%s: %s); looked at again after another "
                    "retention period",
                    entry.id,
                    type(exc).__name__,
                    exc,
                )
                self.report.skipped += 1
                await self.ledger.refile(entry, self.now)
                return
        activity = await self.ledger.activity(entry.id)
        if activity.last is None:  # nothing there (a job whose header was never written, a tombstone gone since)
            await self.ledger.unfile(entry)
            return
        if isinstance(status, ExpiredJob):  # expired by a pass that stopped before it had deleted the rest
            if activity.header_etag is None:  # and its tombstone deleted since, by a pass running alongside
                await self.ledger.unfile(entry)
            else:
                await self._purge(entry, status, activity.header_etag)
            return
        # A pack has ended once settled. Rows of a job with no header (which only an expiry leaves) have too.
        ended = status.ended if status is not None else not entry.pack or activity.pack_status in (None, Status.DONE)
        if not ended:
            await self._refile(entry, self.now)
        elif activity.last >= self.before:
            await self._refile(entry, activity.last)
        elif status is None:  # a settled pack (or a job's rows with no header): nothing to keep
            await self._purge(entry, None, "")
        else:
            assert activity.header_etag is not None  # a job's header is only ever replaced by its tombstone
            try:
                expired, etag = await self.ledger.expire(status, activity.header_etag, self.now)
            except EntityChangedError:  # its header changed since it was read: the next pass sees why
                return
            self.report.expired += 1
            await self._purge(entry, expired, etag)

    async def _refile(self, entry: Filed, day: datetime) -> None:
        await self.ledger.refile(entry, day)
        self.report.refiled += 1

    async def _purge(self, entry: Filed, expired: ExpiredJob | None, etag: str) -> None:
        """Delete the partition's rows but a tombstone; then file the tombstone, or (with none) forget the
        partition. Out of time before the end, the entry stays for the next pass."""
        deleted, done = await self.ledger.purge(entry.id, self.in_time)
        self.report.rows += deleted
        if not done:
            self.report.more = True
        elif expired is not None:
            await self.ledger.file_tombstone(entry, expired, etag)
        else:
            await self.ledger.unfile(entry)
            self.report.partitions += 1

"""A job's latest revision as the batches running on one instance see it.

Every send carries the job's latest revision, so a running batch re-reads it while it sends. Read per batch,
that was a read every REVISION_REFRESH for each batch under way: ten tenants' batches of one broadcast side by
side on an instance read the same row twenty times a second, a third of a broadcast's storage transactions.
Here the instance keeps one reader per job (`RevisionFeeds`), which every batch of that job shares: a batch
starting waits for a read unless the last one is fresh, and a batch under way never waits, its reads refreshed in
the background. Freshness is as before: a revision registered reaches every batch within REVISION_REFRESH plus
one read, and a batch that sent an older one has its row revised once it is settled (botcore.delivery.revise).
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import TYPE_CHECKING

from ..storage import STORAGE_TIMEOUT, StorageStalledError

if TYPE_CHECKING:
    from .ledger import DeliveryLedger, Revision

REVISION_REFRESH = 0.5  # seconds a revision read is trusted
FEEDS = 64  # jobs an instance keeps a reader for: a feed dropped while batches use it still serves them


class RevisionFeed:
    """One job's latest revision on this instance. A read that fails (or stalls) is kept as the feed's state:
    every batch of the job that looks next stops on it, as each did on its own read's failure, until a batch
    starting reads again."""

    def __init__(self, ledger: DeliveryLedger, job_id: str) -> None:
        self.ledger, self.job_id = ledger, job_id
        self.latest: Revision | None = None
        self._read_at = -math.inf
        self._reading: asyncio.Task[None] | None = None
        self._failure: Exception | None = None

    async def start(self) -> Revision | None:
        """A batch's first look: the last read when it is fresh and did not fail, else a read it waits for."""
        if self._failure is not None or time.monotonic() - self._read_at >= REVISION_REFRESH:
            await asyncio.shield(self._reading or self._refresh())
            if self._failure is not None:
                raise self._failure
        return self.latest

    def current(self) -> Revision | None:
        """A batch under way: the last read (never waiting), refreshed in the background once it is stale."""
        if self._failure is not None:
            raise self._failure
        if self._reading is None and time.monotonic() - self._read_at >= REVISION_REFRESH:
            self._refresh()
        return self.latest

    def _refresh(self) -> asyncio.Task[None]:
        self._reading = asyncio.create_task(self._read())
        return self._reading

    async def _read(self) -> None:
        try:
            latest = await asyncio.wait_for(self.ledger.revision(self.job_id), STORAGE_TIMEOUT)
        except TimeoutError:
            self._failure = StorageStalledError(f"the job's revision not read within {STORAGE_TIMEOUT:g}s")
        except Exception as exc:  # kept for the batches to raise: a read in the background has no caller
            self._failure = exc
        else:
            self.saw(latest)
            self._failure = None
        finally:
            self._reading = None

    def saw(self, revision: Revision | None) -> None:
        """A revision just read (by this feed, or by a caller that reads the row itself): the feed is fresh, and
        never goes back to an older revision (a read that started before a newer one was seen ends after it)."""
        if revision is not None and (self.latest is None or revision.number >= self.latest.number):
            self.latest = revision
        self._read_at = time.monotonic()


class RevisionFeeds:
    """Per instance: the feed of each job whose batches run here."""

    def __init__(self, ledger: DeliveryLedger) -> None:
        self.ledger = ledger
        self._feeds: dict[str, RevisionFeed] = {}

    def of(self, job_id: str) -> RevisionFeed:
        feed = self._feeds.get(job_id)
        if feed is None:
            if len(self._feeds) >= FEEDS:
                self._feeds.pop(next(iter(self._feeds)))
            feed = self._feeds[job_id] = RevisionFeed(self.ledger, job_id)
        return feed


class LatestRevision:
    """One batch's view of its job's feed: its first look waits for a fresh revision, the later ones never wait."""

    def __init__(self, feed: RevisionFeed) -> None:
        self.feed = feed
        self._started = False

    async def get(self) -> Revision | None:
        if not self._started:
            latest = await self.feed.start()
            self._started = True
            return latest
        return self.feed.current()

    @property
    def known(self) -> Revision | None:
        """The revision as last read (by `get`, which a run calls before each request): no I/O while sending."""
        return self.feed.latest

"""Retention (botcore.delivery.retention) on Azurite: what delivery keeps of ended jobs, settled packs and idle pace
keys goes once it is past BotLedgerRetentionDays, running work stays however old, an expired job's status says so,
and a pass keeps within its bound and skips what it cannot read. Each test has tables of its own; time is moved
by handing the pass a later `now` (the rows' own times are Azurite's)."""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
import time_machine

from botcore import storage
from botcore.delivery import retention
from botcore.delivery.ledger import (
    ACTIVE_INDEX,
    HEADER,
    PACK_BATCH,
    PACK_MARK_PREFIX,
    REVISION,
    TOMBSTONE_INDEX,
    Delivered,
    DeliveryLedger,
    ExpiredJob,
    IdConflictError,
    NotificationNotFoundError,
    Outcome,
    PackItem,
    Status,
)
from botcore.delivery.pacing import ROW_KEY, PaceCalendar
from botcore.jobs import Target, new_job
from botcore.keys import conversation_key, encode_key

KEEP = timedelta(days=30)
KEY, OTHER = conversation_key("msteams", "a:1"), conversation_key("msteams", "a:2")


@pytest.fixture
async def stores(storage_connection_string, monkeypatch):
    monkeypatch.setenv("BotStorage", storage_connection_string)
    deliveries = storage.get_table(f"d{uuid.uuid4().hex[:20]}")
    calendar = storage.get_table(f"p{uuid.uuid4().hex[:20]}")
    await deliveries.create()
    await calendar.create()
    yield DeliveryLedger(deliveries), PaceCalendar(50.0, calendar)
    await storage.close_storage_clients()


def later(days: float = 31) -> datetime:
    return datetime.now(UTC) + timedelta(days=days)


async def rows_of(ledger: DeliveryLedger, name: str) -> dict[str, str]:
    """A partition's rows: RowKey → ETag."""
    return {
        row["RowKey"]: storage.etag_of(row) async for row in ledger.table.query(f"PartitionKey eq '{encode_key(name)}'")
    }


async def filed_under(ledger: DeliveryLedger, name: str) -> list[str]:
    """The index and the day that file `name` (each day's index is spread over partitions: its shards)."""
    query = f"RowKey eq '{encode_key(name)}' and PartitionKey ge '!' and PartitionKey lt '!~'"
    return sorted([row["PartitionKey"].rsplit("-", 1)[0] async for row in ledger.table.query(query)])


# ---- work in each state, written as delivery writes it --------------------------------------------------


async def done_notify(ledger: DeliveryLedger) -> str:
    job = new_job("notify", Target(conversation=KEY), text="hi")
    header = await ledger.open_job(job)
    claims = await ledger.claim(job.id, [KEY])
    await ledger.record(job.id, [Outcome(KEY, Status.SENT, activity_id="act-1")], claims.claimed)
    header.fanned_out, header.targets = True, 1
    await ledger.save_progress(header)
    return job.id


async def updated_team_broadcast(ledger: DeliveryLedger) -> tuple[str, str]:
    """A team's broadcast (a batch row, its roster's first sightings), updated since, its messages revised."""
    job = new_job("notify", Target(team="19:team@thread.tacv2"), text="all")
    header = await ledger.open_job(job)
    await ledger.first_sightings(job.id, "0", ["m1", "m2"])
    claim = await ledger.claim_batch(job.id, "0.0")
    assert claim is not None
    claim.outcomes = {KEY: Delivered(Status.SENT, "act-1"), OTHER: Delivered(Status.GONE, error="gone")}
    await ledger.record_batch(job.id, claim, done=True)
    header.fanned_out, header.targets = True, 2
    await ledger.save_progress(header)
    update = new_job("update", Target(everyone=True), notification=job.id, text="all, edited")
    await ledger.register_revision(update)
    revising = await ledger.claim_revision(job.id, "!b0.0")
    assert revising is not None
    revising.outcomes = {KEY: Delivered(Status.UPDATED, "act-1", revision=1)}
    await ledger.record_revision(job.id, revising, release=True)
    return job.id, update.id


async def fanning_out(ledger: DeliveryLedger) -> str:
    job = new_job("broadcast", Target(tenant_id="t1"), text="slow")
    await ledger.open_job(job)
    return job.id


async def sending(ledger: DeliveryLedger) -> str:
    job = new_job("notify", Target(tenant_id="t1"), text="half way")
    header = await ledger.open_job(job)
    claim = await ledger.claim_batch(job.id, "0.0")
    assert claim is not None
    claim.outcomes = {KEY: Delivered(Status.SENT, "act-1")}
    await ledger.record_batch(job.id, claim)  # still claimed: the other conversation is being sent
    header.fanned_out, header.targets = True, 2
    await ledger.save_progress(header)
    return job.id


async def scheduled(ledger: DeliveryLedger) -> str:
    """A reminder not yet fired: due in an hour (filed under the day it falls due)."""
    due = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    job = new_job("notify", Target(conversation=KEY), text="later", due=due)
    await ledger.open_job(job, kind="reminder")
    return job.id


async def pack(ledger: DeliveryLedger, *, settled: bool) -> str:
    """A pack of one reminder, with a revision's mark; settled: sent and its outcome written to the reminder."""
    pack_id = f"rp{uuid.uuid4().hex}"
    await ledger.write_pack(pack_id, [PackItem("reminder-1", KEY, "{}", {"text": "x"}, time.time())])
    await ledger.table.upsert(
        {"PartitionKey": pack_id, "RowKey": PACK_MARK_PREFIX + "reminder-1", "revision": '[1,"update","u",{}]'}
    )
    if settled:
        claim = await ledger.claim_batch(pack_id, PACK_BATCH)
        assert claim is not None
        claim.outcomes = {"reminder-1": Delivered(Status.SENT, "act-9")}
        await ledger.record_batch(pack_id, claim, done=True)
    return pack_id


# ---- the tests -------------------------------------------------------------------------------------------


async def test_ended_jobs_and_settled_packs_past_the_retention_go_and_running_work_stays(stores) -> None:
    ledger, calendar = stores
    notified = await done_notify(ledger)
    broadcast, update = await updated_team_broadcast(ledger)
    settled = await pack(ledger, settled=True)
    running = [
        await fanning_out(ledger),
        await sending(ledger),
        await scheduled(ledger),
        await pack(ledger, settled=False),
    ]
    as_they_were = {name: await rows_of(ledger, name) for name in running}
    assert set(await rows_of(ledger, broadcast)) == {HEADER, REVISION, "!b0.0", "!v!b0.0", "!sm1", "!sm2"}

    now = later(32)  # past the day the reminder falls due, whatever the time of day (it is filed under that day)
    report = await retention.expire(ledger, calendar, KEEP, now=now)

    for job_id, kind in ((notified, "notify"), (broadcast, "notify"), (update, "update")):
        assert list(await rows_of(ledger, job_id)) == [HEADER], job_id  # the tombstone, nothing else
        status = await ledger.status(job_id)
        assert isinstance(status, ExpiredJob) and (status.id, status.kind) == (job_id, kind)
        assert status.expired_at == now.isoformat(timespec="seconds")
        assert await filed_under(ledger, job_id) == [f"{TOMBSTONE_INDEX}{now:%Y%m%d}"]
    assert await rows_of(ledger, settled) == {} and await filed_under(ledger, settled) == []
    for name, rows in as_they_were.items():  # untouched: the same rows, unchanged
        assert await rows_of(ledger, name) == rows, name
        assert await filed_under(ledger, name) == [f"{ACTIVE_INDEX}{now:%Y%m%d}"], name
    assert (report.expired, report.refiled, report.skipped, report.more) == (3, 4, 0, False)
    assert (report.rows, report.partitions) == (1 + 5 + 2, 1)  # the notify's row, the broadcast's, the pack's
    assert report.calls["batches"] == 3  # a transaction of deletes per partition
    assert report.calls.total() == sum(report.calls[k] for k in ("reads", "writes", "deletes", "batches", "queries"))

    # A retention period on, the tombstones go too; the running work is looked at again, and stays.
    report = await retention.expire(ledger, calendar, KEEP, now=later(64))
    assert (report.tombstones, report.expired, report.refiled) == (3, 0, 4)
    for job_id in (notified, broadcast, update):
        assert await rows_of(ledger, job_id) == {} and await ledger.status(job_id) is None
        assert await filed_under(ledger, job_id) == []
    for name, rows in as_they_were.items():
        assert await rows_of(ledger, name) == rows, name


async def test_an_expired_job_says_so_and_keeps_its_id_until_its_tombstone_goes(stores) -> None:
    ledger, calendar = stores
    notified = await done_notify(ledger)
    await retention.expire(ledger, calendar, KEEP, now=later())
    status = await ledger.status(notified)
    assert isinstance(status, ExpiredJob) and "expired on" in status.describe()
    assert await ledger.header(notified) is None
    again = new_job("notify", Target(conversation=KEY), text="hi")
    with pytest.raises(IdConflictError, match=f"id {notified} is taken: job {notified} .* expired on"):
        await ledger.open_job(replace(again, id=notified))
    with pytest.raises(NotificationNotFoundError, match="expired on"):
        await ledger.register_revision(new_job("delete", Target(everyone=True), notification=notified))
    await retention.expire(ledger, calendar, KEEP, now=later(62))
    assert (await ledger.open_job(replace(again, id=notified))).job.text == "hi"  # the id is free again


async def test_a_job_stopped_half_way_through_its_expiry_says_expired_and_the_next_pass_finishes_it(stores) -> None:
    """A pass that stopped after writing the tombstone (the first thing it writes) left the rest: the status says
    expired, and the next pass deletes the rest and files the tombstone."""
    ledger, calendar = stores
    broadcast, _ = await updated_team_broadcast(ledger)
    status = await ledger.status(broadcast)
    assert status is not None and not isinstance(status, ExpiredJob)
    header = await ledger.table.get(encode_key(broadcast), HEADER)
    now = later()
    await ledger.expire(status, storage.etag_of(header), now)
    assert isinstance(await ledger.status(broadcast), ExpiredJob)
    assert len(await rows_of(ledger, broadcast)) == 6

    report = await retention.expire(ledger, calendar, KEEP, now=now)
    assert list(await rows_of(ledger, broadcast)) == [HEADER] and isinstance(await ledger.status(broadcast), ExpiredJob)
    assert report.rows == 5
    assert await filed_under(ledger, broadcast) == [f"{TOMBSTONE_INDEX}{now:%Y%m%d}"]


async def test_an_ended_job_active_since_its_day_is_filed_under_a_later_one(stores) -> None:
    """Opened 40 days ago (filed then), updated today: not past the retention, so kept, and looked at again once
    today is."""
    ledger, calendar = stores
    now = datetime.now(UTC)
    with time_machine.travel(now - timedelta(days=40), tick=False):
        job = new_job("notify", Target(conversation=KEY), text="old")
        header = await ledger.open_job(job)
    assert await filed_under(ledger, job.id) == [f"{ACTIVE_INDEX}{now - timedelta(days=40):%Y%m%d}"]
    claims = await ledger.claim(job.id, [KEY])
    await ledger.record(job.id, [Outcome(KEY, Status.SENT, activity_id="act-1")], claims.claimed)
    header.fanned_out, header.targets = True, 1
    await ledger.save_progress(header)
    rows = await rows_of(ledger, job.id)

    report = await retention.expire(ledger, calendar, KEEP, now=now)
    assert (report.expired, report.refiled) == (0, 1)
    assert await rows_of(ledger, job.id) == rows
    assert await filed_under(ledger, job.id) == [f"{ACTIVE_INDEX}{now:%Y%m%d}"]


async def test_a_pass_keeps_to_its_page_bound_and_the_next_goes_on(stores) -> None:
    ledger, calendar = stores
    jobs = [await done_notify(ledger) for _ in range(5)]
    bound = retention.Bound(pages=1, page_size=2)
    now = later()
    reports = [await retention.expire(ledger, calendar, KEEP, now=now, bound=bound)]
    while reports[-1].more:
        assert len(reports) < 5, reports
        reports.append(await retention.expire(ledger, calendar, KEEP, now=now, bound=bound))
    assert [r.expired for r in reports] == [2, 2, 1]
    assert all([isinstance(await ledger.status(job_id), ExpiredJob) for job_id in jobs])


async def test_a_job_whose_rows_cannot_be_read_is_skipped_and_logged_and_the_rest_go_on(stores, caplog) -> None:
    ledger, calendar = stores
    broken, fine = await done_notify(ledger), await done_notify(ledger)
    await ledger.table.merge({"PartitionKey": encode_key(broken), "RowKey": HEADER, "jobParts": 1, "job0": "{not"})
    rows = await rows_of(ledger, broken)
    caplog.set_level(logging.INFO, logger="botcore.delivery.retention")

    now = later()
    report = await retention.expire(ledger, calendar, KEEP, now=now)
    assert (report.expired, report.skipped) == (1, 1)
    assert isinstance(await ledger.status(fine), ExpiredJob)
    assert await rows_of(ledger, broken) == rows
    assert await filed_under(ledger, broken) == [f"{ACTIVE_INDEX}{now:%Y%m%d}"]
    skipped = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(skipped) == 1 and f"skipped job {broken}: its rows cannot be read" in skipped[0].getMessage()
    assert "1 jobs expired" in caplog.records[-1].getMessage() and "1 skipped" in caplog.records[-1].getMessage()


async def test_pace_keys_idle_past_the_retention_lose_their_rows_once_a_day(stores, caplog) -> None:
    ledger, calendar = stores
    await calendar.reserve("tenant:idle", 10)
    await calendar.throttled("tenant:paused", 2.0)
    ahead = later(40).timestamp()  # slots reserved far ahead (a long broadcast): in use
    await calendar.table.upsert({"PartitionKey": "tenant~3Aahead", "RowKey": ROW_KEY, "next": ahead})
    await calendar.table.upsert({"PartitionKey": "tenant~3Abad", "RowKey": ROW_KEY, "next": "soon"})
    caplog.set_level(logging.WARNING, logger="botcore.delivery.retention")

    now = later()
    report = await retention.expire(ledger, calendar, KEEP, now=now)
    left = {row["PartitionKey"] async for row in calendar.table.query(f"RowKey eq '{ROW_KEY}'")}
    assert left == {"tenant~3Aahead", "tenant~3Abad", "!sweep"}
    assert (report.calendar, report.skipped) == (2, 1)
    assert "calendar row tenant~3Abad/c" in caplog.text

    await calendar.reserve("tenant:idle", 10)  # in use again: the sweep of the same day has ended
    assert (await retention.expire(ledger, calendar, KEEP, now=now)).calendar == 0
    assert (await retention.expire(ledger, calendar, KEEP, now=now + timedelta(days=1))).calendar == 1

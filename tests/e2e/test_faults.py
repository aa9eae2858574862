"""Faults: a misbehaving Connector, storage that goes away, two hosts at once, a host killed
mid-broadcast. Each broadcast must end with every message delivered, none twice (beyond the
sends in flight at a crash), and nothing sent to a retired reference."""

from __future__ import annotations

import os
import signal
import uuid
from collections import Counter

import pytest

from botcore.delivery.batches import BATCH_KEYS
from botcore.storage import STORAGE_TIMEOUT
from tests.botstack import APP_ID, BotStack, new_tenant, stack_of_its_own, wait_until
from tests.hostproc import REPO, HostProcess

pytestmark = pytest.mark.slow


def crash_duplicate_bound(stack: BotStack) -> int:
    """What a crash may send twice: per batch being sent, at most BotSendConcurrency sends not yet on record
    (delivery.send.OutcomeRecorder); a tenant's batches follow each other, two of them sending at once only
    while one hands over to the next."""
    return 2 * int(stack.env["BotSendConcurrency"])


def broadcast(bot: BotStack, group: str, text: str) -> str:
    response = bot.api("POST", "notify", {"text": text, "target": {"tenantId": group}})
    assert response.status_code == 202, response.text
    return response.json()["id"]


def deliveries(bot: BotStack, cids: list[str], text: str) -> Counter:
    wanted = set(cids)
    return Counter(
        r.conversation_id
        for r in bot.channel.activities()
        if r.conversation_id in wanted and r.body.get("text") == text
    )


def wait_all_delivered(bot: BotStack, cids: list[str], text: str, timeout: float) -> Counter:
    assert bot.channel.wait_for(lambda c: len(deliveries(bot, cids, text)) == len(cids), timeout=timeout), (
        f"{len(deliveries(bot, cids, text))} of {len(cids)} delivered\n{bot.host.log()[-3000:]}"
    )
    return deliveries(bot, cids, text)


def test_a_broadcast_through_every_kind_of_connector_fault(bot: BotStack, tenant) -> None:
    cids = bot.seed(200, tenant_id=tenant)
    [retired] = bot.seed(1, tenant_id=tenant)
    bot.post(bot.activity(retired, type="conversationUpdate", membersRemoved=[{"id": f"28:{APP_ID}"}]))
    assert bot.conversation_entity(retired)["active"] is False

    bot.channel.clear()
    # Each fault in a conversation of its own, among the first sent (conversations go out in key order), however
    # slowly a busy machine sends and retries; five conversations meet two faults in a row.
    first = iter(sorted(cids, key=bot.key))
    throttled, unavailable, hung, refused = ([next(first) for _ in range(n)] for n in (10, 10, 3, 3))
    for cid in throttled:
        bot.channel.fail(429, "TooManyRequests", conversation_id=cid, retry_after=1)
    for cid in unavailable:
        bot.channel.fail(503, "ServiceUnavailable", conversation_id=cid)
    for cid in hung:
        bot.channel.fail(503, conversation_id=cid, hang=3)  # past BotHttpTimeoutSeconds (2)
    for cid in unavailable[:5]:
        bot.channel.fail(200, conversation_id=cid, reset=True)  # the retry after the 503
    for cid in refused:
        bot.channel.fail(500, "InternalServerError", conversation_id=cid)
    try:
        job_id = broadcast(bot, tenant, "through faults")
        assert bot.channel.wait_for(lambda c: not c._faults, timeout=30), "not every fault was hit"
        status = wait_until(lambda: bot.api("GET", f"notify/{job_id}").json()["state"] == "done", timeout=45)
    finally:
        bot.channel.clear_faults()
    assert status, bot.api("GET", f"notify/{job_id}").json()
    counts = bot.api("GET", f"notify/{job_id}").json()
    # A 500 is not retried (protocol: only 412/429/502/503/504 and network errors are): those
    # conversations are reported failed, with the error kept in the ledger.
    assert counts["failed"] == 3 and counts["sent"] == 197 and counts["targets"] == 200
    delivered = deliveries(bot, cids, "through faults")
    assert len(delivered) == 197 and set(delivered.values()) == {1}  # none twice
    assert not set(refused) & set(delivered)
    assert not [
        r
        for r in bot.channel.requests + bot.channel.faulted
        if r.conversation_id == retired and (r.body or {}).get("text") == "through faults"
    ]
    for r in bot.channel.faulted:  # every fault was followed by at most one delivery, after it
        later = [d for d in bot.channel.activities(r.conversation_id) if d.body.get("text") == "through faults"]
        assert len(later) <= 1 and all(d.at > r.at for d in later)
        if r.status == 429:  # retried only after its Retry-After
            assert all(d.at - r.at >= 0.95 for d in later)
    assert {r.conversation_id for r in bot.channel.faulted} == {*throttled, *unavailable, *hung, *refused}
    assert len(bot.channel.faulted) == 31


# ---- storage and host failures, on a storage account of their own -------------------------


@pytest.fixture(scope="module")
def own(tmp_path_factory):
    """Azurite that may be restarted, with the bot in front of it."""
    with stack_of_its_own(tmp_path_factory.mktemp("faults"), extra_env={"BotTenantRatePerSecond": "150"}) as bot:
        yield bot


def test_azurite_restarted_mid_broadcast(own: BotStack, tenant) -> None:
    cids = own.seed(400, tenant_id=tenant)
    broadcast(own, tenant, "storage restart")
    assert own.channel.wait_for(lambda c: len(deliveries(own, cids, "storage restart")) >= 60, timeout=20)
    own.azurite.restart()
    delivered = wait_all_delivered(own, cids, "storage restart", timeout=90)
    twice = sum(n - 1 for n in delivered.values())
    print(f"azurite restart mid-broadcast: {twice} of {len(cids)} sent twice")
    assert twice <= crash_duplicate_bound(own)


def test_azurite_restarted_mid_survey(own: BotStack) -> None:
    cid = f"19:{uuid.uuid4().hex}@thread.v2"
    for text in ("profile", "Ann"):
        own.say(cid, text).raise_for_status()
    from botcore.jobs import Target, new_job

    own.enqueue(new_job("beginDialog", Target(conversation=own.key(cid)), dialog="survey").to_json())
    assert wait_until(lambda: [f["dialog"] for f in own.state(cid)["stack"]] == ["profile", "survey"], timeout=40)
    own.azurite.restart()
    assert own.say(cid, "still here").status_code in (200, 503)  # 503 while storage is away
    assert wait_until(lambda: own.say(cid, "after").status_code == 200, timeout=30)
    own.say(cid, "done").raise_for_status()
    own.say(cid, "teal").raise_for_status()
    texts = own.wait_texts(cid, 7, timeout=20)
    assert texts[-1] == "Thanks! Your profile: name Ann, favourite colour teal."
    assert own.state(cid)["stack"] == []


def test_two_hosts_share_the_queues(own: BotStack, tmp_path) -> None:
    second = HostProcess(REPO, own.env, tmp_path / "second-host.log")
    try:
        # More send batches than one host takes in a poll (batchSize 16), each taking a while at its tenant's
        # pace, so that the second host finds work however fast the first one starts (four tenants: their paces
        # run side by side).
        tenants = [new_tenant() for _ in range(4)]
        cids = [cid for group in tenants for cid in own.seed(5 * BATCH_KEYS, tenant_id=group)]
        own.channel.latency = 0.03
        for group in tenants:
            broadcast(own, group, "two hosts")
        delivered = wait_all_delivered(own, cids, "two hosts", timeout=60)
        assert set(delivered.values()) == {1}
        assert "send batch" in second.log() and "send batch" in own.host.log()  # both did work
    finally:
        own.channel.latency = 0.0
        second.stop()


def test_host_killed_mid_broadcast_and_restarted(own: BotStack, tenant, tmp_path) -> None:
    cids = own.seed(600, tenant_id=tenant)
    broadcast(own, tenant, "killed")
    assert own.channel.wait_for(lambda c: len(deliveries(own, cids, "killed")) >= 100, timeout=20)
    os.kill(own.host.process.pid, signal.SIGKILL)
    own.host.stop()  # reaps the killed process
    at_kill = len(deliveries(own, cids, "killed"))
    own.host = HostProcess(REPO, own.env, tmp_path / "restarted-host.log")
    delivered = wait_all_delivered(own, cids, "killed", timeout=90)
    twice = sum(n - 1 for n in delivered.values())
    print(f"host killed after {at_kill} of {len(cids)}: {twice} sent twice")
    assert twice <= crash_duplicate_bound(own)


def test_storage_hanging_then_a_host_killed_resends_at_most_the_unrecorded(own: BotStack, tenant, tmp_path) -> None:
    """Storage that hangs (not fails): each batch starts no more sends once BotSendConcurrency of them wait to
    be recorded, and stops when storage has not answered for STORAGE_TIMEOUT; the host killed then, the next
    resends only those. At this test's unpaced rate, several batches of the tenant send at once: the bound
    counts the batches whose claims the next host took over, each of which the killed host was sending."""
    stopped = "the batch stops (StorageStalledError"
    cids = own.seed(600, tenant_id=tenant)
    broadcast(own, tenant, "hung")
    assert own.channel.wait_for(lambda c: len(deliveries(own, cids, "hung")) >= 100, timeout=20)
    own.azurite.freeze()
    try:
        frozen_at = len(deliveries(own, cids, "hung"))
        assert wait_until(lambda: stopped in own.host.log(), timeout=STORAGE_TIMEOUT + 10)
        sent_while_hung = len(deliveries(own, cids, "hung")) - frozen_at
        os.kill(own.host.process.pid, signal.SIGKILL)
        own.host.stop()
    finally:
        own.azurite.thaw()
    own.host = HostProcess(REPO, own.env, tmp_path / "after-hang-host.log")
    delivered = wait_all_delivered(own, cids, "hung", timeout=90)
    twice = sum(n - 1 for n in delivered.values())
    batches = own.host.log().count("taking over a claim")
    bound = batches * int(own.env["BotSendConcurrency"])
    print(
        f"storage hung after {frozen_at}: {sent_while_hung} sent meanwhile; {batches} batches taken over; {twice} twice"
    )
    assert sent_while_hung <= bound and twice <= bound

"""Ad hoc notifications end to end: the HTTP and queue APIs, fan-out through the sends queue,
the delivery ledger, reference retirement and reminders. Real function app in the local host,
Azurite, the fake Bot Connector."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections import Counter

import pytest

from botcore.jobs import Target, new_job
from tests.botstack import BotStack, stack_of_its_own, status_of, wait_until


def test_notify_one_conversation_over_http(bot: BotStack) -> None:
    [cid] = bot.seed(1)
    response = bot.api(
        "POST", "notify", {"text": "Hello, this is a notification", "target": {"conversation": bot.key(cid)}}
    )
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    assert bot.wait_texts(cid, 1) == ["Hello, this is a notification"]
    assert bot.channel.activities(cid)[0].operation == "send"
    assert status_of(bot, job_id, state="done") | {"created": None} == {
        "id": job_id,
        "kind": "notify",
        "created": None,
        "state": "done",
        "targets": 1,
        "sent": 1,
        "skipped": 0,
        "failed": 0,
        "pending": 0,
    }


@pytest.mark.parametrize(
    "body, status, reason",
    [
        ({"text": "hi"}, 400, "target is required"),
        ({"target": {"everyone": True}}, 400, "needs text or attachments"),
        ({"text": "hi", "target": {"everyone": True, "userId": "u"}}, 400, "excludes"),
        ({"text": "hi", "target": {"planet": "mars"}}, 400, "unknown fields"),
        ([1, 2], 400, "JSON object"),
    ],
)
def test_notify_refuses_bad_requests_with_the_reason(bot: BotStack, body, status, reason) -> None:
    response = bot.api("POST", "notify", body)
    assert response.status_code == status and reason in response.json()["error"]["message"]


def test_notify_needs_the_function_key(bot: BotStack) -> None:
    body = {"text": "x", "target": {"everyone": True}}
    assert bot.api("POST", "notify", body, key=None).status_code == 401
    assert bot.api("POST", "notify", body, key="wrong").status_code == 401
    assert bot.api("GET", "notify/no-such-job").status_code == 404


def test_notify_a_user_in_several_conversations(bot: BotStack) -> None:
    user = f"29:user-{uuid.uuid4().hex[:8]}"
    mine = bot.seed(3, user_id=user)
    others = bot.seed(2)
    response = bot.api("POST", "notify", {"text": "for you", "target": {"userId": user}})
    assert response.status_code == 202
    for cid in mine:
        assert bot.wait_texts(cid, 1) == ["for you"]
    status_of(bot, response.json()["id"], state="done", targets=3, sent=3)
    assert all(bot.channel.activities(cid) == [] for cid in others)


@pytest.mark.slow
def test_a_broadcast_through_429s_delivers_each_once_after_retry_after(bot: BotStack, tenant) -> None:
    cids = bot.seed(60, tenant_id=tenant)
    bot.channel.fail(429, "TooManyRequests", times=15, retry_after=2)
    try:
        response = bot.api("POST", "notify", {"text": "broadcast", "target": {"tenantId": tenant}})
        job_id = response.json()["id"]
        assert bot.channel.wait_for(lambda c: all(c.activities(cid) for cid in cids), timeout=30)
    finally:
        bot.channel.clear_faults()
    status = status_of(bot, job_id, state="done", sent=60)
    assert status["failed"] == 0 and status["pending"] == 0
    delivered = Counter(r.conversation_id for cid in cids for r in bot.channel.activities(cid))
    assert set(delivered.values()) == {1}  # every conversation exactly once
    throttled = [r for r in bot.channel.faulted if r.conversation_id in cids]
    assert throttled, "the fault was injected but never hit"
    for rejected in throttled:  # the retry waited for Retry-After
        [delivery] = bot.channel.activities(rejected.conversation_id)
        assert delivery.at - rejected.at >= 1.9


def test_a_blocked_user_is_retired_skipped_later_and_back_when_they_return(bot: BotStack, tenant) -> None:
    blocked, fine = bot.seed(2, tenant_id=tenant)
    bot.channel.fail(403, "ConversationBlockedByUser", conversation_id=blocked, times=None)
    try:
        first = bot.api("POST", "notify", {"text": "one", "target": {"tenantId": tenant}}).json()["id"]
        status_of(bot, first, state="done", sent=1, skipped=1)
        entity = bot.conversation_entity(blocked)
        assert entity["active"] is False and entity["retiredReason"] == "ConversationBlockedByUser"
        second = bot.api("POST", "notify", {"text": "two", "target": {"tenantId": tenant}}).json()["id"]
        status_of(bot, second, state="done", targets=1, sent=1)
        assert [r.conversation_id for r in bot.channel.faulted].count(blocked) == 1  # never tried again
    finally:
        bot.channel.clear_faults()
    assert bot.texts_of(fine) == ["one", "two"] and bot.texts_of(blocked) == []
    bot.say(blocked, "hello again").raise_for_status()  # the user unblocks the bot and writes
    assert bot.conversation_entity(blocked)["active"] is True


def test_a_job_delivered_twice_sends_once(bot: BotStack) -> None:
    [cid] = bot.seed(1)
    job = new_job("notify", Target(conversation=bot.key(cid)), text="only once")
    bot.enqueue(job.to_json())
    bot.enqueue(job.to_json())
    status_of(bot, job.id, state="done", sent=1)
    assert wait_until(lambda: bot.queue_length("bot-jobs") == 0, timeout=10)
    assert bot.texts_of(cid) == ["only once"]
    assert "duplicate" in bot.host.log().split(job.id, 1)[1] or bot.host.log().count(job.id) >= 1


@pytest.mark.slow
def test_a_send_batch_enqueued_again_sends_nothing_twice(bot: BotStack, tenant) -> None:
    from botcore.delivery.batches import BATCH_KEYS, SendBatch, pack

    cids = bot.seed(BATCH_KEYS + 10, tenant_id=tenant)
    job_id = bot.api("POST", "notify", {"text": "once per batch", "target": {"tenantId": tenant}}).json()["id"]
    status_of(bot, job_id, state="done", sent=BATCH_KEYS + 10)
    # The fan-out's batches again, as a fan-out redone after a crash would enqueue them: same names (page at
    # 0 conversations, first pace tenant), same conversations (sorted by key, the listing's order).
    items = sorted((bot.key(c), bot.conversation_entity(c, raw=True)["ref"]) for c in cids)
    again = [m for m, _ in pack(job_id, items, id_prefix="0.0.")]
    assert [len(SendBatch.parse(m).items) for m in again] == [BATCH_KEYS, 10]
    ids = [bot.enqueue(m, queue="bot-sends") for m in again]

    def reports() -> list[str]:
        return [
            m.group(1) for i in ids if (m := re.search(rf"send batch {i} \(dequeue count 1\): (.*)", bot.host.log()))
        ]

    assert wait_until(lambda: len(reports()) == 2, timeout=15)
    assert [r.rsplit("already done ", 1)[1] for r in reports()] == [str(BATCH_KEYS), "10"]
    assert all(r.startswith("sent 0,") for r in reports())
    assert all(bot.texts_of(c) == ["once per batch"] for c in cids)


def test_a_malformed_job_goes_to_poison_without_retries(bot: BotStack) -> None:
    marker = uuid.uuid4().hex
    message_id = bot.enqueue('{"kind": "notify", "oops": "' + marker)
    assert wait_until(lambda: bot.peek("bot-jobs-poison", marker), timeout=15)
    # (the host writes its log in bursts: informational lines land within a few hundredths of a second)
    assert wait_until(lambda: f"job message {message_id} (dequeue count 1): poisoned" in bot.host.log(), timeout=5)
    log = bot.host.log()
    assert f"poison: message {message_id}: job is not JSON" in log  # the reason, not the body
    assert log.count(f"job message {message_id} (dequeue count 1): poisoned") == 1
    assert f"job message {message_id} (dequeue count 2)" not in log and marker not in log


def test_a_send_batch_with_a_broken_reference_goes_to_poison_and_sends_nothing(bot: BotStack) -> None:
    from botcore.delivery.batches import pack

    good = bot.seed(1)[0]
    broken = '{"channelId":"msteams","conversation":{"id":"x"}}'  # no serviceUrl
    [(message, _)] = pack(
        uuid.uuid4().hex, [(bot.key(good), bot.conversation_entity(good, raw=True)["ref"]), ("k", broken)]
    )
    message_id = bot.enqueue(message, queue="bot-sends")
    assert wait_until(lambda: f"send batch {message_id} (dequeue count 1): poisoned" in bot.host.log(), timeout=15)
    assert bot.peek("bot-sends-poison", message[-40:])  # the body is kept as it was
    assert "reference.serviceUrl is required" in bot.host.log().split(message_id, 1)[1]
    assert bot.texts_of(good) == []
    assert f"send batch {message_id} (dequeue count 2)" not in bot.host.log()


def test_a_batch_picked_up_after_its_slots_takes_new_ones_and_sends(bot: BotStack, tenant) -> None:
    """A worker running behind (its queue backed up) meets batches whose slots went by: each takes fresh
    slots once and sends, instead of handing every conversation on again and again."""
    import time as clock

    from botcore.delivery.batches import pack
    from botcore.delivery.pacing import Slot

    job_id = bot.api("POST", "notify", {"text": "late", "target": {"tenantId": tenant}}).json()["id"]
    status_of(bot, job_id, state="done", targets=0)  # the job's header, for the batch below
    cids = bot.seed(5, tenant_id=tenant)
    items = sorted((bot.key(c), bot.conversation_entity(c, raw=True)["ref"]) for c in cids)
    [(message, _)] = pack(job_id, items, id_prefix="late.", pace=f"tenant:{tenant}", slot=Slot(clock.time() - 30, 0.02))
    sent = bot.enqueue(message, queue="bot-sends")
    assert wait_until(lambda: f"send batch {sent} (dequeue count 1): sent 5," in bot.host.log(), timeout=15)
    assert all(bot.texts_of(c) == ["late"] for c in cids)


@pytest.mark.slow
async def test_a_reminder_in_chat_arrives_at_its_second(bot: BotStack, conversation_id) -> None:
    await asyncio.to_thread(bot.say, conversation_id, "remind me in 3 seconds to stretch")
    texts = await asyncio.to_thread(bot.wait_texts, conversation_id, 2)
    asked = time.monotonic()
    assert texts[1].startswith("OK, in 3 seconds (at ") and texts[1].endswith(" UTC) I'll remind you to stretch.")
    texts = await asyncio.to_thread(bot.wait_texts, conversation_id, 3)
    assert texts[2] == "Reminder: stretch"
    assert 2.0 <= time.monotonic() - asked <= 5.0  # at its second, not at the next whole minute


@pytest.mark.slow
def test_everyone_gets_exactly_one_message(tmp_path_factory) -> None:
    """1,000 stored references, in a storage account of their own so that everyone is exactly them."""
    with stack_of_its_own(tmp_path_factory.mktemp("everyone")) as bot:
        cids = bot.seed(1000)
        response = bot.api("POST", "notify", {"text": "to all", "target": {"everyone": True}})
        assert response.status_code == 202
        job_id = response.json()["id"]
        assert bot.channel.wait_for(lambda c: len(c.activities()) >= 1000, timeout=90)
        status_of(bot, job_id, state="done", targets=1000, sent=1000)
        counts = Counter(r.conversation_id for r in bot.channel.activities())
        assert counts == Counter({cid: 1 for cid in cids})
        # A pace of 2,000/s is kept per batch, not per request: no batch fell behind and handed anything on.
        assert "handed on" not in bot.host.log()
    assert "Host stopped" in bot.host.log() and "Unclosed" not in bot.host.log()  # clients closed at exit

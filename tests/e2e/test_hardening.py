"""Hostile and malformed input, end to end: what a sender controls is bounded, refused or kept apart from the
rest. The function app in the local host, Azurite, the local identity provider and the fake Connector,
driven over HTTP and the queues."""

from __future__ import annotations

import json
import random
import uuid

import pytest

from tests.botstack import BotStack, status_of, wait_until
from tests.botstack import poisoned_at_once as _poisoned_at_once


def _cjk(count: int) -> str:
    rng = random.Random(7)  # varied characters: a repeated one would compress to nothing
    return "".join(chr(rng.randrange(0x4E00, 0x9FFF)) for _ in range(count))


@pytest.mark.slow
def test_a_huge_display_name_is_trimmed_when_stored_and_everyone_gets_the_broadcast(bot: BotStack, tenant) -> None:
    """A user's 30,000-character name is cut when the reference is stored, and a broadcast to the tenant reaches
    that conversation and every other."""
    seeded = bot.seed(150, tenant_id=tenant)
    big = f"19:{uuid.uuid4().hex}@thread.tacv2"
    activity = bot.activity(big, "hi", conversation={"id": big, "tenantId": tenant})
    activity["from"]["name"] = _cjk(30_000)
    assert bot.post(activity).status_code == 200
    stored = json.loads(bot.conversation_entity(big)["ref"])
    assert len(stored["user"]["name"]) <= 256 and len(json.dumps(stored).encode()) <= 16 * 1024
    response = bot.api("POST", "notify", {"text": "to all", "target": {"tenantId": tenant}})
    assert response.status_code == 202
    status_of(bot, response.json()["id"], state="done", targets=151, sent=151)
    assert all(bot.texts_of(cid) == ["to all"] for cid in seeded)
    assert bot.texts_of(big)[-1] == "to all"


def test_stored_references_that_do_not_fit_a_send_batch_are_cut_or_fail_alone(bot: BotStack, tenant) -> None:
    """References written to the table without bounds: one too large for a send batch is cut to fit and sent,
    one that no cut can save is reported failed; the rest is sent and the job finishes."""
    from azure.data.tables import TableClient

    from botcore.settings import CONVERSATIONS_TABLE

    seeded = bot.seed(20, tenant_id=tenant)
    oversized, hopeless = bot.seed(2, tenant_id=tenant)
    table = TableClient.from_connection_string(bot.storage_connection, CONVERSATIONS_TABLE)
    for cid, accounts, change in (
        (oversized, ["user"], {"name": _cjk(30_000)}),
        (hopeless, ["user", "bot"], {"id": _cjk(4000)}),
    ):
        entity = table.get_entity(bot.key(cid), "c")
        reference = json.loads(entity["ref"])
        for account in accounts:  # 90 KB of name, or 24 KB of ids: more than a send batch may carry
            reference[account].update(change)
        entity["ref"] = json.dumps(reference, ensure_ascii=False)
        table.update_entity(entity)
    response = bot.api("POST", "notify", {"text": "to all", "target": {"tenantId": tenant}})
    status_of(bot, response.json()["id"], state="done", targets=22, sent=21, failed=1, pending=0)
    assert all(bot.texts_of(cid) == ["to all"] for cid in [*seeded, oversized])
    assert bot.texts_of(hopeless) == []


def test_a_tenant_given_only_in_channel_data_is_stored_and_targetable(bot: BotStack, tenant) -> None:
    """A tenant given only in channelData.tenant.id (as Teams may send it) is stored and reached by a tenant-wide
    notification."""
    cid = f"a:{uuid.uuid4().hex}"
    activity = bot.activity(cid, "hi", conversation={"id": cid}, channelData={"tenant": {"id": tenant}})
    assert bot.post(activity).status_code == 200
    assert bot.conversation_entity(cid)["tenantId"] == tenant
    assert json.loads(bot.conversation_entity(cid)["ref"])["conversation"]["tenantId"] == tenant
    response = bot.api("POST", "notify", {"text": "tenant-wide", "target": {"tenantId": tenant}})
    status_of(bot, response.json()["id"], state="done", targets=1, sent=1)
    assert bot.texts_of(cid)[-1] == "tenant-wide"


def test_lone_surrogates_in_an_activity_are_a_400(bot: BotStack, conversation_id) -> None:
    """Text or ids that cannot be encoded as UTF-8 (lone surrogates) are a 400 that says so; a surrogate pair is
    a character, and its message is answered."""
    for field, value in (("text", "a\\ud800b"), ("conversation", '{"id": "c\\udfffd"}')):
        body = json.dumps(bot.activity(conversation_id, "placeholder"))
        if field == "text":
            body = body.replace('"placeholder"', f'"{value}"')
        else:
            body = body.replace(json.dumps({"id": conversation_id, "tenantId": "tenant-1"}), value)
        response = bot.post(None, raw=body.encode())
        assert response.status_code == 400, (field, response.text)
        assert "UTF-8" in response.json()["error"]["message"]
    emoji = json.dumps(bot.activity(conversation_id, "placeholder")).replace('"placeholder"', '"\\ud83d\\ude00"')
    assert bot.post(None, raw=emoji.encode()).status_code == 200  # a surrogate pair is a character
    assert wait_until(lambda: bot.texts_of(conversation_id))


def test_a_notify_id_reused_for_the_same_request_answers_again_and_for_another_is_a_409(bot: BotStack) -> None:
    """The same POST with one id gets the first answer again; another text under that id is a 409 naming the
    id, and only the first text is sent."""
    [cid] = bot.seed(1)
    job_id = uuid.uuid4().hex
    body = {"id": job_id, "text": "first", "target": {"conversation": bot.key(cid)}}
    first = bot.api("POST", "notify", body)
    again = bot.api("POST", "notify", body)
    other = bot.api("POST", "notify", {**body, "text": "second"})
    assert first.status_code == again.status_code == 202 and first.json() == again.json()
    assert other.status_code == 409 and job_id in other.json()["error"]["message"]
    status_of(bot, job_id, state="done", sent=1)
    assert bot.texts_of(cid) == ["first"]


def test_reminders_and_notifications_never_share_an_id_silently(bot: BotStack) -> None:
    """A reminder and a notification, or two different reminders, under one id: the second is a 409 naming the
    id; the same reminder request again gets the first answer."""
    [cid] = bot.seed(1)
    target = {"conversation": bot.key(cid)}
    shared = uuid.uuid4().hex
    assert (
        bot.api("POST", "reminders", {"id": shared, "text": "later", "target": target, "inSeconds": 3600}).status_code
        == 201
    )
    clash = bot.api("POST", "notify", {"id": shared, "text": "now", "target": target})
    assert clash.status_code == 409 and shared in clash.json()["error"]["message"]
    assert (
        bot.api("POST", "reminders", {"id": shared, "text": "later", "target": target, "inSeconds": 7200}).status_code
        == 409
    )
    retried = bot.api("POST", "reminders", {"id": shared, "text": "later", "target": target, "inSeconds": 3600})
    assert retried.status_code == 201  # the same request again: the first answer
    assert bot.api("GET", f"notify/{shared}").json()["state"] == "scheduled"
    notified = uuid.uuid4().hex
    assert bot.api("POST", "notify", {"id": notified, "text": "now", "target": target}).status_code == 202
    status_of(bot, notified, state="done", sent=1)
    assert (
        bot.api("POST", "reminders", {"id": notified, "text": "x", "target": target, "inSeconds": 60}).status_code
        == 409
    )


def test_a_queued_job_reusing_an_id_for_other_work_is_poisoned_with_the_reason(bot: BotStack) -> None:
    """On the queue, a job whose id another job already took goes to poison at once with that reason, and
    sends nothing."""
    from botcore.jobs import Target, new_job

    [cid] = bot.seed(1)
    first = new_job("notify", Target(conversation=bot.key(cid)), text="first")
    bot.enqueue(first.to_json())
    status_of(bot, first.id, state="done", sent=1)
    clash = json.loads(first.to_json()) | {"text": "other work"}
    _poisoned_at_once(bot, bot.enqueue(json.dumps(clash)), f"id {first.id} is already used by another job")
    assert bot.texts_of(cid) == ["first"]


def test_text_the_queue_cannot_carry_is_refused_or_carried(bot: BotStack) -> None:
    """POST /api/notify: lone surrogates are a 400; a job larger than a queue message can carry is a 413 naming
    the limit; U+FFFE and control characters are carried and sent as they are."""
    [cid] = bot.seed(1)
    target = {"conversation": bot.key(cid)}
    surrogate = bot.api_raw("POST", "notify", '{"text": "a\\ud800b", "target": ' + json.dumps(target) + "}")
    assert surrogate.status_code == 400
    for body in (
        {"text": "🙂" * 28_000, "target": target},
        {"attachments": [{"contentType": "text/plain", "content": "x" * 40}] * 2000, "target": target},
    ):
        too_big = bot.api("POST", "notify", body)
        assert too_big.status_code == 413 and "65536" in too_big.json()["error"]["message"], too_big.text
    odd = bot.api("POST", "notify", {"text": "odd \ufffe \x01 text", "target": target})
    assert odd.status_code == 202
    status_of(bot, odd.json()["id"], state="done", sent=1)
    assert bot.texts_of(cid) == ["odd \ufffe \x01 text"]


@pytest.mark.slow
def test_an_unreadable_queue_message_never_holds_back_its_neighbours(tmp_path_factory) -> None:
    """A message the storage service cannot read back (U+FFFE put by another service) does not hold back the
    jobs received with it: the other job is delivered, and the host logs that it cannot read the queue. In a
    storage account of its own: the bad message stays unreadable for good."""
    from botcore.jobs import Target, new_job
    from tests.botstack import stack_of_its_own

    with stack_of_its_own(tmp_path_factory.mktemp("unreadable")) as bot:
        [cid] = bot.seed(1)
        bot.enqueue('{"kind": "notify", "text": "bad \ufffe"}')
        innocent = new_job("notify", Target(conversation=bot.key(cid)), text="innocent")
        bot.enqueue(innocent.to_json())
        status_of(bot, innocent.id, state="done", sent=1, timeout=60)  # within a lease (10 s here) and a poll
        assert bot.texts_of(cid) == ["innocent"]
        assert "cannot read queue bot-jobs" in bot.host.log()


def test_hopeless_jobs_are_refused_or_poisoned_at_once(bot: BotStack) -> None:
    """Jobs that can never work are refused at once: an out-of-range due date is a 400 over HTTP and goes to
    poison on its first delivery from the queue, and so do an unknown dialog and conversation keys no table
    can hold."""
    from botcore.jobs import Target, new_job

    [cid] = bot.seed(1)
    far = "9999-12-31T23:59:59-12:00"
    response = bot.api("POST", "reminders", {"text": "x", "target": {"conversation": bot.key(cid)}, "due": far})
    assert response.status_code == 400 and "due" in response.json()["error"]["message"]
    reminder = new_job("reminder", Target(conversation=bot.key(cid)), text="x", due=far)
    _poisoned_at_once(bot, bot.enqueue(reminder.to_json()), "job.due")
    dialog = new_job("beginDialog", Target(conversation=bot.key(cid)), dialog="nosuchdialog")
    _poisoned_at_once(bot, bot.enqueue(dialog.to_json()), "nosuchdialog")
    for key in ("a/b|c", "a|b#c", "a|b\x01", "a|" + "b" * 1100):
        refused = bot.api("POST", "notify", {"text": "x", "target": {"conversation": key}})
        assert refused.status_code == 400 and "conversation" in refused.json()["error"]["message"], key
        job = new_job("notify", Target(conversation=key), text="x")
        _poisoned_at_once(bot, bot.enqueue(job.to_json()), "target.conversation")


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


def test_the_local_host_refuses_huge_bodies_before_reading_them(bot: BotStack) -> None:
    """Six concurrent 90 MB unauthenticated POSTs (with a length, and chunked) are each answered 413 before their
    bodies are read: the host's memory grows by less than 30 MB."""
    import socket
    import threading
    from urllib.parse import urlsplit

    url = urlsplit(bot.messages_url)
    before = _rss_kib(bot.host.process.pid)
    answers: list[bytes] = []

    def post(chunked: bool) -> None:
        with socket.create_connection((url.hostname, url.port), timeout=10) as conn:
            length = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {90 * 1024 * 1024}"
            conn.sendall(
                f"POST {url.path} HTTP/1.1\r\nHost: {url.hostname}\r\nContent-Type: application/json\r\n"
                f"{length}\r\n\r\n".encode()
            )
            chunk = b"x" * 65536
            try:
                for _ in range(90 * 16):  # 90 MB, unless the host answers and closes first
                    conn.sendall(b"10000\r\n" + chunk + b"\r\n" if chunked else chunk)
            except OSError:
                pass
            answers.append(conn.recv(200))

    threads = [threading.Thread(target=post, args=(i % 2 == 1,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(answers) == 6 and all(a.startswith(b"HTTP/1.1 413") for a in answers), answers
    assert _rss_kib(bot.host.process.pid) - before < 30 * 1024


@pytest.mark.slow
def test_a_committed_turn_answers_200_at_once_and_its_failed_reply_follows_once(bot: BotStack, conversation_id) -> None:
    """With the Connector failing a reply (503, then 500), a committed turn answers 200 at once: the reply that
    may still go through (503) follows once, the refused one (500) is logged, and the channel's redelivery of
    the same activity changes and says nothing (the name "Alice" is not taken as the colour too)."""
    import time

    assert bot.say(conversation_id, "profile").status_code == 200
    bot.wait_texts(conversation_id, 2)
    for status, code, retry_after in ((503, "ServiceUnavailable", 2), (500, "InternalServerError", None)):
        bot.channel.fail(status, code, conversation_id=conversation_id, retry_after=retry_after, times=1)
        answer = bot.activity(conversation_id, "Alice" if status == 503 else "hello")
        started = time.monotonic()
        first = bot.post(answer)
        assert first.status_code == 200 and time.monotonic() - started < 3, first.text
        again = bot.post(answer)  # the channel delivers the same activity again
        assert again.status_code == 200
        if status == 503:
            texts = bot.wait_texts(conversation_id, 3, timeout=30)
            assert texts[2] == "Nice to meet you, Alice. What's your favourite colour?"
    assert wait_until(lambda: "a reply was refused (HTTP 500" in bot.host.log())  # 500 is not retried: said so
    assert bot.state(conversation_id)["stack"] == []  # "hello" answered the colour: the profile ended
    # A turn sends its replies before it answers, and logs at once (a warning) each reply it hands to a job or
    # drops: the four answered deliveries handed one to a job, whose message came above, and dropped one.
    key = bot.key(conversation_id)
    handled = [line for line in bot.host.log().splitlines() if f"conversation {key}: " in line and "replies" in line]
    assert len(handled) == 2 and "retried by job" in handled[0] and "a reply was refused" in handled[1], handled
    texts = bot.texts_of(conversation_id)
    assert len(texts) == 3, texts  # the redelivered "Alice" and "hello" changed and said nothing


EVIL = "https://evil.invalid/"  # never resolves: a send there would log a connection error, not a refusal


def test_an_emulator_token_vouches_for_no_service_url(bot: BotStack, tenant) -> None:
    """An Emulator token (with the bot's app id) and a serviceUrl of the sender's choosing: the reference is
    stored with trust `emulator`, no reply goes there, and a broadcast counts it failed without connecting
    to it, so the bot's token never goes there."""
    from tests.botstack import APP_ID

    for version in ("1.0", "2.0"):
        cid = f"emu-{uuid.uuid4().hex}"
        activity = bot.activity(cid, "help", serviceUrl=EVIL, conversation={"id": cid, "tenantId": tenant})
        response = bot.post(activity, token=bot.idp.mint_emulator_token(APP_ID, version=version))
        assert response.status_code == 200
        assert bot.conversation_entity(cid)["serviceUrlTrust"] == "emulator"
        assert wait_until(lambda cid=cid: "came with an Emulator token" in bot.host.log().split(cid, 1)[-1])
    job_id = bot.api("POST", "notify", {"text": "to all", "target": {"tenantId": tenant}}).json()["id"]
    status_of(bot, job_id, state="done", targets=2, sent=0, failed=2)
    log = bot.host.log()
    assert "evil.invalid came with an Emulator token" in log and "ConnectError" not in log.split(job_id, 1)[1]


@pytest.mark.slow
def test_in_production_a_loopback_emulator_gets_the_token_only_when_listed(tmp_path_factory) -> None:
    """The stack runs in Production: an Emulator on the bot's own machine (127.0.0.1) gets no reply, and so
    not the bot's token, unless its host is listed in BotEmulatorServiceHosts (here: localhost only)."""
    from devhost.channel import FakeConnector
    from tests.botstack import APP_ID, stack_of_its_own

    with (
        stack_of_its_own(
            tmp_path_factory.mktemp("emulator-bot"), extra_env={"BotEmulatorServiceHosts": "localhost"}
        ) as stack,
        FakeConnector() as emulator,
    ):
        for host in ("127.0.0.1", "localhost"):
            cid = f"emu-{uuid.uuid4().hex}"
            activity = stack.activity(
                cid,
                "help",
                channelId="emulator",
                conversation={"id": cid},
                serviceUrl=emulator.base_url.replace("127.0.0.1", host) + "/",
            )
            assert stack.post(activity, token=stack.idp.mint_emulator_token(APP_ID)).status_code == 200
            if host == "127.0.0.1":
                assert wait_until(lambda cid=cid: "came with an Emulator token" in stack.host.log().split(cid, 1)[-1])
                assert emulator.requests == []
        assert emulator.wait_for(lambda c: len(c.activities(cid)) >= 1)
        assert all(stack.idp.is_valid_access_token(r.authorization.removeprefix("Bearer ")) for r in emulator.requests)


def test_a_send_batch_cannot_send_the_token_where_the_bot_never_verified(bot: BotStack) -> None:
    """A hand-written batch on bot-sends whose reference claims a verified serviceUrl: the worker refuses the
    URL as never verified by a channel token, records the send as failed and never connects to it."""
    [cid] = bot.seed(1)
    job_id = bot.api("POST", "notify", {"text": "real", "target": {"conversation": bot.key(cid)}}).json()["id"]
    status_of(bot, job_id, state="done", sent=1)
    forged = {
        "channelId": "msteams",
        "serviceUrl": EVIL,
        "serviceUrlTrust": "token",
        "conversation": {"id": "victim"},
        "user": {"id": "29:u"},
        "bot": {"id": "28:b"},
    }
    message_id = bot.enqueue(json.dumps({"job": job_id, "items": [["msteams|victim", forged]]}), queue="bot-sends")
    assert wait_until(
        lambda: f"send batch {message_id} (dequeue count 1): sent 0, gone 0, failed 1" in bot.host.log(), timeout=15
    ), bot.host.log()[-2000:]
    log = bot.host.log()
    assert "evil.invalid was never verified by a channel token" in log
    assert "ConnectError" not in log.split(message_id, 1)[1]


@pytest.mark.slow
async def test_jobs_that_fail_on_the_hosts_last_attempt_end_their_status(bot: BotStack, tenant, monkeypatch) -> None:
    """A job that fails on the host's last attempt ends its status. The queue service is down (its endpoint
    refuses connections) while tables work: a fan-out that cannot enqueue is `fanning-out` after its first
    attempt and `failed`, with fixed words, after its last; a send batch that cannot hand its retries on
    counts its conversations failed, none pending."""
    import asyncio
    import re

    from botcore.delivery.batches import pack
    from botcore.jobs import Target, new_job
    from botcore.protocol.http import close_http_client
    from botcore.settings import MAX_DEQUEUE_COUNT, get_settings
    from botcore.storage import StorageUnavailableError, close_storage_clients
    from botcore.worker import handle_job_message, handle_send_message

    cids = await asyncio.to_thread(bot.seed, 3, tenant_id=tenant)
    for name, value in bot.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv(
        "BotStorage",
        re.sub(r"QueueEndpoint=[^;]+", "QueueEndpoint=http://127.0.0.1:9/devstoreaccount1", bot.storage_connection),
    )
    get_settings.cache_clear()
    job = new_job("notify", Target(tenant_id=tenant), text="never")
    try:
        for attempt in (1, MAX_DEQUEUE_COUNT):
            with pytest.raises(StorageUnavailableError):
                await handle_job_message(job.to_json().encode(), "m1", attempt)
            status = (await asyncio.to_thread(bot.api, "GET", f"notify/{job.id}")).json()
            assert status["state"] == ("fanning-out" if attempt == 1 else "failed"), status
        # Fixed words: the error itself names the queue endpoint and the SDK's exception (the log has it).
        assert status["error"] == "a service the bot depends on was unavailable; given up after 5 attempts"

        sent = new_job("notify", Target(tenant_id=tenant), text="retry me")
        refs = [(bot.key(c), bot.conversation_entity(c, raw=True)["ref"]) for c in cids]
        [(batch, _)] = pack(sent.id, refs, id_prefix="0.")
        from botcore.delivery.ledger import DeliveryLedger

        await DeliveryLedger().open_job(sent)
        bot.channel.fail(503, "ServiceUnavailable", times=None)  # every send is to be retried: a queue put
        try:
            with pytest.raises(StorageUnavailableError):
                await handle_send_message(batch.encode(), "m2", MAX_DEQUEUE_COUNT)
        finally:
            bot.channel.clear_faults()
        status = (await asyncio.to_thread(bot.api, "GET", f"notify/{sent.id}")).json()
        assert (status["failed"], status["pending"]) == (3, 0), status
    finally:
        await close_storage_clients()
        await close_http_client()
        get_settings.cache_clear()

"""What the bot bounds or refuses at its edges, end to end (the function app in the local host, Azurite, the
local identity provider and the fake Connector): a channel's Retry-After, job ids, times and numbers in
requests, and what an answer says when storage is down."""

from __future__ import annotations

import json
import re
import time
import uuid
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from botcore.jobs import Target, new_job
from tests.botstack import BotStack, poisoned_at_once, stack_of_its_own, status_of, wait_until

CAP = 2  # BotMaxRetryAfterSeconds of the `capped` stack
LATENESS = 4  # seconds a delivery may take beyond its pause: fan-out, queue polling, the send itself


@pytest.fixture(scope="module")
def capped(tmp_path_factory):
    """The bot with a short Retry-After cap, on a storage account of its own (a host on the session's queues
    would take its jobs); the account can be stopped."""
    with stack_of_its_own(tmp_path_factory.mktemp("capped"), extra_env={"BotMaxRetryAfterSeconds": str(CAP)}) as bot:
        yield bot


def _in_thirty_days() -> str:
    return format_datetime(datetime.now(UTC) + timedelta(days=30), usegmt=True)


# ---- a channel's Retry-After --------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("retry_after", ["2592000", "inf", _in_thirty_days], ids=["30 days", "inf", "HTTP-date"])
def test_a_429_pauses_its_tenant_at_most_the_cap_and_later_jobs_are_delivered(
    capped: BotStack, tenant, retry_after
) -> None:
    """A 429 asking for 30 days (or forever) paused the tenant for that long on every instance: later jobs
    needed a queue delay Queue Storage refuses, and ended failed."""
    first, second = capped.seed(2, tenant_id=tenant)
    capped.channel.fail(
        429,
        "TooManyRequests",
        conversation_id=first,
        retry_after=retry_after() if callable(retry_after) else retry_after,
    )
    before = capped.api("POST", "notify", {"text": "before", "target": {"conversation": capped.key(first)}})
    assert before.status_code == 202
    assert wait_until(lambda: f"tenant:{tenant}: the channel is throttling" in capped.host.log(), timeout=15), (
        capped.host.log()[-3000:]
    )
    started = time.monotonic()
    later = capped.api("POST", "notify", {"text": "later", "target": {"userId": f"29:{second}"}})  # a fan-out
    status_of(capped, later.json()["id"], state="done", sent=1, timeout=CAP + 15)
    [delivered] = capped.channel.activities(second)
    assert delivered.at - started <= CAP + LATENESS
    status_of(capped, before.json()["id"], state="done", sent=1, timeout=CAP + 15)
    assert capped.texts_of(first) == ["before"]


@pytest.mark.slow
def test_a_reply_refused_with_a_huge_retry_after_is_sent_within_the_cap(capped: BotStack, conversation_id) -> None:
    """A turn's reply refused with a 30-day Retry-After was to be retried in 30 days: the queue refused that,
    and the reply was lost."""
    capped.channel.fail(429, "TooManyRequests", conversation_id=conversation_id, retry_after="2592000")
    started = time.monotonic()
    assert capped.say(conversation_id, "help").status_code == 200
    capped.wait_texts(conversation_id, 1, timeout=CAP + 15)
    assert capped.channel.activities(conversation_id)[0].at - started <= CAP + LATENESS
    assert "is longer than BotMaxRetryAfterSeconds" in capped.host.log()


# ---- storage down: what an answer says, and what the log says --------------------------------------------


@pytest.mark.slow
def test_with_storage_down_answers_name_no_host_port_or_exception_and_the_log_has_them(capped: BotStack) -> None:
    port = capped.azurite.urls["table"].rsplit(":", 1)[1]
    capped.azurite.stop()
    try:
        answers = {  # function: (its handler, the answer)
            "notify": ("handle_notify", capped.api("POST", "notify", {"text": "x", "target": {"everyone": True}})),
            "notify_job": ("handle_job", capped.api("GET", "notify/some-job")),
            "reminders": (
                "handle_reminder",
                capped.api("POST", "reminders", {"text": "x", "inSeconds": 60, "target": {"everyone": True}}),
            ),
            "messages": ("handle_messages", capped.say(f"down-{uuid.uuid4().hex}", "hi")),
        }
    finally:
        capped.azurite.restart()
    log = capped.host.log()
    for function, (handler, answer) in answers.items():
        assert answer.status_code == 503 and int(answer.headers["Retry-After"]) >= 1, (function, answer.text)
        assert answer.json() == {
            "error": {
                "code": "ServiceUnavailable",
                "message": "a service the bot depends on is unavailable; retry later",
            }
        }
        # The detail is in the log, under the invocation id the host gave the request.
        detail = re.search(
            rf"{handler} \(invocation ([0-9a-f-]+)\): StorageUnavailableError: .*127\.0\.0\.1:{port}", log
        )
        assert detail, (function, log[-3000:])
        assert re.search(rf"Executing 'Functions\.{function}' \(Reason='HTTP [^']*', Id={detail.group(1)}\)", log)


# ---- job ids -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("job_id", ["a/b", "..", ".", "x?y", "x#y", "a b", "é"])
def test_a_job_id_its_status_url_could_not_name_is_a_400(bot: BotStack, job_id: str) -> None:
    """Ids `a/b` and `..` were accepted but their status link went nowhere; `x?y`'s link named job `x`."""
    response = bot.api("POST", "notify", {"id": job_id, "text": "x", "target": {"conversation": "msteams|nobody"}})
    assert response.status_code == 400 and "letters, digits or" in response.json()["error"]["message"]


def test_a_job_id_of_unreserved_characters_is_reached_through_its_status_link(bot: BotStack) -> None:
    [cid] = bot.seed(1)
    job_id = f"Az09._~-{uuid.uuid4().hex}"
    response = bot.api("POST", "notify", {"id": job_id, "text": "first", "target": {"conversation": bot.key(cid)}})
    assert response.status_code == 202
    link = f"{bot.host.base_url}{response.json()['status']}"
    assert wait_until(lambda: httpx.get(link, headers={"x-functions-key": "stack-key"}).json().get("state") == "done")
    patched = httpx.patch(link, json={"text": "second"}, headers={"x-functions-key": "stack-key"})
    assert patched.status_code == 202 and patched.json()["notification"] == job_id
    assert bot.channel.wait_for(lambda c: any(r.operation == "update" and r.conversation_id == cid for r in c.requests))
    assert bot.api("GET", "notify/a%20b").status_code == 400  # a path no id can have


def test_a_queued_job_whose_id_no_url_could_name_is_poisoned_at_once(bot: BotStack) -> None:
    [cid] = bot.seed(1)
    job = json.loads(new_job("notify", Target(conversation=bot.key(cid)), text="never").to_json())
    poisoned_at_once(bot, bot.enqueue(json.dumps({**job, "id": "a/b"})), "job.id must be")
    revision = new_job("delete", Target(everyone=True), notification="x?y")
    poisoned_at_once(bot, bot.enqueue(revision.to_json()), "job.notification must be")
    assert bot.texts_of(cid) == []


# ---- times and numbers ----------------------------------------------------------------------------------


def test_a_reminder_more_than_a_year_ahead_or_given_two_times_is_refused(bot: BotStack) -> None:
    [cid] = bot.seed(1)
    target = {"conversation": bot.key(cid)}
    now = datetime.now(UTC)
    far = (now + timedelta(days=367)).isoformat()
    response = bot.api("POST", "reminders", {"text": "x", "target": target, "due": far})
    assert response.status_code == 400 and "at most a year ahead" in response.json()["error"]["message"]
    both = bot.api(
        "POST",
        "reminders",
        {"text": "x", "target": target, "inSeconds": 60, "due": (now + timedelta(hours=1)).isoformat()},
    )
    assert both.status_code == 400 and "not both" in both.json()["error"]["message"]
    queued = new_job("reminder", Target(conversation=bot.key(cid)), text="x", due=far)
    poisoned_at_once(bot, bot.enqueue(queued.to_json()), "job.due must be at most a year ahead")
    assert bot.api("GET", f"notify/{queued.id}").status_code == 404  # nothing was scheduled


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_numbers_json_does_not_have_are_refused_in_requests_jobs_and_activities(
    bot: BotStack, conversation_id, literal: str
) -> None:
    [cid] = bot.seed(1)
    target = json.dumps({"conversation": bot.key(cid)})
    response = bot.api_raw("POST", "notify", f'{{"text": "x", "target": {target}, "weight": {literal}}}')
    assert response.status_code == 400 and f"holds {literal}" in response.json()["error"]["message"]
    job = new_job("notify", Target(conversation=bot.key(cid)), text="never").to_json()
    poisoned_at_once(bot, bot.enqueue(job[:-1] + f',"weight":{literal}}}'), "JSON numbers the bot accepts are finite")
    activity = json.dumps(bot.activity(conversation_id, "help"))[:-1] + f', "value": {literal}}}'
    assert bot.post(None, raw=activity.encode()).status_code == 400
    assert bot.texts_of(cid) == [] and bot.conversation_entity(conversation_id) is None

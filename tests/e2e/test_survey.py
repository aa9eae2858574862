"""The survey story end to end: the real function app in the local host, Azurite, the fake
channel, and the queue job that starts the survey five seconds later."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from botcore.jobs import Target, new_job
from tests.botstack import BotStack, wait_until

INTERRUPT = "Sorry to interrupt"


def stack_of(bot: BotStack, conversation_id: str) -> list[str]:
    return [frame["dialog"] for frame in bot.state(conversation_id)["stack"]]


@pytest.mark.slow
def test_survey_interrupts_profile_and_hands_back_control(bot: BotStack, conversation_id) -> None:
    def say(text: str) -> None:
        bot.say(conversation_id, text).raise_for_status()

    say("profile")
    say("Ann")
    texts = bot.wait_texts(conversation_id, 3)
    assert "What's your name?" in texts[1] and "What's your favourite colour?" in texts[2]

    say("survey")
    texts = bot.wait_texts(conversation_id, 4)
    assert "In 5 seconds I'll interrupt" in texts[3]
    assert stack_of(bot, conversation_id) == ["profile"]

    # No user input: the queue job starts the survey on top of the profile.
    texts = bot.wait_texts(conversation_id, 5, timeout=20)
    assert texts[4].startswith(INTERRUPT) and "type done" in texts[4]
    survey_message = bot.channel.activities(conversation_id)[4]
    assert survey_message.operation == "send"  # proactive: not a reply to anything
    assert stack_of(bot, conversation_id) == ["profile", "survey"]

    say("green")  # would answer the profile's question, but the survey holds the conversation
    say("help")  # what the survey accepts, not an answer
    texts = bot.wait_texts(conversation_id, 7)
    assert texts[5].startswith('Survey: noted "green"') and texts[6].startswith("We're in a survey")

    say("done")
    texts = bot.wait_texts(conversation_id, 9)
    assert "Back to the original conversation" in texts[7]
    assert texts[8] == "Back to your profile. What's your favourite colour?"
    assert stack_of(bot, conversation_id) == ["profile"]

    say("blue")
    texts = bot.wait_texts(conversation_id, 10)
    assert texts[9] == "Thanks! Your profile: name Ann, favourite colour blue."
    assert stack_of(bot, conversation_id) == []
    assert len(texts) == 10


@pytest.mark.slow
def test_survey_with_nothing_running_returns_to_the_root(bot: BotStack, conversation_id) -> None:
    bot.say(conversation_id, "survey").raise_for_status()
    texts = bot.wait_texts(conversation_id, 3, timeout=20)  # greeting, announcement, survey
    assert texts[2].startswith(INTERRUPT)
    bot.say(conversation_id, "done").raise_for_status()
    texts = bot.wait_texts(conversation_id, 5)
    assert "back at the start" in texts[4] and stack_of(bot, conversation_id) == []


def test_twenty_concurrent_messages_each_get_one_reply_and_none_is_lost(bot: BotStack, conversation_id) -> None:
    bot.say(conversation_id, "hello").raise_for_status()
    bot.enqueue(new_job("beginDialog", Target(conversation=bot.key(conversation_id)), dialog="survey").to_json())
    assert wait_until(lambda: stack_of(bot, conversation_id) == ["survey"], timeout=15)
    assert wait_until(lambda: bot.texts_of(conversation_id)[-1].startswith(INTERRUPT))  # sent after the commit
    before = len(bot.channel.activities(conversation_id))

    words = [f"answer-{i}" for i in range(20)]
    with httpx.Client() as client, ThreadPoolExecutor(20) as pool:
        statuses = list(pool.map(lambda w: bot.say(conversation_id, w, client=client).status_code, words))
    assert statuses == [200] * 20

    bot.wait_texts(conversation_id, before + 20)
    replies = bot.channel.activities(conversation_id)[before:]
    assert len(replies) == 20
    for word in words:  # each message answered exactly once, as a reply to itself
        answers = [r for r in replies if f'"{word}"' in r.body["text"]]
        assert len(answers) == 1, word
    frame = bot.state(conversation_id)["stack"][-1]
    assert frame == {"dialog": "survey", "state": {"answers": 20}}


@pytest.mark.slow
def test_a_redelivered_or_repeated_survey_job_starts_one_survey(bot: BotStack, conversation_id) -> None:
    bot.say(conversation_id, "profile").raise_for_status()
    job = new_job("beginDialog", Target(conversation=bot.key(conversation_id)), dialog="survey")
    bot.enqueue(job.to_json())
    bot.enqueue(job.to_json())  # the same job delivered twice
    bot.enqueue(new_job("beginDialog", Target(conversation=bot.key(conversation_id)), dialog="survey").to_json())
    assert wait_until(
        lambda: bot.queue_length("bot-jobs") == 0 and "survey" in stack_of(bot, conversation_id), timeout=20
    )
    bot.say(conversation_id, "done").raise_for_status()
    texts = bot.wait_texts(conversation_id, 5)
    assert sum(t.startswith(INTERRUPT) for t in texts) == 1
    assert stack_of(bot, conversation_id) == ["profile"]
    assert f"job {job.id}" not in bot.host.log() or "poison" not in bot.host.log().split(f"job {job.id}")[1][:200]


def test_a_job_for_an_unknown_conversation_is_logged_not_retried(bot: BotStack) -> None:
    job = new_job("beginDialog", Target(conversation="msteams|no-such-conversation"), dialog="survey")
    bot.enqueue(job.to_json())
    assert wait_until(
        lambda: f"job {job.id}: no conversation 'msteams|no-such-conversation' is stored" in bot.host.log(), timeout=15
    )
    assert wait_until(lambda: bot.queue_length("bot-jobs") == 0, timeout=5)
    assert bot.host.log().count(f"job {job.id}:") == 1  # one attempt, no retry loop


# ---- a survey start racing a user message --------------------------------------------------


async def test_a_survey_start_racing_a_user_message_loses_neither(
    bot: BotStack, second_instance, caplog, monkeypatch
) -> None:
    from botcore.endpoint import handle_messages
    from botcore.protocol.http import close_http_client
    from botcore.state.conversations import ConversationStore
    from botcore.storage import close_storage_clients
    from botcore.worker import handle_job_message

    caplog.set_level(logging.INFO, logger="botcore.state.turns")
    # Each round, the two turns' commits wait for each other, so both have read the same
    # state before either writes: one of them must lose on the ETag, every round.
    commit, gate = ConversationStore.commit, {}

    async def commit_together(self, *args, **kwargs):
        barrier = gate.get("barrier")
        if barrier is not None:
            try:
                await asyncio.to_thread(barrier.wait, 2.0)
            except threading.BrokenBarrierError:
                pass
        return await commit(self, *args, **kwargs)

    monkeypatch.setattr(ConversationStore, "commit", commit_together)

    def post(cid: str, text: str):
        body = json.dumps(bot.activity(cid, text)).encode()
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {bot.token()}"}
        return handle_messages(headers, body)

    for round_ in range(10):
        cid = f"19:race-{round_}-{uuid.uuid4().hex}@thread.v2"
        assert (await post(cid, "profile")).status == 200
        job = new_job("beginDialog", Target(conversation=bot.key(cid)), dialog="survey")
        gate["barrier"] = threading.Barrier(2, action=lambda: gate.pop("barrier"))  # the loser's retry goes through
        message, started = await asyncio.gather(
            post(cid, "Ann"), second_instance(handle_job_message(job.to_json().encode(), "m"))
        )
        gate.pop("barrier", None)
        assert message.status == 200 and started == "started"

        state = bot.state(cid)
        frames = {f["dialog"]: f["state"] for f in state["stack"]}
        assert [f["dialog"] for f in state["stack"]] == ["profile", "survey"]
        texts = bot.channel.wait_for_texts(4, cid)
        assert len(texts) == 4  # greeting, first question, the answer to "Ann", the survey
        assert sum(t.startswith(INTERRUPT) for t in texts) == 1
        # "Ann" went to whichever dialog was on top when its turn committed, and is kept there.
        if frames["profile"]["answers"].get("name") == "Ann":
            assert frames["survey"]["answers"] == 0 and any(t.startswith("Nice to meet you, Ann.") for t in texts)
        else:
            assert frames["survey"]["answers"] == 1 and any(t.startswith('Survey: noted "Ann"') for t in texts)
    await close_storage_clients()
    await close_http_client()
    # The two instances collided on the ETag in every round, and lost nothing.
    assert caplog.text.count("state changed during the turn") >= 10


@pytest.mark.slow
def test_a_survey_whose_first_send_fails_is_sent_by_the_retried_job(bot: BotStack, conversation_id) -> None:
    bot.say(conversation_id, "hello").raise_for_status()
    before = len(bot.wait_texts(conversation_id, 2))  # greeting and its hint
    bot.channel.fail(503, "ServiceUnavailable", times=4, conversation_id=conversation_id)  # all of one attempt
    try:
        job = new_job("beginDialog", Target(conversation=bot.key(conversation_id)), dialog="survey")
        bot.enqueue(job.to_json())
        texts = bot.wait_texts(conversation_id, before + 1, timeout=30)
    finally:
        bot.channel.clear_faults()
    assert texts[before].startswith(INTERRUPT) and len(bot.channel.faulted) >= 4
    assert stack_of(bot, conversation_id) == ["survey"]
    assert wait_until(lambda: bot.queue_length("bot-jobs") == 0, timeout=10)
    assert sum(t.startswith(INTERRUPT) for t in bot.texts_of(conversation_id)) == 1

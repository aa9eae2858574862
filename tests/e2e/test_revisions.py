"""Updating and deleting what a notification sent, end to end: the revision is recorded on the job, what is not
sent yet goes out revised (or not at all), what was sent is revised at the tenant's pace, and an older revision
never overwrites a newer one."""

from __future__ import annotations

import time
import uuid

import pytest

from tests.botstack import BotStack, new_tenant, stack_of_its_own, status_of, wait_until


@pytest.fixture(scope="module")
def paced(tmp_path_factory):
    """A bot whose tenants get 10 requests a second and whose instance sends 4 at once: a broadcast of 40 takes
    four seconds, long enough to revise it while it is sent, however busy the machine."""
    with stack_of_its_own(
        tmp_path_factory.mktemp("paced"), extra_env={"BotTenantRatePerSecond": "10", "BotSendConcurrency": "4"}
    ) as stack:
        yield stack


def visible(bot: BotStack, cids: list[str]) -> dict[str, list[str]]:
    """What each conversation shows now: the text of every message sent there and not deleted, as last updated."""
    shown: dict[str, dict[str, str]] = {cid: {} for cid in cids}
    for r in bot.channel.requests:  # in the order the channel took them
        if r.conversation_id not in shown:
            continue
        if r.operation == "send":
            shown[r.conversation_id][r.new_id] = r.body.get("text")
        elif r.operation == "update" and r.activity_id in shown[r.conversation_id]:
            shown[r.conversation_id][r.activity_id] = r.body.get("text")
        elif r.operation == "delete":
            shown[r.conversation_id].pop(r.activity_id, None)
    return {cid: list(messages.values()) for cid, messages in shown.items()}


def operations(bot: BotStack, cids: list[str], operation: str) -> list:
    return [r for r in bot.channel.requests if r.operation == operation and r.conversation_id in cids]


def test_update_and_delete_what_a_notification_sent(bot: BotStack, tenant) -> None:
    cids = bot.seed(2, tenant_id=tenant)
    job_id = bot.api("POST", "notify", {"text": "draft", "target": {"tenantId": tenant}}).json()["id"]
    status_of(bot, job_id, state="done", sent=2)
    patched = bot.api("PATCH", f"notify/{job_id}", {"text": "final"})
    assert patched.status_code == 202 and patched.json()["revision"] == 1
    update_id = patched.json()["id"]
    revision = status_of(bot, job_id, state="done")["revision"]
    assert wait_until(lambda: status_of(bot, job_id)["revision"]["state"] == "done"), revision
    assert status_of(bot, job_id)["revision"] == {
        "id": update_id,
        "kind": "update",
        "number": 1,
        "state": "done",
        "updated": 2,
        "failed": 0,
        "pending": 0,
    }
    assert status_of(bot, update_id, state="done")["notification"] == job_id
    assert all(r.activity_id for r in operations(bot, cids, "update"))
    assert visible(bot, cids) == {cid: ["final"] for cid in cids}
    deleted = bot.api("DELETE", f"notify/{job_id}")
    assert deleted.status_code == 202 and deleted.json()["revision"] == 2
    final = status_of(bot, job_id, state="deleted")
    assert final["revision"]["deleted"] == 2 and final["sent"] == 2
    assert status_of(bot, update_id)["state"] == "superseded"
    assert visible(bot, cids) == {cid: [] for cid in cids}
    again = bot.api("PATCH", f"notify/{job_id}", {"text": "too late"})
    assert again.status_code == 409 and "deleted" in again.json()["error"]["message"]
    assert bot.api("DELETE", f"notify/{job_id}").json()["revision"] == 2  # the deletion stands
    assert bot.api("PATCH", f"notify/{uuid.uuid4().hex}", {"text": "x"}).status_code == 404


def test_a_delete_beyond_doing_is_not_retried_and_a_gone_conversation_is_retired(bot: BotStack, tenant) -> None:
    gone, refused, fine = bot.seed(3, tenant_id=tenant)
    job_id = bot.api("POST", "notify", {"text": "oops", "target": {"tenantId": tenant}}).json()["id"]
    status_of(bot, job_id, state="done", sent=3)
    bot.channel.fail(404, "ConversationNotFound", conversation_id=gone)
    bot.channel.fail(400, "BadArgument", conversation_id=refused)  # say, a message the user deleted already
    assert bot.api("DELETE", f"notify/{job_id}").status_code == 202
    revision = status_of(bot, job_id, state="done")["revision"]
    assert wait_until(lambda: status_of(bot, job_id)["revision"]["pending"] == 0, timeout=15)
    revision = status_of(bot, job_id)["revision"]
    assert (revision["deleted"], revision["failed"], revision["state"]) == (1, 2, "done")
    tried = [
        r.conversation_id
        for r in [*bot.channel.requests, *bot.channel.faulted]
        if r.operation == "delete" and r.conversation_id in (gone, refused, fine)
    ]
    assert sorted(tried) == sorted([gone, refused, fine])  # each once: nothing retried
    assert bot.conversation_entity(gone)["active"] is False
    assert bot.conversation_entity(refused)["active"] is True


@pytest.mark.slow
def test_a_delete_during_a_paced_broadcast_leaves_no_message_visible(paced: BotStack, tenant) -> None:
    cids = paced.seed(100, tenant_id=tenant)  # ten seconds of sending: the delete comes in the middle
    job_id = paced.api("POST", "notify", {"text": "recall me", "target": {"tenantId": tenant}}).json()["id"]
    assert paced.channel.wait_for(lambda c: len(operations(paced, cids, "send")) >= 3, timeout=30)
    assert paced.api("DELETE", f"notify/{job_id}").status_code == 202
    final = status_of(paced, job_id, state="deleted", timeout=30)
    sent = len(operations(paced, cids, "send"))
    assert sent < 100, "the broadcast ended before the delete: nothing shown"
    assert final["sent"] == sent and final["cancelled"] == 100 - sent and final["pending"] == 0, final
    assert final["revision"]["deleted"] == sent
    assert visible(paced, cids) == {cid: [] for cid in cids}


@pytest.mark.slow
def test_an_update_during_a_paced_broadcast_reaches_every_message_once(paced: BotStack, tenant) -> None:
    """The update reaches the messages already sent, those being sent, and those not sent yet; no message is
    sent twice and the batch being sent never stalls (a revision never writes a row a sender has claimed)."""
    cids = paced.seed(40, tenant_id=tenant)
    job_id = paced.api("POST", "notify", {"text": "v1", "target": {"tenantId": tenant}}).json()["id"]
    assert paced.channel.wait_for(lambda c: len(operations(paced, cids, "send")) >= 3, timeout=30)
    patched_at = time.monotonic()
    assert paced.api("PATCH", f"notify/{job_id}", {"text": "v2"}).status_code == 202
    status_of(paced, job_id, state="done", sent=40, pending=0, timeout=30)
    assert time.monotonic() - patched_at < 6 + 4  # the broadcast's own 4 s, and the claim (6 s here) never lapsed
    assert wait_until(lambda: status_of(paced, job_id)["revision"]["state"] == "done", timeout=15)
    assert visible(paced, cids) == {cid: ["v2"] for cid in cids}
    sends = operations(paced, cids, "send")
    assert sorted(r.conversation_id for r in sends) == sorted(cids)  # each exactly once
    assert any(r.body["text"] == "v2" for r in sends)  # those after the update went out updated
    assert len(operations(paced, cids, "update")) == sum(r.body["text"] == "v1" for r in sends)


def test_a_retried_older_update_never_overwrites_a_newer_one(bot: BotStack, tenant) -> None:
    cids = bot.seed(3, tenant_id=tenant)
    job_id = bot.api("POST", "notify", {"text": "v1", "target": {"tenantId": tenant}}).json()["id"]
    status_of(bot, job_id, state="done", sent=3)
    unlucky = cids[0]
    bot.channel.fail(503, "ServiceUnavailable", conversation_id=unlucky)  # v2's update of it is retried later
    assert bot.api("PATCH", f"notify/{job_id}", {"text": "v2"}).status_code == 202
    assert bot.channel.wait_for(
        lambda c: any(r.conversation_id == unlucky and r.operation == "update" for r in c.faulted), timeout=15
    )
    assert bot.api("PATCH", f"notify/{job_id}", {"text": "v3"}).status_code == 202
    assert wait_until(
        lambda: (
            status_of(bot, job_id)["revision"]
            == {
                "id": status_of(bot, job_id)["revision"]["id"],
                "kind": "update",
                "number": 2,
                "state": "done",
                "updated": 3,
                "failed": 0,
                "pending": 0,
            }
        ),
        timeout=20,
    ), status_of(bot, job_id)
    assert visible(bot, cids) == {cid: ["v3"] for cid in cids}
    for cid in cids:  # once a message shows v3, nothing older reaches it
        texts = [r.body["text"] for r in operations(bot, [cid], "update")]
        assert "v2" not in texts[texts.index("v3") :], texts


@pytest.mark.slow
def test_one_tenants_revision_does_not_hold_up_anothers(paced: BotStack) -> None:
    """Revisions take their slots in each tenant's pace calendar before taking a send permit: tenant A's long
    revision (60 messages at 10 a second) and tenant B's short one run side by side."""
    big, small = new_tenant(), new_tenant()
    big_cids, small_cids = paced.seed(60, tenant_id=big), paced.seed(5, tenant_id=small)
    jobs = {}
    for group in (big, small):
        jobs[group] = paced.api("POST", "notify", {"text": "v1", "target": {"tenantId": group}}).json()["id"]
    for group in (big, small):
        status_of(paced, jobs[group], state="done", pending=0, timeout=30)
    for group in (big, small):  # the big tenant's first
        assert paced.api("PATCH", f"notify/{jobs[group]}", {"text": "v2"}).status_code == 202
    assert paced.channel.wait_for(lambda c: len(operations(paced, small_cids, "update")) == 5, timeout=20)
    big_by_then = len(operations(paced, big_cids, "update"))
    assert paced.channel.wait_for(lambda c: len(operations(paced, big_cids, "update")) == 60, timeout=30)
    assert big_by_then <= 40, f"the small tenant's 5 updates waited for {big_by_then} of the big one's 60"


@pytest.mark.slow
def test_a_deleted_reminder_never_fires_and_an_updated_one_sends_the_new_text(bot: BotStack) -> None:
    [first, second] = bot.seed(2)
    deleted = bot.api(
        "POST", "reminders", {"text": "never", "target": {"conversation": bot.key(first)}, "inSeconds": 2}
    ).json()["id"]
    updated = bot.api(
        "POST", "reminders", {"text": "draft", "target": {"conversation": bot.key(second)}, "inSeconds": 2}
    ).json()["id"]
    assert bot.api("DELETE", f"notify/{deleted}").status_code == 202
    assert bot.api("PATCH", f"notify/{updated}", {"text": "stretch"}).status_code == 202
    assert status_of(bot, deleted)["state"] == "scheduled"
    status_of(bot, updated, state="done", sent=1, timeout=15)
    assert status_of(bot, deleted, state="deleted", targets=0, timeout=15)["sent"] == 0  # its job ran, and stopped
    assert bot.texts_of(second) == ["stretch"] and bot.texts_of(first) == []

"""What broke when the bot was attacked, each defect shown end to end: the function app in the local host,
Azurite, the local identity provider and the fake Connector, driven over HTTP and the queues."""

from __future__ import annotations

import json
import random
import uuid

from tests.botstack import BotStack, wait_until
from tests.test_notify import status_of, tenant


def _cjk(count: int) -> str:
    rng = random.Random(7)  # varied characters: a repeated one would compress to nothing
    return "".join(chr(rng.randrange(0x4E00, 0x9FFF)) for _ in range(count))


def test_a_huge_display_name_is_trimmed_when_stored_and_everyone_gets_the_broadcast(bot: BotStack) -> None:
    """Defect 1: one conversation with a 30,000-character name stopped a broadcast at its fan-out."""
    group = tenant()
    seeded = bot.seed(150, tenant_id=group)
    big = f"19:{uuid.uuid4().hex}@thread.tacv2"
    activity = bot.activity(big, "hi", conversation={"id": big, "tenantId": group})
    activity["from"]["name"] = _cjk(30_000)
    assert bot.post(activity).status_code == 200
    stored = json.loads(bot.conversation_entity(big)["ref"])
    assert len(stored["user"]["name"]) <= 256 and len(json.dumps(stored).encode()) <= 16 * 1024
    response = bot.api("POST", "notify", {"text": "to all", "target": {"tenantId": group}})
    assert response.status_code == 202
    status_of(bot, response.json()["id"], state="done", targets=151, sent=151)
    assert all(bot.texts_of(cid) == ["to all"] for cid in seeded)
    assert bot.texts_of(big)[-1] == "to all"


def test_stored_references_that_do_not_fit_a_send_batch_are_cut_or_fail_alone(bot: BotStack) -> None:
    """Defect 1: references stored before they were bounded: one is cut to fit and sent, one that no cut can
    save is reported failed; the rest is sent and the job finishes."""
    from azure.data.tables import TableClient

    from botcore.settings import CONVERSATIONS_TABLE

    group = tenant()
    seeded = bot.seed(20, tenant_id=group)
    oversized, hopeless = bot.seed(2, tenant_id=group)
    table = TableClient.from_connection_string(bot.storage_connection, CONVERSATIONS_TABLE)
    for cid, accounts, change in ((oversized, ["user"], {"name": _cjk(30_000)}),
                                  (hopeless, ["user", "bot"], {"id": _cjk(4000)})):
        entity = table.get_entity(bot.key(cid), "c")
        reference = json.loads(entity["ref"])
        for account in accounts:  # 90 KB of name, or 24 KB of ids: more than a send batch may carry
            reference[account].update(change)
        entity["ref"] = json.dumps(reference, ensure_ascii=False)
        table.update_entity(entity)
    response = bot.api("POST", "notify", {"text": "to all", "target": {"tenantId": group}})
    status_of(bot, response.json()["id"], state="done", targets=22, sent=21, failed=1, pending=0)
    assert all(bot.texts_of(cid) == ["to all"] for cid in [*seeded, oversized])
    assert bot.texts_of(hopeless) == []


def test_a_tenant_given_only_in_channel_data_is_stored_and_targetable(bot: BotStack) -> None:
    """Defect 7: Teams may put the tenant only in channelData.tenant.id."""
    group = tenant()
    cid = f"a:{uuid.uuid4().hex}"
    activity = bot.activity(cid, "hi", conversation={"id": cid}, channelData={"tenant": {"id": group}})
    assert bot.post(activity).status_code == 200
    assert bot.conversation_entity(cid)["tenantId"] == group
    assert json.loads(bot.conversation_entity(cid)["ref"])["conversation"]["tenantId"] == group
    response = bot.api("POST", "notify", {"text": "tenant-wide", "target": {"tenantId": group}})
    status_of(bot, response.json()["id"], state="done", targets=1, sent=1)
    assert bot.texts_of(cid)[-1] == "tenant-wide"


def test_lone_surrogates_in_an_activity_are_a_400(bot: BotStack, conversation_id) -> None:
    """Defect 9: text or ids that cannot be encoded as UTF-8 were a 500."""
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

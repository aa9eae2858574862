"""Tenants and teams are believed only where the channel service writes them (Teams), never where the end
user's client does (Direct Line, Web Chat): end to end, with the function app in the local host, Azurite,
the local identity provider and the fake Connector, driven over HTTP."""

from __future__ import annotations

import json
import uuid

from azure.data.tables import TableClient

from botcore.keys import conversation_key, encode_key
from botcore.settings import CONVERSATIONS_TABLE, MEMBERS_TABLE
from devhost.channel import FakeConnector
from tests.botstack import APP_ID, BotStack, new_tenant, status_of


def _table(bot: BotStack, name: str) -> TableClient:
    return TableClient.from_connection_string(bot.storage_connection, name)


def _claimant(bot: BotStack, channel: str, victim: str, user: str = "dl-user") -> str:
    """A conversation on a channel whose client writes channelData and conversation.tenantId, claiming the
    victim's tenant both ways; returns its id."""
    cid = f"{channel}-{uuid.uuid4().hex}"
    activity = bot.activity(
        cid,
        "hi",
        channelId=channel,
        user=user,
        conversation={"id": cid, "tenantId": victim},
        channelData={"tenant": {"id": victim}},
    )
    assert bot.post(activity).status_code == 200
    return cid


def _as_stored_before(bot: BotStack, channel: str, cid: str, victim: str) -> str:
    """Make a conversation's row what the bot stored before it read tenants only on Teams: the claimed tenant
    in its reference and its tenantId column. Returns its key."""
    key = conversation_key(channel, cid)
    with _table(bot, CONVERSATIONS_TABLE) as table:
        entity = table.get_entity(key, "c")
        reference = json.loads(entity["ref"])
        reference["conversation"]["tenantId"] = victim
        table.update_entity({"PartitionKey": key, "RowKey": "c", "tenantId": victim, "ref": json.dumps(reference)})
    return key


def _teams_chat(bot: BotStack, member: dict, tenant_id: str) -> str:
    """A member's one-to-one chat with the bot in Teams; returns its id."""
    chat = f"a:{uuid.uuid4().hex}"
    activity = bot.activity(
        chat, "hi", user=member["id"], conversation={"id": chat, "tenantId": tenant_id, "conversationType": "personal"}
    )
    assert bot.post(activity).status_code == 200
    return chat


def _received(bot: BotStack, text: str) -> dict[str, list[str]]:
    """Member id -> the conversations in which `text` reached them."""
    out: dict[str, list[str]] = {}
    for request in bot.channel.activities():
        if request.body.get("text") == text:
            out.setdefault(request.body["recipient"]["id"], []).append(request.conversation_id)
    return out


def test_a_tenant_claimed_from_direct_line_or_web_chat_gets_none_of_its_broadcasts(bot: BotStack) -> None:
    victim = new_tenant()
    members = bot.seed(3, tenant_id=victim)
    claimants = [_claimant(bot, channel, victim) for channel in ("directline", "webchat")]
    older = _claimant(bot, "webchat", victim)
    _as_stored_before(bot, "webchat", older, victim)
    response = bot.api("POST", "notify", {"text": "tenant-wide", "target": {"tenantId": victim}})
    status_of(bot, response.json()["id"], state="done", targets=3, sent=3)
    assert all(bot.texts_of(cid) == ["tenant-wide"] for cid in members)
    assert all("tenant-wide" not in bot.texts_of(cid) for cid in [*claimants, older])
    everyone_on_web_chat = bot.api("POST", "notify", {"text": "web chat", "target": {"channelId": "webchat"}})
    assert everyone_on_web_chat.status_code == 202  # selections by channel are unchanged
    status_of(bot, everyone_on_web_chat.json()["id"], state="done")
    assert all(bot.texts_of(cid)[-1] == "web chat" for cid in (claimants[1], older))


def test_a_teams_member_id_claimed_from_direct_line_does_not_take_their_team_notification(bot: BotStack) -> None:
    victim, team_id = new_tenant(), f"19:{uuid.uuid4().hex}@thread.tacv2"
    bot.install_in_team(team_id, victim)
    member, _ = bot.channel.set_roster(team_id, 2, victim)
    chat = _teams_chat(bot, member, victim)
    hijack = _claimant(bot, "directline", victim, user=member["id"])  # after the member's own chat
    response = bot.api("POST", "notify", {"text": "to the team", "target": {"team": team_id}})
    status_of(bot, response.json()["id"], state="done", targets=2, sent=2)
    assert _received(bot, "to the team")[member["id"]] == [chat]
    assert "to the team" not in bot.texts_of(hijack)


def test_a_direct_line_event_naming_a_team_does_not_repoint_it(bot: BotStack) -> None:
    """The event comes from a Direct Line service of its own (a serviceUrl its channel token vouched for): were
    the team repointed, the roster would be read there."""
    victim, team_id = new_tenant(), f"19:{uuid.uuid4().hex}@thread.tacv2"
    bot.install_in_team(team_id, victim)
    members = bot.channel.set_roster(team_id, 3, victim)
    with FakeConnector() as directline:
        service_url = directline.base_url + "/"
        cid = f"dl-{uuid.uuid4().hex}"
        event = bot.activity(
            cid,
            type="event",
            name="anything",
            channelId="directline",
            serviceUrl=service_url,
            conversation={"id": cid},
            channelData={"team": {"id": team_id}, "tenant": {"id": victim}},
        )
        assert bot.post(event, token=bot.idp.mint_channel_token(APP_ID, service_url)).status_code == 200
        response = bot.api("POST", "notify", {"text": "team news", "target": {"team": team_id}})
        status_of(bot, response.json()["id"], state="done", targets=3, sent=3)
        assert directline.requests == []
    assert set(_received(bot, "team news")) == {m["id"] for m in members}


def test_index_rows_written_before_channels_counted_are_believed_only_when_they_check_out(bot: BotStack) -> None:
    """Index rows of the old form (no channel in the name) as an earlier version left them: the team's and one
    member's point where they should, another member's was repointed to a Direct Line conversation that
    claimed the member's id and tenant. The genuine ones are used; the poisoned one reads as unknown."""
    victim, team_id = new_tenant(), f"19:{uuid.uuid4().hex}@thread.tacv2"
    bot.install_in_team(team_id, victim)
    genuine, poisoned = bot.channel.set_roster(team_id, 2, victim)
    chats = {m["id"]: _teams_chat(bot, m, victim) for m in (genuine, poisoned)}
    hijack = _claimant(bot, "directline", victim, user=poisoned["id"])
    hijack_key = _as_stored_before(bot, "directline", hijack, victim)
    old_rows = {
        f"team|{team_id}": conversation_key("msteams", team_id),
        f"user|{victim}|{genuine['id']}": conversation_key("msteams", chats[genuine["id"]]),
        f"user|{victim}|{poisoned['id']}": hijack_key,
    }
    with _table(bot, MEMBERS_TABLE) as members:
        for name in (f"team|msteams|{team_id}", *(f"user|msteams|{victim}|{m['id']}" for m in (genuine, poisoned))):
            members.delete_entity(encode_key(name), "i")  # as if written before index names had a channel
        for name, key in old_rows.items():
            members.upsert_entity({"PartitionKey": encode_key(name), "RowKey": "i", "conversation": key})
    creates = sum(r.operation == "create" for r in bot.channel.requests)
    response = bot.api("POST", "notify", {"text": "old rows", "target": {"team": team_id}})
    status_of(bot, response.json()["id"], state="done", targets=2, sent=2)
    received = _received(bot, "old rows")
    assert received[genuine["id"]] == [chats[genuine["id"]]]  # the genuine old row was used
    [created] = received[poisoned["id"]]  # the poisoned one was not: the member's conversation was created
    assert created != hijack
    assert sum(r.operation == "create" for r in bot.channel.requests) - creates == 1
    assert "old rows" not in bot.texts_of(hijack)

    with _table(bot, MEMBERS_TABLE) as members:  # the team's old row repointed too
        members.upsert_entity(
            {"PartitionKey": encode_key(f"team|{team_id}"), "RowKey": "i", "conversation": hijack_key}
        )
    response = bot.api("POST", "notify", {"text": "repointed", "target": {"team": team_id}})
    status = status_of(bot, response.json()["id"], state="failed")
    assert "not installed in team" in status["error"]
    assert "repointed" not in bot.texts_of(hijack)

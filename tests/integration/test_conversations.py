"""The conversation store against Azurite: addresses, state, ETags, retirement, listing."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import pytest

from botcore import storage
from botcore.keys import conversation_key, encode_key
from botcore.protocol.activity import ChannelAccount, ConversationAccount, ConversationReference
from botcore.state.conversations import ConcurrencyError, ConversationStore, StateTooLargeError


class CountingTable:
    """The real TableClient, with its reads and writes counted."""

    def __init__(self, table) -> None:
        self.table, self.writes, self.reads = table, 0, 0

    def __getattr__(self, name):
        attr = getattr(self.table, name)
        if name in ("insert", "replace", "merge", "upsert"):

            async def counted(*a, **k):
                self.writes += 1
                return await attr(*a, **k)

            return counted
        if name == "get":

            async def read(*a, **k):
                self.reads += 1
                return await attr(*a, **k)

            return read
        return attr


@pytest.fixture
async def store(storage_connection_string, unique_name, monkeypatch):
    monkeypatch.setenv("BotStorage", storage_connection_string)
    table, members = storage.get_table(unique_name), storage.get_table(unique_name + "m")
    await table.create()
    await members.create()
    yield ConversationStore(CountingTable(table), members)
    await storage.close_storage_clients()


def ref(
    conversation_id="a:1", channel="msteams", user="29:u", service_url="https://smba.example/x/", tenant=None
) -> ConversationReference:
    return ConversationReference(
        conversation=ConversationAccount(id=conversation_id, tenant_id=tenant),
        channel_id=channel,
        service_url=service_url,
        user=ChannelAccount(id=user),
        bot=ChannelAccount(id="28:bot"),
        service_url_trust="token",
    )


async def test_inbound_address_is_written_once_then_only_when_it_changes(store) -> None:
    first = await store.record_activity(ref())
    assert store.table.writes == 1 and first.active and first.first_seen
    await store.record_activity(ref())
    assert store.table.writes == 1, "an unchanged address must not be written again"
    await store.record_activity(ref(service_url="https://smba.example/other/"))
    assert store.table.writes == 2
    later = datetime.now(UTC) + timedelta(hours=2)
    await store.record_activity(ref(service_url="https://smba.example/other/"), now=later)
    assert store.table.writes == 3, "lastSeen is refreshed once it is an hour old"


@pytest.mark.parametrize("odd_id", ["a/b", "a\\b", "a#b", "a?b", "a\x01b", "é漢字🙂", "x" * 2000, "it's"])
async def test_any_conversation_id_round_trips(store, odd_id: str) -> None:
    await store.record_activity(ref(conversation_id=odd_id, user=odd_id))
    record = await store.get(conversation_key("msteams", odd_id))
    assert record.reference.conversation.id == odd_id and record.reference.user.id == odd_id


async def test_retired_conversation_is_reactivated_by_the_user_returning(store) -> None:
    record = await store.record_activity(ref())
    assert await store.retire(record.key, "ConversationBlockedByUser")
    retired = await store.get(record.key)
    assert not retired.active and retired.retired_reason == "ConversationBlockedByUser"
    back = await store.record_activity(ref())
    assert back.active and back.retired_reason is None


async def test_commit_with_a_stale_etag_loses(store) -> None:
    record = await store.record_activity(ref())
    stale = await store.get(record.key)
    await store.commit(await store.get(record.key), state={"n": 1})
    with pytest.raises(ConcurrencyError):
        await store.commit(stale, state={"n": 2})
    assert (await store.get(record.key)).state == {"n": 1}


async def test_two_concurrent_commits_from_one_read_exactly_one_wins(store) -> None:
    record = await store.record_activity(ref())
    a, b = await store.get(record.key), await store.get(record.key)
    results = await asyncio.gather(
        store.commit(a, state={"w": "a"}), store.commit(b, state={"w": "b"}), return_exceptions=True
    )
    assert sum(isinstance(r, ConcurrencyError) for r in results) == 1
    winner = next(r for r in results if not isinstance(r, Exception))
    assert (await store.get(record.key)).state == winner.state


async def test_large_state_is_split_and_shrinking_leaves_nothing_behind(store) -> None:
    record = await store.record_activity(ref())
    big = {"blob": "x" * 200_000 + "é漢字🙂"}
    await store.commit(await store.get(record.key), state=big)
    assert (await store.get(record.key)).state == big
    await store.commit(await store.get(record.key), state={"small": 1})
    entity = await store.table.table.get(record.key, "c")
    assert entity["stateParts"] == 1 and "state1" not in entity
    assert (await store.get(record.key)).state == {"small": 1}


async def test_oversized_state_is_refused_and_nothing_is_written(store) -> None:
    record = await store.record_activity(ref())
    writes = store.table.writes
    with pytest.raises(StateTooLargeError):
        await store.commit(await store.get(record.key), state={"blob": "x" * 2_000_000})
    assert store.table.writes == writes


@pytest.mark.slow
async def test_listing_streams_pages_with_filters_and_skips_retired(store) -> None:
    gate = asyncio.Semaphore(32)

    async def stored(i: int) -> None:
        async with gate:
            await store.commit(
                None,
                reference=ref(
                    conversation_id=f"c{i}",
                    channel="msteams" if i % 2 else "webchat",
                    tenant="t1" if i % 3 == 0 else "t2",
                    user=f"u{i % 7}",
                ),
            )

    await asyncio.gather(*(stored(i) for i in range(1200)))
    await store.retire(conversation_key("msteams", "c1"), "blocked")
    pages = [p async for p in store.iter_pages(store.selection_filter(), page_size=500)]
    assert [len(p) for p in pages] == [500, 500, 199]
    teams = [r async for p in store.iter_pages(store.selection_filter(channel_id="msteams")) for r in p]
    assert len(teams) == 599 and all(r.reference.channel_id == "msteams" for r in teams)
    assert all(r.state is None for r in teams)
    user = [r async for p in store.iter_pages(store.selection_filter(user_id="u3", tenant_id="t1")) for r in p]
    # A tenant is selected only on Teams: the webchat rows' tenant is what a client said.
    assert {r.reference.conversation.id for r in user} == {
        f"c{i}" for i in range(1200) if i % 7 == 3 and i % 3 == 0 and i % 2
    }
    first, token = await store.page(None, None, 500)
    second, _ = await store.page(None, token, 500)
    assert not {r.key for r in first} & {r.key for r in second}
    # The fan-out's listing: the same pages, each reference as its stored JSON text.
    addresses, token = await store.addresses(store.selection_filter(), None, 500)
    rest, _ = await store.addresses(store.selection_filter(), token, 500)
    assert [a.key for a in addresses] == [r.key for r in pages[0]] and len(rest) == 500
    assert [ConversationReference.from_dict(json.loads(a.reference)) for a in addresses] == [
        r.reference for r in pages[0]
    ]
    assert {(a.channel_id, a.tenant_id) for a in addresses} == {
        (r.reference.channel_id, r.reference.tenant_id) for r in pages[0]
    }
    # More than a query answers with (Table Storage: 1,000) takes more queries, and ends where asked.
    big, token = await store.addresses(store.selection_filter(), None, 1100)
    tail, end = await store.addresses(store.selection_filter(), token, 1100)
    assert (len(big), len(tail), end) == (1100, 99, None)
    assert [a.key for a in big + tail] == [r.key for p in pages for r in p]


async def _point(store, name: str, key: str) -> None:
    """An index row as any earlier version of the bot may have left it."""
    await store.members.upsert({"PartitionKey": encode_key(name), "RowKey": "i", "conversation": key})


async def test_a_personal_conversation_is_found_by_channel_tenant_and_user_only(store) -> None:
    own = await store.record_activity(ref("a:own", tenant="t1", user="29:m"))
    other = await store.record_activity(ref("d:1", channel="directline", tenant="t1", user="29:m"))
    assert (await store.personal("msteams", "t1", "29:m")).key == own.key
    assert (await store.personal("directline", "t1", "29:m")).key == other.key  # rows of its own, apart
    assert await store.personal("msteams", "t2", "29:m") is None
    await _point(store, "user|msteams|t1|29:z", own.key)  # a row naming someone else's conversation
    assert await store.personal("msteams", "t1", "29:z") is None
    await store.retire(own.key, "ConversationBlockedByUser")
    assert await store.personal("msteams", "t1", "29:m") is None


async def test_index_rows_from_before_channels_are_read_only_where_they_check_out(store) -> None:
    genuine = await store.record_activity(ref("a:genuine", tenant="t1", user="29:g"))
    await store.members.delete(encode_key("user|msteams|t1|29:g"), "i")
    await _point(store, "user|t1|29:g", genuine.key)
    assert (await store.personal("msteams", "t1", "29:g")).key == genuine.key
    claimed = await store.commit(None, reference=ref("d:2", channel="directline", tenant="t1", user="29:v"))
    await _point(store, "user|t1|29:v", claimed.key)  # a Direct Line user who said they were 29:v of t1
    assert await store.personal("msteams", "t1", "29:v") is None
    team = await store.record_activity(ref("19:team", tenant="t1"), team_id="19:team")
    assert (await store.team("msteams", "19:team")).key == team.key
    await store.members.delete(encode_key("team|msteams|19:team"), "i")
    await _point(store, "team|19:team", team.key)
    assert (await store.team("msteams", "19:team")).key == team.key
    event = await store.record_activity(ref("d:3", channel="directline"), team_id="19:other")
    await _point(store, "team|19:other", event.key)  # a Direct Line event that named a Teams team
    await _point(store, "team|19:third", team.key)  # a row naming another team's conversation
    assert await store.team("msteams", "19:other") is None and await store.team("msteams", "19:third") is None


async def test_last_seen_is_at_most_an_hour_behind(store) -> None:
    start = datetime.now(UTC)
    first = await store.record_activity(ref(), now=start)
    assert first.last_seen == start
    same = await store.record_activity(ref(), now=start + timedelta(minutes=59))
    assert same.last_seen == start  # within the hour: no write, so lastSeen stays
    later = await store.record_activity(ref(), now=start + timedelta(minutes=61))
    assert later.last_seen == start + timedelta(minutes=61)

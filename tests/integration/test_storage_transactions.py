"""The cost benchmark's counting proxy (bench/transactions.py) in front of Azurite: each call botcore.storage makes
reaches Azurite through it unchanged (Shared Key still verifies) and is counted once, as its kind."""

from __future__ import annotations

from collections import Counter

import pytest

from bench import transactions as tx
from botcore import storage
from botcore.storage import EntityChangedError, EntityNotFoundError, etag_of


@pytest.fixture
def proxy(azurite, monkeypatch):
    with tx.CountingProxy.serving(azurite) as proxy:
        monkeypatch.setenv("BotStorage", proxy.connection_string)
        yield proxy


async def test_each_call_of_botcore_storage_is_one_transaction_of_its_kind(proxy, unique_name) -> None:
    table, queue = storage.get_table(unique_name), storage.get_queue(unique_name)
    try:
        await table.create()
        await queue.create()
        start = proxy.mark()
        key = "it's é漢字"  # quoted and escaped in the path
        etag = await table.insert({"PartitionKey": key, "RowKey": "c", "n": 1})
        read = await table.get(key, "c")
        await table.replace({"PartitionKey": key, "RowKey": "c", "n": 2}, etag_of(read))
        with pytest.raises(EntityChangedError):
            await table.merge({"PartitionKey": key, "RowKey": "c", "n": 3}, etag)
        await table.merge({"PartitionKey": key, "RowKey": "c", "n": 3})
        await table.upsert({"PartitionKey": key, "RowKey": "d"})
        await table.upsert({"PartitionKey": key, "RowKey": "d"}, merge=True)
        await table.transact([("create", {"PartitionKey": "p", "RowKey": str(i)}) for i in range(5)])
        rows, cursor = await table.page("PartitionKey eq 'p'", page_size=3)
        assert len(rows) == 3 and cursor is not None
        rows, cursor = await table.page("PartitionKey eq 'p'", page_size=3, cursor=cursor)
        assert len(rows) == 2
        await table.delete(key, "d")
        with pytest.raises(EntityNotFoundError):
            await table.get(key, "d")
        await queue.send("a job")
        await queue.send("a later job", delay=30)
        records = proxy.since(start)
    finally:
        await storage.close_storage_clients()

    assert tx.tally(records) == Counter(
        {
            tx.ENTITY_INSERT: 1,
            tx.ENTITY_READ: 2,  # one found, one not: both billed
            tx.ENTITY_UPDATE: 3,  # replace with the ETag, merge with a stale one (refused), merge unconditionally
            tx.ENTITY_UPSERT: 2,
            tx.BATCH: 1,
            tx.QUERY: 1,
            tx.QUERY_NEXT: 1,
            tx.ENTITY_DELETE: 1,
            tx.MESSAGE_PUT: 2,
        }
    )
    assert [r.operations for r in records if r.kind == tx.BATCH] == [5]
    pages = [r for r in records if r.kind in (tx.QUERY, tx.QUERY_NEXT)]
    assert [(p.returned, p.more) for p in pages] == [(3, True), (2, False)]
    assert {r.resource for r in records if r.service == tx.TABLE and r.kind != tx.BATCH} == {unique_name}
    assert [r.status for r in records if r.kind == tx.ENTITY_UPDATE] == [204, 412, 204]


async def test_a_receive_counts_the_messages_it_returned(proxy, unique_name) -> None:
    from azure.storage.queue.aio import QueueClient

    async with QueueClient.from_connection_string(proxy.connection_string, unique_name) as client:
        await client.create_queue()
        await client.send_message("one")
        start = proxy.mark()
        for _ in range(2):  # the local host's own receive: one request for up to a batch of messages
            pages = client.receive_messages(messages_per_page=16, visibility_timeout=30).by_page()
            async for page in pages:
                async for message in page:
                    await client.delete_message(message)
                break
    records = proxy.since(start)
    assert [(r.counted_as, r.returned) for r in records] == [
        (tx.MESSAGE_GET, 1),
        (tx.MESSAGE_DELETE, None),
        (tx.MESSAGE_GET_EMPTY, 0),
    ]

"""The lean Table client against Azurite: values, ETags, errors, queries, transactions."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone

import aiohttp
import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st

from botcore.tables import (EntityChangedError, EntityExistsError, EntityNotFoundError, EntityTooLargeError,
                            StorageError, StorageUnavailableError, TableClient, TransactionFailedError,
                            decode_entity, encode_entity, table_endpoint)


@pytest.fixture
async def table(storage_connection_string, unique_name):
    async with aiohttp.ClientSession() as session:
        endpoint, auth = table_endpoint(storage_connection_string)
        client = TableClient(endpoint, unique_name, auth, session)
        assert await client.create() is True
        assert await client.create() is False
        yield client


ODD_KEYS = ["it's", "é漢字🙂", "a b", "~7E%25", "x" * 500]


@pytest.mark.parametrize("key", ODD_KEYS)
async def test_every_value_type_round_trips_under_odd_keys(table, key) -> None:
    now = datetime.now(timezone.utc)
    entity = {"PartitionKey": key, "RowKey": key, "s": "text", "b": True, "i": -5, "big": 2**40,
              "f": 1.5, "d": now, "raw": b"\x00\xff", "none": None}
    etag = await table.insert(entity)
    read = await table.get(key, key)
    assert read.etag == etag
    assert {k: v for k, v in read.items() if k != "Timestamp"} == {k: v for k, v in entity.items() if k != "none"}
    assert isinstance(read["Timestamp"], datetime)


async def test_etags_guard_writes(table) -> None:
    etag = await table.insert({"PartitionKey": "p", "RowKey": "r", "n": 1})
    with pytest.raises(EntityExistsError):
        await table.insert({"PartitionKey": "p", "RowKey": "r"})
    newer = await table.merge({"PartitionKey": "p", "RowKey": "r", "m": 2}, etag)
    with pytest.raises(EntityChangedError):
        await table.replace({"PartitionKey": "p", "RowKey": "r", "n": 3}, etag)
    assert dict(await table.get("p", "r")) | {"Timestamp": None} == {
        "PartitionKey": "p", "RowKey": "r", "n": 1, "m": 2, "Timestamp": None}
    await table.replace({"PartitionKey": "p", "RowKey": "r", "n": 3}, newer)
    assert "m" not in await table.get("p", "r")
    with pytest.raises(EntityChangedError):
        await table.delete("p", "r", newer)
    await table.delete("p", "r")
    with pytest.raises(EntityNotFoundError):
        await table.get("p", "r")
    with pytest.raises(EntityNotFoundError):
        await table.merge({"PartitionKey": "p", "RowKey": "r", "n": 1})
    await table.upsert({"PartitionKey": "p", "RowKey": "r", "n": 4})
    await table.upsert({"PartitionKey": "p", "RowKey": "r", "o": 5}, merge=True)
    assert (await table.get("p", "r"))["n"] == 4


async def test_oversized_values_and_missing_tables_are_typed_errors(table, storage_connection_string) -> None:
    with pytest.raises(EntityTooLargeError):
        await table.insert({"PartitionKey": "p", "RowKey": "big", "v": "x" * 40_000})
    missing = TableClient(table.endpoint, "nosuchtable", table._auth, table._session)
    with pytest.raises(StorageError) as caught:
        await missing.get("p", "r")
    assert caught.value.code == "TableNotFound" and not isinstance(caught.value, EntityNotFoundError)


async def test_queries_page_with_a_storable_cursor(table) -> None:
    await table.transact([("insert", {"PartitionKey": "q", "RowKey": f"{i:03}", "n": i}) for i in range(100)])
    await table.transact([("insert", {"PartitionKey": "q", "RowKey": f"{i:03}", "n": i}) for i in range(100, 130)])
    first, cursor = await table.page("PartitionKey eq 'q' and n ge 10", select=["RowKey"], page_size=50)
    assert [e["RowKey"] for e in first] == [f"{i:03}" for i in range(10, 60)] and set(first[0]) == {"RowKey"}
    assert isinstance(cursor, str)
    rest = [e["n"] async for e in table.query("PartitionKey eq 'q' and n ge 60", page_size=7)]
    assert rest == list(range(60, 130))
    second, _ = await table.page("PartitionKey eq 'q' and n ge 10", page_size=50, cursor=cursor)
    assert second[0]["n"] == 60


async def test_a_failed_transaction_applies_nothing_and_names_the_operation(table) -> None:
    await table.insert({"PartitionKey": "t", "RowKey": "003"})
    with pytest.raises(TransactionFailedError) as caught:
        await table.transact([("insert", {"PartitionKey": "t", "RowKey": f"{i:03}"}) for i in range(6)])
    assert caught.value.status == 409 and caught.value.code == "EntityAlreadyExists" and caught.value.index == 3
    assert [e["RowKey"] async for e in table.query("PartitionKey eq 't'")] == ["003"]
    etag = (await table.get("t", "003")).etag
    await table.transact([("merge", {"PartitionKey": "t", "RowKey": "003", "m": 1, "etag": etag}),
                          ("upsert", {"PartitionKey": "t", "RowKey": "004", "n": 4}),
                          ("upsert-merge", {"PartitionKey": "t", "RowKey": "005", "n": 5})])
    with pytest.raises(TransactionFailedError) as caught:
        await table.transact([("delete", {"PartitionKey": "t", "RowKey": "004"}),
                              ("replace", {"PartitionKey": "t", "RowKey": "003", "etag": etag})])
    assert caught.value.status == 412 and caught.value.index == 1
    assert [e["RowKey"] async for e in table.query("PartitionKey eq 't'")] == ["003", "004", "005"]


async def test_transient_failures_are_retried_then_reported(unused_tcp_port, caplog) -> None:
    answers = [503, 500, 200]
    seen = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization", ""))
        status = answers.pop(0) if answers else 503
        if status == 200:
            return web.json_response({"PartitionKey": "p", "RowKey": "r"}, headers={"ETag": "W/\"1\""})
        return web.json_response({"odata.error": {"code": "ServerBusy", "message": {"value": "busy"}}}, status=status)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", unused_tcp_port).start()
    connection = (f"AccountName=acct;AccountKey=a2V5;TableEndpoint=http://127.0.0.1:{unused_tcp_port}/acct")
    try:
        async with aiohttp.ClientSession() as session:
            endpoint, auth = table_endpoint(connection)
            client = TableClient(endpoint, "t", auth, session)
            assert (await client.get("p", "r")).etag == 'W/"1"'
            assert len(seen) == 3 and all(a.startswith("SharedKeyLite acct:") for a in seen)
            assert "table t: GET failed (HTTP 503 ServerBusy: busy); attempt 2 of 3" in caplog.text
            with pytest.raises(StorageUnavailableError) as caught:
                await client.get("p", "r")
            assert caught.value.status == 503 and caught.value.code == "ServerBusy" and len(seen) == 6
    finally:
        await runner.cleanup()
    async with aiohttp.ClientSession() as session:  # nothing listens any more
        with pytest.raises(StorageUnavailableError) as caught:
            await TableClient(endpoint, "t", auth, session).get("p", "r")
        assert caught.value.status == 0


@pytest.fixture
def unused_tcp_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


values = st.one_of(st.text(), st.booleans(), st.integers(-(2**63), 2**63 - 1), st.binary(),
                   st.floats(allow_nan=False, allow_infinity=False),
                   st.datetimes(min_value=datetime(1601, 1, 2), timezones=st.just(timezone.utc)))


@given(st.dictionaries(st.from_regex(r"[A-Za-z][A-Za-z0-9]{0,20}", fullmatch=True), values))
def test_encoding_round_trips_every_storable_value(properties) -> None:
    decoded = decode_entity(encode_entity(properties))
    assert decoded == properties
    assert all(type(decoded[k]) is type(v) for k, v in properties.items())


async def test_identity_based_storage_sends_a_managed_identity_token(unused_tcp_port, monkeypatch) -> None:
    from botcore import storage
    from botcore.http import close_http_client
    from devhost.identity import IdentityProvider

    seen: list[str] = []

    async def table_service(request: web.Request) -> web.Response:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        seen.append(token)
        if not idp.is_valid_access_token(token):
            return web.json_response({"odata.error": {"code": "AuthenticationFailed", "message": {"value": "no"}}},
                                     status=403)
        if request.path.endswith("/messages"):  # the queue service, at the same address here
            return web.Response(status=201, content_type="application/xml", text=(
                "<QueueMessagesList><QueueMessage><MessageId>m1</MessageId><PopReceipt>p</PopReceipt>"
                "</QueueMessage></QueueMessagesList>"))
        return web.json_response({"PartitionKey": "p", "RowKey": "r", "n": 1}, headers={"ETag": "W/\"1\""})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", table_service)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", unused_tcp_port).start()
    with IdentityProvider() as idp:
        for name in ("BotStorage", "AzureWebJobsStorage"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("BotStorage__tableServiceUri", f"http://127.0.0.1:{unused_tcp_port}")
        monkeypatch.setenv("BotStorage__queueServiceUri", f"http://127.0.0.1:{unused_tcp_port}")
        monkeypatch.setenv("BotStorage__clientId", "client-7")
        monkeypatch.setenv("IDENTITY_ENDPOINT", f"{idp.base_url}/msi/token")
        monkeypatch.setenv("IDENTITY_HEADER", idp.msi_header)
        try:
            table = storage.get_table_client("conversations")
            assert (await table.get("p", "r"))["n"] == 1
            assert (await table.get("p", "r"))["n"] == 1
            assert (await storage.get_queue_client("bot-jobs").send_message("{}")).id == "m1"
        finally:
            await storage.close_storage_clients()
            await close_http_client()
            await runner.cleanup()
        assert len(seen) == 3 and len(set(seen)) == 1  # one token, cached, for tables and queues alike
        request = idp.token_requests[-1]
        assert request["resource"] == "https://storage.azure.com" and request["client_id"] == "client-7"

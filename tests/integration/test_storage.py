"""botcore.storage against Azurite: the SDK clients as the app builds them, and the one error seam."""

from __future__ import annotations

import asyncio
import socket
from datetime import UTC, datetime

import pytest
from aiohttp import web
from azure.storage.queue import QueueClient as SyncQueueClient

from botcore import storage
from botcore.errors import ConfigurationError, ConflictError, NotFoundError, UnavailableError
from botcore.storage import (
    EntityChangedError,
    EntityExistsError,
    EntityNotFoundError,
    EntityTooLargeError,
    StorageError,
    StorageUnavailableError,
    TransactionFailedError,
    etag_of,
)
from tests.botstack import wait_until


@pytest.fixture
async def clients(storage_connection_string, monkeypatch):
    monkeypatch.setenv("BotStorage", storage_connection_string)
    yield storage
    await storage.close_storage_clients()


@pytest.fixture
async def table(clients, unique_name):
    table = clients.get_table(unique_name)
    assert await table.create() is True
    assert await table.create() is False
    return table


ODD_KEYS = ["it's", "é漢字🙂", "a b", "~7E%25", "x" * 500]


@pytest.mark.parametrize("key", ODD_KEYS)
async def test_every_value_type_round_trips_under_odd_keys(table, key) -> None:
    now = datetime.now(UTC).replace(microsecond=123000)
    entity = {
        "PartitionKey": key,
        "RowKey": key,
        "s": "text",
        "b": True,
        "i": -5,
        "f": 1.5,
        "d": now,
        "raw": b"\x00\xff",
    }
    etag = await table.insert(entity)
    read = await table.get(key, key)
    assert etag_of(read) == etag
    assert dict(read) == entity


async def test_etags_guard_writes(table) -> None:
    etag = await table.insert({"PartitionKey": "p", "RowKey": "r", "n": 1})
    with pytest.raises(EntityExistsError) as exists:
        await table.insert({"PartitionKey": "p", "RowKey": "r"})
    assert isinstance(exists.value, ConflictError) and exists.value.service_code == "EntityAlreadyExists"
    newer = await table.merge({"PartitionKey": "p", "RowKey": "r", "m": 2}, etag)
    with pytest.raises(EntityChangedError) as changed:
        await table.replace({"PartitionKey": "p", "RowKey": "r", "n": 3}, etag)
    assert isinstance(changed.value, ConflictError) and changed.value.status == 412
    assert dict(await table.get("p", "r")) == {"PartitionKey": "p", "RowKey": "r", "n": 1, "m": 2}
    await table.replace({"PartitionKey": "p", "RowKey": "r", "n": 3}, newer)
    assert "m" not in await table.get("p", "r")
    with pytest.raises(EntityChangedError):
        await table.delete("p", "r", newer)
    await table.delete("p", "r")
    await table.delete("p", "r")  # gone already: fine
    with pytest.raises(EntityNotFoundError) as missing:
        await table.get("p", "r")
    assert isinstance(missing.value, NotFoundError)
    with pytest.raises(EntityNotFoundError):
        await table.merge({"PartitionKey": "p", "RowKey": "r", "n": 1})
    await table.upsert({"PartitionKey": "p", "RowKey": "r", "n": 4})
    await table.upsert({"PartitionKey": "p", "RowKey": "r", "o": 5}, merge=True)
    assert dict(await table.get("p", "r")) == {"PartitionKey": "p", "RowKey": "r", "n": 4, "o": 5}


async def test_oversized_values_and_missing_tables_are_typed_errors(clients, table) -> None:
    with pytest.raises(EntityTooLargeError) as caught:
        await table.insert({"PartitionKey": "p", "RowKey": "big", "v": "x" * 40_000})
    assert caught.value.service_code == "PropertyValueTooLarge" and "64KB" in str(caught.value)
    with pytest.raises(StorageError) as caught:
        await clients.get_table("nosuchtable").get("p", "r")
    assert caught.value.service_code == "TableNotFound" and not isinstance(caught.value, EntityNotFoundError)


async def test_queries_page_with_a_storable_cursor(table) -> None:
    await table.transact([("create", {"PartitionKey": "q", "RowKey": f"{i:03}", "n": i}) for i in range(100)])
    await table.transact([("create", {"PartitionKey": "q", "RowKey": f"{i:03}", "n": i}) for i in range(100, 130)])
    first, cursor = await table.page("PartitionKey eq 'q' and n ge 10", select=["RowKey"], page_size=50)
    assert [e["RowKey"] for e in first] == [f"{i:03}" for i in range(10, 60)] and set(first[0]) == {"RowKey"}
    assert isinstance(cursor, str)
    rest = [e["n"] async for e in table.query("PartitionKey eq 'q' and n ge 60", page_size=7)]
    assert rest == list(range(60, 130))
    second, _ = await table.page("PartitionKey eq 'q' and n ge 10", page_size=50, cursor=cursor)
    assert second[0]["n"] == 60
    assert await table.page("PartitionKey eq 'nothing'") == ([], None)
    assert len([e async for e in table.query(None, page_size=40)]) == 130


async def test_a_failed_transaction_applies_nothing_and_names_the_operation(table) -> None:
    await table.insert({"PartitionKey": "t", "RowKey": "003"})
    with pytest.raises(TransactionFailedError) as caught:
        await table.transact([("create", {"PartitionKey": "t", "RowKey": f"{i:03}"}) for i in range(6)])
    assert caught.value.status == 409 and caught.value.service_code == "EntityAlreadyExists" and caught.value.index == 3
    assert [e["RowKey"] async for e in table.query("PartitionKey eq 't'")] == ["003"]
    etag = etag_of(await table.get("t", "003"))
    await table.transact(
        [
            (
                "update",
                {"PartitionKey": "t", "RowKey": "003", "m": 1},
                {"mode": "merge", "etag": etag, "match_condition": _if_not_modified()},
            ),
            ("upsert", {"PartitionKey": "t", "RowKey": "004", "n": 4}),
        ]
    )
    with pytest.raises(TransactionFailedError) as caught:
        await table.transact(
            [
                ("delete", {"PartitionKey": "t", "RowKey": "004"}),
                (
                    "update",
                    {"PartitionKey": "t", "RowKey": "003"},
                    {"mode": "replace", "etag": etag, "match_condition": _if_not_modified()},
                ),
            ]
        )
    assert caught.value.status == 412 and caught.value.index == 1
    assert [e["RowKey"] async for e in table.query("PartitionKey eq 't'")] == ["003", "004"]


def _if_not_modified():
    from azure.core import MatchConditions

    return MatchConditions.IfNotModified


async def test_queue_messages_are_plain_text_with_a_delay(clients, storage_connection_string, unique_name) -> None:
    queue = clients.get_queue(unique_name)
    assert await queue.create() is True and await queue.create() is False
    text = '{"text": "<b>&amp; \'quotes\'</b> é漢字🙂"}'
    await queue.send(text)
    await queue.send("later", delay=1.2)
    reader = SyncQueueClient.from_connection_string(storage_connection_string, unique_name)  # as the trigger reads

    def received() -> list[str]:
        return [m.content for m in reader.receive_messages(max_messages=32)]

    assert received() == [text]
    later: list[str] = []
    assert await asyncio.to_thread(wait_until, lambda: later.extend(received()) or later, 5)
    assert later == ["later"]
    with pytest.raises(StorageError) as caught:
        await clients.get_queue("nosuchqueue").send("x")
    assert caught.value.service_code == "QueueNotFound"


async def test_a_delay_longer_than_queue_storage_allows_is_cut_to_its_limit(
    clients, storage_connection_string, unique_name, caplog
) -> None:
    """Queue Storage refuses to hide a message for more than 7 days; a longer delay (a pause that long, or an
    infinite one) is cut to that and said in the log, and a NaN is no delay."""
    queue = clients.get_queue(unique_name)
    await queue.create()
    for delay in (30 * 86400, float("inf")):
        assert await queue.send("far", delay=delay)
    assert caplog.text.count("is more than Queue Storage allows; the message is hidden for 604800s") == 2
    await queue.send("now", delay=float("nan"))
    reader = SyncQueueClient.from_connection_string(storage_connection_string, unique_name)
    assert [m.content for m in reader.receive_messages(max_messages=32)] == ["now"]
    assert reader.get_queue_properties().approximate_message_count == 3


@pytest.fixture
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _serve(port: int, handler) -> web.AppRunner:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


@pytest.mark.slow
async def test_transient_failures_are_retried_then_reported(free_port, monkeypatch) -> None:
    answers = [503, 500, 200]
    seen: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(request.method)
        status = answers.pop(0) if answers else 503
        if status == 200:
            return web.json_response({"PartitionKey": "p", "RowKey": "r", "odata.etag": 'W/"1"'})
        return web.json_response(
            {"odata.error": {"code": "ServerBusy", "message": {"value": "busy"}}},
            status=status,
            headers={"x-ms-error-code": "ServerBusy"},
        )

    monkeypatch.setenv(
        "BotStorage",
        f"AccountName=acct;AccountKey=a2V5;TableEndpoint=http://127.0.0.1:{free_port}/acct;"
        f"QueueEndpoint=http://127.0.0.1:{free_port}/acct",
    )
    runner = await _serve(free_port, handler)
    try:
        table = storage.get_table("t")
        assert etag_of(await table.get("p", "r")) == 'W/"1"' and len(seen) == 3
        with pytest.raises(StorageUnavailableError) as caught:
            await table.get("p", "r")
        assert caught.value.status == 503 and caught.value.service_code == "ServerBusy" and len(seen) == 6
        assert isinstance(caught.value, UnavailableError)
    finally:
        await runner.cleanup()
    with pytest.raises(StorageUnavailableError) as caught:  # nothing listens any more
        await storage.get_table("t").get("p", "r")
    assert caught.value.status == 0
    with pytest.raises(StorageUnavailableError):
        await storage.get_queue("q").send("x")
    await storage.close_storage_clients()


async def test_every_storage_call_maps_the_sdks_errors_and_names_the_call(free_port, monkeypatch) -> None:
    """A refusal (403, which is not retried) through each public Table and Queue method: botcore's error, with
    the service's code, and a message that says which call on which table or queue failed."""
    headers = {"x-ms-error-code": "AuthorizationFailure"}

    async def refuse(request: web.Request) -> web.Response:
        if request.path.startswith("/acct/q"):  # the queue service answers in XML
            return web.Response(
                status=403,
                content_type="application/xml",
                headers=headers,
                text=(
                    "<?xml version='1.0' encoding='utf-8'?><Error><Code>AuthorizationFailure</Code>"
                    "<Message>refused</Message></Error>"
                ),
            )
        return web.json_response(
            {"odata.error": {"code": "AuthorizationFailure", "message": {"value": "refused"}}},
            status=403,
            headers=headers,
        )

    monkeypatch.setenv(
        "BotStorage",
        f"AccountName=acct;AccountKey=a2V5;TableEndpoint=http://127.0.0.1:{free_port}/acct;"
        f"QueueEndpoint=http://127.0.0.1:{free_port}/acct",
    )
    runner = await _serve(free_port, refuse)
    table, queue = storage.get_table("t"), storage.get_queue("q")
    entity = {"PartitionKey": "p", "RowKey": "r"}

    async def query() -> None:
        async for _ in table.query("PartitionKey eq 'p'"):
            pass

    calls = [
        ("table t: read", lambda: table.get("p", "r")),
        ("table t: insert", lambda: table.insert(entity)),
        ("table t: replace", lambda: table.replace(entity, 'W/"1"')),
        ("table t: merge", lambda: table.merge(entity)),
        ("table t: upsert", lambda: table.upsert(entity)),
        ("table t: delete", lambda: table.delete("p", "r")),
        ("table t: query", lambda: table.page("PartitionKey eq 'p'")),
        ("table t: query", query),
        ("table t: transaction", lambda: table.transact([("upsert", entity)])),
        ("table t: create", table.create),
        ("queue q: put", lambda: queue.send("x")),
        ("queue q: create", queue.create),
    ]
    try:
        for what, call in calls:
            with pytest.raises(StorageUnavailableError) as caught:
                await call()
            assert caught.value.status == 403 and caught.value.service_code == "AuthorizationFailure", what
            assert f"{what}: refused" in str(caught.value), (what, str(caught.value))
    finally:
        await runner.cleanup()
        await storage.close_storage_clients()


async def test_a_managed_identity_without_a_token_is_storage_unavailable_never_a_missing_entity(monkeypatch) -> None:
    """No IDENTITY_ENDPOINT: ConfigurationError naming it. The identity endpoint refuses (a wrong header: 400)
    or answers 404: botcore's StorageUnavailableError naming its answer, never a missing entity; the storage
    service is never reached."""
    import os

    from botcore.settings import get_settings
    from devhost.identity import IdentityProvider

    for name in [k for k in os.environ if k.startswith(("BotStorage", "AzureWebJobsStorage"))]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("BotStorage__tableServiceUri", "https://127.0.0.1:9/acct")  # never reached
    monkeypatch.setenv("BotStorage__queueServiceUri", "https://127.0.0.1:9/acct")
    monkeypatch.setenv("BotStorage__credential", "managedidentity")
    monkeypatch.delenv("IDENTITY_ENDPOINT", raising=False)
    with pytest.raises(ConfigurationError, match="IDENTITY_ENDPOINT"):  # no managed identity at all
        storage.get_table("t")
    with IdentityProvider() as idp:
        monkeypatch.setenv("IDENTITY_ENDPOINT", f"{idp.base_url}/msi/token")
        monkeypatch.setenv("IDENTITY_HEADER", "not-the-header")
        get_settings.cache_clear()
        try:
            with pytest.raises(StorageUnavailableError) as refused:
                await storage.get_table("t").get("p", "r")
            assert refused.value.status == 0 and refused.value.service_code is None
            assert "managed identity: no token for https://storage.azure.com/.default (HTTP 400)" in str(refused.value)
            await storage.close_storage_clients()
            monkeypatch.setenv("IDENTITY_HEADER", idp.msi_header)
            idp.fail_token_requests(404)
            with pytest.raises(StorageUnavailableError) as missing:
                await storage.get_table("t").get("p", "r")
            assert missing.value.status == 0
            assert "no token for https://storage.azure.com/.default (HTTP 404)" in str(missing.value)
            assert len(idp.token_requests) == 1  # the refused header never got that far
        finally:
            await storage.close_storage_clients()


IDENTITY_CHILD = """
import asyncio, json, sys
from botcore import storage
from botcore.protocol.http import close_http_client

async def main():
    table = storage.get_table("conversations")
    reads = [(await table.get("p", "r"))["n"] for _ in range(2)]
    message = await storage.get_queue("bot-jobs").send("{}")
    await storage.close_storage_clients()
    await close_http_client()
    print(json.dumps({"reads": reads, "message": message, "azure-identity": "azure.identity" in sys.modules}))

asyncio.run(main())
"""


async def test_identity_based_storage_sends_one_managed_identity_token_to_both_services(
    idp, free_port, tmp_path
) -> None:
    """The SDK sends tokens over TLS only: the stand-in service serves a certificate the child process trusts."""
    import json
    import os
    import sys

    from tests.hostproc import REPO
    from tests.tls import make_tls

    seen: list[str] = []

    async def service(request: web.Request) -> web.Response:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        seen.append(token)
        if not idp.is_valid_access_token(token):
            return web.json_response(
                {"odata.error": {"code": "AuthenticationFailed", "message": {"value": "no"}}}, status=403
            )
        if request.path.endswith("/messages"):  # the queue service, at the same address here
            return web.Response(
                status=201,
                content_type="application/xml",
                text=(
                    "<QueueMessagesList><QueueMessage><MessageId>m1</MessageId><PopReceipt>p</PopReceipt>"
                    "<InsertionTime>Tue, 01 Dec 2026 10:00:00 GMT</InsertionTime>"
                    "<ExpirationTime>Tue, 08 Dec 2026 10:00:00 GMT</ExpirationTime>"
                    "<TimeNextVisible>Tue, 01 Dec 2026 10:00:00 GMT</TimeNextVisible>"
                    "</QueueMessage></QueueMessagesList>"
                ),
            )
        return web.json_response({"PartitionKey": "p", "RowKey": "r", "n": 1, "odata.etag": 'W/"1"'})

    tls = make_tls(tmp_path)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", service)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", free_port, ssl_context=tls.server_context()).start()
    requests_before = len(idp.token_requests)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BotStorage", "AzureWebJobsStorage"))}
    env.update(
        {
            "BotStorage__tableServiceUri": f"https://127.0.0.1:{free_port}/acct",
            "BotStorage__queueServiceUri": f"https://127.0.0.1:{free_port}/acct",
            "BotStorage__credential": "managedidentity",
            "BotStorage__clientId": "client-7",
            "IDENTITY_ENDPOINT": f"{idp.base_url}/msi/token",
            "IDENTITY_HEADER": idp.msi_header,
            "SSL_CERT_FILE": str(tls.ca_file),
            "PYTHONPATH": str(REPO),
        }
    )
    try:
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            IDENTITY_CHILD,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(child.communicate(), 60)
    finally:
        await runner.cleanup()
    assert child.returncode == 0, err.decode()[-3000:]
    assert json.loads(out) == {"reads": [1, 1], "message": "m1", "azure-identity": True}
    assert len(seen) == 3 and seen[0] and len(set(seen)) == 1  # one token, cached, for tables and queues
    assert len(idp.token_requests) == requests_before + 1
    request = idp.token_requests[-1]
    assert request["resource"] == "https://storage.azure.com" and request["client_id"] == "client-7"


def test_an_app_on_a_connection_string_never_imports_azure_identity() -> None:
    """Cold start: only an identity-based connection pays for azure-identity's import, even once the storage
    clients are built."""
    import os
    import subprocess
    import sys

    from tests.hostproc import REPO

    child = """
import asyncio, sys
import function_app
from botcore import storage

async def main():
    storage.get_table("conversations"), storage.get_queue("bot-jobs")
    await storage.close_storage_clients()

asyncio.run(main())
print("azure.identity" in sys.modules)
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BotStorage", "AzureWebJobsStorage"))}
    env.update({"BotStorage": "UseDevelopmentStorage=true", "PYTHONPATH": str(REPO)})
    result = subprocess.run(
        [sys.executable, "-c", child], env=env, cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["False"]

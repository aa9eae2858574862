"""The lean Queue client against Azurite: round trips, visibility, errors, the Azure SDK's view."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiohttp import web
from azure.storage.queue import QueueClient as SdkQueueClient

from botcore.queues import MessageNotFoundError, QueueClient, QueueNotFoundError
from botcore.tables import StorageError, StorageUnavailableError

TEXT = '{"text": "<b>&amp; \'quotes\'</b> é漢字🙂", "n": 1}'


@pytest.fixture
async def queue(storage_connection_string, unique_name):
    async with aiohttp.ClientSession() as session:
        client = QueueClient.from_connection_string(storage_connection_string, unique_name, session)
        assert await client.create() is True
        assert await client.create() is False
        yield client


async def test_a_message_round_trips_and_its_lease_is_honoured(queue) -> None:
    sent = await queue.send_message(TEXT)
    [got] = await queue.receive_messages(5, visibility_timeout=30)
    assert (got.id, got.content, got.dequeue_count) == (sent.id, TEXT, 1)
    assert got.inserted_on and got.expires_on and got.next_visible_on and got.next_visible_on > got.inserted_on
    assert await queue.receive_messages(5) == []  # leased
    released = await queue.update_message(got, visibility_timeout=0)
    assert released.pop_receipt != got.pop_receipt
    [again] = await queue.receive_messages(5)
    assert (again.id, again.content, again.dequeue_count) == (sent.id, TEXT, 2)
    with pytest.raises(MessageNotFoundError):
        await queue.delete_message(got)  # an old pop receipt: another receiver holds it now
    await queue.delete_message(again)
    assert await queue.receive_messages(5) == []


async def test_a_delayed_message_appears_after_its_delay(queue) -> None:
    await queue.send_message("later", visibility_timeout=1)
    assert await queue.receive_messages() == []
    await asyncio.sleep(1.3)
    assert [m.content for m in await queue.receive_messages()] == ["later"]


async def test_at_most_32_messages_per_receive(queue) -> None:
    await asyncio.gather(*(queue.send_message(str(i)) for i in range(40)))
    first = await queue.receive_messages(100)
    second = await queue.receive_messages(100)
    assert len(first) == 32 and len(second) == 8
    assert sorted(int(m.content) for m in first + second) == list(range(40))


async def test_the_azure_sdk_reads_what_it_writes_and_the_other_way_round(queue, storage_connection_string) -> None:
    sdk = SdkQueueClient.from_connection_string(storage_connection_string, queue.queue)
    sdk.send_message(TEXT)
    assert [m.content for m in await queue.receive_messages()] == [TEXT]
    await queue.send_message(TEXT + "!")
    assert [m.content for m in sdk.receive_messages()] == [TEXT + "!"]


async def test_a_missing_queue_is_a_typed_error(storage_connection_string, unique_name) -> None:
    async with aiohttp.ClientSession() as session:
        missing = QueueClient.from_connection_string(storage_connection_string, unique_name, session)
        with pytest.raises(QueueNotFoundError) as caught:
            await missing.send_message("x")
        assert caught.value.status == 404


async def test_transient_failures_are_retried_then_reported(caplog) -> None:
    answers = [503, 200, 503, 503, 503, 299]
    seen: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization", ""))
        answer = answers.pop(0) if answers else 503
        if answer == 299:  # a 200 whose body is not what the queue service sends
            return web.Response(status=200, content_type="text/html", text="<html>captive portal")
        if answer == 200:
            return web.Response(status=201, content_type="application/xml", text=(
                "<QueueMessagesList><QueueMessage><MessageId>m1</MessageId><PopReceipt>p1</PopReceipt>"
                "</QueueMessage></QueueMessagesList>"))
        return web.Response(status=503, content_type="application/xml", headers={"x-ms-error-code": "ServerBusy"},
                            text="<Error><Code>ServerBusy</Code><Message>busy\nRequestId:1</Message></Error>")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    connection = f"AccountName=acct;AccountKey=a2V5;QueueEndpoint=http://127.0.0.1:{port}/acct"
    try:
        async with aiohttp.ClientSession() as session:
            client = QueueClient.from_connection_string(connection, "q", session)
            assert (await client.send_message("x")).id == "m1"
            assert len(seen) == 2 and all(a.startswith("SharedKeyLite acct:") for a in seen)
            assert "queue q: POST failed (HTTP 503 ServerBusy: busy); attempt 2 of 3" in caplog.text
            with pytest.raises(StorageUnavailableError) as caught:
                await client.receive_messages()
            assert caught.value.code == "ServerBusy" and len(seen) == 5
            with pytest.raises(StorageError, match="not a message list"):
                await client.receive_messages()
    finally:
        await runner.cleanup()

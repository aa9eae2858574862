"""A job is one trace across its queue hops, and a broadcast is counted: botcore's edges in this process, as the
Functions host calls them, recording into the OpenTelemetry SDK's in-memory exporter and metric reader, against an
Azurite of its own (no local host takes the queues' messages), the local identity provider and the fake Connector.

The test plays the host: it calls the HTTP API's edge with the invocation's trace context (the host's, which
continues the caller's), takes each message off the jobs and sends queues and hands it to the queue functions'
edges with a trace context of a new invocation's own, as the host gives every queue invocation.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from typing import Any

import pytest

from tests.botstack import BotStack, new_tenant, stack_of_its_own

TEXT = "telemetry is one trace"


def new_traceparent() -> str:
    return f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"


def trace_of(traceparent: str) -> int:
    return int(traceparent.split("-")[1], 16)


def span_of(traceparent: str) -> int:
    return int(traceparent.split("-")[2], 16)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):
    with stack_of_its_own(tmp_path_factory.mktemp("telemetry"), hosted=False) as stack:
        yield stack


class Host:
    """The Functions host's part: queue messages to the queue functions' edges, each invocation a trace of its own."""

    def __init__(self, stack: BotStack) -> None:
        self.stack = stack
        self.invocations: list[str] = []  # the trace context of each queue invocation

    async def run_jobs(self) -> list[str]:
        from botcore.worker import handle_job_message

        async def handled() -> bool:
            return True

        return await self._drain("bot-jobs", handle_job_message, handled)

    async def run_sends_until(self, done: Any, timeout: float = 30.0) -> list[str]:
        from botcore.worker import handle_send_message

        return await self._drain("bot-sends", handle_send_message, done, timeout)

    async def _drain(self, queue: str, edge: Any, done: Any, timeout: float = 15.0) -> list[str]:
        """Hand each message of `queue` to `edge` as it becomes visible, until `done()` after one was handled."""
        from azure.storage.queue.aio import QueueClient

        outcomes: list[str] = []
        deadline = time.monotonic() + timeout
        async with QueueClient.from_connection_string(self.stack.storage_connection, queue) as client:
            while time.monotonic() < deadline:
                received = [m async for m in client.receive_messages(max_messages=32, visibility_timeout=60)]
                for message in received:
                    self.invocations.append(new_traceparent())
                    outcomes.append(
                        await edge(message.content.encode(), message.id, message.dequeue_count, self.invocations[-1])
                    )
                    await client.delete_message(message)
                if outcomes and await done():
                    return outcomes
                if not received:
                    await asyncio.sleep(0.1)
        raise AssertionError(f"{queue}: not done within {timeout} s; handled {outcomes}")


def metric_points(reader: Any, name: str) -> list[Any]:
    data = reader.get_metrics_data()
    return [
        point
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == name
        for point in metric.data.data_points
    ]


def test_a_broadcast_is_one_trace_from_the_request_to_every_send_and_is_counted(stack: BotStack, recorded):
    from opentelemetry.trace import SpanKind, StatusCode

    from botcore.delivery.pacing import pace_key

    spans, reader = recorded
    # One user in two tenants: 150 conversations in one (two batches: the first sent at once, one queued), and one
    # in the other, whose first send is answered 429 (its batch of one: nothing else is handed on with it).
    user, tenant, throttled_tenant = f"29:{new_tenant()}", new_tenant(), new_tenant()
    ids = stack.seed(150, tenant_id=tenant, user_id=user, prefix="traced")
    ids += stack.seed(1, tenant_id=throttled_tenant, user_id=user, prefix="throttled")
    spans.clear()  # the seeding's storage calls
    stack.channel.fail(429, conversation_id=ids[-1], retry_after=1)
    caller = new_traceparent()  # the Functions host's context of the request: it continues the caller's
    host = Host(stack)
    job_id = asyncio.run(broadcast(host, stack, {"userId": user}, len(ids), caller))
    finished = spans.get_finished_spans()
    status = asyncio.run(status_of(job_id))
    assert (status["state"], status["sent"], status["failed"], status["pending"]) == ("done", 151, 0, 0), status
    assert sorted(r.conversation_id for r in stack.channel.activities() if r.status == 200) == sorted(ids)

    trace = trace_of(caller)
    assert {s.context.trace_id for s in finished} == {trace}  # every span, in every hop, is the job's trace
    assert {s.instrumentation_scope.name for s in finished} == {"botcore"}  # none of the Azure SDK's own
    (api,) = [s for s in finished if s.name == "POST /api/notify"]
    assert api.parent.span_id == span_of(caller) and api.kind == SpanKind.INTERNAL
    assert api.attributes["http.response.status_code"] == 202
    (job,) = [s for s in finished if s.name == "job notify"]
    assert job.kind == SpanKind.CONSUMER and job.parent.span_id == api.context.span_id
    assert job.attributes["bot.job.id"] == job_id
    (link,) = job.links  # to the jobs invocation the Functions host recorded
    assert link.context.trace_id == trace_of(host.invocations[0])
    batches = [s for s in finished if s.name == "send batch"]
    assert len(batches) >= 2 and all(s.kind == SpanKind.CONSUMER for s in batches)  # the queued one, the retry
    assert {s.attributes["bot.pace_key"] for s in batches} == {
        pace_key("msteams", t) for t in (tenant, throttled_tenant)
    }
    hops = {s.context.span_id for s in [job, *batches]}
    assert all(s.parent.span_id in hops for s in batches)  # a batch made by the job, or by a batch (the retry)
    sends = [s for s in finished if s.name == "POST v3/conversations/{conversationId}/activities"]
    assert len(sends) == 152 and all(s.kind == SpanKind.CLIENT and s.parent.span_id in hops for s in sends)
    (throttled,) = [s for s in sends if s.attributes["http.response.status_code"] == 429]
    assert throttled.status.status_code == StatusCode.ERROR
    assert "{conversationId}" in sends[0].attributes["url.full"]  # a template: no conversation's id
    storage = [s for s in finished if s.name.startswith(("table ", "queue "))]
    assert any(s.name.startswith("queue bot-sends: put") for s in storage)
    assert any(s.name == "table botdeliveries: insert" for s in storage)
    assert all(s.kind == SpanKind.CLIENT and s.attributes["az.namespace"] == "Microsoft.Storage" for s in storage)

    outcomes = {p.attributes["bot.outcome"]: p.value for p in metric_points(reader, "bot.messages")}
    assert outcomes == {"sent": 151, "retrying": 1}
    assert [(p.value, p.attributes) for p in metric_points(reader, "bot.connector.throttled")] == [
        (1, {"url.template": "v3/conversations/{conversationId}/activities"})
    ]
    lags = {p.attributes["bot.pace_key"]: p.count for p in metric_points(reader, "bot.pace.lag")}
    assert lags == {pace_key("msteams", tenant): 150, pace_key("msteams", throttled_tenant): 2}


async def broadcast(host: Host, stack: BotStack, target: dict[str, str], targets: int, caller: str) -> str:
    """POST /api/notify to the target in the caller's trace, then every message it leads to, until each of its
    `targets` conversations has the message; the job's id."""
    from botcore.api import handle_notify
    from botcore.app import close

    try:
        answer = await handle_notify(
            {"Content-Type": "application/json"},
            json.dumps({"text": TEXT, "target": target}).encode(),
            invocation_id="invocation-1",
            traceparent=caller,
        )
        assert answer.status == 202, answer.body

        async def all_sent() -> bool:
            return len({r.conversation_id for r in stack.channel.activities() if r.status == 200}) == targets

        await host.run_jobs()
        await host.run_sends_until(all_sent)
        return str(answer.body["id"])
    finally:
        await close()


async def status_of(job_id: str) -> dict[str, Any]:
    from botcore.app import bot_for, close

    try:
        status = await bot_for().delivery.ledger.status(job_id)
        assert status is not None
        return status.to_dict()
    finally:
        await close()


def test_a_job_message_without_trace_context_runs_in_the_invocations_trace(stack: BotStack, recorded):
    from opentelemetry.trace import SpanKind

    from botcore.app import close
    from botcore.jobs import Target, new_job
    from botcore.keys import conversation_key
    from botcore.worker import handle_job_message

    spans, _ = recorded
    (cid,) = stack.seed(1, tenant_id=new_tenant(), prefix="untraced")
    message = new_job("notify", Target(conversation=conversation_key("msteams", cid)), text=TEXT).to_json()
    assert "traceparent" not in json.loads(message)  # made outside any trace, as another service's job may be
    invocation = new_traceparent()

    async def run() -> str:
        try:
            return await handle_job_message(message.encode(), "untraced-1", 1, invocation)
        finally:
            await close()

    outcome = asyncio.run(run())
    assert outcome.startswith("sent 1"), outcome
    assert stack.channel.texts(cid) == [TEXT]
    (job,) = [s for s in spans.get_finished_spans() if s.name == "job notify"]
    assert job.kind == SpanKind.INTERNAL and job.parent.span_id == span_of(invocation)  # inside the host's request
    assert job.context.trace_id == trace_of(invocation) and not job.links


def test_messages_that_fail_for_good_are_counted_as_failed(stack: BotStack, recorded):
    """bot.messages by outcome: sent, failed (here a 400: refused for good) and retrying are the ledger's statuses."""
    _, reader = recorded
    user, tenant = f"29:{new_tenant()}", new_tenant()
    ids = stack.seed(3, tenant_id=tenant, user_id=user, prefix="failing")
    stack.channel.fail(400, "BadArgument", conversation_id=ids[0])
    job_id = asyncio.run(notify_and_run_jobs(Host(stack), {"userId": user}))
    status = asyncio.run(status_of(job_id))
    assert (status["state"], status["sent"], status["failed"]) == ("done", 2, 1), status
    outcomes = {p.attributes["bot.outcome"]: p.value for p in metric_points(reader, "bot.messages")}
    assert outcomes == {"sent": 2, "failed": 1}


def test_each_turn_records_its_latency(stack: BotStack, recorded):
    from botcore.app import close
    from botcore.endpoint import handle_messages

    _, reader = recorded
    cid = f"turn-{secrets.token_hex(6)}"

    async def turn() -> int:
        try:
            headers = {"Authorization": f"Bearer {stack.token()}", "Content-Type": "application/json"}
            return (await handle_messages(headers, json.dumps(stack.activity(cid, "help")).encode())).status
        finally:
            await close()

    started = time.perf_counter()
    assert [asyncio.run(turn()) for _ in range(2)] == [200, 200]
    elapsed = time.perf_counter() - started
    (point,) = metric_points(reader, "bot.turn.duration")
    assert point.count == 2 and 0 < point.sum <= elapsed


async def notify_and_run_jobs(host: Host, target: dict[str, str]) -> str:
    """POST /api/notify to the target, then the jobs queue's messages it leads to; the job's id."""
    from botcore.api import handle_notify
    from botcore.app import close

    try:
        answer = await handle_notify(
            {"Content-Type": "application/json"},
            json.dumps({"text": TEXT, "target": target}).encode(),
            invocation_id="invocation-1",
            traceparent=new_traceparent(),
        )
        assert answer.status == 202, answer.body
        await host.run_jobs()
        return str(answer.body["id"])
    finally:
        await close()

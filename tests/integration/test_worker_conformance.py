"""The app against Microsoft's own Python worker: this test plays the Functions host's side of the protocol.

azure-functions-runtime (Python 3.13 and later) is the library half of the worker that runs the app in
Azure. The test initialises it on the repository, checks the metadata it reports for all eight functions
against the one table of them, then invokes each kind of trigger with protobuf messages serialised and
parsed both ways, shaped as the .NET host shapes them (devhost/triggers.py, devhost/worker.py), against
an Azurite of its own (no local host polls its queues), the local identity provider and the fake Connector.
A failed invocation fails its test with the worker's own exception text.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest

from tests.botstack import BotStack, stack_of_its_own
from tests.functions_table import FUNCTIONS, table_of
from tests.hostproc import REPO

pytestmark = pytest.mark.skipif(
    sys.version_info < (3, 13),
    reason=(
        "Microsoft's Python worker library (azure-functions-runtime) needs Python 3.13 or later; scripts/setup "
        "uses 3.13 where it finds it"
    ),
)


class Host:
    """The host's side: the worker initialised on the repository, with the app's settings in the environment."""

    def __init__(self, stack: BotStack, worker: Any, functions: list[Any]) -> None:
        self.stack, self.worker = stack, worker
        self.functions = {f.name: f for f in functions}

    async def invoke(self, name: str, trigger: Any) -> Any:
        """Raises the worker's error (its text and stack trace) when the invocation failed."""
        return await self.worker.invoke(self.functions[name], trigger, str(uuid.uuid4()))

    async def post(self, name: str, path: str, body: Any, headers: dict[str, str]) -> tuple[int, Any]:
        from devhost.triggers import http_request

        answer = await self.invoke(
            name,
            http_request(
                "POST",
                f"http://127.0.0.1:7071/api/{path}",
                {"Content-Type": "application/json", **headers}.items(),
                [],
                {},
                json.dumps(body).encode(),
            ),
        )
        return answer.status, json.loads(answer.body) if answer.body else None

    async def take(self, queue: str, timeout: float = 15.0) -> Any:
        """The next message of a queue, received as the host receives it (hidden while it is handled)."""
        from azure.storage.queue.aio import QueueClient

        async with QueueClient.from_connection_string(self.stack.storage_connection, queue) as client:
            deadline = time.monotonic() + timeout
            while (message := await client.receive_message(visibility_timeout=60)) is None:
                assert time.monotonic() < deadline, f"no message on {queue} within {timeout} s"
                await asyncio.sleep(0.1)
            return message

    def as_delivered(self, message: Any) -> Any:
        """A queue message as the host hands it over: its text as a string, DequeueCount, Id, PopReceipt and
        the times as JSON trigger metadata (host.json's messageEncoding is none)."""
        from devhost.triggers import queue_message

        return queue_message(
            message.id,
            message.content.encode(),
            message.dequeue_count,
            message.pop_receipt,
            message.inserted_on,
            message.expires_on,
            message.next_visible_on,
        )


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory):
    from devhost.app_loader import functions_of
    from devhost.worker import Worker

    with stack_of_its_own(tmp_path_factory.mktemp("worker"), hosted=False) as stack:
        worker = Worker(REPO)
        # The worker imports and indexes function_app afresh, as in a process of its own: the
        # azure-functions library refuses to list one app's functions twice.
        imported = sys.modules.pop("function_app", None)
        try:
            functions = functions_of(asyncio.run(worker.start()))
        finally:
            if imported is not None:
                sys.modules["function_app"] = imported
        yield Host(stack, worker, functions)


@pytest.fixture
async def app(host: Host):
    """The host, on this test's event loop; the app's clients for this loop are closed after it."""
    from botcore.app import close

    yield host
    await close()


def test_the_worker_reports_all_eight_functions_as_the_table_says(host: Host) -> None:
    metadata = {m.name: m for m in host.worker.metadata}
    assert table_of((name, [json.loads(raw) for raw in m.raw_bindings]) for name, m in metadata.items()) == FUNCTIONS
    protos = host.worker.protos
    for name, m in metadata.items():
        assert (m.language, m.entry_point, m.script_file, Path(m.directory)) == (
            "python",
            name,
            "function_app.py",
            REPO,
        ), name
        assert m.properties["worker_indexed"] == "True"
        directions = {b: protos.BindingInfo.Direction.Name(info.direction).upper() for b, info in m.bindings.items()}
        assert directions == dict(FUNCTIONS[name].bindings), name


async def test_a_message_activity_is_answered_through_the_worker(app: Host, conversation_id: str) -> None:
    stack = app.stack
    status, _ = await app.post(
        "messages", "messages", stack.activity(conversation_id, "help"), {"Authorization": f"Bearer {stack.token()}"}
    )
    assert status == 200
    assert stack.channel.texts(conversation_id)[-1].startswith("Here's what I understand:")


async def test_notify_then_its_job_then_the_rest_of_its_batches(app: Host) -> None:
    """POST /api/notify puts a job on the queue; the jobs function fans it out and sends the first batch of
    100 itself; the sends function sends the batch it queued."""
    stack, user = app.stack, f"29:conformance-{uuid.uuid4().hex[:8]}"
    conversations = await asyncio.to_thread(stack.seed, 101, user_id=user, prefix="conformance")
    status, body = await app.post(
        "notify",
        "notify",
        {"text": "through the worker", "target": {"userId": user}},
        {"x-functions-key": "any: the host checks keys, not the worker"},
    )
    assert status == 202 and body["status"] == f"/api/notify/{body['id']}"

    job = await app.take("bot-jobs")
    assert json.loads(job.content)["id"] == body["id"]
    assert await app.invoke("jobs", app.as_delivered(job)) is None
    sent = [c for c in conversations if stack.channel.texts(c) == ["through the worker"]]
    assert len(sent) == 100

    batch = await app.take("bot-sends")
    await app.invoke("sends", app.as_delivered(batch))
    assert all(stack.channel.texts(c) == ["through the worker"] for c in conversations)


async def test_the_reminder_timer_enqueues_a_due_reminder(app: Host, conversation_id: str) -> None:
    from datetime import datetime

    from devhost.triggers import timer_info

    stack = app.stack
    status, _ = await app.post(
        "messages", "messages", stack.activity(conversation_id, "hi"), {"Authorization": f"Bearer {stack.token()}"}
    )
    assert status == 200
    status, reminder = await app.post(
        "reminders",
        "reminders",
        {"text": "stretch", "target": {"conversation": stack.key(conversation_id)}, "inSeconds": 1},
        {"x-functions-key": "stack-key"},
    )
    assert status == 201
    now = datetime.now(UTC)
    await app.invoke("reminder_timer", timer_info(False, None, now))
    job = await app.take("bot-jobs")  # visible at its second
    assert json.loads(job.content)["id"] == reminder["id"]


async def test_the_retention_timer_runs_a_pass(app: Host) -> None:
    """A pass with nothing past the retention still sweeps the pace calendar (once a day): the sweep's row says
    it ended today."""
    from datetime import datetime

    from azure.data.tables.aio import TableClient

    from botcore.delivery.pacing import ROW_KEY, SWEEP_KEY
    from botcore.settings import PACING_TABLE
    from devhost.triggers import timer_info

    before = datetime.now(UTC)
    await app.invoke("retention_timer", timer_info(False, None, before))
    after = datetime.now(UTC)
    async with TableClient.from_connection_string(app.stack.storage_connection, PACING_TABLE) as calendar:
        sweep = await calendar.get_entity(SWEEP_KEY, ROW_KEY)
    assert sweep["sweptOn"] in (f"{before:%Y%m%d}", f"{after:%Y%m%d}")


@pytest.mark.parametrize(
    "shape, error",
    [
        ("a DequeueCount of TypedData's int kind", "unsupported TypeData kind: int"),
        ("a queue body as json", "unsupported combination of TypedData field 'json'"),
        ("a timer as a string", "unsupported combination of TypedData field 'string'"),
    ],
)
async def test_a_trigger_in_another_shape_fails_with_the_workers_own_error(app: Host, shape: str, error: str) -> None:
    from devhost.worker import WorkerError

    p = app.worker.protos
    metadata = {"Id": p.TypedData(json='"m1"'), "DequeueCount": p.TypedData(json="1")}
    name, data = "jobs", p.TypedData(string="{}")
    if shape.startswith("a DequeueCount"):
        metadata["DequeueCount"] = p.TypedData(int=1)
    elif shape.startswith("a queue body"):
        data = p.TypedData(json="{}")
    else:
        name, data, metadata = "reminder_timer", p.TypedData(string="{}"), {}
    with pytest.raises(WorkerError) as failure:
        await app.worker.invocation(app.functions[name], data, metadata)
    assert error in failure.value.message

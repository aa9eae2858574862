"""Telemetry of the app in the local host: a job's trace read from the console exporter's lines, from the caller's
`traceparent` header to the sends function; and an Application Insights that does not answer, which never slows
a turn or a send."""

from __future__ import annotations

import json
import secrets
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.botstack import BotStack, new_tenant, stack_of_its_own, status_of, wait_until

pytestmark = pytest.mark.slow

EXPORTER_TIMEOUT = 10.0  # seconds the Application Insights exporter waits for an answer (its own default)


def spans_in(log: str) -> list[dict[str, Any]]:
    """The spans the console exporter printed among the host's log lines, one JSON object a line."""
    spans = []
    for line in log.splitlines():
        if line.startswith('{"name"'):
            try:
                spans.append(json.loads(line))
            except ValueError:  # a line another thread's output cut into
                continue
    return spans


def metric_sums(log: str, name: str) -> dict[str, float]:
    """The last value the console exporter printed for each attribute set of a counter (as JSON text)."""
    sums: dict[str, float] = {}
    for line in log.splitlines():
        if not line.startswith('{"resource_metrics"'):
            continue
        for resource in json.loads(line)["resource_metrics"]:
            for scope in resource["scope_metrics"]:
                for metric in scope["metrics"]:
                    if metric["name"] == name:
                        for point in metric["data"]["data_points"]:
                            sums[json.dumps(point["attributes"], sort_keys=True)] = point["value"]
    return sums


def set_up(bot: BotStack, where: str) -> None:
    """A first turn, after which telemetry is set up in the host; until its log says it records to `where`."""
    conversation = f"warm-{uuid.uuid4().hex[:8]}"
    assert bot.say(conversation, "help").status_code == 200
    assert wait_until(lambda: f"telemetry: recording to {where}" in bot.host.log(), timeout=30), bot.host.log()[-3000:]


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BotStack]:
    env = {"BotTelemetry": "console", "OTEL_BSP_SCHEDULE_DELAY": "100", "OTEL_METRIC_EXPORT_INTERVAL": "500"}
    with stack_of_its_own(tmp_path_factory.mktemp("console"), extra_env=env) as bot:
        set_up(bot, "the console")
        yield bot


def test_a_jobs_trace_runs_from_the_callers_traceparent_through_the_jobs_and_sends_functions(console: BotStack):
    tenant = new_tenant()
    ids = console.seed(120, tenant_id=tenant)  # two batches: the first sent by the jobs function, one queued
    trace = secrets.token_hex(16)
    answer = httpx.post(
        f"{console.host.base_url}/api/notify",
        json={"text": "traced", "target": {"tenantId": tenant}},
        headers={"x-functions-key": "stack-key", "traceparent": f"00-{trace}-{secrets.token_hex(8)}-01"},
        timeout=30,
    )
    assert answer.status_code == 202, answer.text
    status_of(console, answer.json()["id"], state="done", sent=len(ids))

    def names() -> set[str]:
        return {s["name"] for s in spans_in(console.host.log()) if s["context"]["trace_id"] == f"0x{trace}"}

    expected = {"POST /api/notify", "job notify", "send batch", "POST v3/conversations/{conversationId}/activities"}
    assert wait_until(lambda: expected <= names(), timeout=15), (names(), console.host.log()[-3000:])
    assert any(name.startswith("table botdeliveries: ") for name in names())
    sent = json.dumps({"bot.outcome": "sent"})
    assert wait_until(lambda: metric_sums(console.host.log(), "bot.messages").get(sent, 0) >= len(ids), timeout=15)


class StalledServer:
    """An Application Insights that accepts connections and never answers."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.held: list[socket.socket] = []
        self.first: float | None = None  # when the first connection came (time.monotonic)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:  # closed
                return
            self.first = self.first or time.monotonic()
            self.held.append(connection)

    def close(self) -> None:
        self.listener.close()
        for connection in self.held:
            connection.close()


@pytest.fixture(scope="module")
def stalled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[BotStack, StalledServer]]:
    server = StalledServer()
    env = {
        "APPLICATIONINSIGHTS_CONNECTION_STRING": (
            f"InstrumentationKey={uuid.uuid4()};IngestionEndpoint=http://127.0.0.1:{server.port}/"
        ),
        "OTEL_BSP_SCHEDULE_DELAY": "100",  # spans go to the exporter a tenth of a second after they end
    }
    try:
        with stack_of_its_own(tmp_path_factory.mktemp("stalled"), extra_env=env) as bot:
            set_up(bot, "Application Insights")
            yield bot, server
            # Killed, not stopped: at its exit the SDK exports what it holds once more, and waits for each export's
            # answer (docs/deploy.md, "Telemetry"); what the process's exit costs is not what this module tests.
            bot.host.process.kill()
            bot.host.process.wait()
    finally:
        server.close()


def test_an_application_insights_that_never_answers_slows_no_turn_and_no_send(stalled) -> None:
    bot, server = stalled
    (cid,) = bot.seed(1, tenant_id=new_tenant())
    assert bot.say(f"spans-{uuid.uuid4().hex[:8]}", "help").status_code == 200  # spans for the exporter to send
    assert wait_until(lambda: server.first is not None, timeout=15), "the exporter never connected"
    started = time.monotonic()
    assert bot.say(f"turn-{uuid.uuid4().hex[:8]}", "help").status_code == 200
    turn = time.monotonic() - started
    started = time.monotonic()
    answer = bot.api("POST", "notify", {"text": "while exporting", "target": {"conversation": bot.key(cid)}})
    assert answer.status_code == 202, answer.text
    assert bot.wait_texts(cid, 1) == ["while exporting"]
    send = time.monotonic() - started
    # All the while, the exporter's first export waited for an answer: it gives up only after EXPORTER_TIMEOUT.
    assert server.first is not None and time.monotonic() - server.first < EXPORTER_TIMEOUT, (turn, send)
    assert turn < EXPORTER_TIMEOUT / 2 and send < EXPORTER_TIMEOUT / 2, (turn, send)
    print(f"with Application Insights stalled: a turn took {turn:.2f} s, a notification {send:.2f} s")

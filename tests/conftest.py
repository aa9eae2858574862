"""Shared fixtures: one Azurite per test session (each pytest-xdist worker is a session of its own), on free
ports in a temporary folder; the bot behind the local host; the identity provider, the HTTP client, a fresh
tenant.

The tests are grouped by what they run: `unit/` needs nothing but this process (local HTTP fakes at
most), `integration/` talks to Azurite, `e2e/` drives the function app in the local host over HTTP.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import uuid
from typing import TYPE_CHECKING

import pytest

from devhost.azurite import Azurite

if TYPE_CHECKING:
    from tests.botstack import BotStack


def _interrupt_on_sigterm(signum, frame):
    raise KeyboardInterrupt("SIGTERM")


# A CI timeout or `timeout` sends SIGTERM: turn it into an interrupt so that fixtures
# still stop Azurite and the hosts (they run in sessions of their own and would outlive us).
signal.signal(signal.SIGTERM, _interrupt_on_sigterm)

# A test that exports to a local Application Insights stand-in must not have the exporter call Microsoft's own
# services besides (its usage statistics, its remote configuration): this process and every host it starts.
os.environ.update(APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL="true", APPLICATIONINSIGHTS_CONTROLPLANE_DISABLED="true")


@pytest.fixture(autouse=True)
def fresh_settings():
    """botcore reads its settings once per process; a test that sets the environment gets them read anew."""
    from botcore.settings import get_settings

    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory):
    server = Azurite(tmp_path_factory.mktemp("azurite")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def storage_connection_string(azurite: Azurite) -> str:
    return azurite.connection_string


@pytest.fixture
def unique_name() -> str:
    """A table/queue-safe name no other test uses (tests share one Azurite)."""
    return "t" + uuid.uuid4().hex[:20]


@pytest.fixture(scope="session")
def bot(azurite: Azurite, tmp_path_factory: pytest.TempPathFactory):
    """The deployed shape of the bot, authenticated, behind the local host."""
    from tests.botstack import BotStack

    stack = BotStack(azurite.connection_string, tmp_path_factory.mktemp("bot"))
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def idp():
    """The local identity provider (OpenID metadata, signing keys, token endpoints), one per test module: a test
    counts its requests from where they stand when it starts."""
    from devhost.identity import IdentityProvider

    with IdentityProvider() as provider:
        yield provider


@pytest.fixture
async def http():
    """The bot's outbound HTTP client, with a timeout short enough for a test to hang a fake past it."""
    from botcore.protocol.http import new_http_client

    async with new_http_client(2.0, 64) as client:
        yield client


@pytest.fixture
def tenant() -> str:
    """A tenant no other test uses (tests share one storage account, and a tenant's pace)."""
    from tests.botstack import new_tenant

    return new_tenant()


@pytest.fixture
def conversation_id() -> str:
    """A fresh Teams-like conversation id per test (ids with ':' '@' ';' exercise encoding)."""
    return f"19:{uuid.uuid4().hex}@thread.tacv2;messageid=1"


@pytest.fixture
def second_instance(bot: BotStack, monkeypatch):
    """botcore in this process, on its own event loop: to the store, another instance of the app."""
    from botcore.app import close
    from botcore.settings import get_settings

    for name, value in bot.env.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    def run(coroutine):
        return asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coroutine, loop))

    yield run
    asyncio.run_coroutine_threadsafe(close(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()
    get_settings.cache_clear()


@pytest.fixture
def recorded(monkeypatch):
    """botcore.telemetry recording into the OpenTelemetry SDK's in-memory exporter and metric reader, for this test:
    (the finished spans, the metric reader)."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from botcore import telemetry

    monkeypatch.setattr(telemetry, "_live", None)  # what it was is restored after the test
    spans, reader = InMemorySpanExporter(), InMemoryMetricReader()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    telemetry.use(tracer_provider, MeterProvider([reader]))
    yield spans, reader
    tracer_provider.shutdown()

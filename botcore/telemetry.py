"""Telemetry: traces and metrics of the bot's work, with OpenTelemetry, exported to Application Insights.

Where they go is a setting (botcore.settings): with APPLICATIONINSIGHTS_CONNECTION_STRING, which infra/ sets,
Microsoft's distro (azure-monitor-opentelemetry's `configure_azure_monitor`) exports them to Application Insights;
with BotTelemetry=console they are printed, one JSON object a line; otherwise nothing is recorded, and nothing of
OpenTelemetry is imported: every function here is then a check of one global and a return.

**Set up after the first invocation.** Importing and configuring the distro takes several hundred milliseconds,
more than the bot's whole first reply. So the set-up runs when the process's first invocation has ended, in a
thread of its own; that invocation records no spans, and every later one does. Its trace context still travels:

**One trace per job.** Each invocation continues a trace context (a W3C traceparent): an HTTP function the
Functions host's (which continues a caller's `traceparent` header), a queue function the one its message carries
(else the host's). Every job and sends-queue message the bot makes carries the trace context it is made in
(`traceparent()`: the current span's, else the one the invocation continues), so a job's request, its fan-out and
every batch, retry, revision and pack it leads to are one trace.

**Spans**: each invocation (`invocation`: a hop that continues its message's context is a consumer span, one inside
the host's own request an internal one, so that Application Insights counts each request once); each Connector call
(`connector_call`); each storage call, at botcore.storage's seam (`storage_call`). The Azure SDK's own tracing
(azure-core-tracing-opentelemetry) stays off: it would record every storage call a second time, as two spans.
**Metrics**: `bot.messages` (messages sent, updated, deleted, failed, handed on to a retry ..., by outcome),
`bot.connector.throttled` (429 answers), `bot.pace.lag` (how far behind its slot a paced request started, per pace
key) and `bot.turn.duration`.

**Never in the way.** The SDK exports from threads of its own, through bounded queues that drop what a service
that does not answer cannot take; a set-up that fails logs why and leaves telemetry off.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Protocol
from urllib.parse import urlsplit

from .settings import TELEMETRY_CONSOLE, TELEMETRY_OFF, Settings

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import MetricsData
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.trace import Span, TracerProvider
    from opentelemetry.util.types import AttributeValue

log = logging.getLogger(__name__)

STORAGE_ATTRIBUTES = {"az.namespace": "Microsoft.Storage"}  # Application Insights' dependency type for it
# The distro's instrumentations, all off: the bot's seams record its spans (see the module's docstring).
DISTRO_INSTRUMENTATIONS = (
    "azure_sdk",
    "django",
    "fastapi",
    "flask",
    "httpx",
    "httpx2",
    "psycopg2",
    "requests",
    "urllib",
    "urllib3",
)
LAG_BUCKETS = (0.0, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
TURN_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Annotated(Protocol):
    """What a caller may do to its span (nothing happens when telemetry is off): add an attribute, or mark it failed
    when it ends without an exception (an HTTP function that answers 500)."""

    def set_attribute(self, key: str, value: AttributeValue) -> None: ...

    def fail(self, reason: str) -> None: ...


class Call(Annotated, Protocol):
    """A client call's span, ended by its caller: `error` is what the call raised; a call that raised but did not
    fail (`failed` False: an ETag conflict, an entity that is not there) is not counted as a failed dependency."""

    def end(self, error: BaseException | None = None, failed: bool = True) -> None: ...


class _Nothing:
    """The span of every call and invocation while nothing is recorded."""

    __slots__ = ()

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        return None

    def fail(self, reason: str) -> None:
        return None

    def end(self, error: BaseException | None = None, failed: bool = True) -> None:
        return None


NOTHING = _Nothing()


class _Span:
    __slots__ = ("span", "live")

    def __init__(self, span: Span, live: _Live) -> None:
        self.span, self.live = span, live

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        self.span.set_attribute(key, value)

    def fail(self, reason: str) -> None:
        self.span.set_status(self.live.trace.StatusCode.ERROR, reason[:300])

    def end(self, error: BaseException | None = None, failed: bool = True) -> None:
        if error is not None:
            self.span.set_attribute("error.type", type(error).__name__)
            if failed:
                self.fail(f"{type(error).__name__}: {error}")
        self.span.end()


class _Live:
    """The tracer, the instruments and the propagation of the providers telemetry records with."""

    def __init__(self, tracer_provider: TracerProvider, meter_provider: MeterProvider) -> None:
        # Imported here: only a process that records telemetry loads OpenTelemetry.
        from opentelemetry import trace
        from opentelemetry.context import Context
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self.trace, self.empty = trace, Context()
        self.tracer = tracer_provider.get_tracer("botcore")
        self.propagator = TraceContextTextMapPropagator()
        meter = meter_provider.get_meter("botcore")
        self.messages = meter.create_counter(
            "bot.messages", "{message}", "Messages the bot's paced runs acted on, by outcome (bot.outcome)"
        )
        self.throttled = meter.create_counter("bot.connector.throttled", "{response}", "429 answers of the Connector")
        self.pace_lag = meter.create_histogram(
            "bot.pace.lag",
            "s",
            "How far behind its slot in the pace calendar a paced request started (bot.pace_key: its tenant)",
            explicit_bucket_boundaries_advisory=LAG_BUCKETS,
        )
        self.turn = meter.create_histogram(
            "bot.turn.duration",
            "s",
            "A turn, from its request to its answer",
            explicit_bucket_boundaries_advisory=TURN_BUCKETS,
        )

    def context_of(self, traceparent: str | None) -> Context:
        return self.propagator.extract({"traceparent": traceparent}) if traceparent else self.empty


_live: _Live | None = None  # set once telemetry records (use)
_pending: Settings | None = None  # telemetry wanted, its set-up not begun (prepare)
_begun = False
_settled = threading.Event()  # the set-up ended, recording or not
# The trace context the current invocation continues: what its messages carry while no span of its own records.
_carried: ContextVar[str | None] = ContextVar("botcore_traceparent", default=None)


def prepare(settings: Settings) -> None:
    """Note where telemetry goes (the composition root, once per event loop): set up when an invocation ends."""
    global _pending
    if settings.telemetry != TELEMETRY_OFF and not _begun and _live is None:
        _pending = settings


def use(tracer_provider: TracerProvider, meter_provider: MeterProvider) -> None:
    """Record spans and metrics with these providers from now on: the set-up's, or a test's."""
    global _live
    _live = _Live(tracer_provider, meter_provider)
    _settled.set()


def settled(timeout: float) -> bool:
    """Wait until the set-up has ended (recording, or failed); False if it is still under way after `timeout`."""
    return _settled.wait(timeout)


def traceparent() -> str | None:
    """The trace context a message made now carries: the current span's, else the one the invocation continues."""
    live = _live
    if live is not None:
        context = live.trace.get_current_span().get_span_context()
        if context.is_valid:
            return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"
    return _carried.get()


@contextmanager
def invocation(
    name: str, parent: str | None, host: str | None, attributes: Mapping[str, AttributeValue] | None = None
) -> Iterator[Annotated]:
    """One invocation's span. `parent` is the trace context its message carries (None: none), `host` the one the
    Functions host gave the invocation; the span continues `parent`, linked to `host`, else `host`."""
    token = _carried.set(parent or host)
    try:
        live = _live
        if live is None:
            yield NOTHING
        else:
            context = live.context_of(parent)
            own = live.trace.get_current_span(context).get_span_context().is_valid
            host_context = live.context_of(host)
            links = []
            if own:
                linked = live.trace.get_current_span(host_context).get_span_context()
                links = [live.trace.Link(linked)] if linked.is_valid else []
            with live.tracer.start_as_current_span(
                name,
                context=context if own else host_context,
                kind=live.trace.SpanKind.CONSUMER if own else live.trace.SpanKind.INTERNAL,
                attributes=attributes,
                links=links,
                record_exception=False,  # the host logs what failed an invocation; its status says it here
            ) as span:
                yield _Span(span, live)
    finally:
        _carried.reset(token)
        _begin_set_up()


def connector_call(method: str, base: str, route: str) -> Call:
    """A Connector call's span: `base` the service URL, `route` the path as a template (no conversation's id)."""
    live = _live
    if live is None:
        return NOTHING
    attributes = {
        "http.request.method": method,
        "url.full": base + route,
        "url.template": route,
        "server.address": urlsplit(base).hostname or "",
    }
    span = live.tracer.start_span(f"{method} {route}", kind=live.trace.SpanKind.CLIENT, attributes=attributes)
    return _Span(span, live)


def storage_call(what: str) -> Call:
    """A storage call's span, named by what it does ("table botdeliveries: merge")."""
    live = _live
    if live is None:
        return NOTHING
    return _Span(live.tracer.start_span(what, kind=live.trace.SpanKind.CLIENT, attributes=STORAGE_ATTRIBUTES), live)


def messages(outcomes: Iterable[str]) -> None:
    """Count what a paced run did to its messages, by outcome (a ledger status: sent, retrying, failed ...)."""
    live = _live
    if live is None:
        return
    for outcome, count in Counter(outcomes).items():
        live.messages.add(count, {"bot.outcome": str(outcome)})


def throttled(route: str) -> None:
    """The Connector answered 429."""
    live = _live
    if live is not None:
        live.throttled.add(1, {"url.template": route})


def pace_lag(pace: str, seconds: float) -> None:
    live = _live
    if live is not None:
        live.pace_lag.record(max(0.0, seconds), {"bot.pace_key": pace})


def turn(seconds: float) -> None:
    live = _live
    if live is not None:
        live.turn.record(seconds)


def _begin_set_up() -> None:
    global _pending, _begun
    settings, _pending = _pending, None
    if settings is not None:
        _begun = True
        threading.Thread(target=_set_up, args=(settings,), name="botcore telemetry set-up", daemon=True).start()


def _set_up(settings: Settings) -> None:
    started = time.perf_counter()
    try:
        if settings.telemetry == TELEMETRY_CONSOLE:
            where = "the console"
            _console()
        else:
            where = "Application Insights"
            _azure_monitor(settings)
    except Exception:
        log.exception("telemetry: the set-up failed; the bot runs on without telemetry")
    else:
        log.info("telemetry: recording to %s (set up in %.0f ms)", where, (time.perf_counter() - started) * 1000)
    finally:
        _settled.set()


def _azure_monitor(settings: Settings) -> None:
    # Microsoft's Python worker names the Functions resource detector alone, as here: no other detector runs (the
    # distro's default includes Azure VMs', which asks the instance metadata service on every start).
    os.environ.setdefault("OTEL_EXPERIMENTAL_RESOURCE_DETECTORS", "azure_functions")
    # Its import is most of the set-up's cost: only here, in the set-up's thread.
    from azure.monitor.opentelemetry import configure_azure_monitor
    from opentelemetry import metrics, trace

    configure_azure_monitor(
        connection_string=settings.telemetry_connection_string,
        disable_logging=True,  # the Functions host sends the worker's logs to Application Insights already
        enable_live_metrics=False,
        enable_performance_counters=False,  # the platform's own: the host reports them
        instrumentation_options={name: {"enabled": False} for name in DISTRO_INSTRUMENTATIONS},
    )
    use(trace.get_tracer_provider(), metrics.get_meter_provider())


def _console() -> None:
    # The SDK, in the set-up's thread only: the console exporters print each span and metric as one JSON line.
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import ConsoleMetricExporter, PeriodicExportingMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    def span_line(span: ReadableSpan) -> str:
        return str(span.to_json(indent=None)) + os.linesep

    def metrics_line(data: MetricsData) -> str:
        return str(data.to_json(indent=None)) + os.linesep

    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter(formatter=span_line)))
    meter_provider = MeterProvider([PeriodicExportingMetricReader(ConsoleMetricExporter(formatter=metrics_line))])
    use(tracer_provider, meter_provider)

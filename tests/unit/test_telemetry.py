"""botcore.telemetry: where telemetry goes, the trace context every message carries, the spans of the storage
seam, and nothing of OpenTelemetry loaded while nothing records."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from botcore import telemetry
from botcore.delivery.batches import PackMessage, RevisionBatch, SendBatch, pack, parse_sends_message
from botcore.errors import ConfigurationError
from botcore.jobs import JobError, Target, new_job, parse_job
from botcore.protocol.activity import ConversationReference
from botcore.settings import Settings
from tests.hostproc import REPO

# A fixed trace context: the parametrized tests below name their cases by it, and pytest-xdist's workers must
# collect the same names.
HOST = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
REFERENCE = ConversationReference.from_dict(
    {
        "channelId": "msteams",
        "serviceUrl": "https://smba.trafficmanager.net/amer/",
        "conversation": {"id": "19:a", "tenantId": "t"},
        "user": {"id": "29:u"},
        "bot": {"id": "28:b"},
    }
)


def messages_made_now() -> list[str]:
    """One message of every kind the bot puts on its queues, made now."""
    return [
        new_job("notify", Target(conversation="msteams|19:a"), text="hi").to_json(),
        *(message for message, _ in pack("j1", [("msteams|19:a", REFERENCE.to_json())], id_prefix="0.0.")),
        SendBatch("j1", [("msteams|19:a", REFERENCE)]).to_json(),
        RevisionBatch("j1", "msteams|19:a").to_json(),
        PackMessage("p1", 1.0).to_json(),
    ]


@pytest.mark.parametrize(
    "env, where",
    [
        ({}, "off"),
        ({"APPLICATIONINSIGHTS_CONNECTION_STRING": "InstrumentationKey=k"}, "azuremonitor"),
        ({"BotTelemetry": "Console"}, "console"),
        ({"BotTelemetry": "console", "APPLICATIONINSIGHTS_CONNECTION_STRING": "InstrumentationKey=k"}, "console"),
        ({"BotTelemetry": "off", "APPLICATIONINSIGHTS_CONNECTION_STRING": "InstrumentationKey=k"}, "off"),
    ],
)
def test_the_connection_string_sends_telemetry_to_application_insights_and_a_setting_to_the_console(env, where):
    assert Settings.from_env(env).telemetry == where


def test_an_unknown_telemetry_setting_is_refused_naming_the_setting():
    with pytest.raises(ConfigurationError, match="BotTelemetry must be"):
        Settings.from_env({"BotTelemetry": "jaeger"})


def test_nothing_of_opentelemetry_is_loaded_while_nothing_records():
    """The app's own modules, its messages and its spans while telemetry is off, in a fresh process."""
    code = (
        "import sys, function_app, botcore.app, botcore.worker, botcore.endpoint, botcore.api\n"
        "from botcore import telemetry\n"
        "from tests.unit.test_telemetry import messages_made_now\n"
        f"with telemetry.invocation('job notify', None, {HOST!r}) as span:\n"
        "    span.set_attribute('bot.job.id', 'j1')\n"
        "    messages_made_now()\n"
        "    telemetry.storage_call('table t: read').end()\n"
        "    telemetry.connector_call('POST', 'https://x/', 'v3/conversations').end()\n"
        "    telemetry.messages(['sent']), telemetry.pace_lag('tenant:t', 0.1), telemetry.turn(0.2)\n"
        "print(sorted(m for m in sys.modules if m.startswith(('opentelemetry', 'azure.monitor'))))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_messages_carry_the_trace_context_of_the_invocation_they_are_made_in(monkeypatch):
    monkeypatch.setattr(telemetry, "_live", None)  # nothing records: the invocation's own context travels on
    with telemetry.invocation("job notify", None, HOST):
        made = messages_made_now()
    assert [json.loads(m)["traceparent"] for m in made] == [HOST] * len(made)
    assert parse_job(made[0]).traceparent == HOST
    assert [parse_sends_message(m).traceparent for m in made[1:]] == [HOST] * (len(made) - 1)
    assert all("traceparent" not in json.loads(m) for m in messages_made_now())  # made outside any invocation


def test_while_recording_a_message_carries_its_own_spans_context(recorded):
    spans, _ = recorded
    with telemetry.invocation("job notify", None, HOST):
        made = messages_made_now()
    (span,) = spans.get_finished_spans()
    own = f"00-{span.context.trace_id:032x}-{span.context.span_id:016x}-01"
    assert own != HOST and own.split("-")[1] == HOST.split("-")[1]
    assert [json.loads(m)["traceparent"] for m in made] == [own] * len(made)


def test_a_jobs_trace_context_is_not_what_it_asks_for():
    job = new_job("notify", Target(user_id="29:u"), text="hi")
    traced = parse_job(json.dumps({**json.loads(job.to_json()), "traceparent": HOST}))
    assert traced.traceparent == HOST and traced.digest() == job.digest() and traced == job
    assert "traceparent" not in traced.extra


@pytest.mark.parametrize("value", ["", "00-abc-def-01", HOST.upper(), HOST + " ", 55, {"traceparent": HOST}])
def test_a_trace_context_that_is_no_w3c_traceparent_is_refused(value):
    job = json.loads(new_job("notify", Target(user_id="29:u"), text="hi").to_json())
    with pytest.raises(JobError, match="job.traceparent must be a W3C traceparent"):
        parse_job(json.dumps({**job, "traceparent": value}))
    batch = json.loads(RevisionBatch("j1", "msteams|19:a").to_json())
    with pytest.raises(JobError, match="traceparent must be a W3C traceparent"):
        parse_sends_message(json.dumps({**batch, "traceparent": value}))


def test_storage_calls_fail_their_span_only_when_storage_failed(recorded):
    from azure.core.exceptions import ResourceModifiedError, ServiceRequestError
    from opentelemetry.trace import StatusCode

    from botcore.storage import EntityChangedError, StorageUnavailableError, _mapped

    spans, _ = recorded
    with _mapped("table t: merge"):
        pass
    with pytest.raises(EntityChangedError), _mapped("table t: replace"):
        raise ResourceModifiedError("the ETag no longer matches")
    with pytest.raises(StorageUnavailableError), _mapped("queue q: put"):
        raise ServiceRequestError("no answer")
    with pytest.raises(StopAsyncIteration), _mapped("table t: query"):
        raise StopAsyncIteration  # a query with no page: an answer
    merge, replace, put, query = spans.get_finished_spans()
    assert (merge.name, merge.status.status_code) == ("table t: merge", StatusCode.UNSET)
    assert replace.status.status_code == StatusCode.UNSET and replace.attributes["error.type"] == "EntityChangedError"
    assert put.status.status_code == StatusCode.ERROR and put.attributes["error.type"] == "StorageUnavailableError"
    assert query.status.status_code == StatusCode.UNSET and "error.type" not in query.attributes

"""function_app.py wires triggers only; its names must be the ones botcore uses."""

from __future__ import annotations

import json

import function_app
from botcore import settings


def _bindings() -> dict[str, dict]:
    out = {}
    for fn in function_app.app.get_functions():
        [trigger] = [json.loads(b) if isinstance(b, str) else b
                     for b in json.loads(fn.get_function_json())["bindings"] if b["direction"] == "IN"]
        out[fn.get_function_name()] = trigger
    return out


def test_queue_and_connection_names_match_botcore() -> None:
    assert function_app.JOBS_QUEUE == settings.JOBS_QUEUE
    assert function_app.SENDS_QUEUE == settings.SENDS_QUEUE
    assert function_app.STORAGE == settings.STORAGE_CONNECTION


def test_every_trigger_is_registered_as_documented() -> None:
    b = _bindings()
    assert b["messages"]["route"] == "messages" and b["messages"]["authLevel"].lower() == "anonymous"
    assert b["messages"]["methods"] == ["POST"]
    for name, route in (("notify", "notify"), ("notify_job", "notify/{id}"), ("reminders", "reminders")):
        assert b[name]["route"] == route and b[name]["authLevel"].lower() == "function"
    assert (b["jobs"]["queueName"], b["jobs"]["connection"]) == ("bot-jobs", "BotStorage")
    assert (b["sends"]["queueName"], b["sends"]["connection"]) == ("bot-sends", "BotStorage")
    assert b["reminder_timer"]["schedule"] == "0 * * * * *"
    assert set(b) == {"messages", "notify", "notify_job", "reminders", "jobs", "sends", "reminder_timer"}

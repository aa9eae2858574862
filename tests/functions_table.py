"""The eight functions of function_app.py in one table: what the Functions host must be told about each.

Checked against the azure-functions library's metadata on every Python (tests/unit/test_function_app.py)
and against what Microsoft's worker library reports over the worker protocol on Python 3.13
(tests/integration/test_worker_conformance.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple


class Row(NamedTuple):
    trigger: str
    route: str | None
    methods: tuple[str, ...] | None
    auth_level: str | None
    queue: str | None
    connection: str | None
    schedule: str | None
    bindings: tuple[tuple[str, str], ...]  # (name, direction) of every binding


HTTP_OUT = ("$return", "OUT")
FUNCTIONS = {
    "messages": Row("httpTrigger", "messages", ("POST",), "ANONYMOUS", None, None, None, (("req", "IN"), HTTP_OUT)),
    "notify": Row("httpTrigger", "notify", ("POST",), "FUNCTION", None, None, None, (("req", "IN"), HTTP_OUT)),
    "notify_job": Row(
        "httpTrigger",
        "notify/{id}",
        ("GET", "PATCH", "DELETE"),
        "FUNCTION",
        None,
        None,
        None,
        (("req", "IN"), HTTP_OUT),
    ),
    "reminders": Row("httpTrigger", "reminders", ("POST",), "FUNCTION", None, None, None, (("req", "IN"), HTTP_OUT)),
    "jobs": Row("queueTrigger", None, None, None, "bot-jobs", "BotStorage", None, (("msg", "IN"),)),
    "sends": Row("queueTrigger", None, None, None, "bot-sends", "BotStorage", None, (("msg", "IN"),)),
    "reminder_timer": Row("timerTrigger", None, None, None, None, None, "0 * * * * *", (("timer", "IN"),)),
    "retention_timer": Row("timerTrigger", None, None, None, None, None, "0 30 * * * *", (("timer", "IN"),)),
}


def table_of(functions: Iterable[tuple[str, list[dict[str, Any]]]]) -> dict[str, Row]:
    """Each function's row from its bindings' JSON; enum names (directions, auth levels) in upper case, as
    the worker reports them."""
    rows = {}
    for name, bindings in functions:
        [trigger] = [b for b in bindings if b["type"].endswith("Trigger")]
        methods = trigger.get("methods")
        level = trigger.get("authLevel")
        rows[name] = Row(
            trigger["type"],
            trigger.get("route"),
            tuple(m.upper() for m in methods) if methods else None,
            level.upper() if level else None,
            trigger.get("queueName"),
            trigger.get("connection"),
            trigger.get("schedule"),
            tuple((b["name"], b["direction"].upper()) for b in bindings),
        )
    return rows

"""Triggers in the shapes the Functions host sends them to a language worker, and what HTTP functions answer.

The host's HTTP routes, queue listeners and timers build a TriggerData here, once; the worker library
(worker.py) or the host's own loader (app_loader.py) hands it to the app's function through the
azure-functions library's converters, so that the app sees what it sees in Azure.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class HttpData:
    """An RpcHttp: header names in lower case, the body as bytes."""

    method: str
    url: str
    headers: dict[str, str]
    query: dict[str, str]
    params: dict[str, str]  # route parameters
    body: bytes


@dataclass(frozen=True)
class TriggerData:
    """A trigger's TypedData (its field, and its value) and trigger metadata (name to JSON text)."""

    type: str  # "http", "string", "bytes" or "json"
    value: HttpData | str | bytes
    metadata: dict[str, str] = field(default_factory=dict)


_TRACEPARENT = re.compile(r"[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-([0-9a-f]{2})(-.*)?")


def trace_context_for(trigger: TriggerData) -> str:
    """The trace context (a W3C traceparent) the host gives an invocation, as the Functions host does: an HTTP
    request's `traceparent` header continued (its trace and flags, a span of the host's own), else a new trace."""
    if isinstance(trigger.value, HttpData):
        match = _TRACEPARENT.fullmatch(trigger.value.headers.get("traceparent", "").strip())
        if match and match[1] != "0" * 32:
            return f"00-{match[1]}-{secrets.token_hex(8)}-{match[2]}"
    return f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"


@dataclass(frozen=True)
class HttpAnswer:
    status: int
    headers: dict[str, str]
    body: bytes


def http_request(
    method: str,
    url: str,
    headers: Iterable[tuple[str, str]],
    query: Iterable[tuple[str, str]],
    route_params: dict[str, str],
    body: bytes,
) -> TriggerData:
    """A repeated header is joined with commas and an empty query value dropped, as the host does."""
    joined: dict[str, str] = {}
    for name, value in headers:
        name = name.lower()
        joined[name] = f"{joined[name]},{value}" if name in joined else value
    return TriggerData("http", HttpData(method, url, joined, {k: v for k, v in query if v}, route_params, body))


def queue_message(
    message_id: str,
    body: bytes,
    dequeue_count: int,
    pop_receipt: str,
    insertion_time: datetime | None,
    expiration_time: datetime | None,
    next_visible_time: datetime | None,
) -> TriggerData:
    """The message's text as a string (bytes when it is not UTF-8); Id, PopReceipt, DequeueCount and the times
    as JSON trigger metadata: the converters refuse a DequeueCount of TypedData's int kind."""
    try:
        data = TriggerData("string", body.decode("utf-8"))
    except UnicodeDecodeError:
        data = TriggerData("bytes", body)
    fields = {
        "Id": message_id,
        "PopReceipt": pop_receipt,
        "DequeueCount": dequeue_count,
        "InsertionTime": _iso(insertion_time),
        "ExpirationTime": _iso(expiration_time),
        "NextVisibleTime": _iso(next_visible_time),
    }
    return TriggerData(data.type, data.value, {k: json.dumps(v) for k, v in fields.items() if v is not None})


def timer_info(past_due: bool, last: datetime | None, next_due: datetime) -> TriggerData:
    """TimerInfo as JSON: the schedule, its last and next occurrences, and whether this one is past due."""
    status = {"Last": _iso(last), "Next": _iso(next_due), "LastUpdated": _iso(last)}
    return TriggerData(
        "json", json.dumps({"Schedule": {"AdjustForDST": True}, "ScheduleStatus": status, "IsPastDue": past_due})
    )


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None

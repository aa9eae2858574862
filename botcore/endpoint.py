"""POST /api/messages: from raw HTTP request to an authenticated turn.

Kept free of azure.functions so that the same code serves the Functions host,
the local host and benchmarks. Every client mistake gets a 4xx with a short JSON
reason; nothing is stored or sent before authentication succeeds.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any, Mapping

from . import jsontext
from .activity import Activity, ActivityError
from .settings import ConfigurationError, Settings, get_settings

log = logging.getLogger("botcore.endpoint")


@dataclass(frozen=True)
class Response:
    status: int
    body: Any = None

    def json_bytes(self) -> bytes:
        return b"" if self.body is None else json.dumps(self.body).encode()


def error_response(status: int, code: str, message: str) -> Response:
    return Response(status, {"error": {"code": code, "message": message}})


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        lower = name.lower()
        value = next((v for k, v in headers.items() if k.lower() == lower), None)
    return value


def read_json(headers: Mapping[str, str], body: bytes, settings: Settings) -> Any:
    """The request's JSON value, or the 4xx Response that says why there is none."""
    content_type = (_header(headers, "Content-Type") or "").split(";")[0].strip().lower()
    if content_type != "application/json":
        return error_response(415, "UnsupportedMediaType", "Content-Type must be application/json")
    if len(body) > settings.max_body_bytes:
        return error_response(413, "PayloadTooLarge", f"body is larger than {settings.max_body_bytes} bytes")
    try:
        return jsontext.loads(body)
    except jsontext.JsonTextError as exc:
        return error_response(400, "BadRequest", str(exc))


async def handle_messages(
    headers: Mapping[str, str], body: bytes, settings: Settings | None = None
) -> Response:
    try:
        settings = settings or get_settings()
        settings.require_auth_config()
    except ConfigurationError as exc:
        log.error("configuration error: %s", exc)
        return error_response(500, "BotMisconfigured", str(exc))

    auth_header = _header(headers, "Authorization")
    if auth_header is None and not settings.auth_disabled:
        log.warning("rejected request: no Authorization header")
        return error_response(401, "Unauthorized", "Authorization header is required")

    data = read_json(headers, body, settings)
    if isinstance(data, Response):
        return data
    try:
        activity = Activity.from_dict(data)
    except ActivityError as exc:
        return error_response(400, "BadRequest", str(exc))

    from .auth import AuthenticationError, KeysUnavailableError, authenticate

    try:
        auth = await authenticate(auth_header, activity, settings)
    except KeysUnavailableError as exc:
        log.error("cannot authenticate %s activity: %s", activity.type, exc.reason)
        return error_response(503, "ServiceUnavailable", "signing keys are unavailable; retry later")
    except AuthenticationError as exc:
        log.warning(
            "rejected %s activity from channel %r: %s", activity.type, activity.channel_id, exc.reason
        )
        return error_response(401, "Unauthorized", "authentication failed")

    from .storage import StorageError
    from .turns import TurnConflictError, on_activity

    try:
        return await on_activity(activity, auth, settings)
    except TurnConflictError as exc:
        log.error("%s", exc)
        return error_response(503, "ConversationBusy", "the conversation is busy; retry later")
    except StorageError as exc:  # storage unreachable or failing: nothing was sent for this turn
        log.error("%s activity in %s: storage error: %r", activity.type, activity.channel_id, exc)
        return error_response(503, "StorageUnavailable", "state storage is unavailable; retry later")

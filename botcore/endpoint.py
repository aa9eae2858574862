"""POST /api/messages: from raw HTTP request to an authenticated turn.

Kept free of azure.functions so that the same code serves the Functions host,
the local host and benchmarks. Every client mistake gets a 4xx with a short JSON
reason (botcore.responses); nothing is stored or sent before authentication succeeds.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping

from . import jsontext
from .protocol.activity import Activity
from .errors import BadInputError
from .responses import Response, http_edge
from .settings import Settings, get_settings

log = logging.getLogger(__name__)


class UnsupportedMediaTypeError(BadInputError):
    http_status, code = 415, "UnsupportedMediaType"


class BodyTooLargeError(BadInputError):
    http_status, code = 413, "PayloadTooLarge"


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        lower = name.lower()
        value = next((v for k, v in headers.items() if k.lower() == lower), None)
    return value


def read_json(headers: Mapping[str, str], body: bytes, settings: Settings) -> Any:
    """The request's JSON value; a BadInputError says why there is none."""
    content_type = (_header(headers, "Content-Type") or "").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise UnsupportedMediaTypeError("Content-Type must be application/json")
    if len(body) > settings.max_body_bytes:
        raise BodyTooLargeError(f"body is larger than {settings.max_body_bytes} bytes")
    return jsontext.loads(body)


@http_edge
async def handle_messages(headers: Mapping[str, str], body: bytes, settings: Settings | None = None) -> Response:
    settings = settings or get_settings()
    settings.require_auth_config()

    from .protocol.auth import AuthenticationError, authenticate

    auth_header = _header(headers, "Authorization")
    if auth_header is None and not settings.auth_disabled:
        raise AuthenticationError("no Authorization header")
    activity = Activity.from_dict(read_json(headers, body, settings))
    auth = await authenticate(auth_header, activity, settings)

    from .app import bot_for
    from .state.turns import on_activity

    return Response(await on_activity(bot_for(settings).turns, activity, auth))

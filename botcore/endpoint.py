"""POST /api/messages: from raw HTTP request to an authenticated turn.

Kept free of azure.functions so that the same code serves the Functions host,
the local host and benchmarks. Every client mistake gets a 4xx with a short JSON
reason (botcore.responses); nothing is stored or sent before authentication succeeds.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from . import telemetry
from .app import bot_for
from .protocol.activity import Activity
from .protocol.auth import AuthenticationError, authenticate
from .request import header, read_json
from .responses import Response, error_response, http_edge
from .settings import Settings, get_settings
from .state.turns import on_activity


@http_edge("POST /api/messages")
async def handle_messages(headers: Mapping[str, str], body: bytes, settings: Settings | None = None) -> Response:
    started = time.perf_counter()
    settings = settings or get_settings()
    settings.require_auth_config()
    auth_header = header(headers, "Authorization")
    if auth_header is None and not settings.auth_disabled:
        raise AuthenticationError("no Authorization header")
    activity = Activity.from_dict(read_json(headers, body, settings))
    auth = await authenticate(auth_header, activity, settings)
    status = await on_activity(bot_for(settings).turns, activity, auth)
    telemetry.turn(time.perf_counter() - started)
    if status == 501:  # an invoke: the answer says so in the one error body, as every other error does
        return error_response(501, "NotImplemented", "the bot implements no invoke activities")
    return Response(status)

"""HTTP answers of the bot's functions: one Response type, and the one mapping of errors to statuses.

Handlers raise botcore's errors (botcore.errors) and `http_edge` turns each into a status and a JSON
body `{"error": {"code", "message"}}`: bad input 400 (or the class's own 4xx), not found 404,
conflict 409, a dependency down 503 with Retry-After, misconfiguration 500. Anything else is a bug: 500.
A 4xx says what was wrong with the request. A 5xx says only what kind of failure it was, in fixed words:
its error's own text may name a storage host and port, an SDK's exception or a setting's value, so that
goes to the log, with the function's invocation id, and never into the answer.
"""

from __future__ import annotations

import functools
import json
import logging
import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from . import telemetry
from .errors import BadInputError, BotError, ConfigurationError, ConflictError, NotFoundError, UnavailableError

log = logging.getLogger(__name__)

_KINDS: tuple[tuple[type[BotError], int, str], ...] = (
    (BadInputError, 400, "BadRequest"),
    (NotFoundError, 404, "NotFound"),
    (ConflictError, 409, "Conflict"),
    (UnavailableError, 503, "ServiceUnavailable"),
    (ConfigurationError, 500, "BotMisconfigured"),
)
RETRY_AFTER_DEFAULT = 5
SERVER_MESSAGES: tuple[tuple[type[BotError], str], ...] = (  # what a 5xx answer says
    (UnavailableError, "a service the bot depends on is unavailable; retry later"),
    (ConfigurationError, "the bot is misconfigured; its log names the setting to fix"),
)
INTERNAL_MESSAGE = "the function failed unexpectedly; the host log says why"


@dataclass(frozen=True)
class Response:
    status: int
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)

    def json_bytes(self) -> bytes:
        return b"" if self.body is None else json.dumps(self.body).encode()


def error_response(status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> Response:
    return Response(status, {"error": {"code": code, "message": message}}, headers or {})


def response_for(exc: BaseException, what: str) -> Response:
    """The answer to a request that failed with `exc`; logged as what it is, under `what` (the handler and
    its invocation)."""
    kind = next(((status, code) for cls, status, code in _KINDS if isinstance(exc, cls)), None)
    if not isinstance(exc, BotError) or kind is None:
        log.error("%s: unexpected error", what, exc_info=exc)
        return error_response(500, "InternalError", INTERNAL_MESSAGE)
    status, code = exc.http_status or kind[0], exc.code or kind[1]
    if status < 500:
        message = exc.public_message or str(exc)
    else:  # fixed words: the class's, or its kind's
        message = type(exc).public_message or next(
            (m for k, m in SERVER_MESSAGES if isinstance(exc, k)), INTERNAL_MESSAGE
        )
    headers: dict[str, str] = {}
    if isinstance(exc, UnavailableError):
        headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after or RETRY_AFTER_DEFAULT)))
    if status >= 500:
        log.error("%s: %s: %s", what, type(exc).__name__, exc)
    else:
        log.warning("%s: %d %s: %s", what, status, code, exc)
    return error_response(status, code, message, headers)


Handler = Callable[..., Awaitable[Response]]


def http_edge(route: str) -> Callable[[Handler], Handler]:
    """An HTTP function's handler whose errors are answered by response_for, as one span (botcore.telemetry) named
    by `route` ("POST /api/notify"; a route without its method serves several: the handler's first argument is the
    method). The function passes its `invocation_id` and `traceparent` (the Functions context's): the log line of a
    failure carries the first, and the span continues the second."""

    def edge(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def answer(
            *args: Any, invocation_id: str = "", traceparent: str | None = None, **kwargs: Any
        ) -> Response:
            name = route if " " in route else f"{args[0]} {route}"
            with telemetry.invocation(name, None, traceparent, {"faas.invocation_id": invocation_id}) as span:
                try:
                    response = await handler(*args, **kwargs)
                except Exception as exc:
                    response = response_for(exc, f"{handler.__name__} (invocation {invocation_id or 'unknown'})")
                span.set_attribute("http.response.status_code", response.status)
                if response.status >= 500:
                    span.fail(f"answered {response.status}")
                return response

        return answer

    return edge

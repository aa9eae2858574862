"""HTTP answers of the bot's functions: one Response type, and the one mapping of errors to statuses.

Handlers raise botcore's errors (botcore.errors) and `http_edge` turns each into a status and a JSON
body `{"error": {"code", "message"}}`: bad input 400 (or the class's own 4xx), not found 404,
conflict 409, a dependency down 503 with Retry-After, misconfiguration 500 naming the setting.
Anything else is a bug: 500 with the traceback in the log, never in the answer.
"""

from __future__ import annotations

import functools
import json
import logging
import math
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Mapping

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
    """The answer to a request that failed with `exc`; logged as what it is."""
    kind = next(((status, code) for cls, status, code in _KINDS if isinstance(exc, cls)), None)
    if not isinstance(exc, BotError) or kind is None:
        log.error("%s: unexpected error", what, exc_info=exc)
        return error_response(500, "InternalError", "the function failed unexpectedly; the host log says why")
    status, code = exc.http_status or kind[0], exc.code or kind[1]
    message = exc.public_message or str(exc)
    headers: dict[str, str] = {}
    if isinstance(exc, UnavailableError):
        headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after or RETRY_AFTER_DEFAULT)))
    if status >= 500:
        log.error("%s: %s: %s", what, type(exc).__name__, exc)
    else:
        log.warning("%s: %d %s: %s", what, status, code, exc)
    return error_response(status, code, message, headers)


def http_edge(handler: Callable[..., Awaitable[Response]]) -> Callable[..., Awaitable[Response]]:
    """An HTTP function's handler whose errors are answered by response_for."""

    @functools.wraps(handler)
    async def answer(*args: Any, **kwargs: Any) -> Response:
        try:
            return await handler(*args, **kwargs)
        except Exception as exc:
            return response_for(exc, handler.__name__)

    return answer

"""HTTP triggers: routes under host.json's routePrefix, route parameters, auth levels."""

from __future__ import annotations

import hmac
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from botcore.responses import error_response

from .app_loader import FunctionInfo
from .triggers import HttpAnswer, http_request

log = logging.getLogger("devhost.http")

_CONSTRAINTS = {"int": r"-?\d+", "alpha": r"[A-Za-z]+", "guid": r"[0-9a-fA-F-]{36}", "bool": r"(?i:true|false)"}
_PARAM = re.compile(r"\{(\*?)([A-Za-z_][A-Za-z0-9_]*)(?::([A-Za-z]+))?(\?)?\}")
DEFAULT_MAX_BODY = 100 * 1024 * 1024  # the Functions host's, unless FUNCTIONS_REQUEST_BODY_SIZE_LIMIT says otherwise


def compile_route(template: str) -> re.Pattern[str]:
    """An ASP.NET-style route template (`items/{id:int}/{name?}`, `{*rest}`) as a regex."""
    pattern, pos = "", 0
    for match in _PARAM.finditer(template):
        pattern += re.escape(template[pos : match.start()])
        catch_all, name, constraint, optional = match.groups()
        body = ".*" if catch_all else _CONSTRAINTS.get(constraint or "", r"[^/]+")
        if optional or catch_all:
            if pattern.endswith("/"):
                pattern = pattern[:-1] + f"(?:/(?P<{name}>{body}))?"
            else:
                pattern += f"(?P<{name}>{body})?"
        else:
            pattern += f"(?P<{name}>{body})"
        pos = match.end()
    pattern += re.escape(template[pos:])
    return re.compile(f"^{pattern}/?$", re.IGNORECASE)


@dataclass
class HttpRoute:
    function: FunctionInfo
    pattern: re.Pattern[str]
    methods: frozenset[str] | None
    auth_level: str


def build_routes(functions: list[FunctionInfo]) -> list[HttpRoute]:
    routes = []
    for f in functions:
        if f.trigger_type != "httpTrigger":
            continue
        template = (f.trigger.get("route") or f.name).strip("/")
        methods = f.trigger.get("methods")
        routes.append(
            HttpRoute(
                f,
                compile_route(template),
                frozenset(m.upper() for m in methods) if methods else None,
                str(f.trigger.get("authLevel", "function")).lower(),
            )
        )
    return routes


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    """The host's own answers carry the app's error body, so that a client reads every error one way."""
    answer = error_response(status, code, message, headers)
    return web.Response(
        status=status, body=answer.json_bytes(), content_type="application/json", headers=answer.headers
    )


def _too_large(limit: int) -> web.Response:
    return _error(413, "PayloadTooLarge", f"request body larger than {limit} bytes (FUNCTIONS_REQUEST_BODY_SIZE_LIMIT)")


class HttpTriggers:
    def __init__(
        self,
        routes: list[HttpRoute],
        prefix: str,
        function_key: str,
        invoke: Callable[[FunctionInfo, Any, str], Awaitable[Any]],
        max_body: int = DEFAULT_MAX_BODY,
    ) -> None:
        self.routes, self.function_key, self.invoke, self.max_body = routes, function_key, invoke, max_body
        self.prefix = "/" + prefix.strip("/") if prefix.strip("/") else ""

    def urls(self, base: str) -> list[tuple[str, str, str]]:
        return [
            (
                r.function.name,
                ",".join(sorted(r.methods or {"*"})),
                f"{base}{self.prefix}/{(r.function.trigger.get('route') or r.function.name).strip('/')}",
            )
            for r in self.routes
        ]

    def _authorized(self, route: HttpRoute, request: web.Request) -> bool:
        if route.auth_level == "anonymous":
            return True
        given = request.query.get("code") or request.headers.get("x-functions-key") or ""
        return hmac.compare_digest(given.encode(), self.function_key.encode())

    async def handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        if self.prefix:
            if not (path == self.prefix or path.startswith(self.prefix + "/")):
                return _error(404, "NotFound", "no function at this path")
            path = path[len(self.prefix) :]
        path = path.strip("/")
        matched = [(r, m) for r in self.routes if (m := r.pattern.match(path))]
        if not matched:
            return _error(404, "NotFound", "no function at this path")
        allowed = [(r, m) for r, m in matched if r.methods is None or request.method in r.methods]
        if not allowed:
            methods = ", ".join(sorted(set().union(*(r.methods or () for r, _ in matched))))
            return _error(
                405,
                "MethodNotAllowed",
                f"method {request.method} is not allowed here; this path takes {methods}",
                {"Allow": methods},
            )
        route, match = allowed[0]
        if not self._authorized(route, request):
            return _error(
                401, "Unauthorized", "this function needs its key, as ?code=<key> or the x-functions-key header"
            )
        if (request.content_length or 0) > self.max_body:  # refused before a byte of it is read
            return _too_large(self.max_body)
        try:
            body = await request.read()  # a body without Content-Length: read up to the limit, no further
        except web.HTTPRequestEntityTooLarge:
            return _too_large(self.max_body)
        trigger = http_request(
            request.method,
            str(request.url),
            request.headers.items(),
            request.query.items(),
            {k: v for k, v in match.groupdict().items() if v is not None},
            body,
        )
        try:
            answer: HttpAnswer = await self.invoke(route.function, trigger, f"HTTP {request.method} {request.path}")
        except Exception:
            return _error(500, "InternalError", "the function failed; see the host log")
        headers = {k: v for k, v in answer.headers.items() if k.lower() != "content-length"}
        return web.Response(status=answer.status, body=answer.body, headers=headers)

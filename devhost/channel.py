"""A fake Bot Connector: the channel side of the protocol, served on localhost.

It answers Connector REST API v3 calls like the real service (including its
error shapes), records everything it receives, can be told to fail in the ways
the real service fails, and tells subscribers about each activity the moment it
arrives. Tests, benchmarks and the terminal chat all use it.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

from aiohttp import web

from .server import BackgroundServer


@dataclass
class Received:
    method: str
    operation: str  # send, reply, create, update, delete, members
    conversation_id: str | None
    activity_id: str | None
    authorization: str | None
    body: Any
    at: float = field(default_factory=time.monotonic)
    status: int = 200  # what the fake answered (an injected fault's status for `faulted`)
    new_id: str | None = None  # the id the fake gave a sent activity (send, reply)


@dataclass
class Fault:
    status: int = 500
    code: str | None = None
    times: int | None = 1  # None: always
    conversation_id: str | None = None
    retry_after: float | None = None
    hang: float | None = None
    reset: bool = False
    teams_shape: bool = False

    def matches(self, conversation_id: str | None) -> bool:
        return self.conversation_id is None or self.conversation_id == conversation_id


class FakeConnector(BackgroundServer):
    def __init__(self, *, status: int = 200, empty_body: bool = False, port: int = 0) -> None:
        super().__init__(port=port)
        self.status, self.empty_body = status, empty_body
        self.requests: list[Received] = []
        self.members: dict[str, list[dict[str, Any]]] = {}
        self._faults: list[Fault] = []
        self._subscribers: list[Callable[[Received], None]] = []
        self._token_checker: Callable[[str], bool] | None = None
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._ids = itertools.count(1)
        self.in_flight = 0
        self.max_in_flight = 0
        self.faulted: list[Received] = []  # requests answered with an injected fault
        self.latency = 0.0  # seconds before every answer (the real service takes tens of ms)

    # ---- control from tests -----------------------------------------------------------
    def fail(self, status: int, code: str | None = None, *, times: int | None = 1,
             conversation_id: str | None = None, retry_after: float | None = None,
             hang: float | None = None, reset: bool = False, teams_shape: bool = False) -> None:
        with self._lock:
            self._faults.append(Fault(status, code, times, conversation_id, retry_after, hang, reset, teams_shape))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def require_token(self, checker: Callable[[str], bool] | None) -> None:
        """Answer 401 to requests whose bearer token the checker refuses, as the real service does."""
        self._token_checker = checker

    def on_activity(self, callback: Callable[[Received], None]) -> None:
        """Call `callback` with each activity sent, replied, updated or deleted, as it arrives."""
        self._subscribers.append(callback)

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()
            self.faulted.clear()

    def activities(self, conversation_id: str | None = None) -> list[Received]:
        with self._lock:
            return [r for r in self.requests if r.operation in ("send", "reply")
                    and (conversation_id is None or r.conversation_id == conversation_id)]

    def texts(self, conversation_id: str | None = None) -> list[str]:
        return [r.body.get("text") for r in self.activities(conversation_id) if isinstance(r.body, dict)]

    def wait_for(self, predicate: Callable[["FakeConnector"], bool], timeout: float = 10.0) -> bool:
        """Block until predicate(self) holds; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate(self):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(min(left, 0.1))
        return True

    def wait_for_texts(self, count: int, conversation_id: str | None = None, timeout: float = 10.0) -> list[str]:
        self.wait_for(lambda c: len(c.activities(conversation_id)) >= count, timeout)
        return self.texts(conversation_id)

    # ---- the service ----------------------------------------------------------------------
    def build_app(self) -> web.Application:
        app = web.Application(client_max_size=4 * 1024 * 1024)
        r = app.router
        r.add_post("/v3/conversations", self._handle("create"))
        r.add_post("/v3/conversations/{cid}/activities", self._handle("send"))
        r.add_post("/v3/conversations/{cid}/activities/{aid}", self._handle("reply"))
        r.add_put("/v3/conversations/{cid}/activities/{aid}", self._handle("update"))
        r.add_delete("/v3/conversations/{cid}/activities/{aid}", self._handle("delete"))
        r.add_get("/v3/conversations/{cid}/pagedmembers", self._handle("members"))
        return app

    def _take_fault(self, conversation_id: str | None) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.matches(conversation_id):
                    if fault.times is not None:
                        fault.times -= 1
                        if fault.times <= 0:
                            self._faults.remove(fault)
                    return fault
        return None

    def _handle(self, operation: str):
        async def handler(request: web.Request) -> web.StreamResponse:
            # aiohttp has already percent-decoded match_info.
            cid, aid = request.match_info.get("cid"), request.match_info.get("aid")
            body: Any = None
            if request.can_read_body:
                try:
                    body = await request.json()
                except ValueError:
                    return _error(400, "BadSyntax", "body is not JSON")
            authorization = request.headers.get("Authorization")
            with self._lock:
                self.in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                return await self._answer(request, operation, cid, aid, body, authorization)
            finally:
                with self._lock:
                    self.in_flight -= 1

        return handler

    async def _answer(self, request: web.Request, operation: str, cid: str | None, aid: str | None,
                      body: Any, authorization: str | None) -> web.StreamResponse:
        if self.latency:
            await asyncio.sleep(self.latency)
        if self._token_checker is not None:
            token = (authorization or "").partition("Bearer ")[2]
            if not token or not self._token_checker(token):
                return _error(401, "Unauthorized", "Authorization has been denied for this request.")
        fault = self._take_fault(cid)
        if fault is not None:
            with self._lock:
                self.faulted.append(Received(request.method, operation, cid, aid, authorization, body,
                                             status=0 if fault.reset else fault.status))
            if fault.hang:
                await asyncio.sleep(fault.hang)
            if fault.reset:
                assert request.transport is not None
                request.transport.abort()
                return web.Response()
            if fault.status >= 300:
                headers = {"Retry-After": f"{fault.retry_after:g}"} if fault.retry_after is not None else {}
                return _error(fault.status, fault.code or "ServiceError", "injected fault", headers, fault.teams_shape)
        received = Received(request.method, operation, cid, aid, authorization, body)
        if operation in ("send", "reply"):
            received.new_id = f"act-{next(self._ids)}"
        with self._changed:
            self.requests.append(received)
            self._changed.notify_all()
        if operation in ("send", "reply", "update", "delete"):
            for callback in list(self._subscribers):
                callback(received)
        if operation == "members":
            return self._members(cid or "", request)
        if operation == "create":
            new_id = f"conv-{uuid.uuid4().hex[:12]}"
            return web.json_response({"id": new_id, "serviceUrl": self.base_url, "activityId": str(next(self._ids))})
        if operation == "delete":
            return web.Response(status=200)
        if self.empty_body:
            return web.Response(status=self.status)
        return web.json_response({"id": aid if operation == "update" else received.new_id}, status=self.status)

    def _members(self, cid: str, request: web.Request) -> web.Response:
        members = self.members.get(cid, [])
        size = int(request.query.get("pageSize") or 100)
        start = int(request.query.get("continuationToken") or 0)
        page = members[start:start + size]
        token = str(start + size) if start + size < len(members) else None
        return web.json_response({"members": page, **({"continuationToken": token} if token else {})})


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None,
           teams_shape: bool = False) -> web.Response:
    body = {"errorCode": code, "message": message} if teams_shape else {"error": {"code": code, "message": message}}
    headers = {**(headers or {}), "X-Correlating-OperationId": uuid.uuid4().hex[:16]}
    return web.json_response(body, status=status, headers=headers)

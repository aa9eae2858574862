"""A fake Bot Connector: the channel side of the protocol, served on localhost.

It answers Connector REST API v3 calls like the real service (including its
error shapes), records everything it receives, can be told to fail in the ways
the real service fails, and tells subscribers about each activity the moment it
arrives. Tests, benchmarks and the terminal chat all use it.

By default it answers at once and limits nothing. `FakeConnector(teams=TeamsLimits())`
behaves like Microsoft Teams instead: rate limits per tenant and per conversation
(429 with Retry-After past them), a lognormal service time, Teams' members paging
and its one-to-one create conversation.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import itertools
import math
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

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
    at: float = field(default_factory=time.monotonic)  # answered: after the service time (Teams mode), for deliveries
    arrived: float = field(default_factory=time.monotonic)  # when the request came in: what Teams' limits count
    status: int = 200  # what the fake answered (an injected fault's status for `faulted`)
    new_id: str | None = None  # the id the fake gave a sent activity (send, reply)


@dataclass
class Fault:
    status: int = 500
    code: str | None = None
    times: int | None = 1  # None: always
    conversation_id: str | None = None
    retry_after: float | str | None = None  # text is sent as it is (what a real service should not send, too)
    hang: float | None = None
    reset: bool = False
    teams_shape: bool = False

    def matches(self, conversation_id: str | None) -> bool:
        return self.conversation_id is None or self.conversation_id == conversation_id


@dataclass(frozen=True)
class Window:
    """At most `limit` accepted requests in any span of `seconds`."""

    limit: int
    seconds: float


@dataclass(frozen=True)
class TeamsLimits:
    """Teams mode: Teams' documented limits (they "can change", so tests may pass others) and service time.

    `tenant` counts every bot API call of the app in one tenant (send, reply, create, update, delete,
    members); `conversation` counts sends, replies, updates and deletes to one conversation. Windows
    slide over request arrival times; past a limit the answer is 429, code Throttled, with a
    Retry-After in whole seconds (at least 1) until the window frees. A refused request does not
    count against any window (Teams does not say): the Retry-After it gets is then exact, so a
    client that waits it out is accepted (unless others took the room meanwhile), and a client
    retrying too early does not push its own turn further away. Every request waits a lognormal
    service time (median `latency_median` s, log-spread `latency_sigma`) drawn from a Random seeded
    with `seed`, so runs repeat.
    """

    tenant: Window = Window(50, 1.0)
    conversation: tuple[Window, ...] = (Window(7, 1.0), Window(8, 2.0), Window(60, 30.0), Window(1800, 3600.0))
    latency_median: float = 0.08
    latency_sigma: float = 0.5
    seed: int = 0


@dataclass
class Tally:
    """Teams mode counts, for one tenant or one conversation."""

    accepted: int = 0  # requests within the limits (counted in the windows)
    refused: int = 0  # requests answered 429
    peak: int = 0  # tenants: the most accepted requests in any span of the tenant window (1 s by default)


UNKNOWN_TENANT = "unknown"
CONVERSATION_OPERATIONS = frozenset({"send", "reply", "update", "delete"})
# Teams' paged members: a smaller pageSize counts as 50, a larger one as 500, none as 200.
PAGE_SIZE_MIN, PAGE_SIZE_DEFAULT, PAGE_SIZE_MAX = 50, 200, 500


class _Arrivals:
    """Arrival times of the accepted requests of one tenant or conversation, oldest first."""

    __slots__ = ("times",)

    def __init__(self) -> None:
        self.times: list[float] = []

    def count(self, now: float, seconds: float) -> int:
        return len(self.times) - bisect.bisect_right(self.times, now - seconds)

    def wait(self, now: float, windows: Iterable[Window]) -> float:
        """Seconds until every window has room for one more request; 0 when it has now."""
        wait = 0.0
        for window in windows:
            if self.count(now, window.seconds) >= window.limit:
                wait = max(wait, self.times[-window.limit] + window.seconds - now)
        return wait

    def add(self, now: float, keep: float) -> None:
        """Record an acceptance; forget those older than `keep` seconds (the longest window)."""
        self.times.append(now)
        old = bisect.bisect_right(self.times, now - keep)
        if old:
            del self.times[:old]


def _tenant_in(operation: str, body: Any) -> str | None:
    """The tenant a request body names: its conversation's, its channelData's, or (create) its own."""
    if not isinstance(body, dict):
        return None
    conversation, channel_data = body.get("conversation"), body.get("channelData")
    tenant = conversation.get("tenantId") if isinstance(conversation, dict) else None
    if not tenant and isinstance(channel_data, dict) and isinstance(channel_data.get("tenant"), dict):
        tenant = channel_data["tenant"].get("id")
    if not tenant and operation == "create":
        tenant = body.get("tenantId")
    return tenant if isinstance(tenant, str) and tenant else None


class FakeConnector(BackgroundServer):
    def __init__(
        self,
        *,
        status: int = 200,
        empty_body: bool = False,
        port: int = 0,
        teams: TeamsLimits | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Teams mode's windows slide on `clock` (a test may pass one it moves itself)."""
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
        self.faulted: list[Received] = []  # requests refused: an injected fault, or Teams mode's 429 and 400
        self.latency = 0.0  # seconds before every answer (the real service takes tens of ms); not in Teams mode
        # Teams mode (None: off).
        self.teams = teams
        self.tenants: dict[str, Tally] = {}
        self.conversations: dict[str, Tally] = {}
        self._tenant_of: dict[str, str] = {}
        self._tenant_arrivals: dict[str, _Arrivals] = collections.defaultdict(_Arrivals)
        self._conversation_arrivals: dict[str, _Arrivals] = collections.defaultdict(_Arrivals)
        self._chats: dict[tuple[str, str], str] = {}  # (tenant, member id) -> one-to-one conversation id
        self._pages: dict[str, tuple[str, int]] = {}  # continuation token -> (conversation id, offset)
        self._broken_paging: dict[str, str] = {}  # conversation id -> "circle" or "endless" (see break_paging)
        self._random = random.Random(teams.seed if teams else 0)
        self._clock = clock
        self.service_times: list[float] = []  # Teams mode: the service time drawn for each request, in turn

    # ---- control from tests -----------------------------------------------------------
    def fail(
        self,
        status: int,
        code: str | None = None,
        *,
        times: int | None = 1,
        conversation_id: str | None = None,
        retry_after: float | str | None = None,
        hang: float | None = None,
        reset: bool = False,
        teams_shape: bool = False,
    ) -> None:
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
        """Forget received requests and Teams mode's tallies (not its windows: they are the service's state)."""
        with self._lock:
            self.requests.clear()
            self.faulted.clear()
            self.service_times.clear()
            self.tenants.clear()
            self.conversations.clear()

    def tenant_of(self, conversation_id: str) -> str | None:
        """The tenant recorded for a conversation: by a request that named it, a create or a roster."""
        with self._lock:
            return self._tenant_of.get(conversation_id)

    def set_roster(self, conversation_id: str, count: int, tenant_id: str) -> list[dict[str, Any]]:
        """Give a team (or any conversation) `count` members shaped as Teams' (29: ids, aadObjectId),
        the same for the same arguments; records the conversation's tenant. Returns the members."""
        rng = random.Random(f"{tenant_id}/{conversation_id}")
        members = [
            {
                "id": f"29:1{rng.getrandbits(256):064x}",
                "name": f"User {i}",
                "aadObjectId": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                "tenantId": tenant_id,
                "userRole": "user",
            }
            for i in range(count)
        ]
        with self._lock:
            self.members[conversation_id] = members
            self._tenant_of[conversation_id] = tenant_id
        return members

    def break_paging(self, conversation_id: str, how: str) -> None:
        """Make the members endpoint of a conversation misbehave, as a faulty service might: "circle" answers
        every page with its members and the same continuation token; "endless" answers one new member a page,
        with a new token each time, for ever."""
        assert how in ("circle", "endless")
        with self._lock:
            self._broken_paging[conversation_id] = how

    def teams_stats(self) -> dict[str, Any]:
        """Teams mode's tallies as JSON: per tenant, and the conversations summed up (there may be many)."""
        with self._lock:
            tenants = {
                t: {"accepted": n.accepted, "refused": n.refused, "peak": n.peak} for t, n in self.tenants.items()
            }
            conversations = list(self.conversations.values())
        return {
            "tenants": tenants,
            "conversations": len(conversations),
            "conversations_refused": sum(1 for n in conversations if n.refused),
            "conversation_max_accepted": max((n.accepted for n in conversations), default=0),
            "duplicates": sum(n - 1 for n in self.duplicates().values()),
        }

    def duplicates(self, conversation_id: str | None = None) -> dict[tuple[str | None, str | None], int]:
        """(conversation, text) of accepted sends and replies delivered more than once, with their count."""
        counts = collections.Counter(
            (r.conversation_id, r.body.get("text"))
            for r in self.activities(conversation_id)
            if isinstance(r.body, dict)
        )
        return {key: n for key, n in counts.items() if n > 1}

    def activities(self, conversation_id: str | None = None) -> list[Received]:
        with self._lock:
            return [
                r
                for r in self.requests
                if r.operation in ("send", "reply")
                and (conversation_id is None or r.conversation_id == conversation_id)
            ]

    def texts(self, conversation_id: str | None = None) -> list[str]:
        return [r.body.get("text") for r in self.activities(conversation_id) if isinstance(r.body, dict)]

    def wait_for(self, predicate: Callable[[FakeConnector], bool], timeout: float = 10.0) -> bool:
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
            arrived = time.monotonic()
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
                return await self._answer(request, operation, cid, aid, body, authorization, arrived)
            finally:
                with self._lock:
                    self.in_flight -= 1

        return handler

    async def _answer(
        self,
        request: web.Request,
        operation: str,
        cid: str | None,
        aid: str | None,
        body: Any,
        authorization: str | None,
        arrived: float,
    ) -> web.StreamResponse:
        if self.teams is not None:
            refused = await self._teams_gate(request, operation, cid, aid, body, authorization, arrived)
            if refused is not None:
                return refused
        elif self.latency:
            await asyncio.sleep(self.latency)
        if self._token_checker is not None:
            token = (authorization or "").partition("Bearer ")[2]
            if not token or not self._token_checker(token):
                return _error(401, "Unauthorized", "Authorization has been denied for this request.")
        fault = self._take_fault(cid)
        if fault is not None:
            with self._lock:
                self.faulted.append(
                    Received(
                        request.method,
                        operation,
                        cid,
                        aid,
                        authorization,
                        body,
                        status=0 if fault.reset else fault.status,
                        arrived=arrived,
                    )
                )
            if fault.hang:
                await asyncio.sleep(fault.hang)
            if fault.reset:
                assert request.transport is not None
                request.transport.abort()
                return web.Response()
            if fault.status >= 300:
                headers = {} if fault.retry_after is None else {"Retry-After": _seconds(fault.retry_after)}
                return _error(fault.status, fault.code or "ServiceError", "injected fault", headers, fault.teams_shape)
        received = Received(request.method, operation, cid, aid, authorization, body, arrived=arrived)
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
            if self.teams is not None:
                return self._create_in_teams(body)
            new_id = f"conv-{uuid.uuid4().hex[:12]}"
            return web.json_response({"id": new_id, "serviceUrl": self.base_url, "activityId": str(next(self._ids))})
        if operation == "delete":
            return web.Response(status=200)
        if self.empty_body:
            return web.Response(status=self.status)
        return web.json_response({"id": aid if operation == "update" else received.new_id}, status=self.status)

    # ---- Teams mode ------------------------------------------------------------------------
    async def _teams_gate(
        self,
        request: web.Request,
        operation: str,
        cid: str | None,
        aid: str | None,
        body: Any,
        authorization: str | None,
        arrived: float,
    ) -> web.Response | None:
        """Count the request against Teams' limits as it arrives, wait the service time, and answer
        429 past a limit or 400 to what Teams would not take; None lets the request through."""
        if self._token_checker is not None:
            token = (authorization or "").partition("Bearer ")[2]
            if not token or not self._token_checker(token):
                return None  # answered 401 by the common path, uncounted: Teams cannot tell whose it is
        wait, delay = self._admit(operation, cid, body)
        await asyncio.sleep(delay)
        if wait:
            status = 429
            answer = _error(429, "Throttled", "Too many requests", {"Retry-After": str(max(1, math.ceil(wait)))})
        else:
            problem = self._teams_problem(operation, cid, request, body)
            if problem is None:
                return None
            status, answer = 400, _error(400, "BadArgument", problem)
        with self._lock:
            self.faulted.append(
                Received(request.method, operation, cid, aid, authorization, body, status=status, arrived=arrived)
            )
        return answer

    def _admit(self, operation: str, cid: str | None, body: Any) -> tuple[float, float]:
        """(seconds until the request fits the windows, 0 when it does now; its service time)."""
        limits = self.teams
        assert limits is not None
        now = self._clock()
        with self._lock:
            tenant = _tenant_in(operation, body)
            if cid is not None:
                if tenant is None:
                    tenant = self._tenant_of.get(cid)
                else:
                    self._tenant_of.setdefault(cid, tenant)
            tenant = tenant or UNKNOWN_TENANT
            tenant_arrivals = self._tenant_arrivals[tenant]
            wait = tenant_arrivals.wait(now, (limits.tenant,))
            conversation_arrivals = None
            if cid is not None and operation in CONVERSATION_OPERATIONS:
                conversation_arrivals = self._conversation_arrivals[cid]
                wait = max(wait, conversation_arrivals.wait(now, limits.conversation))
            tenant_tally = self.tenants.setdefault(tenant, Tally())
            tallies = [tenant_tally] if cid is None else [tenant_tally, self.conversations.setdefault(cid, Tally())]
            if wait:
                for tally in tallies:
                    tally.refused += 1
            else:
                for tally in tallies:
                    tally.accepted += 1
                tenant_arrivals.add(now, limits.tenant.seconds)
                tenant_tally.peak = max(tenant_tally.peak, tenant_arrivals.count(now, limits.tenant.seconds))
                if conversation_arrivals is not None:
                    conversation_arrivals.add(now, max((w.seconds for w in limits.conversation), default=0.0))
            delay = (
                self._random.lognormvariate(math.log(limits.latency_median), limits.latency_sigma)
                if limits.latency_median > 0
                else 0.0
            )
            self.service_times.append(delay)
        return wait, delay

    def _teams_problem(self, operation: str, cid: str | None, request: web.Request, body: Any) -> str | None:
        """Why Teams would answer 400 to a create or a members page; None when it would not."""
        if operation == "create":
            members = body.get("members") if isinstance(body, dict) else None
            if (
                not isinstance(members, list)
                or not members
                or not all(isinstance(m, dict) and isinstance(m.get("id"), str) for m in members)
            ):
                return "members are required"
            if _tenant_in("create", body) is None:
                return "tenantId is required"
        elif operation == "members":
            if not (request.query.get("pageSize") or "0").isdigit():
                return "pageSize must be a number"
            token = request.query.get("continuationToken")
            if token and self._pages.get(token, ("",))[0] != cid:
                return "invalid continuationToken"
        return None

    def _create_in_teams(self, body: dict[str, Any]) -> web.Response:
        """Teams keeps one one-to-one chat per member and tenant: asking again returns it (201, id only)."""
        tenant = _tenant_in("create", body) or UNKNOWN_TENANT
        members = body["members"]
        one_to_one = not body.get("isGroup") and len(members) == 1
        with self._lock:
            cid = self._chats.get((tenant, members[0]["id"])) if one_to_one else None
            if cid is None:
                cid = f"a:1{uuid.uuid4().hex}" if one_to_one else f"19:{uuid.uuid4().hex}@thread.tacv2"
                if one_to_one:
                    self._chats[(tenant, members[0]["id"])] = cid
            self._tenant_of.setdefault(cid, tenant)
        return web.json_response({"id": cid}, status=201)

    def _members(self, cid: str, request: web.Request) -> web.Response:
        broken = self._broken_paging.get(cid)
        if broken == "circle":
            return web.json_response({"members": self.members.get(cid, []), "continuationToken": "again"})
        if broken == "endless":
            page = int(request.query.get("continuationToken") or 0)
            member = {"id": f"29:endless-{page}", "name": f"User {page}", "tenantId": self._tenant_of.get(cid)}
            return web.json_response({"members": [member], "continuationToken": str(page + 1)})
        if self.teams is not None:
            return self._members_in_teams(cid, request)
        members = self.members.get(cid, [])
        size = int(request.query.get("pageSize") or 100)
        start = int(request.query.get("continuationToken") or 0)
        page = members[start : start + size]
        token = str(start + size) if start + size < len(members) else None
        return web.json_response({"members": page, **({"continuationToken": token} if token else {})})

    def _members_in_teams(self, cid: str, request: web.Request) -> web.Response:
        """Teams' paging: a page size between 50 and 500 (200 by default) and opaque continuation tokens."""
        size = min(max(int(request.query.get("pageSize") or PAGE_SIZE_DEFAULT), PAGE_SIZE_MIN), PAGE_SIZE_MAX)
        token = request.query.get("continuationToken")
        with self._lock:
            start = self._pages[token][1] if token else 0
            members = self.members.get(cid, [])
            page = members[start : start + size]
            following = None
            if start + size < len(members):
                following = uuid.uuid4().hex
                self._pages[following] = (cid, start + size)
        return web.json_response({"members": page, **({"continuationToken": following} if following else {})})


def _seconds(value: float | str) -> str:
    """A Retry-After value: text as it is, a number as delta-seconds (digits, never an exponent)."""
    return value if isinstance(value, str) else f"{value:f}".rstrip("0").rstrip(".") or "0"


def _error(
    status: int, code: str, message: str, headers: dict[str, str] | None = None, teams_shape: bool = False
) -> web.Response:
    body = {"errorCode": code, "message": message} if teams_shape else {"error": {"code": code, "message": message}}
    headers = {**(headers or {}), "X-Correlating-OperationId": uuid.uuid4().hex[:16]}
    return web.json_response(body, status=status, headers=headers)

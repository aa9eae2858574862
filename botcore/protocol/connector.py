"""Bot Connector REST API v3 client (docs/protocol.md, "The Connector API").

Every call carries the bot's token, so the client first asks botcore.trust whether the
serviceUrl earned it (UntrustedServiceUrlError if not). Transient failures are retried
within a bounded budget; everything else becomes a typed error that says what
the caller should do: retire the conversation, fix the request, or try later.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from .. import telemetry
from ..backoff import backoff
from ..errors import BadInputError, BotError, NotFoundError, UnavailableError
from ..settings import MAX_RETRY_AFTER_SECONDS
from .activity import ActivityError, ChannelAccount, ConversationReference, ServiceEndpoint
from .http import get_http_client
from .tokens import TokenError

if TYPE_CHECKING:
    import httpx

    from .tokens import TokenProvider
    from .trust import ServiceTrust


log = logging.getLogger(__name__)

RETRYABLE_STATUS = frozenset({412, 429, 502, 503, 504})
GONE_CODES = frozenset(
    {
        "ConversationBlockedByUser",
        "BotNotInConversationRoster",
        "BotDisabledByAdmin",
        "ForbiddenOperationException",
        "MessageWritesBlocked",
        "ConversationNotFound",
    }
)
BACKOFF_BASE = 0.5
BACKOFF_CAP = 8.0
_DELTA_SECONDS = re.compile(r"[0-9]+(?:\.[0-9]+)?")  # digits (a fraction tolerated): no sign, exponent, inf, nan
_JSON = json.JSONEncoder(separators=(",", ":"))  # json.dumps with options builds an encoder per call
# The calls' routes, as their spans name them (botcore.telemetry): templates, with no conversation's id in them.
ACTIVITIES = "v3/conversations/{conversationId}/activities"
ACTIVITY = "v3/conversations/{conversationId}/activities/{activityId}"
PAGED_MEMBERS = "v3/conversations/{conversationId}/pagedmembers"


class ConnectorError(BotError):
    """A failed Connector call; each subclass is one kind of failure (botcore.errors). `service_code` is the
    error code the Connector answered with (None without one), `status` its HTTP status (0: no answer)."""

    def __init__(self, status: int, service_code: str | None, message: str, operation_id: str | None = None) -> None:
        super().__init__(f"HTTP {status} {service_code or ''}: {message}".strip())
        self.status, self.service_code, self.message, self.operation_id = status, service_code, message, operation_id


class ConversationGoneError(ConnectorError, NotFoundError):
    """Permanent: the user blocked the bot, removed it, or the conversation is gone."""

    code = "ConversationGone"


class RequestRejectedError(ConnectorError, BadInputError):
    """The request itself is wrong (400, 413 ...): retrying will not help."""


class ConnectorAuthError(ConnectorError, UnavailableError):
    """The Connector refused the bot's token even after one refresh."""


class RetryableConnectorError(ConnectorError, UnavailableError):
    """Transient (429, 5xx, network): the caller may try again after `retry_after` seconds."""

    def __init__(
        self,
        status: int,
        service_code: str | None,
        message: str,
        operation_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(status, service_code, message, operation_id)
        self.retry_after = retry_after


@dataclass(frozen=True)
class ResourceResponse:
    id: str | None


@dataclass(frozen=True)
class ConversationResourceResponse:
    id: str
    service_url: str | None
    activity_id: str | None


@dataclass(frozen=True)
class PagedMembers:
    """A page of a conversation's members. An entry that is no member (no id, an id past the protocol's
    bounds) is set aside with the reason, so that one bad entry never costs the page."""

    members: list[ChannelAccount]
    continuation_token: str | None
    invalid: list[str] = field(default_factory=list)


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP-date. None when there is none or it
    means nothing usable (negative, not finite, not a date), so that the caller's default applies."""
    if not value:
        return None
    value = value.strip()
    if _DELTA_SECONDS.fullmatch(value):
        seconds = float(value)
        return seconds if math.isfinite(seconds) else None  # hundreds of digits are infinity as a float
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # "-0000": UTC with no claim about local time
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _error_of(response: httpx.Response) -> tuple[str | None, str]:
    try:
        body = response.json()
    except ValueError:
        return None, (response.text or "")[:300]
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            return error.get("code"), str(error.get("message", ""))[:300]
        if "errorCode" in body:
            return body.get("errorCode"), str(body.get("message", ""))[:300]
    return None, json.dumps(body)[:300]


class ConnectorClient:
    """The Connector's calls (docs/protocol.md, "The Connector API").

    The call errors, which every call raises: ConversationGoneError (403 or 404 with a code of GONE_CODES:
    retire the conversation), RequestRejectedError (any other refusal: retrying cannot help), ConnectorAuthError
    (401 again after one token refresh), RetryableConnectorError (412, 429, 502-504, network errors and
    timeouts, once the attempts or the wait budget are spent), UntrustedServiceUrlError (the serviceUrl may not
    have the bot's token: nothing was sent), TokenError (no bot token), and StorageUnavailableError when the
    record of verified service URLs cannot be read.
    """

    def __init__(
        self,
        trust: ServiceTrust,
        http: httpx.AsyncClient | None = None,
        tokens: TokenProvider | None = None,
        *,
        max_attempts: int = 4,
        max_retry_wait: float = 30.0,
        max_retry_after: float = MAX_RETRY_AFTER_SECONDS,
    ) -> None:
        self._http, self._shared = http, False  # shared: the process-wide client of this loop
        self.trust, self.tokens = trust, tokens
        self.max_attempts, self.max_retry_wait = max_attempts, max_retry_wait
        self.max_retry_after = max_retry_after  # BotMaxRetryAfterSeconds: the longest pause a channel may ask for

    @property
    def http(self) -> httpx.AsyncClient:
        if self._http is None or self._shared and self._http.is_closed:
            self._http, self._shared = get_http_client(), True
        return self._http

    async def prepare(self, endpoints: Iterable[ServiceEndpoint]) -> None:
        """Have what a paced run's requests wait for before they leave (the bot's token, each endpoint's trust
        read from storage) before its first slot. Fetched at the first requests, it would hold them back and let
        them go together, a burst the channel counts against its limit. What cannot be had now is left to the
        requests, which report it for each conversation."""
        sends_token = self.tokens is not None
        for endpoint in set(endpoints):
            try:
                await self.trust.base_for(endpoint, sends_token)
            except BotError:
                pass  # refused, or its trust could not be read: each request says so
        if self.tokens is not None:
            try:
                await self.tokens.get_token()
            except TokenError as exc:
                log.warning("the bot's token could not be fetched ahead of a run: %s", exc)

    # ---- the API -----------------------------------------------------------------------
    async def send_to_conversation(
        self, target: ServiceEndpoint, conversation_id: str, activity: dict[str, Any], *, retry: bool = True
    ) -> ResourceResponse:
        """Post an activity into a conversation. Raises the call errors."""
        path = f"v3/conversations/{quote(conversation_id, safe='')}/activities"
        body = await self._call("POST", target, path, ACTIVITIES, activity, retry)
        return ResourceResponse(body.get("id") if isinstance(body, dict) else None)

    async def reply_to_activity(
        self,
        target: ServiceEndpoint,
        conversation_id: str,
        activity_id: str,
        activity: dict[str, Any],
        *,
        retry: bool = True,
    ) -> ResourceResponse:
        """Post an activity as the reply to another. Raises the call errors."""
        path = f"v3/conversations/{quote(conversation_id, safe='')}/activities/{quote(activity_id, safe='')}"
        body = await self._call("POST", target, path, ACTIVITY, activity, retry)
        return ResourceResponse(body.get("id") if isinstance(body, dict) else None)

    async def create_conversation(
        self, target: ServiceEndpoint, params: dict[str, Any]
    ) -> ConversationResourceResponse:
        """Create a conversation (a member's one-to-one chat). Raises the call errors; an answer without the new
        conversation's id is a RetryableConnectorError."""
        body = await self._call("POST", target, "v3/conversations", "v3/conversations", params, True)
        if not isinstance(body, dict) or not isinstance(body.get("id"), str):
            raise RetryableConnectorError(200, None, "create conversation answered without an id")
        return ConversationResourceResponse(body["id"], body.get("serviceUrl"), body.get("activityId"))

    async def update_activity(
        self,
        target: ServiceEndpoint,
        conversation_id: str,
        activity_id: str,
        activity: dict[str, Any],
        *,
        retry: bool = True,
    ) -> ResourceResponse:
        """Replace an activity the bot sent. Raises the call errors."""
        path = f"v3/conversations/{quote(conversation_id, safe='')}/activities/{quote(activity_id, safe='')}"
        body = await self._call("PUT", target, path, ACTIVITY, activity, retry)
        return ResourceResponse(body.get("id") if isinstance(body, dict) else None)

    async def delete_activity(
        self, target: ServiceEndpoint, conversation_id: str, activity_id: str, *, retry: bool = True
    ) -> None:
        """Delete an activity the bot sent. Raises the call errors."""
        path = f"v3/conversations/{quote(conversation_id, safe='')}/activities/{quote(activity_id, safe='')}"
        await self._call("DELETE", target, path, ACTIVITY, None, retry)

    async def get_paged_members(
        self,
        target: ServiceEndpoint,
        conversation_id: str,
        page_size: int | None = None,
        continuation_token: str | None = None,
    ) -> PagedMembers:
        """One page of a conversation's members. Raises the call errors."""
        params = {k: v for k, v in (("pageSize", page_size), ("continuationToken", continuation_token)) if v}
        path = f"v3/conversations/{quote(conversation_id, safe='')}/pagedmembers"
        body = await self._call("GET", target, path, PAGED_MEMBERS, None, True, params)
        body = body if isinstance(body, dict) else {}
        entries = body.get("members") or []
        members: list[ChannelAccount] = []
        invalid: list[str] = [] if isinstance(entries, list) else ["members is not a list"]
        for entry in entries if isinstance(entries, list) else []:
            try:
                members.append(ChannelAccount.from_dict(entry, "member"))
            except ActivityError as exc:
                invalid.append(str(exc))
        token = body.get("continuationToken")
        return PagedMembers(members, token if isinstance(token, str) and token else None, invalid)

    async def send(self, reference: ConversationReference, *, retry: bool = True, **fields: Any) -> ResourceResponse:
        """A proactive message into a stored conversation. Raises the call errors."""
        return await self.send_to_conversation(
            reference.endpoint, reference.conversation.id, reference.outgoing(**fields), retry=retry
        )

    async def reply(
        self, reference: ConversationReference, reply: dict[str, Any], *, retry: bool = False
    ) -> ResourceResponse:
        """A turn's reply: to the activity it answers (`replyToId`), else into the conversation. Raises the call
        errors."""
        outgoing = reference.outgoing(**reply)
        reply_to = reply.get("replyToId")
        if reply_to:
            return await self.reply_to_activity(
                reference.endpoint, reference.conversation.id, reply_to, outgoing, retry=retry
            )
        return await self.send_to_conversation(reference.endpoint, reference.conversation.id, outgoing, retry=retry)

    # ---- the machinery -------------------------------------------------------------------
    async def _call(
        self,
        method: str,
        target: ServiceEndpoint,
        path: str,
        route: str,
        body: Any,
        retry: bool,
        params: dict[str, Any] | None = None,
    ) -> Any:
        """The call, as one span (`route`: its path as a template) however many attempts it takes."""
        base = await self.trust.base_for(target, self.tokens is not None)
        call = telemetry.connector_call(method, base, route)
        error: BaseException | None = None
        try:
            return await self._attempts(method, base + path, route, body, retry, params, call)
        except BaseException as exc:
            error = exc
            raise
        finally:
            call.end(error)

    async def _attempts(
        self,
        method: str,
        url: str,
        route: str,
        body: Any,
        retry: bool,
        params: dict[str, Any] | None,
        call: telemetry.Call,
    ) -> Any:
        content = None if body is None else _JSON.encode(body).encode()
        attempts = self.max_attempts if retry else 1
        waited = 0.0
        refreshed = False
        attempt = 0
        while True:
            attempt += 1
            headers = {"Content-Type": "application/json"} if content is not None else {}
            token = None
            if self.tokens is not None:
                token = await self.tokens.get_token()
                headers["Authorization"] = f"Bearer {token}"
            try:
                response = await self.http.request(method, url, content=content, headers=headers, params=params)
            except Exception as exc:  # network errors and timeouts are transient
                error: RetryableConnectorError = RetryableConnectorError(
                    0, type(exc).__name__, f"{method} {urlsplit(url).hostname}: {exc!r}"[:300]
                )
            else:
                status = response.status_code
                call.set_attribute("http.response.status_code", status)
                if attempt > 1:
                    call.set_attribute("http.request.resend_count", attempt - 1)
                if status < 300:
                    return response.json() if response.content else None
                if status == 429:
                    telemetry.throttled(route)
                code, message = _error_of(response)
                operation_id = response.headers.get("X-Correlating-OperationId")
                log.warning(
                    "connector %s %s: HTTP %s %s (X-Correlating-OperationId %s)",
                    method,
                    urlsplit(url).hostname,
                    status,
                    code,
                    operation_id,
                )
                if status == 401 and self.tokens is not None and not refreshed:
                    refreshed = True
                    await self.tokens.get_token(force_refresh=True, stale=token)
                    attempt -= 1
                    continue
                if status == 401:
                    raise ConnectorAuthError(status, code, message, operation_id)
                if code in GONE_CODES and status in (403, 404):
                    raise ConversationGoneError(status, code, message, operation_id)
                if status not in RETRYABLE_STATUS:
                    raise RequestRejectedError(status, code, message, operation_id)
                retry_after = _retry_after(response.headers.get("Retry-After"))
                if retry_after is not None and retry_after > self.max_retry_after:
                    log.warning(
                        "connector %s %s: Retry-After %r is longer than BotMaxRetryAfterSeconds; waiting %.0fs",
                        method,
                        urlsplit(url).hostname,
                        response.headers.get("Retry-After"),
                        self.max_retry_after,
                    )
                    retry_after = self.max_retry_after
                error = RetryableConnectorError(status, code, message, operation_id, retry_after)
            # retry_after stays what the Connector said (None without the header): a caller that paces on it
            # must not mistake this client's own back-off for the channel's instruction.
            delay = error.retry_after
            if delay is None:
                delay = backoff(attempt, base=BACKOFF_BASE, cap=BACKOFF_CAP)
            if attempt >= attempts or waited + delay > self.max_retry_wait:
                raise error
            waited += delay
            await asyncio.sleep(delay)

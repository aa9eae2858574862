"""The bot's own outbound token (docs/protocol.md, "The bot's outbound token"), cached for the whole process.

One provider per (endpoint, tenant, client, scope) lives as long as the process:
every message of every invocation shares its token, refreshed a few minutes
before expiry by a single request. Callers wait on that request only when no
usable token is left: until then the refresh runs behind them, since sends that
wait for it behind their pace slots would leave together when it ends.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Protocol

from ..errors import ConfigurationError, UnavailableError
from ..settings import Settings
from .http import get_http_client

if TYPE_CHECKING:
    import httpx

log = logging.getLogger(__name__)

REFRESH_MARGIN = 300.0  # seconds before expiry that a token is refreshed (behind its callers)
RETRY_REFRESH = 10.0  # seconds after a failed refresh behind the callers before the next one


class TokenError(UnavailableError):
    """The identity provider did not issue a token; carries only its status and its `error` code
    (`service_code`)."""

    def __init__(self, message: str, status: int | None = None, service_code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.service_code = status, service_code


class TokenProvider(Protocol):
    async def get_token(self, *, force_refresh: bool = False, stale: str | None = None) -> str: ...


class CachedTokenProvider:
    """Caching and single-flight refresh; subclasses only know how to ask for a token."""

    def __init__(self, http: httpx.AsyncClient | None = None) -> None:
        self._http = http
        self._token: str | None = None
        self.expires_at = 0.0
        self._refresh_at = 0.0  # from then the token is refreshed behind its callers
        self._usable_until = 0.0  # from then callers wait for a fresh one
        self._retry_at = 0.0
        self._inflight: dict[asyncio.AbstractEventLoop, asyncio.Task[str]] = {}
        self.requests = 0

    @property
    def http(self) -> httpx.AsyncClient:
        if self._http is not None:
            return self._http
        return get_http_client()

    def _fresh(self) -> bool:
        return self._token is not None and time.time() < self._refresh_at

    async def get_token(self, *, force_refresh: bool = False, stale: str | None = None) -> str:
        """The cached token, refreshed when near expiry.

        force_refresh (after a 401 from the Connector) refreshes once, however many
        callers force at the same time: a caller that saw token X fail passes
        stale=X, and nothing is fetched if the cache already holds a newer token.
        """
        if force_refresh and stale is not None and self._token not in (None, stale):
            return self._token
        if not force_refresh and self._fresh() and self._token is not None:
            return self._token
        now = time.time()
        if not force_refresh and self._token is not None and now < self._usable_until:
            if now >= self._retry_at and asyncio.get_running_loop() not in self._inflight:
                self._refreshing().add_done_callback(self._refreshed_behind)
            return self._token
        return await asyncio.shield(self._refreshing())

    def _refreshing(self) -> asyncio.Task[str]:
        """The refresh under way on this loop, or a new one: one request however many callers."""
        loop = asyncio.get_running_loop()
        task = self._inflight.get(loop)
        if task is None:
            task = self._inflight[loop] = loop.create_task(self._refresh())
            task.add_done_callback(lambda _: self._inflight.pop(loop, None))
        return task

    def _refreshed_behind(self, task: asyncio.Task[str]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        self._retry_at = time.time() + RETRY_REFRESH
        log.warning("the bot's token could not be refreshed ahead of its expiry: %s", task.exception())

    async def _refresh(self) -> str:
        self.requests += 1
        token, expires_at = await self._request()
        # Short-lived tokens are refreshed at half-life rather than never being "fresh"; callers wait for a
        # fresh one only in the last half of the margin.
        margin = min(REFRESH_MARGIN, (expires_at - time.time()) / 2)
        self._token, self.expires_at = token, expires_at
        self._refresh_at, self._usable_until = expires_at - margin, expires_at - margin / 2
        return token

    async def _request(self) -> tuple[str, float]:
        raise NotImplementedError

    @staticmethod
    def _error(response: httpx.Response, what: str) -> TokenError:
        code = None
        try:
            code = response.json().get("error")
        except ValueError:
            pass
        return TokenError(
            f"{what} refused a token: HTTP {response.status_code} {code or ''}".strip(), response.status_code, code
        )


class ClientSecretTokenProvider(CachedTokenProvider):
    def __init__(
        self,
        authority_host: str,
        tenant: str,
        client_id: str,
        client_secret: str,
        scope: str,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        super().__init__(http)
        self.url = f"{authority_host.rstrip('/')}/{tenant}/oauth2/v2.0/token"
        self._form = {
            "grant_type": "client_credentials",
            "client_id": client_id,
            "client_secret": client_secret,
            "scope": scope,
        }

    async def _request(self) -> tuple[str, float]:
        try:
            response = await self.http.post(self.url, data=self._form)
        except Exception as exc:
            raise TokenError(f"token endpoint {self.url} unreachable: {type(exc).__name__}") from None
        if response.status_code != 200:
            raise self._error(response, "token endpoint")
        token, expires_in = _token_fields(response, "token endpoint", "expires_in")
        return token, time.time() + (expires_in if expires_in is not None else 3600.0)


class ManagedIdentityTokenProvider(CachedTokenProvider):
    def __init__(
        self,
        endpoint: str,
        identity_header: str,
        client_id: str | None,
        resource: str,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        super().__init__(http)
        self.endpoint, self.resource = endpoint, resource
        self._header = identity_header
        self._params = {"api-version": "2019-08-01", "resource": resource}
        if client_id:
            self._params["client_id"] = client_id

    async def _request(self) -> tuple[str, float]:
        try:
            response = await self.http.get(
                self.endpoint, params=self._params, headers={"X-IDENTITY-HEADER": self._header}
            )
        except Exception as exc:
            raise TokenError(f"managed identity endpoint unreachable: {type(exc).__name__}") from None
        if response.status_code != 200:
            raise self._error(response, "managed identity endpoint")
        token, expires_on = _token_fields(response, "managed identity endpoint", "expires_on")
        if expires_on is None:
            raise TokenError("managed identity endpoint answered without expires_on", response.status_code, None)
        return token, expires_on


def _token_fields(response: httpx.Response, what: str, expiry: str) -> tuple[str, float | None]:
    """The token and its expiry field from a 200 answer; TokenError when the body is not a token."""
    try:
        body = response.json()
        token = body["access_token"]
        raw = body.get(expiry)
        expires = float(raw) if raw is not None else None
    except (ValueError, KeyError, TypeError, AttributeError):
        raise TokenError(f"{what} answered 200 without a usable access_token", response.status_code, None) from None
    if not isinstance(token, str) or not token:
        raise TokenError(f"{what} answered 200 without a usable access_token", response.status_code, None)
    return token, expires


_providers: dict[tuple[str, ...], CachedTokenProvider] = {}


def token_provider_for(settings: Settings) -> CachedTokenProvider | None:
    """The process-wide provider for these settings; None when the bot has no app id."""
    if not settings.app_id:
        return None
    if settings.app_type == "UserAssignedMSI":
        if not settings.identity_endpoint:
            raise ConfigurationError(
                "MicrosoftAppType is UserAssignedMSI but IDENTITY_ENDPOINT is not set "
                "(the app needs a user-assigned managed identity)"
            )
        key: tuple[str, ...] = ("msi", settings.identity_endpoint, settings.app_id, settings.cloud.msi_resource)
        if key not in _providers:
            _providers[key] = ManagedIdentityTokenProvider(
                settings.identity_endpoint,
                settings.identity_header,
                settings.app_id,
                settings.cloud.msi_resource,
            )
        return _providers[key]
    if not settings.app_password:
        raise ConfigurationError(f"MicrosoftAppPassword is required for MicrosoftAppType {settings.app_type}")
    if settings.app_type == "SingleTenant":
        if not settings.tenant_id:
            raise ConfigurationError("MicrosoftAppTenantId is required for a SingleTenant bot")
        tenant = settings.tenant_id
    else:
        tenant = settings.cloud.channel_auth_tenant
    key = (
        "secret",
        settings.oauth_authority_host,
        tenant,
        settings.app_id,
        settings.cloud.oauth_scope,
        settings.app_password,
    )
    if key not in _providers:
        _providers[key] = ClientSecretTokenProvider(
            settings.oauth_authority_host,
            tenant,
            settings.app_id,
            settings.app_password,
            settings.cloud.oauth_scope,
        )
    return _providers[key]

"""What the Table and Queue clients share: errors, signing, and one retrying request.

Both speak the Storage REST API over the loop's aiohttp session. A request is signed
afresh on every attempt (the date is part of the signature); network errors, 408
and 5xx are retried twice with a short back-off, then StorageUnavailableError.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import hmac
import logging
import random
import time
from email.utils import formatdate
from typing import Any, Callable, Iterable, Mapping, NoReturn, Protocol

log = logging.getLogger("botcore.storage")

STORAGE_SCOPE = "https://storage.azure.com"
ATTEMPTS = 3
RETRY_STATUS = frozenset({408, 500, 502, 503, 504})


class StorageError(Exception):
    """A storage call failed; `status` 0 means no HTTP answer."""

    def __init__(self, status: int, code: str | None, message: str) -> None:
        super().__init__(f"HTTP {status} {code or ''}: {message}".strip() if status else message)
        self.status, self.code = status, code


class StorageUnavailableError(StorageError):
    """The service did not answer, or answered 5xx, on every attempt."""


class Auth(Protocol):
    async def headers(self, method: str, path: str, headers: Mapping[str, str],
                      params: Mapping[str, str] | None) -> dict[str, str]: ...


def http_date() -> str:
    """The RFC 1123 date, formatted once per second."""
    now = int(time.time())
    if now != _date_cache[0]:
        _date_cache[:] = [now, formatdate(now, usegmt=True)]
    return _date_cache[1]


_date_cache: list[Any] = [0, ""]


class SharedKeyLiteBase:
    """Shared Key Lite signing with the account key; each service defines what is signed."""

    def __init__(self, account: str, key: str) -> None:
        self.account, self._key = account, base64.b64decode(key)

    async def headers(self, method: str, path: str, headers: Mapping[str, str],
                      params: Mapping[str, str] | None) -> dict[str, str]:
        date = http_date()
        to_sign = self.string_to_sign(date, method, path, headers, params).encode()
        signature = base64.b64encode(hmac.new(self._key, to_sign, hashlib.sha256).digest()).decode()
        return {"x-ms-date": date, "Authorization": f"SharedKeyLite {self.account}:{signature}"}

    def string_to_sign(self, date: str, method: str, path: str, headers: Mapping[str, str],
                       params: Mapping[str, str] | None) -> str:
        raise NotImplementedError


class BearerToken:
    """Entra ID auth from an azure-core style async credential (the managed identity)."""

    def __init__(self, credential: Any) -> None:
        self._credential = credential

    async def headers(self, method: str, path: str, headers: Mapping[str, str],
                      params: Mapping[str, str] | None) -> dict[str, str]:
        token = await self._credential.get_token(STORAGE_SCOPE + "/.default")
        return {"x-ms-date": http_date(), "Authorization": f"Bearer {token.token}"}


def connection_parts(connection_string: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in connection_string.split(";") if "=" in part)


def account_key(parts: Mapping[str, str]) -> tuple[str, str]:
    account, key = parts.get("AccountName"), parts.get("AccountKey")
    if not account or not key:
        from .settings import ConfigurationError

        raise ConfigurationError("the storage connection string needs AccountName and AccountKey")
    return account, key


def service_endpoint(parts: Mapping[str, str], service: str) -> str:
    """`TableEndpoint` / `QueueEndpoint` of a connection string, or the account's public one."""
    account, _ = account_key(parts)
    return parts.get(f"{service.capitalize()}Endpoint") or (
        f"{parts.get('DefaultEndpointsProtocol', 'https')}://{account}.{service}."
        f"{parts.get('EndpointSuffix', 'core.windows.net')}")


def split_endpoint(endpoint: str) -> tuple[str, str]:
    """(origin, base path): Azurite puts the account in the path."""
    scheme, _, rest = endpoint.rstrip("/").partition("://")
    host, _, base = rest.partition("/")
    return f"{scheme}://{host}", f"/{base}" if base else ""


@functools.lru_cache(maxsize=4096)
def url_of(url: str) -> Any:
    """The URL sent exactly as signed (yarl would otherwise re-normalise it); cached, as a
    conversation's entity is read on every one of its turns."""
    from yarl import URL

    return URL(url, encoded=True)


async def send(session: Any, auth: Auth, method: str, origin: str, path: str, *, what: str,
               headers: Mapping[str, str], body: bytes | None = None, params: dict[str, str] | None = None,
               ok: Iterable[int] = (200, 201, 204),
               error_of: Callable[[bytes, str | None], tuple[str | None, str]],
               raise_for: Callable[[int, str | None, str], NoReturn]) -> tuple[int, Any, bytes]:
    """One call, retried on transient failures; `raise_for` turns any other failure into its error."""
    import aiohttp

    url = url_of(origin + path)
    last: StorageError | None = None
    for attempt in range(ATTEMPTS):
        if last is not None:
            log.warning("%s: %s failed (%s); attempt %d of %d", what, method, last, attempt + 1, ATTEMPTS)
            await asyncio.sleep(0.1 * 4 ** (attempt - 1) + random.uniform(0, 0.1))
        request_headers = dict(headers)
        request_headers.update(await auth.headers(method, path, request_headers, params))
        try:
            async with session.request(method, url, data=body, headers=request_headers, params=params,
                                       allow_redirects=False) as response:
                content = await response.read()
                status, response_headers = response.status, response.headers
        except (OSError, asyncio.TimeoutError, aiohttp.ClientError) as exc:
            last = StorageUnavailableError(0, None, f"{method} {what}: {type(exc).__name__}: {exc}"[:300])
            continue
        if status in ok:
            return status, response_headers, content
        code, message = error_of(content, response_headers.get("x-ms-error-code"))
        if status in RETRY_STATUS:
            last = StorageUnavailableError(status, code, message)
            continue
        raise_for(status, code, message)
    assert last is not None
    raise last

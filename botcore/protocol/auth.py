"""Inbound authentication of POST /api/messages (docs/protocol.md, "Inbound: authenticating POST /api/messages").

The validation path is chosen from the token's unverified issuer; signature and
claims are then verified on that path only. Signing keys are cached per OpenID
metadata URL for the whole process: refreshed every 24 h, and refetched on an
unknown `kid` at most once an hour, so a flood of forged kids cannot turn the
bot into a load generator against the identity provider.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import jwt

from ..errors import BadInputError, UnavailableError
from ..settings import Settings
from .activity import TRUST_DEVELOPMENT, TRUST_EMULATOR, TRUST_TOKEN, Activity
from .http import get_http_client

if TYPE_CHECKING:
    import httpx

log = logging.getLogger(__name__)

ALGORITHMS = ("RS256", "RS384", "RS512")
CLOCK_SKEW = 300
KEY_REFRESH = 24 * 3600
KEY_STALE_LIMIT = 5 * 24 * 3600  # keys older than this are not used when a refresh fails
KEY_RETRY = 60  # seconds between refresh attempts while the metadata cannot be fetched
UNKNOWN_KID_REFETCH = 3600


class AuthenticationError(BadInputError):
    """A failed check; `reason` goes to the log (it never contains the token), the caller reads only 401."""

    http_status, code, public_message = 401, "Unauthorized", "authentication failed"

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class KeysUnavailableError(UnavailableError):
    """The OpenID metadata or signing keys could not be fetched: not the caller's fault, retry later."""

    public_message = "signing keys are unavailable; retry later"


@dataclass(frozen=True)
class AuthResult:
    kind: str  # "channel", "emulator" or "development"
    trust: str  # stored with the reference: may this serviceUrl receive the bot's token?
    claims: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Key:
    key: Any
    endorsements: tuple[str, ...] | None


class OpenIdKeys:
    """The signing keys published behind one OpenID metadata URL."""

    def __init__(self, metadata_url: str) -> None:
        self.metadata_url = metadata_url
        self.keys: dict[str, _Key] = {}
        self.fetched_at = float("-inf")
        self.unknown_kid_refetch_at = float("-inf")
        self.retry_at = float("-inf")
        self._inflight: dict[asyncio.AbstractEventLoop, asyncio.Future[None]] = {}

    async def get(self, kid: str, http: httpx.AsyncClient) -> _Key:
        now = time.time()
        age = now - self.fetched_at
        if age > KEY_REFRESH and (now >= self.retry_at or age > KEY_STALE_LIMIT):
            try:
                await self.refresh(http)
            except KeysUnavailableError as exc:
                # The identity provider being down must not take the bot down with it: keys a day old
                # are still the ones channels sign with, so they serve until KEY_STALE_LIMIT.
                self.retry_at = time.time() + KEY_RETRY
                if not self.keys or age > KEY_STALE_LIMIT:
                    raise
                log.warning("%s; still using the keys fetched %.1f hours ago", exc, age / 3600)
        key = self.keys.get(kid)
        if key is None and time.time() - self.unknown_kid_refetch_at > UNKNOWN_KID_REFETCH:
            self.unknown_kid_refetch_at = time.time()
            log.info("unknown signing key %r: refetching %s", kid[:64], self.metadata_url)
            await self.refresh(http)
            key = self.keys.get(kid)
        if key is None:
            raise AuthenticationError(f"signing key {kid[:64]!r} is not published")
        return key

    async def refresh(self, http: httpx.AsyncClient) -> None:
        """One fetch at a time: concurrent callers wait for the one in flight."""
        loop = asyncio.get_running_loop()
        future = self._inflight.get(loop)
        if future is None:
            future = self._inflight[loop] = loop.create_task(self._fetch(http))
            future.add_done_callback(lambda _: self._inflight.pop(loop, None))
        await asyncio.shield(future)

    async def _fetch(self, http: httpx.AsyncClient) -> None:
        try:
            metadata = (await http.get(self.metadata_url)).raise_for_status().json()
            jwks = (await http.get(metadata["jwks_uri"])).raise_for_status().json()
        except Exception as exc:
            raise KeysUnavailableError(f"cannot fetch signing keys from {self.metadata_url}: {exc!r}") from exc
        keys: dict[str, _Key] = {}
        for jwk in jwks.get("keys", []):
            if jwk.get("kty") != "RSA" or "kid" not in jwk:
                continue
            try:
                public_key = jwt.PyJWK(jwk, algorithm="RS256").key
            except jwt.PyJWTError:
                log.warning("skipping unusable key %r from %s", jwk.get("kid"), self.metadata_url)
                continue
            endorsements = jwk.get("endorsements")
            keys[jwk["kid"]] = _Key(public_key, tuple(endorsements) if isinstance(endorsements, list) else None)
        self.keys = keys
        self.fetched_at = time.time()


_key_sources: dict[str, OpenIdKeys] = {}


def key_source(metadata_url: str) -> OpenIdKeys:
    source = _key_sources.get(metadata_url)
    if source is None:
        source = _key_sources[metadata_url] = OpenIdKeys(metadata_url)
    return source


def _is_emulator_issuer(issuer: str, settings: Settings) -> bool:
    cloud = settings.cloud
    tenants = cloud.emulator_tenants
    if settings.app_type == "SingleTenant" and settings.tenant_id:
        tenants = (*tenants, settings.tenant_id)
    return any(issuer in (f"https://sts.windows.net/{t}/", f"{cloud.emulator_v2_host}/{t}/v2.0") for t in tenants)


# Channels send the same token with every activity for up to an hour: its signature and
# claims are verified once, then only the checks that depend on the activity run.
VERIFIED_CACHE_SIZE = 1024


@dataclass(frozen=True)
class _Verified:
    kind: str
    metadata_url: str
    kid: str
    key: _Key  # the key that verified the token, as fetched then
    claims: dict[str, Any]


_verified: dict[tuple[str, str, str], _Verified] = {}


def _remember(cache_key: tuple[str, str, str], verified: _Verified) -> None:
    if len(_verified) >= VERIFIED_CACHE_SIZE:
        del _verified[next(iter(_verified))]
    _verified[cache_key] = verified


def _recall(cache_key: tuple[str, str, str]) -> _Verified | None:
    found = _verified.get(cache_key)
    if found is not None and found.claims["exp"] + CLOCK_SKEW <= time.time():
        del _verified[cache_key]
        return None
    return found


def _bearer_token(auth_header: str | None) -> str:
    if not auth_header:
        raise AuthenticationError("no Authorization header")
    parts = auth_header.split(" ")
    if len(parts) != 2 or parts[0] != "Bearer" or not parts[1]:  # exactly so, as the protocol has it
        raise AuthenticationError("Authorization header is not 'Bearer <token>'")
    return parts[1]


async def authenticate(
    auth_header: str | None, activity: Activity, settings: Settings, http: httpx.AsyncClient | None = None
) -> AuthResult:
    if settings.auth_disabled:
        # Local development without an app id (Settings allows it only in Development):
        # nothing to check a token against, and the bot sends no token either.
        return AuthResult("development", TRUST_DEVELOPMENT)
    token = _bearer_token(auth_header)
    if http is None:
        http = get_http_client()
    cache_key = (token, settings.app_id, settings.channel_openid_url)
    found = _recall(cache_key)
    if found is not None:
        # A token is good only while its key is published. The lookup refreshes and refetches as for any
        # token, and refuses a kid no longer published; a key replaced under the same kid (a refresh)
        # means verifying the token again.
        if await key_source(found.metadata_url).get(found.kid, http) is found.key:
            return _check_activity(found.kind, found.key, found.claims, activity, settings)
    try:
        header = jwt.get_unverified_header(token)
        unverified = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError as exc:
        raise AuthenticationError(f"malformed token: {type(exc).__name__}") from None
    alg, kid, issuer = header.get("alg"), header.get("kid"), unverified.get("iss")
    if alg not in ALGORITHMS:
        raise AuthenticationError(f"algorithm {str(alg)[:16]!r} is not allowed")
    if not isinstance(kid, str) or not kid:
        raise AuthenticationError("token has no key id")
    if not isinstance(issuer, str):
        raise AuthenticationError("token has no issuer")

    if issuer == settings.cloud.channel_issuer:
        kind, metadata_url = "channel", settings.channel_openid_url
    elif _is_emulator_issuer(issuer, settings):
        kind, metadata_url = "emulator", settings.emulator_openid_url
    else:
        raise AuthenticationError(f"issuer {issuer[:100]!r} is not trusted")

    key = await key_source(metadata_url).get(kid, http)
    try:
        claims = jwt.decode(
            token,
            key.key,
            algorithms=[alg],
            issuer=issuer,
            leeway=CLOCK_SKEW,
            audience=settings.app_id if kind == "channel" else None,
            options={"require": ["exp", "iss"], "verify_aud": kind == "channel"},
        )
    except jwt.PyJWTError as exc:
        raise AuthenticationError(f"{kind} token rejected: {type(exc).__name__}: {exc}") from None
    result = _check_activity(kind, key, claims, activity, settings)
    _remember(cache_key, _Verified(kind, metadata_url, kid, key, claims))
    return result


def _check_activity(kind: str, key: _Key, claims: dict[str, Any], activity: Activity, settings: Settings) -> AuthResult:
    """The checks that tie a verified token to this activity and this bot."""
    if kind == "channel":
        if claims.get("serviceurl") is None:
            raise AuthenticationError("channel token has no serviceurl claim")
        if claims["serviceurl"] != activity.service_url:
            raise AuthenticationError("serviceurl claim does not match the activity's serviceUrl")
        if key.endorsements is not None and activity.channel_id not in key.endorsements:
            raise AuthenticationError(f"signing key is not endorsed for channel {activity.channel_id[:64]!r}")
    else:
        version = claims.get("ver")
        app_claim = {"1.0": "appid", "2.0": "azp"}.get(version) if isinstance(version, str) else None
        if app_claim is None:
            raise AuthenticationError(f"emulator token version {str(version)[:16]!r} is not supported")
        if claims.get(app_claim) != settings.app_id:
            raise AuthenticationError(f"emulator token {app_claim} is not this bot's app id")
    return AuthResult(kind, TRUST_TOKEN if kind == "channel" else TRUST_EMULATOR, claims)

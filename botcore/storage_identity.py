"""The storage clients' managed identity (an identity-based `BotStorage`): azure-identity's credential.

Imported only when such a connection is built (botcore.storage), so that an app on a connection string
never pays for importing azure-identity (bench/README.md, "Cold start"). On Functions and App Service the
credential asks the platform's IDENTITY_ENDPOINT, with IDENTITY_HEADER, and keeps each resource's token
for every client that shares it.

A token it cannot get fails the storage call at once as StorageUnavailableError (retry later): the
storage service was never asked, so the storage clients must not read the identity endpoint's answer as
the service's own (a 404 from the endpoint as a missing entity), nor retry it.
"""

from __future__ import annotations

from typing import Any

from azure.core.credentials import AccessToken, AccessTokenInfo, TokenRequestOptions
from azure.core.exceptions import ClientAuthenticationError
from azure.identity.aio import ManagedIdentityCredential

from .storage import StorageUnavailableError


class StorageIdentity(ManagedIdentityCredential):
    """ManagedIdentityCredential whose failures are botcore's StorageUnavailableError."""

    async def get_token(
        self, *scopes: str, claims: str | None = None, tenant_id: str | None = None, **kwargs: Any
    ) -> AccessToken:
        try:
            token: AccessToken = await super().get_token(*scopes, claims=claims, tenant_id=tenant_id, **kwargs)
            return token
        except ClientAuthenticationError as exc:
            raise StorageUnavailableError(0, None, _no_token(exc, scopes)) from exc

    async def get_token_info(self, *scopes: str, options: TokenRequestOptions | None = None) -> AccessTokenInfo:
        try:
            info: AccessTokenInfo = await super().get_token_info(*scopes, options=options)
            return info
        except ClientAuthenticationError as exc:
            raise StorageUnavailableError(0, None, _no_token(exc, scopes)) from exc


def _no_token(exc: ClientAuthenticationError, scopes: tuple[str, ...]) -> str:
    answer = f" (HTTP {exc.status_code})" if exc.status_code else ""
    message = (exc.message or "").split("\n", 1)[0]
    return f"managed identity: no token for {' '.join(scopes)}{answer}: {type(exc).__name__}: {message}"[:300]

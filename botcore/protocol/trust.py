"""Which service URLs may receive the bot's token.

The bot's token goes on every Connector call, so a serviceUrl decides where the token goes. A URL
earns it only from a channel token: the token's `serviceurl` claim matched the activity's serviceUrl
(docs/protocol.md, "Where the bot's token may go"). The bot records those URLs in the
`botserviceurls` table, and every call that carries the token is checked against that record, never
against what a reference says of itself: a send batch on the queue, which any holder of queue
access can write, cannot send the token anywhere the bot did not verify. The record is state's
(botcore.state.service_urls); the rule is here.

Emulator tokens carry no `serviceurl` claim, so their serviceUrl is never verified. The bot calls it
only when its host is listed in `BotEmulatorServiceHosts` (say, the host of a tunnel to a developer's
Emulator) or, in Development only, is loopback (the Emulator beside a bot running locally). A deployed
app has no Emulator beside it: there a loopback serviceUrl would be whatever listens on the app's own
machine.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Protocol
from urllib.parse import urlsplit

from ..errors import BadInputError
from .activity import TRUST_DEVELOPMENT, TRUST_EMULATOR, TRUST_TOKEN, ServiceEndpoint


class UntrustedServiceUrlError(BadInputError):
    """The serviceUrl was not verified for this call: nothing is sent to it."""


def base_url(url: str) -> str:
    """The form the record keeps and the Connector calls: the URL with exactly one trailing slash."""
    return url.rstrip("/") + "/"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class VerifiedUrls(Protocol):
    """The record of the service URLs channel tokens vouched for (botcore.state.service_urls)."""

    async def is_verified(self, url: str) -> bool: ...


class ServiceTrust:
    """The rule for one app: where a call may go, with the bot's token or (in development) without."""

    def __init__(
        self, registry: VerifiedUrls, emulator_hosts: Iterable[str] = (), *, emulator_on_loopback: bool = False
    ) -> None:
        """`emulator_on_loopback`: in Development, an Emulator serviceUrl on a loopback host may also have the
        token."""
        self.registry = registry
        self.emulator_hosts = frozenset(h.lower() for h in emulator_hosts)
        self.emulator_on_loopback = emulator_on_loopback

    async def base_for(self, endpoint: ServiceEndpoint, sends_token: bool) -> str:
        """The base URL to call, or UntrustedServiceUrlError saying why not."""
        parts = urlsplit(endpoint.url)
        host = (parts.hostname or "").lower()
        if parts.scheme != "https" and not (parts.scheme == "http" and _is_loopback(host)):
            raise UntrustedServiceUrlError(f"serviceUrl must be https: {parts.scheme}://{host}")
        if not sends_token:
            if endpoint.trust not in (TRUST_TOKEN, TRUST_EMULATOR, TRUST_DEVELOPMENT):
                raise UntrustedServiceUrlError(f"serviceUrl {host} has no recorded trust")
        elif endpoint.trust == TRUST_EMULATOR:
            if not (host in self.emulator_hosts or (self.emulator_on_loopback and _is_loopback(host))):
                raise UntrustedServiceUrlError(
                    f"serviceUrl {host} came with an Emulator token, which vouches for no serviceUrl; the bot's "
                    "token goes there only if it is listed in BotEmulatorServiceHosts (or, in Development, "
                    "loopback)"
                )
        elif endpoint.trust != TRUST_TOKEN or not await self.registry.is_verified(endpoint.url):
            raise UntrustedServiceUrlError(
                f"serviceUrl {host} was never verified by a channel token; refusing to send the bot's token"
            )
        return base_url(endpoint.url)

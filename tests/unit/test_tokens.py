"""Outbound tokens against the local identity provider: one request serves every caller."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiohttp import web

from botcore.protocol import tokens
from botcore.protocol.tokens import (
    ClientSecretTokenProvider,
    ManagedIdentityTokenProvider,
    TokenError,
    token_provider_for,
)
from botcore.settings import ConfigurationError, Settings
from devhost.identity import IdentityProvider
from devhost.server import BackgroundServer

APP_ID = "app-1"
TENANT = "99999999-8888-7777-6666-555555555555"


@pytest.fixture(autouse=True)
def client(idp):
    """The bot's app registration at the identity provider."""
    idp.add_client(APP_ID, "s3cret-value")


def secret_provider(idp, http, tenant="botframework.com", secret="s3cret-value"):
    return ClientSecretTokenProvider(
        idp.base_url, tenant, APP_ID, secret, "https://api.botframework.com/.default", http
    )


async def test_a_hundred_concurrent_callers_share_one_token_request(idp, http) -> None:
    provider, before = secret_provider(idp, http), idp.count("token")
    results = await asyncio.gather(*(provider.get_token() for _ in range(100)))
    assert len(set(results)) == 1 and idp.is_valid_access_token(results[0])
    assert idp.count("token") == before + 1
    await provider.get_token()
    assert idp.count("token") == before + 1
    request = idp.token_requests[-1]
    assert request["tenant"] == "botframework.com" and request["scope"] == "https://api.botframework.com/.default"
    assert request["grant_type"] == "client_credentials" and "client_secret" not in request


async def test_single_tenant_uses_its_tenant_in_the_token_url(idp, http) -> None:
    await secret_provider(idp, http, tenant=TENANT).get_token()
    assert idp.token_requests[-1]["tenant"] == TENANT


async def test_token_is_refreshed_before_it_expires_behind_its_callers(http, time_machine) -> None:
    with IdentityProvider(token_lifetime=8) as idp:  # a lifetime shorter than the refresh margin
        idp.add_client(APP_ID, "s3cret-value")
        idp.token_latency = 0.2
        provider = secret_provider(idp, http)
        first = await provider.get_token()
        assert await provider.get_token() == first
        time_machine.move_to(time.time() + 4.1)  # past half of an 8 s lifetime: refreshed behind the callers
        started = time.monotonic()
        assert await asyncio.gather(*(provider.get_token() for _ in range(20))) == [first] * 20
        assert time.monotonic() - started < 0.1  # none waited for the identity provider
        assert await _changed(provider, first) and idp.count("token") == 2
        second = await provider.get_token()
        time_machine.move_to(time.time() + 6.1)  # past three quarters of its lifetime: callers wait for a fresh one
        started = time.monotonic()
        third = await provider.get_token()
        assert third not in (first, second) and time.monotonic() - started >= 0.2 and idp.count("token") == 3


async def test_a_refresh_behind_the_callers_that_fails_is_retried_later_not_at_every_call(
    idp, http, time_machine, caplog
) -> None:
    provider, before = secret_provider(idp, http), idp.count("token")
    first = await provider.get_token()
    time_machine.move_to(time.time() + 3600 - tokens.REFRESH_MARGIN + 1)
    idp.fail_token_requests(503)
    assert await provider.get_token() == first
    for _ in range(50):  # the failed refresh ends; calls meanwhile still get the token they can use
        await asyncio.sleep(0.01)
        assert await provider.get_token() == first
    assert idp.count("token") == before + 2 and "could not be refreshed ahead of its expiry" in caplog.text
    time_machine.move_to(time.time() + tokens.RETRY_REFRESH + 1)
    await provider.get_token()
    assert await _changed(provider, first) and idp.count("token") == before + 3


async def _changed(provider: ClientSecretTokenProvider, old: str) -> bool:
    """Whether the provider's token is replaced within a second (a refresh behind its callers)."""
    for _ in range(100):
        if await provider.get_token() != old:
            return True
        await asyncio.sleep(0.01)
    return False


async def test_forced_refresh_by_many_callers_fetches_once(idp, http) -> None:
    provider, before = secret_provider(idp, http), idp.count("token")
    stale = await provider.get_token()
    fresh = await asyncio.gather(*(provider.get_token(force_refresh=True, stale=stale) for _ in range(20)))
    assert len(set(fresh)) == 1 and fresh[0] != stale
    assert idp.count("token") == before + 2


async def test_wrong_secret_is_a_token_error_without_the_secret(idp, http) -> None:
    with pytest.raises(TokenError) as info:
        await secret_provider(idp, http, secret="wrong-secret-xyz").get_token()
    assert info.value.status == 401 and info.value.service_code == "invalid_client"
    assert "wrong-secret-xyz" not in str(info.value)


async def test_identity_provider_failure_is_a_token_error_then_recovers(idp, http) -> None:
    provider = secret_provider(idp, http)
    idp.fail_token_requests(503)
    with pytest.raises(TokenError) as info:
        await provider.get_token()
    assert info.value.status == 503
    assert idp.is_valid_access_token(await provider.get_token())


async def test_managed_identity_flow(idp, http) -> None:
    provider = ManagedIdentityTokenProvider(
        f"{idp.base_url}/msi/token", idp.msi_header, "client-9", "https://api.botframework.com", http
    )
    token = await provider.get_token()
    assert idp.is_valid_access_token(token)
    request = idp.token_requests[-1]
    assert request["client_id"] == "client-9" and request["resource"] == "https://api.botframework.com"
    assert provider.expires_at > time.time() + 3000
    wrong = ManagedIdentityTokenProvider(f"{idp.base_url}/msi/token", "bad", None, "r", http)
    with pytest.raises(TokenError):
        await wrong.get_token()


def test_one_provider_per_process_and_clear_configuration_errors(idp) -> None:
    tokens._providers.clear()
    settings = Settings.from_env(idp.bot_env(APP_ID, password="s3cret-value"))
    assert token_provider_for(settings) is token_provider_for(
        Settings.from_env(idp.bot_env(APP_ID, password="s3cret-value"))
    )
    assert token_provider_for(Settings.from_env({"AZURE_FUNCTIONS_ENVIRONMENT": "Development"})) is None
    with pytest.raises(ConfigurationError, match="MicrosoftAppPassword"):
        token_provider_for(Settings.from_env({"MicrosoftAppId": APP_ID}))
    with pytest.raises(ConfigurationError, match="MicrosoftAppTenantId"):
        token_provider_for(
            Settings.from_env(
                {"MicrosoftAppId": APP_ID, "MicrosoftAppPassword": "x", "MicrosoftAppType": "SingleTenant"}
            )
        )
    with pytest.raises(ConfigurationError, match="IDENTITY_ENDPOINT"):
        token_provider_for(Settings.from_env({"MicrosoftAppId": APP_ID, "MicrosoftAppType": "UserAssignedMSI"}))
    msi = token_provider_for(Settings.from_env(idp.bot_env(APP_ID, app_type="UserAssignedMSI")))
    assert isinstance(msi, ManagedIdentityTokenProvider)


def test_each_cloud_asks_its_own_authority_for_its_own_scope() -> None:
    public = token_provider_for(Settings.from_env({"MicrosoftAppId": "a1", "MicrosoftAppPassword": "p"}))
    assert public.url == "https://login.microsoftonline.com/botframework.com/oauth2/v2.0/token"
    assert public._form["scope"] == "https://api.botframework.com/.default"
    gov = token_provider_for(
        Settings.from_env(
            {"MicrosoftAppId": "a1", "MicrosoftAppPassword": "p", "ChannelService": "https://botframework.azure.us"}
        )
    )
    assert gov.url == "https://login.microsoftonline.us/MicrosoftServices.onmicrosoft.us/oauth2/v2.0/token"
    assert gov._form["scope"] == "https://api.botframework.us/.default"
    gov_msi = token_provider_for(
        Settings.from_env(
            {
                "MicrosoftAppId": "a1",
                "MicrosoftAppType": "UserAssignedMSI",
                "IDENTITY_ENDPOINT": "http://127.0.0.1:9/msi",
                "ChannelService": "https://botframework.azure.us",
            }
        )
    )
    assert gov_msi.resource == "https://api.botframework.us"


class OddTokenEndpoint(BackgroundServer):
    """A token endpoint that answers 200 with whatever body the test sets."""

    body = ""

    def build_app(self) -> web.Application:
        async def handle(request: web.Request) -> web.Response:
            return web.Response(text=self.body, content_type="application/json")

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handle)
        return app


@pytest.mark.parametrize(
    "body",
    [
        "not json",
        "[]",
        "{}",
        '{"access_token": ""}',
        '{"access_token": 7}',
        '{"access_token": "t", "expires_in": "soon"}',
    ],
)
async def test_a_200_without_a_usable_token_is_a_token_error(http, body: str) -> None:
    server = OddTokenEndpoint().start()
    try:
        server.body = body
        secret = ClientSecretTokenProvider(server.base_url, "botframework.com", APP_ID, "s3cret-value", "scope", http)
        msi = ManagedIdentityTokenProvider(server.base_url + "/msi", "header", APP_ID, "resource", http)
        for provider in (secret, msi):
            with pytest.raises(TokenError, match="without"):
                await provider.get_token()
    finally:
        server.stop()

"""Inbound authentication: a matrix of genuine and hostile tokens against a local identity provider."""

from __future__ import annotations

import asyncio
import base64
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from botcore.protocol import auth
from botcore.protocol.activity import Activity
from botcore.protocol.auth import AuthenticationError, KeysUnavailableError, authenticate
from botcore.settings import ConfigurationError, Settings
from devhost.identity import IdentityProvider, SigningKey

APP_ID = "11111111-2222-3333-4444-555555555555"
SERVICE_URL = "https://smba.trafficmanager.net/emea/"
OWN_TENANT = "99999999-8888-7777-6666-555555555555"


@pytest.fixture(autouse=True)
def fresh_key_cache(monkeypatch):
    """Each test starts with no fetched keys and no verified tokens."""
    monkeypatch.setattr(auth, "_key_sources", {})
    monkeypatch.setattr(auth, "_verified", {})


def settings_for(idp: IdentityProvider, **overrides) -> Settings:
    env = idp.bot_env(APP_ID, password="pw", **overrides)
    return Settings.from_env(env)


def activity(channel_id: str = "msteams", service_url: str = SERVICE_URL) -> Activity:
    return Activity.from_dict(
        {
            "type": "message",
            "channelId": channel_id,
            "serviceUrl": service_url,
            "conversation": {"id": "a:1"},
            "from": {"id": "29:u"},
        }
    )


@pytest.fixture
def check(idp, http):
    """authenticate() with the shared client, for this module's provider unless `settings` say otherwise."""

    async def check(header, act=None, settings=None):
        return await authenticate(header, act or activity(), settings or settings_for(idp), http)

    return check


def b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def forged_none(idp) -> str:
    claims = jwt.decode(idp.mint_channel_token(APP_ID, SERVICE_URL), options={"verify_signature": False})
    return f"{b64({'alg': 'none', 'typ': 'JWT', 'kid': idp.keys['channel'][0].kid})}.{b64(claims)}."


def forged_hs256(idp) -> str:
    public_pem = (
        idp.keys["channel"][0]
        .private_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    claims = jwt.decode(idp.mint_channel_token(APP_ID, SERVICE_URL), options={"verify_signature": False})
    header = b64({"alg": "HS256", "typ": "JWT", "kid": idp.keys["channel"][0].kid})
    import hashlib
    import hmac

    signing_input = f"{header}.{b64(claims)}".encode()
    signature = base64.urlsafe_b64encode(hmac.new(public_pem, signing_input, hashlib.sha256).digest()).rstrip(b"=")
    return f"{signing_input.decode()}.{signature.decode()}"


def tampered(idp) -> str:
    head, _, sig = idp.mint_channel_token(APP_ID, SERVICE_URL).split(".")
    claims = jwt.decode(idp.mint_channel_token(APP_ID, SERVICE_URL), options={"verify_signature": False})
    claims["serviceurl"] = "https://evil.example/"
    return f"{head}.{b64(claims)}.{sig}"


def foreign_key_with_published_kid(idp) -> str:
    impostor = SigningKey.generate(["msteams"])
    impostor.kid = idp.keys["channel"][0].kid
    return idp.mint_channel_token(APP_ID, SERVICE_URL, key=impostor)


def unpublished_kid(idp) -> str:
    return idp.mint_channel_token(APP_ID, SERVICE_URL, key=SigningKey.generate(["msteams"]))


now = lambda: int(time.time())  # noqa: E731

REJECTED = {
    "no header": lambda idp: None,
    "empty header": lambda idp: "",
    "basic scheme": lambda idp: "Basic dXNlcjpwYXNz",
    "bearer without token": lambda idp: "Bearer",
    "lower-case scheme": lambda idp: "bearer " + idp.mint_channel_token(APP_ID, SERVICE_URL),
    "bearer with two tokens": lambda idp: "Bearer a b",
    "garbage token": lambda idp: "Bearer not.a.jwt",
    "alg none": lambda idp: "Bearer " + forged_none(idp),
    "HS256 signed with the public key": lambda idp: "Bearer " + forged_hs256(idp),
    "tampered payload": lambda idp: "Bearer " + tampered(idp),
    "foreign key, published kid": lambda idp: "Bearer " + foreign_key_with_published_kid(idp),
    "unknown kid": lambda idp: "Bearer " + unpublished_kid(idp),
    "expired beyond skew": lambda idp: "Bearer " + idp.mint_channel_token(APP_ID, SERVICE_URL, lifetime=-301),
    "not yet valid beyond skew": lambda idp: (
        "Bearer " + idp.mint_channel_token(APP_ID, SERVICE_URL, not_before=now() + 600, lifetime=3600)
    ),
    "no exp": lambda idp: "Bearer " + idp.mint_channel_token(APP_ID, SERVICE_URL, drop_claims=("exp",)),
    "wrong issuer": lambda idp: (
        "Bearer " + idp.mint_channel_token(APP_ID, SERVICE_URL, extra_claims={"iss": "https://evil.example"})
    ),
    "wrong audience": lambda idp: "Bearer " + idp.mint_channel_token("another-app", SERVICE_URL),
    "no serviceurl claim": lambda idp: (
        "Bearer " + idp.mint_channel_token(APP_ID, SERVICE_URL, drop_claims=("serviceurl",))
    ),
    "mismatched serviceurl": lambda idp: "Bearer " + idp.mint_channel_token(APP_ID, "https://evil.example/"),
    "serviceurl differs by a slash": lambda idp: "Bearer " + idp.mint_channel_token(APP_ID, SERVICE_URL.rstrip("/")),
    "gov token to a public-cloud bot": lambda idp: (
        "Bearer " + idp.mint_channel_token(APP_ID, SERVICE_URL, cloud="usgov")
    ),
    "RS256 token declaring HS512": lambda idp: (
        "Bearer "
        + b64({"alg": "HS512", "kid": idp.keys["channel"][0].kid})
        + "."
        + idp.mint_channel_token(APP_ID, SERVICE_URL).split(".", 1)[1]
    ),
    "emulator v1 wrong appid": lambda idp: (
        "Bearer " + idp.mint_emulator_token(APP_ID, extra_claims={"appid": "someone-else"})
    ),
    "emulator v2 wrong azp": lambda idp: (
        "Bearer " + idp.mint_emulator_token(APP_ID, version="2.0", extra_claims={"azp": "someone-else"})
    ),
    "emulator unknown ver": lambda idp: "Bearer " + idp.mint_emulator_token(APP_ID, extra_claims={"ver": "3.0"}),
    "emulator no ver": lambda idp: "Bearer " + idp.mint_emulator_token(APP_ID, drop_claims=("ver",)),
    "emulator foreign tenant": lambda idp: "Bearer " + idp.mint_emulator_token(APP_ID, tenant=OWN_TENANT),
    "emulator token signed by a channel key": lambda idp: (
        "Bearer "
        + idp.sign(
            {
                "iss": "https://sts.windows.net/d6d49420-f39b-4df7-a1dc-d59a935871db/",
                "appid": APP_ID,
                "ver": "1.0",
                "aud": APP_ID,
                "exp": now() + 60,
            },
            idp.keys["channel"][0],
        )
    ),
}


@pytest.mark.parametrize("case", sorted(REJECTED))
async def test_hostile_or_broken_tokens_are_rejected(idp, check, case: str) -> None:
    header = REJECTED[case](idp)
    with pytest.raises(AuthenticationError) as info:
        await check(header)
    token = (header or "").partition(" ")[2]
    assert len(token) < 8 or token not in info.value.reason  # the reason never carries the token


async def test_endorsement_mismatch_is_rejected(idp, check) -> None:
    token = idp.mint_channel_token(APP_ID, SERVICE_URL)
    with pytest.raises(AuthenticationError, match="not endorsed"):
        await check("Bearer " + token, activity(channel_id="skype"))


ACCEPTED = {
    "channel token": lambda idp: idp.mint_channel_token(APP_ID, SERVICE_URL),
    "expired within skew": lambda idp: idp.mint_channel_token(APP_ID, SERVICE_URL, lifetime=-200),
    "nbf within skew": lambda idp: idp.mint_channel_token(APP_ID, SERVICE_URL, not_before=now() + 200),
    "RS384": lambda idp: idp.mint_channel_token(APP_ID, SERVICE_URL, alg="RS384"),
    "RS512": lambda idp: idp.mint_channel_token(APP_ID, SERVICE_URL, alg="RS512"),
    "emulator v1": lambda idp: idp.mint_emulator_token(APP_ID),
    "emulator v2": lambda idp: idp.mint_emulator_token(APP_ID, version="2.0"),
    "emulator v2 second BF tenant": lambda idp: idp.mint_emulator_token(
        APP_ID, version="2.0", tenant="f8cdef31-a31e-4b4a-93e4-5f571e91255a"
    ),
}


@pytest.mark.parametrize("case", sorted(ACCEPTED))
async def test_genuine_tokens_are_accepted(idp, check, case: str) -> None:
    result = await check("Bearer " + ACCEPTED[case](idp))
    # Only a channel token vouches for the serviceUrl (its serviceurl claim); an Emulator token for none.
    assert (result.kind, result.trust) in (("channel", "token"), ("emulator", "emulator"))


async def test_single_tenant_bot_accepts_emulator_tokens_of_its_own_tenant(idp, check) -> None:
    settings = settings_for(idp, tenant=OWN_TENANT, app_type="SingleTenant")
    result = await check("Bearer " + idp.mint_emulator_token(APP_ID, tenant=OWN_TENANT), settings=settings)
    assert result.kind == "emulator"


async def test_us_gov_bot_accepts_gov_tokens_and_refuses_public_ones(idp, check) -> None:
    gov = settings_for(idp, cloud="usgov")
    token = idp.mint_channel_token(APP_ID, SERVICE_URL, cloud="usgov")
    assert (await check("Bearer " + token, settings=gov)).kind == "channel"
    with pytest.raises(AuthenticationError, match="not trusted"):
        await check("Bearer " + idp.mint_channel_token(APP_ID, SERVICE_URL), settings=gov)


async def test_us_gov_bot_takes_gov_emulator_tokens_from_the_gov_metadata_and_refuses_public_ones(idp, check) -> None:
    gov = Settings.from_env({"MicrosoftAppId": APP_ID, "ChannelService": "https://botframework.azure.us"})
    assert gov.emulator_openid_url == (
        "https://login.microsoftonline.us/cab8a31a-1906-4287-a0d8-4eef66b95f6e/v2.0/.well-known/openid-configuration"
    )
    gov = settings_for(idp, cloud="usgov")
    gov_tenant = "cab8a31a-1906-4287-a0d8-4eef66b95f6e"
    for version in ("1.0", "2.0"):
        token = idp.mint_emulator_token(APP_ID, version=version, tenant=gov_tenant, cloud="usgov")
        assert (await check("Bearer " + token, settings=gov)).kind == "emulator"
    with pytest.raises(AuthenticationError, match="not trusted"):
        await check("Bearer " + idp.mint_emulator_token(APP_ID, version="2.0"), settings=gov)


async def test_development_mode_accepts_unauthenticated_requests_only_without_app_id(check) -> None:
    dev = Settings.from_env({"AZURE_FUNCTIONS_ENVIRONMENT": "Development"})
    assert (await check(None, settings=dev)).trust == "development"
    deployed = Settings.from_env({"AZURE_FUNCTIONS_ENVIRONMENT": "Development", "MicrosoftAppId": APP_ID})
    with pytest.raises(AuthenticationError):
        await check(None, settings=deployed)


async def test_fifty_turns_cost_one_metadata_and_one_key_fetch(idp, check) -> None:
    before = (idp.count("metadata:channel"), idp.count("jwks:channel"))
    tokens = [idp.mint_channel_token(APP_ID, SERVICE_URL) for _ in range(50)]
    await asyncio.gather(*(check("Bearer " + t) for t in tokens))
    assert (idp.count("metadata:channel") - before[0], idp.count("jwks:channel") - before[1]) == (1, 1)


async def test_rotated_key_is_fetched_once_and_unknown_kids_refetch_at_most_hourly(idp, check, time_machine) -> None:
    await check("Bearer " + idp.mint_channel_token(APP_ID, SERVICE_URL))
    jwks = idp.count("jwks:channel")
    new_key = idp.rotate_keys("channel")
    await check("Bearer " + idp.mint_channel_token(APP_ID, SERVICE_URL, key=new_key))
    assert idp.count("jwks:channel") == jwks + 1
    for _ in range(20):
        with pytest.raises(AuthenticationError):
            await check("Bearer " + unpublished_kid(idp))
    assert idp.count("jwks:channel") == jwks + 1, "refetch on unknown kid is rate limited"
    start = time.time()
    time_machine.move_to(start + 3601)
    with pytest.raises(AuthenticationError):
        await check("Bearer " + unpublished_kid(idp))
    assert idp.count("jwks:channel") == jwks + 2
    time_machine.move_to(start + 26 * 3600)
    await check("Bearer " + idp.mint_channel_token(APP_ID, SERVICE_URL))
    assert idp.count("jwks:channel") == jwks + 3, "keys are refreshed after 24 hours"


async def test_keys_a_day_old_serve_while_the_metadata_is_unreachable_until_the_stale_limit(
    check, time_machine
) -> None:
    with IdentityProvider() as down_later:
        settings = settings_for(down_later)
        await check("Bearer " + down_later.mint_channel_token(APP_ID, SERVICE_URL), settings=settings)
    start = time.time()  # the provider is gone: every refresh from now on fails
    time_machine.move_to(start + 25 * 3600)  # tokens signed with the day-old key still come
    assert (
        await check("Bearer " + down_later.mint_channel_token(APP_ID, SERVICE_URL), settings=settings)
    ).kind == "channel"
    time_machine.move_to(start + 6 * 24 * 3600)
    with pytest.raises(KeysUnavailableError):
        await check("Bearer " + down_later.mint_channel_token(APP_ID, SERVICE_URL), settings=settings)


async def test_unreachable_metadata_is_a_distinct_error(idp, check) -> None:
    settings = Settings.from_env(
        {"MicrosoftAppId": APP_ID, "BotChannelOpenIdMetadataUrl": "http://127.0.0.1:9/nothing"}
    )
    with pytest.raises(KeysUnavailableError):
        await check("Bearer " + idp.mint_channel_token(APP_ID, SERVICE_URL), settings=settings)


async def test_a_verified_token_is_not_verified_again_but_still_checked_against_each_activity(
    idp, check, monkeypatch, time_machine
) -> None:
    token = "Bearer " + idp.mint_channel_token(APP_ID, SERVICE_URL, lifetime=-auth.CLOCK_SKEW + 2)
    await check(token)
    decodes: list[int] = []
    real_decode = jwt.decode
    monkeypatch.setattr(jwt, "decode", lambda *a, **k: decodes.append(1) or real_decode(*a, **k))
    assert (await check(token)).kind == "channel"
    with pytest.raises(AuthenticationError, match="serviceurl"):
        await check(token, activity(service_url="https://elsewhere.example/"))
    with pytest.raises(AuthenticationError, match="endorsed"):
        await check(token, activity(channel_id="not-endorsed"))
    assert decodes == []  # the signature and claims were verified once
    time_machine.move_to(time.time() + 2.5)
    with pytest.raises(AuthenticationError, match="Expired"):
        await check(token)  # the cache does not outlive the token


async def test_a_cached_token_is_refused_once_its_signing_key_is_withdrawn(check) -> None:
    with IdentityProvider() as own:  # a provider of its own: its keys change
        settings = settings_for(own)
        old = own.keys["channel"][0]
        cached = "Bearer " + own.mint_channel_token(APP_ID, SERVICE_URL)
        assert (await check(cached, settings=settings)).kind == "channel"
        new = own.rotate_keys("channel")
        own.keys["channel"].remove(old)  # the provider withdraws the key
        await check("Bearer " + own.mint_channel_token(APP_ID, SERVICE_URL, key=new), settings=settings)  # refetched
        with pytest.raises(AuthenticationError, match="not published"):
            await check("Bearer " + own.mint_channel_token(APP_ID, SERVICE_URL, key=old), settings=settings)
        with pytest.raises(AuthenticationError, match="not published"):
            await check(cached, settings=settings)  # replayed from the cache: refused alike


async def test_a_cached_token_is_verified_again_when_the_keys_are_refreshed(check, time_machine) -> None:
    with IdentityProvider() as own:  # a provider of its own: its keys change
        settings = settings_for(own)
        kept, replaced = own.keys["channel"][0], own.rotate_keys("channel")
        tokens = {
            key.kid: "Bearer " + own.mint_channel_token(APP_ID, SERVICE_URL, key=key, lifetime=30 * 3600)
            for key in (kept, replaced)
        }
        for token in tokens.values():
            await check(token, settings=settings)
        impostor = SigningKey.generate(list(replaced.endorsements or []))
        impostor.kid = replaced.kid  # the kid now names other key material
        own.keys["channel"] = [kept, impostor]
        time_machine.move_to(time.time() + 25 * 3600)  # the daily refresh is due
        assert (await check(tokens[kept.kid], settings=settings)).kind == "channel"
        with pytest.raises(AuthenticationError, match="InvalidSignature"):
            await check(tokens[replaced.kid], settings=settings)


@pytest.mark.parametrize(
    "value, cloud",
    [
        ("", "public"),
        ("https://botframework.com", "public"),
        ("https://botframework.azure.us/", "usgov"),
        ("HTTPS://BotFramework.Azure.US", "usgov"),
    ],
)
def test_channel_service_names_the_cloud(value: str, cloud: str) -> None:
    assert Settings.from_env({"MicrosoftAppId": APP_ID, "ChannelService": value}).cloud.name == cloud


@pytest.mark.parametrize("typo", ["https://botframework.azure.gov", "botframework.azure.us", "usgov"])
def test_an_unknown_channel_service_is_a_configuration_error_not_the_public_cloud(typo: str) -> None:
    with pytest.raises(ConfigurationError, match="ChannelService must be"):
        Settings.from_env({"MicrosoftAppId": APP_ID, "ChannelService": typo})
